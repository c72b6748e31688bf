"""Routers: ``-S DEST`` (successful hosts) and ``-E DEST`` (failed hosts).

A destination is, in this order (see :func:`make_router`):

1. ``-``: host names on classh's stdout;
2. ``|COMMAND``: COMMAND, any shell code, started once through ``/bin/sh -c``
   with host names written to its stdin as hosts complete;
3. an existing directory: ``host.out``/``host.err``, plus ``host.ret`` for ``-E``;
4. text holding a space: a command line, run as in 2; its first word must be
   an executable (a path, or a command on PATH), else the destination is
   refused (a typo such as ``mial -s done root`` never becomes a file);
5. a path with a ``/`` naming an executable file: that program, run as in 2;
6. anything else, a bare word such as ``test`` or ``ok.txt`` included: a
   file the names are appended to (never through a symlink).

Bare words are files even when a command of that name exists, so a
destination never silently swallows the names it was given: the names are
always somewhere to be seen. A command needs arguments, a path, or ``|``.
"""
from __future__ import annotations

import errno
import os
import shlex
import signal as _signal
from typing import Iterable, List, Optional

from .observers import Observer, SinkError
from .results import (STDOUT_PATHS, Record, ResultsError, open_directory, open_new, result_path,
                      ret_text, write_all)
from .spawn import SpawnError, find_executable, spawn

__all__ = ["RouterError", "make_router", "Routing", "Router", "StdoutRouter", "DirectoryRouter",
           "FileRouter", "PipeRouter"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_COPY_SIZE = 1 << 20


class RouterError(ValueError):
    """A destination classh cannot route to; the message names it."""


class Router(Observer):
    """One ``-S``/``-E`` destination; :class:`Routing` calls it. Every hook is a no-op."""

    def check(self, hosts: Iterable[str]) -> None:
        """Before the run: refuse (RouterError) when routing ``hosts`` would overwrite something."""

    def admit(self, host: str) -> None:
        """As ``host`` starts (a host read from a stream included): SinkError when its
        results could not be routed without overwriting."""

    def route(self, record: Record) -> None:
        """Send one finished host here."""

    def failure(self) -> Optional[str]:
        """A one-line message when this destination failed (a command's exit), else None."""
        return None

    def signal(self, signum: int) -> None:
        """Forward ``signum`` to what this destination runs (a pipeline)."""


class StdoutRouter(Router):
    """Host names, one a line, on classh's stdout (a SafeStream)."""

    def __init__(self, out):
        self.out = out

    def route(self, record: Record) -> None:
        """Print the host's name."""
        self.out.write(record.host.encode() + b"\n")


class FileRouter(Router):
    """Host names appended, one a line, to a file (never opened through a symlink).

    A write error is every host's (``SinkError`` with ``host=None``).
    """

    def __init__(self, path: str):
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _NOFOLLOW | _CLOEXEC,
                              0o644)
        except OSError as exc:
            why = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise RouterError("cannot append to %r: %s" % (path, why)) from None

    def route(self, record: Record) -> None:
        """Append the host's name."""
        if self.fd < 0:
            return
        try:
            write_all(self.fd, record.host.encode() + b"\n")
        except OSError as exc:
            self.close()
            raise SinkError(self.path, exc) from exc

    def close(self) -> None:
        """Close the file (never raises)."""
        if self.fd >= 0:
            _close_quietly(self.fd)
            self.fd = -1


