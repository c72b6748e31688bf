"""The Python API: ``run``, ``call``, ``copy``, ``slurp``, ``SSHJobMan``.

Nothing here prints or exits. Hosts may be given as a pattern string
(``"web[1-4]"``, ``"root@db1:2222,db2"``), a list of such strings, or
``(host, port, user)`` tuples (port and user may be None). Results are keyed
by each target's label (``user@host:port`` with the parts given).

    >>> import classh
    >>> results = classh.run("web[1-4]", "uptime")
    >>> for host, result in results.items():
    ...     if isinstance(result, classh.Error):
    ...         print(host, "failed:", result.reason)
    ...     else:
    ...         rc, out, err = result
"""
from __future__ import annotations

import atexit
import os
import signal
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .hostmode import TargetSource, task_maker
from .observers import Observer
from .options import Options, from_env
from .results import FAILED, OK, Record, load_results
from .run import Run, assemble
from .supervisor import Task
from .targets import Target, resolve

__all__ = ["run", "call", "copy", "slurp", "Options", "Error", "SSHJobMan", "load_results"]

Hosts = Union[str, Tuple, Sequence[Union[str, Tuple]]]
Outcome = Union[Tuple[int, str, str], "Error"]


class Error(Exception):
    """A host's command could not be run as asked: ssh error, timeout, kill, or (``call``) a non-zero exit.

    ``host``, ``rc`` (exit code or None), ``stderr`` (text) and ``reason``
    (words: "ssh error", "timed out", "exit status 3"...) say what happened;
    ``record`` is the full :class:`~classh.results.Record`.
    """

    def __init__(self, host: str, rc: Optional[int], stderr: str, reason: str,
                 record: Optional[Record] = None):
        super().__init__("%s: %s" % (host, reason))
        self.host = host
        self.rc = rc
        self.stderr = stderr
        self.reason = reason
        self.record = record


def targets_of(hosts: Hosts, options: Options) -> List[Target]:
    """Turn the API's host forms into Targets (patterns expanded, duplicates once)."""
    if isinstance(hosts, (str, tuple)):
        hosts = [hosts]
    patterns: List[str] = []
    direct: List[Target] = []
    for host in hosts:
        if isinstance(host, tuple):
            name, port, user = (tuple(host) + (None, None))[:3]
            direct.append(Target(name, user=user, port=int(port) if port else None))
        elif isinstance(host, Target):
            direct.append(host)
        else:
            patterns.append(host)
    found = resolve(patterns, expand=options.expand, max_hosts=options.max_hosts) if patterns else []
    unique = {t.label: t for t in found}
    for target in direct:
        unique.setdefault(target.label, target)
    return list(unique.values())


def as_options(opts: Union[None, Options, dict]) -> Options:
    """``opts`` as an Options. None or a dict of keyword arguments start from the
    ``CLASSH_*`` environment defaults, as the command line does; an Options is used as is."""
    if isinstance(opts, Options):
        return opts
    values = from_env()
    values.update(opts or {})
    return Options(**values)


_REASONS = {"ssh_error": "ssh error", "timeout": "timed out", "killed": "killed"}


def outcome(record: Record, strict: bool) -> Outcome:
    """``(rc, out, err)``, or an Error for ssh errors, timeouts, kills (and, ``strict``, any failure)."""
    status = record.status
    if status == OK or (status == FAILED and not strict):
        return record.exitcode, record.output, record.errors
    reason = _REASONS.get(status) or "exit status %s" % record.exitcode
    if record.error:
        reason += ": " + record.error
    return Error(record.host, record.exitcode, record.errors, reason, record)


class _Collector(Observer):
    needs_output = True  # the API hands every host's output back

    def __init__(self):
        self.records: Dict[str, Record] = {}

    def finished(self, task, record: Record) -> None:
        self.records[record.host] = record


#: A function giving more environment variables for the ssh of one target.
TaskEnv = Callable[[Target], Mapping[str, str]]


def _start(targets: List[Target], command: Optional[str], options: Options, mode: Sequence = (),
           handle_signals: bool = True, stdout_is_data: bool = False,
           task_env: Optional[TaskEnv] = None) -> Tuple[Run, _Collector]:
    collector = _Collector()
    sinks = assemble(options, mode=mode, stdout_is_data=stdout_is_data,
                     views=lambda skip: [collector])
    source = TargetSource(targets, _with_env(task_maker(command, options), task_env))
    return Run(source, options, sinks.observers, keep=sinks.keep,
               handle_signals=handle_signals), collector


def _with_env(make: Callable[[Target], Task], task_env: Optional[TaskEnv]) -> Callable[[Target], Task]:
    """``make``, each task's environment (that of its local ssh) extended by ``task_env(target)``."""
    if task_env is None:
        return make

    def make_with_env(target: Target) -> Task:
        task = make(target)
        task.env = dict(os.environ if task.env is None else task.env, **task_env(target))
        return task

    return make_with_env


def run_records(targets: List[Target], command: str, options: Options, mode: Sequence = (),
                stdout_is_data: bool = False, task_env: Optional[TaskEnv] = None,
                keep_on_sigint: bool = False) -> Dict[str, Record]:
    """Run ``command`` on ``targets`` to the end: ``{label: Record}``, in the order hosts
    finished. ``mode`` holds observers that come first (``SlurpSink``); a signal ends the
    call as :func:`run` says, except that with ``keep_on_sigint`` a SIGINT returns the
    records made (those killed by it are ``interrupted``; hosts never started have none)."""
    host_run, collector = _start(targets, command, options, mode, stdout_is_data=stdout_is_data,
                                 task_env=task_env)
    summary = host_run.run()
    signum = summary.interrupted_by
    if signum is not None and not (keep_on_sigint and signum == signal.SIGINT):
        _reraise(signum)
    return collector.records


