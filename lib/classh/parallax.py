"""parallax 1.0.6's Python API on classh's engine: a drop-in for ``import parallax``.

A program written for parallax switches by changing one import::

    from classh import parallax        # was: import parallax

    opts = parallax.Options()
    opts.limit = 10
    opts.ssh_options = ["ConnectTimeout=5"]
    for host, result in parallax.call(["web1", ("web2", "2222", "admin")], "uptime", opts).items():
        if isinstance(result, parallax.Error):
            print(host, result)              # "Exited with error code 1, Error output: ..."
        else:
            rc, stdout, stderr = result      # bytes (None when empty)

Same calls, arguments, options and result shapes as parallax:
``call``/``run`` give ``{host: (rc, stdout, stderr) | Error}`` with bytes (an
empty stream is ``opts.outdir``/``opts.errdir``, None by default), ``copy``
``{host: (0, None, None) | Error}``, ``slurp`` ``{host: (0, None, None,
'DIR/HOST/dst') | Error}``. Results are keyed by the host as given (a
tuple's host name). The work runs through classh's own engine
(:mod:`classh.api`): one event loop, no threads, timeouts that reach the
remote command, passwords answered through a pty, never on argv or in the
environment; ``copy``/``slurp`` go over ssh with ``tar`` (no scp) and put
files where ``scp -r`` would.
"""
from __future__ import annotations

import getpass
import os
import shlex
import shutil
import sys
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from . import api
from .display import LinesDisplay, SafeStream
from .observers import Observer, SinkError
from .options import (OptionError, Options as ClasshOptions, UnknownOption, port_number, positive_int,
                      seconds, split_ssh_options)
from .remote import remote_word
from .results import (FAILED, OK, Record, ResultsError, _close_quietly, open_directory, open_new,
                      result_path, write_all)
from .targets import Target
from .transfer import SlurpSink, TransferError, copy_plan, pack, safe_extract, slurp_command

__all__ = ["call", "run", "copy", "slurp", "Options", "Error", "DEFAULT_PARALLELISM",
           "DEFAULT_TIMEOUT"]

DEFAULT_PARALLELISM = 32
DEFAULT_TIMEOUT = 0  # no limit

#: What every ssh gets first, as parallax gives it (ssh keeps the first value it sees).
_SSH_OPTIONS = ["NumberOfPasswordPrompts=1", "SendEnv=PARALLAX_NODENUM PARALLAX_HOST"]
_WARNING = ("Warning: do not enter your password if anyone else has superuser\n"
            "privileges or access to your account.\n")


class Options:
    """parallax's options: make one, then set attributes (``opts.limit = 10``).

    ``limit`` (32) hosts at once; ``timeout`` seconds per host (0: none);
    ``askpass`` asks once for a password (on the terminal) that answers
    ssh's prompts; ``outdir``/``errdir`` get each host's stdout/stderr in a
    file named after it; ``ssh_options`` are ``-o`` values, ``ssh_extra``
    more ssh arguments (``["-F", "cluster.cfg"]``), ``ssh_key`` a key file
    (``-i``); ``default_user`` logs in where a host names no user;
    ``input_stream`` (bytes) is every command's stdin; ``inline`` and
    ``inline_stdout`` keep the output in the results; ``print_out`` writes
    ``host: line`` to stdout as lines arrive; ``recursive`` (copy, slurp)
    copies directories; ``localdir`` (slurp) is where ``HOST/dst`` go.
    ``verbose``, ``quiet`` and ``warn_message`` are taken too.

    A new Options starts from the ``PARALLAX_*`` environment:
    ``PARALLAX_PAR`` (limit), ``PARALLAX_USER`` (default_user),
    ``PARALLAX_OUTDIR`` (outdir), ``PARALLAX_OPTIONS`` (ssh_options),
    ``PARALLAX_VERBOSE`` (verbose). An attribute parallax does not know is
    refused (:class:`~classh.options.UnknownOption`, an AttributeError).
    """

    limit = DEFAULT_PARALLELISM
    timeout = DEFAULT_TIMEOUT
    askpass = False
    outdir = None
    errdir = None
    ssh_key = None
    ssh_options: List[str] = []
    ssh_extra: List[str] = []
    verbose = False
    quiet = False
    print_out = False
    inline = True
    inline_stdout = False
    input_stream = None
    default_user = None
    recursive = True
    localdir = None
    warn_message = True

    def __init__(self):
        self.ssh_options = []  # each Options its own lists
        self.ssh_extra = []
        for name, value in options_from_env().items():
            setattr(self, name, value)

    def __setattr__(self, name: str, value) -> None:
        """Set an option; a name that is no parallax option is refused."""
        kind = type(self)
        if name.startswith("_") or not hasattr(kind, name) or callable(getattr(kind, name)):
            known = sorted(n for n in dir(kind) if not n.startswith("_") and not callable(getattr(kind, n)))
            raise UnknownOption("parallax.Options has no option %r (options: %s)"
                                % (name, ", ".join(known)))
        object.__setattr__(self, name, value)