class DirectoryRouter(Router):
    """``host.out`` and ``host.err`` (and ``host.ret`` with ``with_ret``) in a directory.

    With ``source`` (the run's results directory) the files are copied from
    there, so output of any size arrives whole; otherwise they are written
    from the record, which then must carry all of its output. Files are made
    relative to an fd of the directory with ``O_EXCL | O_NOFOLLOW``: nothing
    is ever overwritten nor written through a symlink. A host whose files
    cannot be written gets a ``SinkError`` naming it.
    """

    def __init__(self, directory: str, with_ret: bool, source: Optional[str] = None):
        self.directory = directory
        self.suffixes = (".out", ".err", ".ret") if with_ret else (".out", ".err")
        self.source = source
        self.needs_output = source is None
        try:
            self._dir = open_directory(directory)
        except OSError as exc:
            raise RouterError("cannot use directory %r: %s" % (directory, exc.strerror)) from None
        self._source_dir = -1

    def _names(self, host: str) -> List[str]:
        try:
            return [os.path.basename(result_path(self.directory, host, s)) for s in self.suffixes]
        except ResultsError as exc:
            raise RouterError(str(exc)) from None

    def check(self, hosts: Iterable[str]) -> None:
        """Refuse (RouterError) when a file of one of ``hosts`` is already there."""
        present = set(os.listdir(self.directory))
        for host in hosts:
            for name in self._names(host):
                if name in present:
                    raise RouterError("%r already exists: classh never overwrites results"
                                      % os.path.join(self.directory, name))

    def admit(self, host: str) -> None:
        """SinkError for ``host`` when one of its files is there already (a streamed host)."""
        for name in self._names(host):
            try:
                os.stat(name, dir_fd=self._dir, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise SinkError(os.path.join(self.directory, name), exc, host) from exc
            raise SinkError(os.path.join(self.directory, name),
                            FileExistsError(errno.EEXIST, "it exists: classh never overwrites"
                                                          " results"), host)

    def route(self, record: Record) -> None:
        """Write (or copy) the host's files."""
        contents = {".out": record.stdout, ".err": record.stderr, ".ret": ret_text(record)}
        for suffix, name in zip(self.suffixes, self._names(record.host)):
            with SinkError.wrap(os.path.join(self.directory, name), record.host):
                fd = open_new(name, self._dir)
                try:
                    if self.source is None:
                        write_all(fd, contents[suffix])
                    else:
                        self._copy(name, fd)
                finally:
                    _close_quietly(fd)

    def _copy(self, name: str, target: int) -> None:
        if self._source_dir < 0:
            self._source_dir = open_directory(self.source)
        source = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=self._source_dir)
        try:
            while True:
                data = os.read(source, _COPY_SIZE)
                if not data:
                    return
                write_all(target, data)
        finally:
            _close_quietly(source)

    def close(self) -> None:
        """Close the directories (never raises)."""
        for name in ("_dir", "_source_dir"):
            fd = getattr(self, name)
            if fd >= 0:
                _close_quietly(fd)
                setattr(self, name, -1)


class PipeRouter(Router):
    """A command started once through the shell; host names go to its stdin as hosts end.

    It shares classh's stdout/stderr and process group (a Ctrl-C on the
    terminal reaches both, as in a shell pipeline); :meth:`signal` forwards
    a signal sent to classh alone. When it exits early (``head -1``) the names
    meant for it are dropped; classh carries on. An exit other than 0 is a
    failure (:meth:`failure`), as with ``set -o pipefail``.
    """

    def __init__(self, command: str, label: str = "-S"):
        self.command = command
        self.label = label
        self.loop = None
        self.pid = None
        self.fd = -1
        self.pending = bytearray()
        self.closing = False
        self.exited = False
        self.status: Optional[int] = None

    @property
    def title(self) -> str:
        """How the destination was given: ``-S 'sort > x'``."""
        return "%s %s" % (self.label, shlex.quote(self.command))

    def attach(self, loop) -> None:
        """Start the command; its writes and exit are handled by ``loop``."""
        self.loop = loop
        try:
            child = spawn(["/bin/sh", "-c", self.command], stdin_pipe=True,
                          capture=False, new_session=False)
        except SpawnError as exc:
            raise RouterError("cannot start %r: %s" % (self.command, exc.strerror)) from None
        self.pid, self.fd = child.pid, child.stdin
        loop.watch_child(self.pid, self._on_exit)

    def route(self, record: Record) -> None:
        """Queue the host's name and write what the pipe takes now."""
        if self.fd < 0:
            return
        self.pending += record.host.encode() + b"\n"
        self._flush()

    def _flush(self) -> None:
        try:
            while self.pending:
                del self.pending[:os.write(self.fd, self.pending)]
        except BlockingIOError:
            self.loop.add_writer(self.fd, self._flush)
            return
        except BrokenPipeError:
            self.pending.clear()  # the reader is gone (head -1): drop what it did not take
        except OSError as exc:
            self.pending.clear()
            self._close_pipe()
            raise SinkError("the pipe to " + self.title, exc) from exc
        self.loop.remove_writer(self.fd)
        if self.closing or not self.pending and self.exited:
            self._close_pipe()

    def _close_pipe(self) -> None:
        if self.fd >= 0:
            self.loop.remove_writer(self.fd)
            _close_quietly(self.fd)
            self.fd = -1

    def _on_exit(self, status: int) -> None:
        self.exited = True
        self.status = status
        self.pending.clear()
        self._close_pipe()

    def close(self) -> None:
        """No more names: close the pipe once the queued names are written."""
        self.closing = True
        if not self.pending and self.loop is not None:
            self._close_pipe()

    def failure(self) -> Optional[str]:
        """``-S 'cmd' exited with status 7`` / ``... was killed by SIGTERM``, or None."""
        status = self.status
        if status is None:
            return None
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            try:
                name = _signal.Signals(number).name
            except ValueError:
                name = "signal %d" % number
            return "%s was killed by %s" % (self.title, name)
        code = os.WEXITSTATUS(status)
        return "%s exited with status %d" % (self.title, code) if code else None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the command's shell and every process under it."""
        if self.pid is None or self.exited:
            return
        for pid in [self.pid] + _descendants(self.pid):
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                continue

    @property
    def busy(self) -> bool:
        """True until the command has exited."""
        return self.pid is not None and not self.exited


