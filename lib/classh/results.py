"""Result records: plain data about one host's run, and what follows from them.

A :class:`Record` is what classh knows about one target once its command has
ended. Displays, result files and routers consume records; nothing here prints.
"""
from __future__ import annotations

import base64
import codecs
import contextlib
import errno
import json
import os
import signal as _signal
import stat
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .observers import Observer, SinkError

__all__ = [
    "Record", "Capture", "Tally",
    "OK", "FAILED", "SSH_ERROR", "TIMEOUT", "KILLED",
    "STATUSES", "PROGRESS_CHAR", "exit_status", "describe_exit", "last_line",
    "record_to_dict", "record_from_dict", "json_line", "json_line_pieces", "load_results",
    "ResultsDir", "ResultsError", "NewFile", "JsonFile", "prepare_results_dir", "result_path",
    "open_new", "write_new", "open_directory", "ret_text", "write_all",
    "STDOUT_PATHS", "check_plain_file", "open_record_file",
]

OK = "ok"
FAILED = "failed"
SSH_ERROR = "ssh_error"
TIMEOUT = "timeout"
KILLED = "killed"
STATUSES = (OK, FAILED, SSH_ERROR, TIMEOUT, KILLED)

#: ``--progress`` characters: success, remote error, ssh error, killed or timed out.
PROGRESS_CHAR = {OK: ".", FAILED: "?", SSH_ERROR: "~", TIMEOUT: "!", KILLED: "!"}

SSH_ERROR_EXIT = 255