#: ``PARALLAX_*`` variable -> the Options attribute it gives.
ENV_NAMES = {"PARALLAX_PAR": "limit", "PARALLAX_USER": "default_user",
             "PARALLAX_OUTDIR": "outdir", "PARALLAX_OPTIONS": "ssh_options",
             "PARALLAX_VERBOSE": "verbose"}


def options_from_env(environ: Optional[Mapping[str, str]] = None) -> dict:
    """Option values from the ``PARALLAX_*`` variables that are set (not empty)."""
    environ = os.environ if environ is None else environ
    values = {}
    for var, name in ENV_NAMES.items():
        text = environ.get(var)
        if not text:
            continue
        if name == "limit":
            values[name] = positive_int(var, text)
        elif name == "ssh_options":
            values[name] = split_ssh_options(text)
        elif name == "verbose":
            values[name] = text.strip().lower() not in ("0", "no", "false")
        else:
            values[name] = text
    return values


def hosts_from_env(environ: Optional[Mapping[str, str]] = None) -> List[Tuple]:
    """The hosts of the file named by ``PARALLAX_HOSTS`` (pssh's host file: one
    ``[user@]host[:port] [user]`` a line, ``#`` comments); an OptionError without it."""
    path = (os.environ if environ is None else environ).get("PARALLAX_HOSTS")
    if not path:
        raise OptionError("no hosts given and PARALLAX_HOSTS is not set")
    hosts = []
    with open(path) as lines:
        for line in lines:
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            user, _, name = fields[0].rpartition("@")
            name, _, port = name.partition(":")
            hosts.append((name, port or None, user or (fields[1] if len(fields) > 1 else None)))
    return hosts


class HostTask:
    """What parallax's ``Error.task`` tells about one host: ``host``, ``port``, ``user``,
    ``pretty_host``, ``exitstatus``, ``outputbuffer``, ``errorbuffer`` (bytes),
    ``failures`` (the reasons, words); ``record`` is classh's full Record."""

    def __init__(self, host: str, port, user: Optional[str], pretty_host: str):
        self.host = host
        self.port = port
        self.user = user
        self.pretty_host = pretty_host
        self.exitstatus: Optional[int] = None
        self.outputbuffer = b""
        self.errorbuffer = b""
        self.failures: List[str] = []
        self.killed = False
        self.record: Optional[Record] = None


class Error(api.Error):
    """parallax's Error: in place of a host's result, never raised.

    ``msg`` says what went wrong (``Exited with error code 1``, ``Timed
    out``...) and ``task`` is the host's :class:`HostTask`; ``str()`` adds
    the host's error output, as parallax does. It is a :class:`classh.Error`
    (an Exception) too: ``host``, ``rc``, ``stderr``, ``reason``, ``record``.
    """

    def __init__(self, msg: str, task: Optional[HostTask]):
        record = task.record if task is not None else None
        super().__init__(task.host if task else "", task.exitstatus if task else None,
                         record.errors if record else "", msg, record)
        self.msg = msg
        self.task = task

    def __str__(self) -> str:
        if self.task is not None and self.task.errorbuffer:
            return "%s, Error output: %s" % (self.msg, self.task.errorbuffer.decode("utf-8", "replace"))
        return self.msg