def _run(hosts: Hosts, command: str, opts, strict: bool, mode: Sequence = (),
         options: Optional[Options] = None, stdout_is_data: bool = False) -> Dict[str, Outcome]:
    options = options or as_options(opts)
    records = run_records(targets_of(hosts, options), command, options, mode, stdout_is_data)
    return {host: outcome(record, strict) for host, record in records.items()}


def _reraise(signum: int) -> None:
    """End an API call that a signal interrupted, once every child is gone.

    SIGINT raises KeyboardInterrupt. SIGTERM and SIGHUP are raised again for
    the program's own handler (the default one ends the process, as if
    classh had not been there); if that handler returns, SystemExit(128 +
    signal) ends the call.
    """
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.raise_signal(signum)
    raise SystemExit(128 + signum)


def run(hosts: Hosts, cmd: str, opts: Union[None, Options, dict] = None) -> Dict[str, Outcome]:
    """Run ``cmd`` on every host: ``{host: (rc, out, err) | Error}``.

    An Error stands only for an ssh error, a timeout or a kill; a command
    that ran and exited non-zero gives its ``rc``. Ctrl-C kills every child,
    then raises KeyboardInterrupt.
    """
    return _run(hosts, cmd, opts, strict=False)


def call(hosts: Hosts, cmd: str, opts: Union[None, Options, dict] = None) -> Dict[str, Outcome]:
    """Like :func:`run`, but any non-zero exit is an Error too."""
    return _run(hosts, cmd, opts, strict=True)


class SSHJobMan:
    """A run you drive yourself (the classh seed's module API)::

        job = SSHJobMan(hosts, 'date +%s')
        job.wait()
        for host, res in job.results.items():
            print(host, res.exitcode, res.output, res.errors, res.started, res.stopped)

    ``start()`` launches, ``poll()`` handles what is ready without blocking,
    ``wait()`` blocks until every host is done (``wait()`` and ``poll()``
    start the run if needed), ``kill()`` ends it, ``done()`` says whether it
    is over. ``results`` maps each host to its Record as hosts finish.
    Keyword options are those of :class:`Options` (over the ``CLASSH_*``
    environment defaults). Signals are left to the calling program.

    Used as a context manager (``with SSHJobMan(...) as job:``) every child
    is killed and reaped when the block is left, by an exception too; and
    no child outlives the interpreter's normal exit (an ``atexit`` hook
    closes every run still going). Several may be polled in one program.
    """

    def __init__(self, hosts: Hosts, cmd: str, **opts):
        self.options = as_options(opts)
        self.targets = targets_of(hosts, self.options)
        self.cmd = cmd
        self._run: Optional[Run] = None
        self._collector: Optional[_Collector] = None

    def __enter__(self) -> "SSHJobMan":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        """Leaving the ``with`` block, however: every child still running is killed and reaped."""
        self.close()

    def close(self) -> None:
        """Kill whatever still runs and wait until every child is reaped."""
        if self._run is not None and not self.done():
            self._run.kill()
            self.wait()

    @property
    def results(self) -> Dict[str, Record]:
        """``{host: Record}`` for every host finished so far."""
        return self._collector.records if self._collector else {}

    def start(self) -> "SSHJobMan":
        """Start the run (once)."""
        if self._run is None:
            self._run, self._collector = _start(self.targets, self.cmd, self.options,
                                                handle_signals=False)
            self._run.start()
            _LIVE.add(self)
        return self

    def poll(self) -> bool:
        """Handle whatever is ready now, without waiting; True when all hosts are done."""
        self.start()
        return self._run.step(timeout=0)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until all hosts are done (or ``timeout`` seconds pass); True when done."""
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._run.step(None if deadline is None else max(0.0, deadline - time.monotonic())):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

    def kill(self, host: Optional[str] = None) -> None:
        """Kill one host's command, or all of them (the run then ends)."""
        if self._run is not None and not self.done():
            self._run.kill(host)

    def done(self) -> bool:
        """True once every host has finished (or the run was killed and has ended)."""
        finished = self._run is not None and self._run.summary is not None
        if finished:
            _LIVE.discard(self)
        return finished


#: SSHJobMan runs started and not yet seen done: closed at interpreter exit.
_LIVE: set = set()


@atexit.register
def _close_live_runs() -> None:
    for job in list(_LIVE):
        job.close()


def copy(hosts: Hosts, src: Union[str, Iterable[str]], dst: str,
         opts: Union[None, Options, dict] = None) -> Dict[str, Outcome]:
    """Push local file(s) or directories ``src`` to ``dst`` on every host (see ``classh --copy``)."""
    from .transfer import copy_plan
    options = as_options(opts)
    command, archive = copy_plan([src] if isinstance(src, str) else list(src), dst)
    return _run(hosts, command, None, strict=True, options=options.replace(input=archive))


def slurp(hosts: Hosts, src: str, dst: str,
          opts: Union[None, Options, dict] = None) -> Dict[str, Outcome]:
    """Pull ``src`` from every host into ``dst/host/basename`` (see ``classh --slurp``)."""
    from .transfer import SlurpSink, slurp_command
    # stdout is the tar stream: written to disk by the sink, never kept in memory.
    return _run(hosts, slurp_command(src), opts, strict=True, mode=[SlurpSink(dst)],
                stdout_is_data=True)