@dataclass
class Record:
    """Everything recorded about one target's run.

    ``stdout``/``stderr`` hold the captured bytes (only the first
    ``stdout_total``-bounded part when capture was limited; see
    ``*_truncated``). Times are epoch seconds.
    """

    host: str
    exitcode: Optional[int] = None
    signal: Optional[int] = None
    timed_out: bool = False
    interrupted: bool = False
    ssh_error: bool = False
    stdout: bytes = b""
    stderr: bytes = b""
    started: float = 0.0
    stopped: float = 0.0
    error: Optional[str] = None  # classh's own reason, e.g. "could not start ssh"
    stdout_size: int = 0
    stderr_size: int = 0
    extra: Dict[str, object] = field(default_factory=dict)
    #: Job mode: the job's id, the node it ran on (last attempt), its text, attempts made,
    #: and with ``--gpus`` the index of the GPU it ran on.
    job: Optional[int] = None
    node: Optional[str] = None
    command: Optional[str] = None
    attempts: int = 1
    gpu: Optional[int] = None
    #: Job mode's blocks (``--input``): the block's identity, ``block-N:HASH``.
    block: Optional[str] = None
    #: Job mode: the node of each attempt, in order (the last one is ``node``).
    attempt_nodes: Optional[List[str]] = None
    #: The exit status that means success (``--task-success-code``).
    success_code: int = 0
    #: The command ended but its stdout/stderr stayed open and silent (a background
    #: process held them) until classh gave them up: output may be missing.
    output_cut: bool = False

    @property
    def status(self) -> str:
        """One of OK, FAILED, SSH_ERROR, TIMEOUT, KILLED."""
        if self.timed_out:
            return TIMEOUT
        if self.interrupted:
            return KILLED
        if self.ssh_error:
            return SSH_ERROR
        if self.signal is not None:
            return KILLED
        if self.exitcode == SSH_ERROR_EXIT or self.exitcode is None:
            return SSH_ERROR
        return OK if self.exitcode == self.success_code and not self.output_cut else FAILED

    @property
    def ok(self) -> bool:
        """True when the command ran and exited 0."""
        return self.status == OK

    @property
    def duration(self) -> float:
        """Seconds between start and stop."""
        return max(0.0, self.stopped - self.started)

    @property
    def stdout_truncated(self) -> bool:
        """True when only the start of stdout was kept in memory."""
        return self.stdout_size > len(self.stdout)

    @property
    def stderr_truncated(self) -> bool:
        """True when only the start of stderr was kept in memory."""
        return self.stderr_size > len(self.stderr)

    # The classh seed's module API names.
    @property
    def output(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def errors(self) -> str:
        """stderr decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")


def some_names(items: List[str], shown: int = 8) -> str:
    """``a, b, c and 5 more``: the first ``shown`` of ``items``, then how many are left out."""
    more = len(items) - shown
    return ", ".join(items[:shown]) + (" and %d more" % more if more > 0 else "")


def last_line(data: bytes, limit: Optional[int] = None) -> str:
    """The last line of ``data`` that is not blank, stripped (at most its last ``limit``
    characters): what a tool said last, for a one-line message."""
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    return last if limit is None else last[-limit:]


def describe_exit(record: Record) -> str:
    """Short text for a record's outcome: ``0``, ``7``, ``timeout``, ``SIGKILL``...

    Any ssh error reads ``255`` (ssh's own code), even when classh ended the
    ssh itself (a refused login killed with SIGTERM), so that ``.ret`` and
    the display agree with the status.
    """
    if record.timed_out:
        return "timeout"
    if record.interrupted:
        return "interrupted"
    if record.status == SSH_ERROR:
        return str(SSH_ERROR_EXIT)
    if record.signal is not None:
        try:
            return _signal.Signals(record.signal).name
        except ValueError:
            return "signal %d" % record.signal
    if record.exitcode is None:
        return "error"
    if record.output_cut and record.exitcode == record.success_code:
        return "incomplete"
    return str(record.exitcode)


class Capture:
    """Collects one output stream in memory, keeping at most ``limit`` bytes."""

    __slots__ = ("chunks", "kept", "size", "limit")

    def __init__(self, limit: Optional[int] = None):
        self.chunks = []
        self.kept = 0
        self.size = 0
        self.limit = limit

    def write(self, data: bytes) -> None:
        """Add ``data``; bytes past the limit are counted but not kept."""
        self.size += len(data)
        if self.limit is not None:
            room = self.limit - self.kept
            if room <= 0:
                return
            data = data[:room]
        self.chunks.append(data)
        self.kept += len(data)

    def value(self) -> bytes:
        """The kept bytes."""
        return b"".join(self.chunks)


class Tally:
    """Counts of records by status, and the exit status they add up to."""

    def __init__(self, records: Iterable[Record] = ()):
        self.counts = dict.fromkeys(STATUSES, 0)
        for record in records:
            self.add(record)

    def add(self, record: Record) -> None:
        """Count one finished record."""
        self.counts[record.status] += 1

    @property
    def total(self) -> int:
        """Number of records counted."""
        return sum(self.counts.values())

    def exit_status(self) -> int:
        """The process exit status for these records (pssh's convention)."""
        return exit_status(self.counts)


def exit_status(counts: Dict[str, int]) -> int:
    """4 if any ssh error, else 3 if any timed out or killed, else 5 if any failed, else 0."""
    if counts.get(SSH_ERROR):
        return 4
    if counts.get(TIMEOUT) or counts.get(KILLED):
        return 3
    if counts.get(FAILED):
        return 5
    return 0



# -- JSON ---------------------------------------------------------------------

def record_to_dict(record: Record, with_output: bool = True) -> dict:
    """A record as JSON-ready data, lossless: each output stream is ``stdout``/``stderr``
    (text) when its bytes are valid UTF-8, else ``stdout_base64``/``stderr_base64``."""
    data = {
        "host": record.host,
        "status": record.status,
        "exitcode": record.exitcode,
        "signal": record.signal,
        "timed_out": record.timed_out,
        "ssh_error": record.status == SSH_ERROR,
        "interrupted": record.interrupted,
        "started": round(record.started, 6),
        "stopped": round(record.stopped, 6),
        "duration": round(record.duration, 6),
        "stdout_size": record.stdout_size,
        "stderr_size": record.stderr_size,
    }
    if record.error:
        data["error"] = record.error
    if record.output_cut:
        data["output_cut"] = True
    if record.job is not None:
        data.update(job=record.job, node=record.node, attempts=record.attempts)
        if record.attempt_nodes:
            data["attempt_nodes"] = list(record.attempt_nodes)
        if record.gpu is not None:
            data["gpu"] = record.gpu
        if record.block is not None:
            data["block"] = record.block
        data.update(_command_to_dict(record.command))
    if with_output:
        for name, value in (("stdout", record.stdout), ("stderr", record.stderr)):
            try:
                data[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                data[name + "_base64"] = base64.b64encode(value).decode("ascii")
    return data


def _command_to_dict(command: Optional[str]) -> dict:
    """``{"command": text}``, or ``{"command_base64": ...}`` for a command holding bytes that
    are not UTF-8 (decoded with surrogateescape, as Python reads a command line)."""
    if command is not None:
        try:
            command.encode("utf-8")
        except UnicodeEncodeError:
            raw = command.encode("utf-8", "surrogateescape")
            return {"command_base64": base64.b64encode(raw).decode("ascii")}
    return {"command": command}


def command_from_dict(data: dict) -> Optional[str]:
    """A job's command from :func:`record_to_dict`'s data (bytes not UTF-8 as surrogates)."""
    if "command_base64" in data:
        try:
            return base64.b64decode(data["command_base64"]).decode("utf-8", "surrogateescape")
        except (TypeError, ValueError):
            return None  # not written by classh
    return data.get("command")


def _output_from_dict(data: dict, name: str) -> bytes:
    if name + "_base64" in data:
        return base64.b64decode(data[name + "_base64"])
    return data.get(name, "").encode("utf-8")


def record_from_dict(data: dict) -> Record:
    """The inverse of :func:`record_to_dict`: the output bytes exactly as they were."""
    stdout = _output_from_dict(data, "stdout")
    stderr = _output_from_dict(data, "stderr")
    return Record(
        host=data["host"],
        exitcode=data.get("exitcode"),
        signal=data.get("signal"),
        timed_out=bool(data.get("timed_out")),
        interrupted=bool(data.get("interrupted")),
        ssh_error=bool(data.get("ssh_error")),
        stdout=stdout,
        stderr=stderr,
        started=float(data.get("started") or 0.0),
        stopped=float(data.get("stopped") or 0.0),
        error=data.get("error"),
        stdout_size=int(data.get("stdout_size", len(stdout))),
        stderr_size=int(data.get("stderr_size", len(stderr))),
        job=data.get("job"),
        node=data.get("node"),
        command=command_from_dict(data),
        attempts=int(data.get("attempts", 1)),
        gpu=data.get("gpu"),
        block=data.get("block"),
        attempt_nodes=data.get("attempt_nodes"),
        output_cut=bool(data.get("output_cut")),
    )


def json_line(record: Record, with_output: bool = True) -> bytes:
    """One JSON Lines line (with its newline) for ``record``."""
    return json.dumps(record_to_dict(record, with_output), ensure_ascii=False).encode() + b"\n"


def json_line_pieces(record: Record, stdout: Callable[[], Iterable[bytes]],
                     stderr: Callable[[], Iterable[bytes]]) -> Iterator[bytes]:
    """The bytes of :func:`json_line` for ``record`` with the output that ``stdout()`` and
    ``stderr()`` give in pieces (each called for every pass over the stream), made piece by
    piece: an output of GBs is never whole in memory, encoded or not."""
    head = json.dumps(record_to_dict(record, with_output=False), ensure_ascii=False)
    yield head[:-1].encode()
    for name, pieces in (("stdout", stdout), ("stderr", stderr)):
        if _valid_utf8(pieces()):
            yield (', "%s": "' % name).encode()
            yield from _json_text(pieces())
        else:
            yield (', "%s_base64": "' % name).encode()
            yield from _base64_pieces(pieces())
        yield b'"'
    yield b"}\n"


def _valid_utf8(pieces: Iterable[bytes]) -> bool:
    """True when the bytes of ``pieces``, joined, are valid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for piece in pieces:
            decoder.decode(piece)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _json_text(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Valid UTF-8 ``pieces`` as the inside of a JSON string, as json.dumps writes it."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    for piece in pieces:
        text = decoder.decode(piece)
        if text:
            yield json.dumps(text, ensure_ascii=False)[1:-1].encode()


def _base64_pieces(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The base64 of the bytes of ``pieces``, joined, encoded a piece at a time."""
    rest = b""
    for piece in pieces:
        data = rest + piece
        cut = len(data) - len(data) % 3
        rest = data[cut:]
        if cut:
            yield base64.b64encode(data[:cut])
    if rest:
        yield base64.b64encode(rest)


# -- results directory ----------------------------------------------------------

SUMMARY = "summary.jsonl"
_SUFFIXES = (".out", ".err", ".ret")


class ResultsError(Exception):
    """A results directory or file that classh may not use; the message names it."""


def result_path(directory: str, host: str, suffix: str) -> str:
    """``directory/host.suffix``, refusing any name that could leave ``directory``."""
    if not host or "/" in host or "\0" in host or host in (".", ".."):
        raise ResultsError("host name %r cannot be a file name" % host)
    return os.path.join(directory, host + suffix)


def ret_text(record: Record) -> bytes:
    """What ``host.ret`` holds: the exit code (``255`` for any ssh error), or ``timeout``,
    ``interrupted``, a signal name."""
    return describe_exit(record).encode() + b"\n"


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC


def open_directory(path: str) -> int:
    """An fd for the directory ``path`` (files are then made relative to it, so a
    directory swapped for a link later is never written through)."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)


def open_new(name: str, dir_fd: Optional[int] = None, replace: bool = False,
             mode: int = 0o644) -> int:
    """Create ``name`` (in ``dir_fd``) for writing, never through a symlink.

    The file must not exist (FileExistsError); with ``replace`` whatever is
    there (a file, a planted symlink) is unlinked first and a new file made
    with ``O_EXCL``, so a link swapped in between is refused, not followed.
    """
    if replace:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
    return os.open(name, _NEW_FILE, mode, dir_fd=dir_fd)


def write_new(name: str, data: bytes, dir_fd: Optional[int] = None, replace: bool = False) -> None:
    """Create ``name`` as :func:`open_new` does and write ``data`` to it whole."""
    fd = open_new(name, dir_fd, replace=replace)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def prepare_results_dir(directory: str, resume: bool = False, overwrite: bool = False) -> set:
    """Create or check ``directory``; return the hosts to skip (``--resume``: those whose .ret is 0).

    An existing non-empty directory is refused unless ``resume`` or ``overwrite``.
    A ``.ret`` that is a symlink counts as not done.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ResultsError("results directory %r exists and is not a directory" % directory)
    try:
        os.makedirs(directory, exist_ok=True)
        names = os.listdir(directory)
    except OSError as exc:
        raise ResultsError("cannot use results directory %r: %s" % (directory, exc.strerror)) from None
    if names and not (resume or overwrite):
        raise ResultsError(
            "results directory %r is not empty (use --resume or --overwrite)" % directory)
    if not resume:
        return set()
    done = set()
    for name in names:
        if name.endswith(".ret"):
            try:
                fd = os.open(os.path.join(directory, name), os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
                with os.fdopen(fd, "rb") as ret:
                    if ret.read(64).strip() == b"0":
                        done.add(name[:-4])
            except OSError:
                continue
    return done


#: Job mode: the file of a results directory holding the id of the run that wrote it last.
RUN_ID = "run-id"


def write_run_id(directory: str, run_id: str) -> None:
    """Job mode: ``DIR/run-id`` holds ``run_id``, one line (a resumed run replaces the one
    before); never written through a symlink. ResultsError when it cannot be written."""
    path = os.path.join(directory, RUN_ID)
    try:
        dir_fd = open_directory(directory)
        try:
            write_new(RUN_ID, run_id.encode() + b"\n", dir_fd, replace=True)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ResultsError("cannot write %r: %s" % (path, exc.strerror)) from None


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _end_last_line(fd: int) -> None:
    """End a file's last line when a kill or a full disk cut it short, so that what is
    appended next starts a line of its own (``fd``: open for reading and appending)."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        write_all(fd, b"\n")


class ResultsDir(Observer):
    """Observer writing ``host.out``/``host.err`` as output arrives, then ``host.ret`` and
    a line of ``summary.jsonl`` for each finished host.

    ``replace`` lets files of hosts being rerun (``--resume``/``--overwrite``)
    be replaced; otherwise an existing file is never touched. No file is
    ever written through a symlink: files are made relative to an fd of the
    directory, with ``O_NOFOLLOW``, and a replaced one is unlinked and made
    anew with ``O_EXCL``. Without ``stdout`` the .out files stay empty
    (``--slurp``: stdout is a tar stream).

    A write error raises :class:`SinkError`: with the host for its own files
    (further output of that stream is dropped, ``finished`` still writes
    ``.ret`` and the summary line), with ``host=None`` for ``summary.jsonl``.
    ``close`` never raises and closes every fd.
    """

    def __init__(self, directory: str, replace: bool = False, stdout: bool = True,
                 protect: Iterable[str] = ()):
        self.directory = directory
        self.replace = replace
        #: Hosts (jobs) whose files are never replaced, even with ``replace``.
        self.protect = frozenset(protect)
        self.streams = (1, 2) if stdout else (2,)
        self._open: Dict[str, Dict[int, int]] = {}
        self._summary_path = os.path.join(directory, SUMMARY)
        try:
            self._dir = open_directory(directory)
        except OSError as exc:
            raise ResultsError("cannot use results directory %r: %s"
                               % (directory, exc.strerror)) from None
        self._summary = -1
        try:
            self._summary = os.open(SUMMARY, os.O_RDWR | os.O_CREAT | os.O_APPEND | _NOFOLLOW
                                    | _CLOEXEC, 0o644, dir_fd=self._dir)
            _end_last_line(self._summary)
        except OSError as exc:
            for fd in (self._summary, self._dir):
                if fd >= 0:
                    _close_quietly(fd)
            raise ResultsError("cannot write %r: %s" % (self._summary_path, exc.strerror)
                               + (" (a symlink?)" if exc.errno == errno.ELOOP else "")) from None

    def _name(self, host: str, suffix: str) -> str:
        return os.path.basename(result_path(self.directory, host, suffix))

    def _create(self, host: str, suffix: str) -> int:
        """A new ``host.suffix``; SinkError (for the host) when it cannot be made."""
        name = self._name(host, suffix)
        with SinkError.wrap(os.path.join(self.directory, name), host):
            return open_new(name, self._dir, replace=self._replaces(host))

    def _replaces(self, host: str) -> bool:
        return self.replace and host not in self.protect

    def _create_outputs(self, host: str) -> Dict[int, int]:
        files = self._open[host] = {}
        for fd, suffix in ((1, ".out"), (2, ".err")):
            files[fd] = self._create(host, suffix)
        return files

    def started(self, task) -> None:
        """Create the host's .out and .err files (a .ret of an earlier run is removed)."""
        host = task.key
        if self._replaces(host):
            # A .ret left from an earlier run must not describe this one.
            with SinkError.wrap(os.path.join(self.directory, self._name(host, ".ret")), host):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._name(host, ".ret"), dir_fd=self._dir)
        self._create_outputs(host)

    def output(self, task, fd: int, data: bytes) -> None:
        """Append ``data`` to the host's .out (fd 1) or .err (fd 2)."""
        if fd not in self.streams:
            return
        files = self._open.get(task.key)
        target = files.get(fd, -1) if files else -1
        if target < 0:
            return  # the file failed before: that error was raised already
        try:
            write_all(target, data)
        except OSError as exc:
            files[fd] = -1
            _close_quietly(target)
            suffix = ".out" if fd == 1 else ".err"
            raise SinkError(os.path.join(self.directory, self._name(task.key, suffix)),
                            exc, task.key) from exc

    def retried(self, task, record: Record) -> None:
        """An attempt that runs again (job mode): its partial .out and .err go away, so that
        the final attempt's files are the only ones."""
        files = self._open.pop(task.key, {})
        for fd in files.values():
            if fd >= 0:
                _close_quietly(fd)
        for suffix in (".out", ".err"):
            name = self._name(task.key, suffix)
            with SinkError.wrap(os.path.join(self.directory, name), task.key):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self._dir)

    def finished(self, task, record: Record) -> None:
        """Close the output files, write .ret and the summary line.

        .ret is written last of the host's files, in one small write: a run
        killed in between leaves it missing or empty, never ``0``, so
        ``--resume`` reruns the host. The summary line is written even when
        the host's own files failed; its failure is raised first.
        """
        host = record.host
        host_error = None
        files = self._open.pop(host, None)
        if files is None:  # never started (classh could not spawn ssh)
            try:
                files = self._create_outputs(host)
            except SinkError as exc:
                host_error = exc
            files = self._open.pop(host, {})
        for fd in files.values():
            if fd >= 0:
                _close_quietly(fd)
        try:
            self._write_ret(record)
        except SinkError as exc:
            host_error = host_error or exc
        with SinkError.wrap(self._summary_path):
            write_all(self._summary, json_line(record, with_output=False))
        if host_error is not None:
            raise host_error

    def _write_ret(self, record: Record) -> None:
        ret = self._create(record.host, ".ret")
        try:
            with SinkError.wrap(os.path.join(self.directory, self._name(record.host, ".ret")),
                                record.host):
                write_all(ret, ret_text(record))
        finally:
            _close_quietly(ret)

    def close(self) -> None:
        """Close every file still open (never raises)."""
        for files in self._open.values():
            for fd in files.values():
                if fd >= 0:
                    _close_quietly(fd)
        self._open.clear()
        for name in ("_summary", "_dir"):
            fd = getattr(self, name)
            if fd >= 0:
                _close_quietly(fd)
                setattr(self, name, -1)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the blocking ``fd`` (OSError on failure)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


#: Paths that mean classh's own stdout for a file of records (GNU parallel's ``--joblog -``).
STDOUT_PATHS = ("-", "/dev/stdout")

_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


def check_plain_file(path: str, what: str, hint: str = " (or - for stdout)") -> bool:
    """True when ``path`` exists as a regular file, False when nothing is there; a
    ResultsError for anything else (a link, a device, a pipe...): classh replaces or
    unlinks none of them. ``hint`` ends the message."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ResultsError("cannot write %s %r: %s" % (what, path, exc.strerror)) from None
    if stat.S_ISREG(mode):
        return True
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise ResultsError("%s %r is %s: give a regular file%s" % (what, path, kind, hint))


def open_record_file(path: str, what: str, overwrite: bool = False,
                     append: bool = False) -> Tuple[int, bool]:
    """``(fd, empty)``: where a file of records is written, and whether it starts empty.

    ``-`` and ``/dev/stdout`` are classh's stdout. Otherwise the path must be
    new, or a regular file that ``overwrite`` truncates or ``append`` extends;
    a link, device, pipe... is refused (ResultsError), nothing is ever unlinked
    and no symlink is followed (``O_NOFOLLOW``, checked again once open).
    """
    if path in STDOUT_PATHS:
        return os.dup(1), True
    exists = check_plain_file(path, what)
    if exists and not (overwrite or append):
        raise ResultsError("%s %r exists: classh never overwrites results (use --overwrite)"
                           % (what, path))
    try:
        if not exists:
            return open_new(path), True
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | _NOFOLLOW | _CLOEXEC
                     | (os.O_APPEND if append else 0))
    except FileExistsError:
        raise ResultsError("%s %r appeared while classh started: not overwritten"
                           % (what, path)) from None
    except OSError as exc:
        raise ResultsError("cannot write %s %r: %s" % (what, path, exc.strerror)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ResultsError("%s %r is not a regular file any more: not written" % (what, path))
    os.set_blocking(fd, True)
    if not append:
        os.ftruncate(fd, 0)
    return fd, not append or info.st_size == 0


class NewFile(Observer):
    """A sink appending to one file that every record goes to (``--json``, ``--joblog``).

    The file must not exist (``overwrite``: an existing regular file is
    truncated; ``append``: written after what it holds); ``-`` and
    ``/dev/stdout`` are classh's stdout; see :func:`open_record_file`. A write
    error raises :class:`SinkError` with ``host=None``: every record goes
    there, so the run ends cleanly. ``what`` names the file in messages;
    ``empty`` says whether it started empty. ``stdout`` (a stream with
    ``write``, e.g. the display's): what stdout paths are written through, so
    that rows never land inside another writer's output.
    """

    what = "file"

    def __init__(self, path: str, overwrite: bool = False, append: bool = False,
                 stdout=None):
        self.path = path
        self.stdout = stdout if path in STDOUT_PATHS else None
        self._fd, self.empty = (-1, True) if self.stdout is not None else open_record_file(
            path, self.what, overwrite, append)

    def append(self, data: bytes) -> None:
        """Write ``data`` at the end of the file (SinkError on failure; nothing after one)."""
        if self.stdout is not None:
            self.stdout.write(data)
            return
        if self._fd < 0:
            return
        try:
            write_all(self._fd, data)
        except OSError as exc:
            self.close()
            raise SinkError(self.path, exc) from exc

    def close(self) -> None:
        """Close the file (never raises)."""
        if self._fd >= 0:
            _close_quietly(self._fd)
            self._fd = -1


class JsonFile(NewFile):
    """``--json FILE``: every record, output included, as JSON Lines."""

    what = "JSON file"
    needs_output = True

    def finished(self, task, record: Record) -> None:
        """Append the record."""
        self.append(json_line(record))


def load_results(path: str) -> Dict[str, Record]:
    """Read saved results back: a ``--json`` file, or a ``-o`` results directory.

    Returns ``{host: Record}``; for a directory, output comes from ``host.out``
    and ``host.err`` and the last ``summary.jsonl`` line of each host wins.
    """
    if os.path.isdir(path):
        return _load_dir(path)
    records = {}
    with open(path, "rb") as lines:
        for line in lines:
            if line.strip():
                record = record_from_dict(json.loads(line))
                records[record.host] = record
    return records


def _load_dir(directory: str) -> Dict[str, Record]:
    records: Dict[str, Record] = {}
    summary = os.path.join(directory, SUMMARY)
    if os.path.exists(summary):
        records = load_results(summary)
    for name in os.listdir(directory):
        if name.endswith(".ret") and name[:-4] not in records:
            records[name[:-4]] = _record_from_ret(directory, name[:-4])
    for host, record in records.items():
        record.stdout = _read_or_empty(result_path(directory, host, ".out"))
        record.stderr = _read_or_empty(result_path(directory, host, ".err"))
        record.stdout_size, record.stderr_size = len(record.stdout), len(record.stderr)
    return records


def _record_from_ret(directory: str, host: str) -> Record:
    text = _read_or_empty(result_path(directory, host, ".ret")).decode().strip()
    record = Record(host=host)
    if text.isdigit():
        record.exitcode = int(text)
    elif text == "timeout":
        record.timed_out = True
    elif text in _signal.Signals.__members__:
        record.signal = _signal.Signals[text].value
    elif text == "interrupted":
        record.interrupted = True
    else:
        record.ssh_error = True
    return record


def _read_or_empty(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""