# -- hosts ------------------------------------------------------------------------

class _Host:
    """One host as parallax takes it (a name, or ``(host[, port[, user]])``) and as classh
    runs it (a Target)."""

    def __init__(self, spec, default_user: Optional[str]):
        if isinstance(spec, str):
            user, _, name = spec.rpartition("@")  # ssh reads user@host itself
            self.key, self.port, self.user = spec, None, None
            self.target = Target(name, user=user or None)
        else:
            name, port, user = (tuple(spec) + (None, None))[:3]
            self.key, self.port, self.user = name, port, user
            self.target = Target(name, user=user or None, port=port_number(port) if port else None)
        self.pretty = self.key
        if self.user and self.user != default_user:
            self.pretty = "%s@%s" % (self.user, self.pretty)
        if self.port:
            self.pretty = "%s:%s" % (self.pretty, self.port)


def _hosts(hosts, opts: Options) -> Dict[str, _Host]:
    """``{classh label: _Host}`` in the order given (a host given twice runs once)."""
    if hosts is None:
        hosts = hosts_from_env()
    found: Dict[str, _Host] = {}
    for spec in hosts:
        host = _Host(spec, opts.default_user)
        found.setdefault(host.target.label, host)
    return found


# -- options ----------------------------------------------------------------------

def _input(stream) -> Optional[bytes]:
    """``input_stream`` as bytes: bytes, text, or a file object read once."""
    if stream is None or isinstance(stream, bytes):
        return stream
    if isinstance(stream, str):
        return stream.encode()
    return _input(stream.read())


def _password(opts: Options) -> Optional[str]:
    """With ``askpass``: ask once, on the terminal, as parallax does."""
    if not opts.askpass:
        return None
    return getpass.getpass((_WARNING if opts.warn_message else "") + "Password: ")


def _engine_options(opts: Options, data: Optional[bytes] = None) -> ClasshOptions:
    """classh's Options for parallax's ``opts`` (``data``: every host's stdin)."""
    ssh = ["ssh"] + (["-i", opts.ssh_key] if opts.ssh_key else []) + list(opts.ssh_extra)
    return ClasshOptions(numjobs=positive_int("limit", opts.limit),
                         timeout=seconds("timeout", opts.timeout),
                         user=opts.default_user or None,
                         ssh=" ".join(shlex.quote(word) for word in ssh),
                         ssh_options=_SSH_OPTIONS + list(opts.ssh_options),
                         password=_password(opts), input=data, expand=False, host_names=False)


def _make_dirs(*paths: Optional[str]) -> None:
    """Make each directory given (and its parents) unless it is there, as parallax does."""
    for path in paths:
        if path:
            os.makedirs(path, exist_ok=True)


# -- outdir / errdir ----------------------------------------------------------------

class _HostFiles(Observer):
    """parallax's ``outdir``/``errdir``: each host's stdout in ``OUTDIR/HOST`` and stderr
    in ``ERRDIR/HOST`` (HOST: ``[user@]host[:port]``) as output arrives; a file of an
    earlier call is replaced, never written through a symlink."""

    def __init__(self, dirs: Dict[int, str], names: Dict[str, str], streams: Sequence[int] = (1, 2)):
        self.paths = {fd: path for fd, path in dirs.items() if path}
        self.dirs: Dict[int, Tuple[str, int]] = {}
        self.names = names
        self.streams = streams
        self.files: Dict[Tuple[str, int], int] = {}

    def attach(self, loop) -> None:
        """Open the directories (files are made relative to them)."""
        self.dirs = {fd: (path, open_directory(path)) for fd, path in self.paths.items()}

    def _path(self, fd: int, key: str) -> str:
        """The file of host ``key`` for stream ``fd``."""
        return result_path(self.dirs[fd][0], self.names[key], "")

    def started(self, task) -> None:
        """Create the host's files."""
        for fd, (_path, dir_fd) in self.dirs.items():
            with SinkError.wrap(self._path(fd, task.key), task.key):
                self.files[task.key, fd] = open_new(self.names[task.key], dir_fd, replace=True)

    def output(self, task, fd: int, data: bytes) -> None:
        """Append ``data`` to the host's file for that stream."""
        target = self.files.get((task.key, fd), -1) if fd in self.streams else -1
        if target >= 0:
            try:
                write_all(target, data)
            except OSError as exc:  # that file gets no more; the host fails
                self.files[task.key, fd] = -1
                _close_quietly(target)
                raise SinkError(self._path(fd, task.key), exc, task.key) from exc

    def finished(self, task, record: Record) -> None:
        """Close the host's files."""
        for fd in self.dirs:
            _close_quietly(self.files.pop((task.key, fd), -1))

    def close(self) -> None:
        """Close every file and directory still open (never raises)."""
        for fd in list(self.files.values()) + [dir_fd for _, dir_fd in self.dirs.values()]:
            _close_quietly(fd)
        self.files.clear()
        self.dirs.clear()


