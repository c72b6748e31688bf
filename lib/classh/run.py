"""The run driver: one event loop, one supervisor, a source of tasks, observers.

Host mode, transfers, ``--close`` and the interactive shell all run through
:class:`Run`; job mode is another task source on the same driver. It owns
the signal handling of a run (SIGINT, SIGTERM and SIGHUP kill every child and
end it, unless the source claims one through
:meth:`~classh.supervisor.TaskSource.signal_handlers`, as job mode does with
SIGHUP and SIGUSR1; a signal the program ignores, as under ``nohup``, stays
ignored), the
tally of records, and the end of a run: observers closed, pipeline routers
waited for (a signal then is passed on to them), and the signal state put
back whatever happened.
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

from .loop import EventLoop
from .observers import Observer, SinkError
from .options import Options
from .results import Record, Tally
from .spawn import raise_fd_limit
from .supervisor import Supervisor, TaskSource

__all__ = ["Run", "RunSummary", "RUN_SIGNALS", "EXIT_CLASSH", "EXIT_USAGE"]

#: Signals that end a run: every child is killed, the exit status is 128 + the signal.
RUN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_CLASSH = 1
EXIT_USAGE = 2
EXIT_UNDONE = 4


@dataclass
class RunSummary:
    """What a whole run came to.

    ``fatal`` is the error of a sink every host needed (the run stopped
    there); ``sink_errors`` name the hosts' own files that could not be
    written; ``router_failures`` the ``-S``/``-E`` commands that failed.
    """

    tally: Tally
    elapsed: float
    interrupted_by: Optional[int] = None
    numjobs: int = 0
    input_errors: Sequence[str] = ()
    fatal: Optional[str] = None
    sink_errors: Sequence[str] = ()
    router_failures: Sequence[str] = ()
    undone: Sequence[str] = ()

    @property
    def exit_status(self) -> int:
        """The process exit status, the first that applies of:

        128 + signal when interrupted (130, 143, 129); 1 when a sink failed
        (classh could not keep a result); 2 when streamed targets were bad;
        4 when work was left undone (job mode: no node could run it);
        else the hosts' status (4, 3, 5 or 0), except that a failed
        ``-S``/``-E`` command turns a 0 into 1, as ``set -o pipefail`` makes a
        pipeline fail when a later stage does.
        """
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by
        if self.fatal or self.sink_errors:
            return EXIT_CLASSH
        if self.input_errors:
            return EXIT_USAGE
        if self.undone:
            return EXIT_UNDONE
        status = self.tally.exit_status()
        if status == 0 and self.router_failures:
            return EXIT_CLASSH
        return status

    @property
    def problems(self) -> List[str]:
        """One line for each thing that went wrong beside the hosts' own results."""
        lines = list(self.input_errors) + list(self.sink_errors)
        lines += list(self.router_failures)
        if self.fatal:
            lines.append("stopped: " + self.fatal)
        return lines


class _Tally(Observer):
    def __init__(self):
        self.tally = Tally()

    def finished(self, task, record: Record) -> None:
        self.tally.add(record)


