"""Files read as lines arrive: host files and job files that are pipes (``/dev/stdin``).

An earlier stage (``classh -S 'classh ... /dev/stdin'``, a program writing
jobs) may still be running: its lines are handed over as they arrive,
through the event loop, so the next stage starts work before the earlier
one ends. Nothing here blocks: the fds are non-blocking and read when ready.
"""
from __future__ import annotations

import os
import stat
from typing import Callable, Dict, List

from .loop import EventLoop, read_ready

__all__ = ["LineStreams", "is_pipe_or_device", "open_nonblocking", "READ_SIZE"]

READ_SIZE = 65536


def is_pipe_or_device(path: str) -> bool:
    """True when ``path`` is a pipe or a device (read as lines arrive), not a regular file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def open_nonblocking(path: str) -> int:
    """Open ``path`` for non-blocking reads (OSError on failure, for the caller to name)."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


class LineStreams:
    """Reads ``streams`` (``{fd: path}``, non-blocking) through a loop and hands over lines.

    ``on_line(line, where)`` gets each complete line (decoded as UTF-8, bytes
    that are not kept as surrogates, so nothing is lost; a last line without
    a newline too, at the end of its
    stream) with ``where`` = ``"path:N: "`` to prefix messages with;
    ``on_batch()`` runs after each read (e.g. to start the work that arrived).
    A long line costs time linear in its length. ``pause()`` stops the reading
    (a writer then blocks on the full pipe) until ``resume()``: the reader's
    way to take lines only as fast as it uses them.
    """

    def __init__(self, streams: Dict[int, str], on_line: Callable[[str, str], None],
                 on_batch: Callable[[], None] = lambda: None):
        self.streams = dict(streams)
        self.on_line = on_line
        self.on_batch = on_batch
        self._loop = None
        self._partial: Dict[int, List[bytes]] = {}
        self._numbers: Dict[int, int] = {}
        self.paused = False

    def __bool__(self) -> bool:
        """True while a stream is still open (more lines may come)."""
        return bool(self.streams)

    def attach(self, loop: EventLoop) -> None:
        """Start reading every stream (unless paused)."""
        self._loop = loop
        if not self.paused:
            self._watch()

    def _watch(self) -> None:
        for fd in self.streams:
            self._loop.add_reader(fd, lambda fd=fd: self._read(fd))

    def pause(self) -> None:
        """Stop reading until ``resume()`` (what is written waits in the pipe)."""
        if not self.paused and self._loop is not None:
            for fd in self.streams:
                self._loop.remove_reader(fd)
        self.paused = True

    def resume(self) -> None:
        """Read again after ``pause()``."""
        if self.paused and self._loop is not None:
            self._watch()
        self.paused = False

    def _read(self, fd: int) -> None:
        data = read_ready(fd, READ_SIZE)
        if data is None:
            return
        path = self.streams[fd]
        if data:
            head, newline, rest = data.rpartition(b"\n")
            pieces = self._partial.setdefault(fd, [])
            if not newline:
                pieces.append(data)
                return
            text = b"".join(pieces) + head
            pieces[:] = [rest] if rest else []
        else:
            text = b"".join(self._partial.pop(fd, []))
            self._close(fd)
        for line in text.decode("utf-8", "surrogateescape").splitlines():
            self._numbers[fd] = number = self._numbers.get(fd, 0) + 1
            self.on_line(line, "%s:%d: " % (path, number))
        self.on_batch()

    def _close(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        os.close(fd)
        del self.streams[fd]

    def close(self) -> None:
        """Close the streams still open (an interrupted run)."""
        for fd in list(self.streams):
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)
        self.streams.clear()