# -- running ------------------------------------------------------------------------

def _run(hosts: Dict[str, _Host], command: str, opts: Options, engine: ClasshOptions,
         mode: Sequence[Observer] = (), stdout_is_data: bool = False) -> Dict[str, Record]:
    """Run ``command`` everywhere through classh's API: ``{label: Record}``."""
    _make_dirs(opts.outdir, opts.errdir)
    observers = list(mode)
    if opts.outdir or opts.errdir:
        names = {label: host.pretty for label, host in hosts.items()}
        observers.append(_HostFiles({1: opts.outdir, 2: opts.errdir}, names,
                                    (2,) if stdout_is_data else (1, 2)))
    if opts.print_out and not stdout_is_data:
        observers.append(LinesDisplay(SafeStream(sys.stdout.buffer), SafeStream(sys.stderr.buffer)))
    number = {label: n for n, label in enumerate(hosts)}

    def env(target: Target) -> Dict[str, str]:
        """What parallax puts in each ssh's environment (and sends with SendEnv)."""
        return {"PARALLAX_NODENUM": str(number[target.label]), "PARALLAX_HOST": hosts[target.label].key}

    targets = [host.target for host in hosts.values()]
    records = api.run_records(targets, command, engine, observers, stdout_is_data, task_env=env,
                              keep_on_sigint=True)
    for label in hosts:  # Ctrl-C came before these started
        records.setdefault(label, Record(host=label, error="Cancelled"))
    return records


def _failures(record: Record) -> List[str]:
    """parallax's words for what went wrong on a host (none: it succeeded)."""
    if record.timed_out:
        return ["Timed out"]
    if record.interrupted:
        return ["Interrupted"]
    if record.signal is not None:
        return ["Killed by signal %d" % record.signal]
    if record.exitcode is None:
        return [record.error or "Exited with error code 255"]
    reasons = ["Exited with error code %d" % record.exitcode] if record.exitcode else []
    return reasons + ([record.error] if record.error else [])


def _task(host: _Host, record: Record, opts: Options) -> HostTask:
    """The HostTask of a finished host, its buffers as parallax keeps them."""
    task = HostTask(host.key, host.port, host.user, host.pretty)
    task.record = record
    task.failures = _failures(record)
    task.killed = record.timed_out or record.interrupted
    if record.timed_out:
        task.exitstatus = -9  # parallax's SIGKILL
    elif record.signal is not None and not record.interrupted:
        task.exitstatus = -record.signal
    elif not record.interrupted:  # parallax gives none to what Ctrl-C killed
        task.exitstatus = record.exitcode
    if opts.inline or opts.inline_stdout:
        task.outputbuffer = record.stdout
    if opts.inline:
        task.errorbuffer = record.stderr
    return task