class Run:
    """Runs the tasks of ``source`` through one supervisor; observers get output and records.

    ``source`` is a :class:`~classh.supervisor.TaskSource`.
    ``keep`` bounds the bytes of each stream kept in memory per task. With
    ``handle_signals`` (the default, honoured in the main thread only)
    SIGINT, SIGTERM and SIGHUP kill every running child, record them as
    interrupted and end the run; a signal the source claims
    (``source.signal_handlers()``) goes to the source's handler instead.

    :meth:`run` runs to the end; :meth:`start`, :meth:`step` and
    :meth:`kill` let a caller drive the run bit by bit (the API's SSHJobMan).
    """

    def __init__(self, source: TaskSource, options: Options, observers: Sequence[Observer] = (), keep=None,
                 handle_signals: bool = True, fanout: Optional[int] = None):
        self.source = source
        self.options = options
        self.observers = list(observers)
        self.keep = keep
        self.handle_signals = handle_signals
        self.fanout = fanout
        self.supervisor: Optional[Supervisor] = None
        self.summary: Optional[RunSummary] = None
        self._loop: Optional[EventLoop] = None
        self._tally = _Tally()
        self._started = 0.0
        self._close_errors: List[str] = []
        self._late_signal: Optional[int] = None

    def run(self) -> RunSummary:
        """Run to the end (or until interrupted) and summarise."""
        self.start()
        while not self.step():
            pass
        return self.summary

    def start(self) -> None:
        """Start the first tasks."""
        self._started = time.monotonic()
        known = self.source.pending()
        wanted = self.fanout or self.options.numjobs
        if known is not None:
            wanted = min(wanted, known)
        loop = self._loop = EventLoop()
        loop.open()
        try:
            self.supervisor = Supervisor(
                loop, numjobs=raise_fd_limit(max(1, wanted)), observers=self.observers + [self._tally],
                keep=self.keep, kill_grace=self.options.kill_grace)
            if self.handle_signals:
                self._handle_signals(self.supervisor.interrupt, self.source.signal_handlers())
            for observer in self.observers:
                observer.attach(loop)
            self.source.attach(loop, self.supervisor)
            self.supervisor.start(self.source)
        except BaseException:
            self._teardown()
            raise

    def _handle_signals(self, handler, claimed=None) -> None:
        """``handler`` for every run signal, ``claimed`` ({signum: handler}) for the
        source's own; a signal the program ignores is left alone."""
        handlers = dict.fromkeys(RUN_SIGNALS, handler)
        handlers.update(claimed or {})
        for signum, callback in handlers.items():
            if self._loop.program_handler(signum) is not signal.SIG_IGN:
                self._loop.on_signal(signum, callback)

    def step(self, timeout: Optional[float] = None) -> bool:
        """Handle one round of events (waiting at most ``timeout`` s); True once all is over."""
        if self.summary is not None:
            return True
        try:
            if not self.supervisor.done():
                self._run_once(timeout)
            if self.supervisor.done():
                self._end()
        except BaseException:
            self._teardown()
            raise
        return self.summary is not None

    def _run_once(self, timeout: Optional[float]) -> None:
        """One round of the loop; a sink failing in a loop callback (a display
        draining into a slow pipe, a pipeline router) is handled like any sink error."""
        try:
            self._loop.run_once(timeout)
        except SinkError as exc:
            self.supervisor.sink_failed(exc)

    def kill(self, key: Optional[str] = None) -> None:
        """Kill one running task (by key) or, with no key, end the whole run."""
        if key is None:
            self.supervisor.interrupt(signal.SIGTERM)
        else:
            self.supervisor.kill(key)

    def _end(self) -> None:
        """Close the observers, wait for pipeline routers, summarise, give the signals back."""
        loop = self._loop
        try:
            self._close_source()
            for observer in self.observers:
                try:
                    observer.close()
                except SinkError as exc:
                    self._close_errors.append(str(exc))
            if self.handle_signals:  # a signal now goes to the routers still running
                self._handle_signals(self._forward_signal)
            while any(o.busy for o in self.observers):
                self._run_once(None)
        finally:
            loop.close()
        self.summary = self._summarise()

    def _forward_signal(self, signum: int) -> None:
        self._late_signal = signum  # the run ends as interrupted all the same
        for observer in self.observers:
            if observer.busy:
                observer.signal(signum)

    def _close_source(self) -> None:
        self.source.close()

    def _teardown(self) -> None:
        """After an unexpected error: kill and reap every child, close everything.

        Errors met on the way (the same bug again, for the other tasks) are
        dropped: the first one is the one being raised, and the children, the
        source and the files must be dealt with whatever happens.
        """
        supervisor, loop = self.supervisor, self._loop
        try:
            if supervisor is not None:
                supervisor.mute()
                supervisor.interrupt(signal.SIGINT)
                supervisor.interrupt(signal.SIGINT)  # again: SIGKILL, nothing left behind
                while not supervisor.done():
                    _quietly(loop.run_once)
            _quietly(self._close_source)
            for observer in self.observers:
                _quietly(observer.close)
        finally:
            loop.close()

    def _summarise(self) -> RunSummary:
        supervisor = self.supervisor
        failures = [line for observer in self.observers for line in observer.failures()]
        return RunSummary(
            self._tally.tally, time.monotonic() - self._started,
            supervisor.interrupted_by if supervisor.interrupted_by is not None else self._late_signal,
            supervisor.numjobs, list(self.source.errors),
            fatal=supervisor.fatal, sink_errors=supervisor.sink_errors + self._close_errors,
            router_failures=failures, undone=list(self.source.undone))



