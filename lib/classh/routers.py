"""Routers: ``-S DEST`` (successful hosts) and ``-E DEST`` (failed hosts).

A destination is, in this order: ``-`` (host names on classh's stdout); an
existing directory (``host.out``/``host.err``, plus ``host.ret`` for ``-E``);
an executable, or a command line whose first word is one, started once
through the shell with host names written to its stdin as hosts complete;
anything else, a file opened for appending.
"""
from __future__ import annotations

import errno
import os
import shlex
import shutil
from typing import Iterable, List, Optional

from .results import Record, result_path, ret_text
from .spawn import SpawnError, find_executable, spawn

__all__ = ["RouterError", "make_router", "Routing", "StdoutRouter", "DirectoryRouter",
           "FileRouter", "PipeRouter"]


class RouterError(ValueError):
    """A destination classh cannot route to; the message names it."""


class StdoutRouter:
    """Host names, one a line, on classh's stdout (a SafeStream)."""

    def __init__(self, out):
        self.out = out

    def route(self, record: Record) -> None:
        """Print the host's name."""
        self.out.write(record.host.encode() + b"\n")


class FileRouter:
    """Host names appended, one a line, to a file."""

    def __init__(self, path: str):
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise RouterError("cannot append to %r: %s" % (path, exc.strerror)) from None

    def route(self, record: Record) -> None:
        """Append the host's name."""
        os.write(self.fd, record.host.encode() + b"\n")

    def close(self) -> None:
        """Close the file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class DirectoryRouter:
    """``host.out`` and ``host.err`` (and ``host.ret`` with ``with_ret``) in a directory.

    With ``source`` (the run's results directory) the files are copied from
    there, so output of any size arrives whole; otherwise they are written
    from the record, which then must carry all of its output.
    """

    def __init__(self, directory: str, with_ret: bool, source: Optional[str] = None):
        self.directory = directory
        self.suffixes = (".out", ".err", ".ret") if with_ret else (".out", ".err")
        self.source = source
        self.needs_output = source is None

    def check(self, hosts: Iterable[str]) -> None:
        """Refuse (RouterError) when a file of one of ``hosts`` is already there."""
        present = set(os.listdir(self.directory))
        for host in hosts:
            for suffix in self.suffixes:
                if host + suffix in present:
                    raise RouterError("%r already exists: classh never overwrites results"
                                      % os.path.join(self.directory, host + suffix))

    def route(self, record: Record) -> None:
        """Write (or copy) the host's files."""
        contents = {".out": record.stdout, ".err": record.stderr, ".ret": ret_text(record)}
        for suffix in self.suffixes:
            target = result_path(self.directory, record.host, suffix)
            if self.source is not None:
                shutil.copyfile(result_path(self.source, record.host, suffix), target)
                continue
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue  # a host that arrived late through a stream: never overwrite
            try:
                os.write(fd, contents[suffix])
            finally:
                os.close(fd)


class PipeRouter:
    """A command started once through the shell; host names go to its stdin as hosts end.

    It shares classh's stdout/stderr and process group (a Ctrl-C reaches both,
    as in a shell pipeline). When it exits early (``head -1``) the names meant
    for it are dropped; classh carries on.
    """

    def __init__(self, command: str):
        self.command = command
        self.loop = None
        self.pid = None
        self.fd = -1
        self.pending = bytearray()
        self.closing = False
        self.exited = False

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
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self.pending.clear()  # the reader is gone (head -1): drop what it did not take
        self.loop.remove_writer(self.fd)
        if self.closing or not self.pending and self.exited:
            self._close_pipe()

    def _close_pipe(self) -> None:
        if self.fd >= 0:
            self.loop.remove_writer(self.fd)
            os.close(self.fd)
            self.fd = -1

    def _on_exit(self, status: int) -> None:
        self.exited = True
        self.pending.clear()
        self._close_pipe()

    def close(self) -> None:
        """No more names: close the pipe once the queued names are written."""
        self.closing = True
        if not self.pending:
            self._close_pipe()

    @property
    def busy(self) -> bool:
        """True until the command has exited."""
        return self.pid is not None and not self.exited


def make_router(dest: str, failures: bool, out, source: Optional[str] = None):
    """The router for ``-S DEST`` (``failures`` False) or ``-E DEST`` (True)."""
    if dest == "-":
        return StdoutRouter(out)
    if os.path.isdir(dest):
        return DirectoryRouter(dest, with_ret=failures, source=source)
    try:
        words = shlex.split(dest)
    except ValueError as exc:
        raise RouterError("cannot parse destination %r: %s" % (dest, exc)) from None
    if words and find_executable(os.path.expanduser(words[0])):
        return PipeRouter(dest)
    return FileRouter(dest)


class Routing:
    """Observer sending each finished host to the -S or the -E routers."""

    def __init__(self, success: List[object], failure: List[object]):
        self.success = success
        self.failure = failure
        self.routers = success + failure
        self.needs_output = any(getattr(r, "needs_output", False) for r in self.routers)

    def check(self, hosts: List[str]) -> None:
        """Refuse destinations that would overwrite existing results."""
        for router in self.routers:
            if hasattr(router, "check"):
                router.check(hosts)

    def attach(self, loop) -> None:
        """Start the pipeline routers."""
        for router in self.routers:
            if hasattr(router, "attach"):
                router.attach(loop)

    def finished(self, task, record: Record) -> None:
        """Route one finished host."""
        for router in self.success if record.ok else self.failure:
            router.route(record)

    def close(self) -> None:
        """Close every destination (pipelines see end of input)."""
        for router in self.routers:
            if hasattr(router, "close"):
                router.close()

    @property
    def busy(self) -> bool:
        """True while a pipeline router has not exited."""
        return any(getattr(router, "busy", False) for router in self.routers)