def _results(hosts: Dict[str, _Host], records: Dict[str, Record], opts: Options,
             is_error, extra: Tuple = ()) -> Dict[str, object]:
    """``{host: (rc, stdout or outdir, stderr or errdir, *extra(host)) | Error}``."""
    results: Dict[str, object] = {}
    for label, record in records.items():
        host = hosts[label]
        task = _task(host, record, opts)
        if is_error(record, task):
            results[host.key] = Error(", ".join(task.failures), task)
        else:
            results[host.key] = (task.exitstatus, task.outputbuffer or opts.outdir,
                                 task.errorbuffer or opts.errdir) + tuple(x(host) for x in extra)
    return results


def _any_failure(record: Record, task: HostTask) -> bool:
    """``call``'s errors (and copy's, slurp's): anything but an exit 0."""
    return bool(task.failures)


def _not_run(record: Record, task: HostTask) -> bool:
    """``run``'s errors: the command did not run to its end (ssh error, timeout, kill)."""
    return record.status not in (OK, FAILED)


def call(hosts, cmdline, opts=None):
    """Run ``cmdline`` on every host: ``{host: (rc, stdout, stderr) | Error}``; any
    non-zero exit (and an ssh error, a timeout) is an Error."""
    opts = opts or Options()
    found = _hosts(hosts, opts)
    engine = _engine_options(opts, _input(opts.input_stream))
    return _results(found, _run(found, cmdline, opts, engine), opts, _any_failure)


def run(hosts, cmdline, opts=None):
    """Like :func:`call`, but a command that ran and exited non-zero gives its
    ``(rc, stdout, stderr)``: an Error only for an ssh error (exit 255), a timeout or a kill."""
    opts = opts or Options()
    found = _hosts(hosts, opts)
    engine = _engine_options(opts, _input(opts.input_stream))
    return _results(found, _run(found, cmdline, opts, engine), opts, _not_run)


# -- copy -----------------------------------------------------------------------------

def _copy_plan(src: str, dst: str) -> Tuple[str, bytes]:
    """The remote command and archive putting ``src`` at ``dst`` as ``scp -r`` does.

    A file: into ``dst`` when it is a directory, else as ``dst``. A directory:
    into ``dst/NAME`` when ``dst`` is a directory, else as a new directory
    ``dst`` (its parent must exist). TransferError for a source classh cannot send.
    """
    if not os.path.isdir(src):
        return copy_plan([src], dst)
    copy_plan([src], dst)  # the same checks as classh --copy
    target = remote_word(dst)
    inside = remote_word(dst.rstrip("/") + "/" + os.path.basename(os.path.abspath(src)))
    command = ("if [ -d %s ]; then mkdir -p -- %s && tar -x -f - -C %s; "
               "else mkdir -- %s && tar -x -f - -C %s; fi" % (target, inside, inside, target, target))
    return command, pack([(src, ".")])


def _as_scp(records: Dict[str, Record]) -> Dict[str, Record]:
    """scp's exit status for a transfer: 1 for any failure but ssh's own (255)."""
    for record in records.values():
        if record.exitcode not in (None, 0, 255):
            record.exitcode = 1
    return records


def _local_refusal(src: str, recursive: bool) -> Optional[Tuple[int, str]]:
    """scp's exit status and message for a local ``src`` it cannot send, or None."""
    if not os.path.lexists(src):
        return 255, 'stat local "%s": No such file or directory' % src
    if os.path.isdir(src) and not recursive:
        return 1, 'local "%s" is not a regular file' % src
    return None


def _refused(hosts: Dict[str, _Host], status: int, reason: str) -> Dict[str, Record]:
    """Every host failed before anything ran, as scp fails: ``status``, ``scp: REASON``."""
    return {label: Record(host=label, exitcode=status, stderr=("scp: %s\n" % reason).encode())
            for label in hosts}


def copy(hosts, src, dst, opts=None):
    """Copy the local file or directory ``src`` to ``dst`` on every host, as ``scp -r``
    would: ``{host: (0, None, None) | Error}``."""
    opts = opts or Options()
    found = _hosts(hosts, opts)
    refusal = _local_refusal(src, opts.recursive)
    try:
        if refusal is None:
            command, archive = _copy_plan(src, dst)
    except TransferError as exc:
        refusal = 1, str(exc)
    if refusal is not None:
        return _results(found, _refused(found, *refusal), opts, _any_failure)
    records = _run(found, command, opts, _engine_options(opts, archive))
    return _results(found, _as_scp(records), opts, _any_failure)