def _quietly(call: Callable[[], None]) -> None:
    """``call()``, dropping any error (tearing down after a first one)."""
    try:
        call()
    except Exception:  # noqa: BLE001 - see Run._teardown
        pass


#: Bytes of each stream kept in memory per task when a results directory has it all.
KEEP_WITH_RESULTS = 1 << 20


@dataclass
class Sinks:
    """The observers of one run and how much output the records must carry.

    Built by :func:`assemble` for the command line and the API alike, so that
    both put them in the one right order: ``mode`` sinks first (``--slurp``'s
    sink turns a host whose archive cannot be unpacked into a failure, and
    everything after it must see that final record), then the results
    directory, the ``--json`` file, the routers, and last the views
    (displays, collectors).
    """

    observers: List[Observer] = field(default_factory=list)
    keep: object = None
    skip: set = field(default_factory=set)


def assemble(options: Options, *, mode: Sequence[Observer] = (), stdout_is_data: bool = False,
             resume: bool = False, overwrite: bool = False, json_path: Optional[str] = None,
             routing: Optional[Callable[[set], Optional[Observer]]] = None,
             views: Callable[[set], Sequence[Observer]] = lambda skip: (),
             done: Optional[set] = None, stdout=None) -> Sinks:
    """The observers for a run over ``options``; the results directory is prepared here.

    ``stdout_is_data``: the tasks' stdout is a data stream the mode sinks
    consume (``--slurp``'s tar stream): never kept in memory nor written to
    ``host.out``. ``skip`` holds the targets done before (``--resume``): those
    whose ``.ret`` is ``0``, or ``done`` when the mode knows better (job mode:
    what ``summary.jsonl`` says, see :mod:`classh.resume`).
    ``routing`` and ``views`` are called with ``skip`` once the results
    directory was accepted, so a refused run creates no router file (nor any
    other file a view makes). ``stdout``: the display's stream, which a ``--json -``
    (or ``/dev/stdout``) is written through.
    """
    from .results import JsonFile, ResultsDir, prepare_results_dir

    sinks = Sinks(observers=list(mode))
    if options.results:
        sinks.skip = prepare_results_dir(options.results, resume=resume, overwrite=overwrite)
        if resume and done is not None:
            sinks.skip = set(done)
    router = routing(sinks.skip) if routing is not None else None
    if options.results:
        # The files of what succeeded before are never replaced (job mode: by a job that
        # took the same number in a new job list).
        sinks.observers.append(ResultsDir(options.results, replace=resume or overwrite,
                                          stdout=not stdout_is_data, protect=sinks.skip))
    if json_path:
        sinks.observers.append(JsonFile(json_path, overwrite=overwrite, stdout=stdout))
    if router is not None:
        sinks.observers.append(router)
    sinks.observers += list(views(sinks.skip))
    needs_output = any(o.needs_output for o in sinks.observers)
    if not needs_output:
        sinks.keep = 0
    elif options.results and not json_path:
        sinks.keep = KEEP_WITH_RESULTS  # the files have it all; --json must have it all too
    if stdout_is_data:
        sinks.keep = (0, sinks.keep)
    return sinks