def _descendants(pid: int) -> List[int]:
    """The pids under ``pid`` (Linux ``/proc``; elsewhere none are found)."""
    found: List[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir("/proc/%d/task" % parent)
        except OSError:
            continue
        for tid in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (parent, tid)) as children:
                    kids = [int(word) for word in children.read().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _same_place(dest: str, source: Optional[str]) -> bool:
    if not source:
        return False
    try:
        return os.path.samefile(dest, source)
    except OSError:
        return os.path.abspath(dest) == os.path.abspath(source)


def make_router(dest: str, failures: bool, out, source: Optional[str] = None) -> Router:
    """The router for ``-S DEST`` (``failures`` False) or ``-E DEST`` (True); see the
    module's docstring for the rule. RouterError names a destination refused."""
    label = "-E" if failures else "-S"
    if dest in STDOUT_PATHS:  # "-" or /dev/stdout, as for --joblog
        return StdoutRouter(out)
    if dest.startswith("|"):
        command = dest[1:].strip()
        if not command:
            raise RouterError("%s %r: no command after '|'" % (label, dest))
        return PipeRouter(command, label)
    if _same_place(dest, source):
        raise RouterError("%s %r is the results directory (-o): it holds every host's files "
                          "already; route to another directory" % (label, dest))
    if os.path.isdir(dest):
        return DirectoryRouter(dest, with_ret=failures, source=source)
    if any(ch.isspace() for ch in dest):
        return PipeRouter(_command_line(dest, label), label)
    if "/" in dest and find_executable(dest):
        return PipeRouter(shlex.quote(dest), label)
    return FileRouter(dest)


def _command_line(dest: str, label: str) -> str:
    """``dest`` when its first word is an executable; RouterError naming it otherwise."""
    try:
        words = shlex.split(dest)
    except ValueError as exc:
        raise RouterError("%s %r: cannot parse it: %s" % (label, dest, exc)) from None
    if words and find_executable(os.path.expanduser(words[0])):
        return dest
    first = words[0] if words else dest
    raise RouterError("%s %r: %r is not a command (a destination holding a space is a command "
                      "line; write '|%s' for shell code)" % (label, dest, first, dest.strip()))


class Routing(Observer):
    """Observer sending each finished host to the -S or the -E routers.

    After the run, :meth:`failures` lists the destinations that failed (a
    pipeline that exited non-zero); :meth:`signal` forwards a signal to the
    pipelines while classh waits for them.
    """

    def __init__(self, success: List[Router], failure: List[Router]):
        self.success = success
        self.failure = failure
        self.routers = success + failure
        self.needs_output = any(r.needs_output for r in self.routers)

    def check(self, hosts: List[str]) -> None:
        """Refuse destinations that would overwrite existing results."""
        for router in self.routers:
            router.check(hosts)

    def attach(self, loop) -> None:
        """Start the pipeline routers."""
        for router in self.routers:
            router.attach(loop)

    def started(self, task) -> None:
        """SinkError for a host (one read from a stream) whose files a directory holds already."""
        for router in self.routers:
            router.admit(task.key)

    def finished(self, task, record: Record) -> None:
        """Route one finished host."""
        for router in self.success if record.ok else self.failure:
            router.route(record)

    def close(self) -> None:
        """Close every destination (pipelines see end of input); the first error is raised
        once all are closed."""
        error = None
        for router in self.routers:
            try:
                router.close()
            except Exception as exc:  # noqa: BLE001 - close the others first
                error = error or exc
        if error is not None:
            raise error

    def failures(self) -> List[str]:
        """One line per destination that failed: ``-S 'cmd' exited with status 7``."""
        return [message for message in (r.failure() for r in self.routers) if message]

    def signal(self, signum: int) -> None:
        """Forward ``signum`` to every pipeline still running."""
        for router in self.routers:
            router.signal(signum)

    @property
    def busy(self) -> bool:
        """True while a pipeline router has not exited."""
        return any(router.busy for router in self.routers)