# -- slurp ----------------------------------------------------------------------------

class _ScpSlurp(SlurpSink):
    """classh's slurp sink putting each host's copy at ``DIR/HOST/dst`` as ``scp -r`` does:
    into ``dst`` when that is a directory, else as ``dst`` (a file there replaced, a
    directory merged). ``keys`` maps each label to its parallax host (the directory name)."""

    def __init__(self, dest_dir: str, keys: Dict[str, str], dst: str):
        super().__init__(dest_dir)
        self.keys = keys
        self.dst = dst

    def host_dir(self, host: str) -> str:
        """``DIR/HOST``, HOST being the parallax host of label ``host``."""
        try:
            return result_path(self.dest_dir, self.keys[host], "")
        except (KeyError, ResultsError) as exc:
            raise TransferError(str(exc)) from None

    def _extract(self, pending) -> List[str]:
        """Unpack into a scratch directory in ``DIR/HOST``, then move the copy into place."""
        scratch = tempfile.mkdtemp(prefix=".classh-slurp-", dir=pending.directory)
        try:
            with self._archive(pending) as archive:
                names = safe_extract(archive, scratch)
            return [_scp_place(os.path.join(scratch, names[0]),
                               os.path.join(pending.directory, self.dst))]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _scp_place(source: str, target: str) -> str:
    """Move ``source`` to ``target`` as scp puts a copy; the path it took."""
    if os.path.isdir(target):
        target = os.path.join(target, os.path.basename(source))
    try:
        _move(source, target)
    except OSError as exc:
        raise TransferError("cannot write %s: %s" % (exc.filename or target, exc.strerror)) from None
    return target


def _is_dir(path: str) -> bool:
    """A directory, not a symlink to one."""
    return os.path.isdir(path) and not os.path.islink(path)


def _move(source: str, target: str) -> None:
    """``source`` as ``target``: a file replaces what is there, a directory is merged into
    an existing one; a directory where a file is (or the reverse) is a TransferError."""
    if _is_dir(source) and _is_dir(target):
        for name in os.listdir(source):
            _move(os.path.join(source, name), os.path.join(target, name))
        return
    if _is_dir(target) or (_is_dir(source) and os.path.lexists(target)):
        raise TransferError("%s: cannot overwrite %s with %s" % (
            target, "a directory" if _is_dir(target) else "a file",
            "a directory" if _is_dir(source) else "a file"))
    os.replace(source, target)


def _slurp_plan(src: str, recursive: bool) -> str:
    """The remote command writing ``src`` as a tar stream; without ``recursive`` a
    directory fails as scp fails."""
    command = slurp_command(src)
    if recursive:
        return command
    word = remote_word(src)
    return ("if [ -d %s ]; then echo %s >&2; exit 1; fi; %s"
            % (word, shlex.quote("scp: download %s: not a regular file" % src), command))


def slurp(hosts, src, dst, opts=None):
    """Copy ``src`` from every host to ``LOCALDIR/HOST/dst`` (``localdir``, else the
    current directory): ``{host: (0, None, None, 'LOCALDIR/HOST/dst') | Error}``.
    ``dst`` must be relative (ValueError)."""
    if os.path.isabs(dst):
        raise ValueError("slurp: Destination must be a relative path")
    opts = opts or Options()
    found = _hosts(hosts, opts)
    base = opts.localdir or ""
    local = {label: os.path.join(base, host.key, dst) for label, host in found.items()}
    _make_dirs(*(os.path.join(base, host.key) for host in found.values()))
    sink = _ScpSlurp(base or ".", {label: host.key for label, host in found.items()}, dst)
    records = _run(found, _slurp_plan(src, opts.recursive), opts, _engine_options(opts),
                   mode=[sink], stdout_is_data=True)
    by_key = {host.key: path for host, path in zip(found.values(), local.values())}
    return _results(found, _as_scp(records), opts, _any_failure,
                    extra=(lambda host: by_key[host.key],))
