"""Displays: turn records (and live output) into text on a stream.

Each display is an observer of the supervisor (``started``, ``output``,
``finished``) writing to a binary stream handed to it by the caller; the
library itself never picks ``sys.stdout``.
"""
from __future__ import annotations

import contextlib
import os
import stat
import time
from collections import deque
from typing import BinaryIO, Callable, Deque, Dict, Optional

from .results import (FAILED, KILLED, OK, PROGRESS_CHAR, SSH_ERROR, TIMEOUT,
                      Record, Tally, describe_exit, json_line)
from .observers import Observer, SinkError
from .spool import Spill, Spool
from .targets import fold

__all__ = [
    "SafeStream", "Palette", "ClassicDisplay", "LinesDisplay", "ProgressDisplay",
    "JsonDisplay", "GatherDisplay", "StatusLine", "summary_line", "use_colour", "is_terminal",
    "KeepOrder",
]

_COLOURS = {OK: "32", FAILED: "31", SSH_ERROR: "35", TIMEOUT: "33", KILLED: "33"}


def is_terminal(stream) -> bool:
    """True when ``stream`` (a file object) is a terminal."""
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def use_colour(stream, environ=None) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (non-empty)."""
    environ = os.environ if environ is None else environ
    return not environ.get("NO_COLOR") and is_terminal(stream)


class Palette:
    """Wraps text in ANSI colours for a status, or leaves it alone."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def paint(self, text: str, status: str) -> str:
        """``text`` coloured for ``status`` when colour is on."""
        if not self.enabled:
            return text
        return "\033[%sm%s\033[0m" % (_COLOURS[status], text)


class SafeStream:
    """A binary stream for classh's output that never stalls the run nor dies loudly.

    * Its reader gone (EPIPE): it stops writing, quietly.
    * Any other write error (ENOSPC, EIO...): :class:`SinkError` with
      ``host=None`` (the display is every host's), then it stops writing.
    * Attached to a run's event loop (``attach``, by the displays), and when
      the stream is a pipe, writes go to a private non-blocking descriptor of
      that pipe: what the reader does not take yet waits in memory and is
      written when the pipe is writable, so a slow reader delays no timeout.
      Only beyond ``MAX_PENDING`` bytes waiting (a reader lagging by that
      much) does a write block until the backlog is written: output is never
      dropped. ``detach`` (the last display's ``close``) writes the rest.

    The private descriptor (opened through ``/proc/self/fd``) leaves the
    shared one blocking, so a ``-S`` command writing to the same pipe is not
    disturbed. Terminals, files and sockets are written as before, blocking.
    """

    #: Bytes waiting for a slow reader before writes block.
    MAX_PENDING = 64 << 20

    def __init__(self, raw: BinaryIO, name: Optional[str] = None):
        self.raw = raw
        self.name = name or str(getattr(raw, "name", "output"))
        self.broken = False
        self.loop = None
        self._users = 0
        self._fd = -1
        #: What waits for the reader: pieces (never copied into one buffer) and their size.
        self._pending: Deque[memoryview] = deque()
        self._pending_size = 0
        #: Written before the next data: a live status line's erasure (see StatusLine).
        self.erase = b""

    # -- the event loop ------------------------------------------------
    def attach(self, loop) -> None:
        """Write through ``loop`` from now on (several displays may attach: counted)."""
        self._users += 1
        if self.loop is not None or self.broken:
            return
        self.loop = loop
        self._fd = self._private_pipe_fd()

    def _private_pipe_fd(self) -> int:
        try:
            self.raw.flush()
            fd = self.raw.fileno()
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return -1
            return os.open("/proc/self/fd/%d" % fd, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (AttributeError, OSError, ValueError):
            return -1

    def detach(self) -> None:
        """One user is done; the last one writes what waits and goes back to plain writes."""
        self._users = max(0, self._users - 1)
        if self._users:
            return
        try:
            if self._pending and not self.broken:
                self._drain(block=True)
        finally:
            self._release()

    def _release(self) -> None:
        if self._fd >= 0:
            if self.loop is not None:
                self.loop.remove_writer(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        self.loop = None
        self._pending.clear()
        self._pending_size = 0

    # -- writing -------------------------------------------------------
    def write(self, data: bytes, flush: bool = True) -> None:
        """Write ``data`` (flushed) unless the reader has gone away; SinkError on failure.
        A status line shown there is erased first (``erase``)."""
        if self.broken or not data:
            return
        if self.erase:
            data, self.erase = self.erase + data, b""
        if self._fd >= 0:
            self._pending.append(memoryview(bytes(data)))
            self._pending_size += len(data)
            self._drain(block=self._pending_size > self.MAX_PENDING)
            return
        try:
            self.raw.write(data)
            if flush:
                self.raw.flush()
        except OSError as exc:
            self._fail(exc)

    def _drain(self, block: bool = False) -> None:
        """Write what waits; without ``block`` stop when the pipe is full and ask the loop."""
        fd = self._fd
        try:
            if block:
                os.set_blocking(fd, True)
            while self._pending:
                written = os.write(fd, self._pending[0])
                self._pending_size -= written
                if written < len(self._pending[0]):
                    self._pending[0] = self._pending[0][written:]
                else:
                    self._pending.popleft()
        except BlockingIOError:
            self.loop.add_writer(fd, self._drain)
            return
        except OSError as exc:
            self._fail(exc)
        finally:
            if block and self._fd >= 0:
                os.set_blocking(fd, False)
        if self._fd >= 0:
            self.loop.remove_writer(fd)

    def _fail(self, exc: OSError) -> None:
        """Stop writing for good; EPIPE is quiet, anything else a SinkError (host None)."""
        self.broken = True
        self._release()
        _detach_broken(self.raw)
        if not isinstance(exc, BrokenPipeError):
            raise SinkError(self.name, exc) from exc


def _detach_broken(raw) -> None:
    """Point a dead stream's fd at /dev/null, so the interpreter's last flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, raw.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


class StreamObserver(Observer):
    """An observer writing to SafeStreams: attaches them to the run's loop, detaches at close."""

    def __init__(self, *streams: SafeStream):
        self._streams = [s for s in streams if s is not None]

    def attach(self, loop) -> None:
        """Let the streams write through ``loop`` (a slow reader then delays no timer)."""
        for stream in self._streams:
            stream.attach(loop)

    def close(self) -> None:
        """Hand the streams back (the last user writes what still waits)."""
        for stream in self._streams:
            stream.detach()


def _indent(data: bytes, prefix: bytes) -> bytes:
    """``prefix`` before every line of ``data``, each line ending with a newline (an
    unterminated last line gets one); no per-line objects, so many short lines cost little."""
    if not data:
        return b""
    body = data[:-1] if data.endswith(b"\n") else data
    return prefix + body.replace(b"\n", b"\n" + prefix) + b"\n"


class ClassicDisplay(StreamObserver):
    """The classh seed's display: a ``HOST  EXIT  (SECONDS)`` header, then indented output."""

    needs_output = True  # records must carry the captured output

    def __init__(self, out: SafeStream, width: int = 0, palette: Optional[Palette] = None):
        super().__init__(out)
        self.out = out
        self.width = width
        self.palette = palette or Palette(False)

    def finished(self, task, record: Record) -> None:
        """Print one host's result."""
        self.out.write(self.render(record))

    def render(self, record: Record) -> bytes:
        """The text block for ``record``."""
        header = "%-*s  %s  (%.2f)" % (self.width, record.host, describe_exit(record), record.duration)
        return self.palette.paint(header, record.status).encode() + b"\n" + _output_blocks(
            record.stdout, record.stdout_size, record.stderr, record.stderr_size, record.error)


def _output_blocks(stdout: bytes, stdout_size: int, stderr: bytes, stderr_size: int,
                   error: Optional[str]) -> bytes:
    """The indented ``Output:`` and ``Error:`` blocks under a header."""
    parts = []
    if error:
        parts.append(b"  classh: " + error.encode() + b"\n")
    for title, data, size in ((b"  Output:\n", stdout, stdout_size),
                              (b"  Error:\n", stderr, stderr_size)):
        if size:
            parts.append(title)
            parts.append(_indent(data, b"    "))
            if size > len(data):
                parts.append(b"    [... %d more bytes not shown]\n" % (size - len(data)))
    return b"".join(parts)


class LinesDisplay(StreamObserver):
    """``host: line`` for every output line, as it arrives (stderr lines to ``err``).

    An unfinished line is held in a :class:`~classh.spool.Spool` (in memory
    while it is short, spilled to a temporary file past the shared budget), so
    a line of GBs without a newline never fills the memory; a line is always
    written whole, never mixed with another host's. Only new data is searched
    for a newline, so a long line costs linear time.
    """

    def __init__(self, out: SafeStream, err: SafeStream, spill: Optional[Spill] = None):
        super().__init__(out, err)
        self.streams = {1: out, 2: err}
        self.spill = spill or Spill()
        self.partial: Dict[tuple, Spool] = {}

    def prefix(self, task) -> bytes:
        """What every line of ``task`` starts with: ``host: ``."""
        return task.key.encode() + b": "

    def output(self, task, fd: int, data: bytes) -> None:
        """Print the complete lines of ``data``; keep a trailing partial line."""
        key = (task.key, fd)
        cut = data.rfind(b"\n")
        if cut < 0:
            if data:
                self.partial.setdefault(key, self.spill.spool()).write(data)
            return
        held = self.partial.pop(key, None)
        if held is not None:
            self._write_held(task, fd, held, data[:cut + 1])
        else:
            self.streams[fd].write(_indent(data[:cut + 1], self.prefix(task)))
        if cut + 1 < len(data):
            self.partial.setdefault(key, self.spill.spool()).write(data[cut + 1:])

    def _write_held(self, task, fd: int, held: Spool, end: bytes) -> None:
        """Write the held start of a line, then ``end`` (its rest and maybe more lines)."""
        stream, prefix = self.streams[fd], self.prefix(task)
        try:
            stream.write(prefix)
            for piece in held.pieces():
                stream.write(piece)
            newline = end.find(b"\n")
            stream.write(end[:newline + 1] + _indent(end[newline + 1:], prefix))
        finally:
            held.release()

    def flush(self, task) -> None:
        """Print what is left of a host's last, unterminated lines (a newline added)."""
        for fd in (1, 2):
            held = self.partial.pop((task.key, fd), None)
            if held is not None:
                self._write_held(task, fd, held, b"\n")

    def finished(self, task, record: Record) -> None:
        """Print what is left of a host's last, unterminated lines."""
        self.flush(task)

    def close(self) -> None:
        """Drop what is still held, close the temporary file, hand the streams back."""
        try:
            for held in self.partial.values():
                held.release()
            self.partial.clear()
            self.spill.close()
        finally:
            super().close()


class ProgressDisplay(StreamObserver):
    """One character per finished host on stderr: ``.`` ok, ``?`` failed, ``~`` ssh error, ``!`` killed."""

    def __init__(self, err: SafeStream):
        super().__init__(err)
        self.err = err
        self.count = 0

    def finished(self, task, record: Record) -> None:
        """Print the host's progress character."""
        self.count += 1
        self.err.write(PROGRESS_CHAR[record.status].encode())

    def close(self) -> None:
        """End the progress line."""
        try:
            if self.count:
                self.err.write(b"\n")
        finally:
            super().close()


_SUMMARY_WORDS = ((OK, "ok"), (FAILED, "failed"), (SSH_ERROR, "ssh error"),
                  (TIMEOUT, "timed out"), (KILLED, "killed"))


def summary_line(tally: Tally, elapsed: float, interrupted: bool = False, noun: str = "host") -> str:
    """``classh: 52 hosts in 3.1 s: 50 ok, 1 ssh error, 1 timed out`` (``noun``: job mode's
    ``jobs``)."""
    counts = ", ".join(
        "%d %s" % (tally.counts[status], word)
        for status, word in _SUMMARY_WORDS
        if tally.counts[status] or status == OK
    )
    plural = "" if tally.total == 1 else "s"
    line = "classh: %d %s%s in %.1f s: %s" % (tally.total, noun, plural, elapsed, counts)
    if interrupted:
        line += " (interrupted)"
    return line



class JsonDisplay(StreamObserver):
    """One JSON object per host per line (JSON Lines, lossless: see ``record_to_dict``),
    as hosts complete."""

    needs_output = True

    def __init__(self, out: SafeStream):
        super().__init__(out)
        self.out = out

    def finished(self, task, record: Record) -> None:
        """Print the host's record."""
        self.out.write(json_line(record))


class GatherDisplay(StreamObserver):
    """At the end: hosts with identical output and exit grouped under one folded header.

    Only one copy of each distinct output is kept. Groups are printed largest
    first, then in the order of their first host.
    """

    needs_output = True

    def __init__(self, out: SafeStream, palette: Optional[Palette] = None):
        super().__init__(out)
        self.out = out
        self.palette = palette or Palette(False)
        self.groups: Dict[tuple, list] = {}

    def finished(self, task, record: Record) -> None:
        """Add the host to the group of its outcome and output."""
        key = (describe_exit(record), record.status, record.stdout, record.stdout_size,
               record.stderr, record.stderr_size, record.error)
        self.groups.setdefault(key, []).append(record.host)

    def close(self) -> None:
        """Print every group."""
        order = sorted(self.groups.items(), key=lambda item: -len(item[1]))
        try:
            self.out.write(b"".join(self.render(key, hosts) for key, hosts in order))
        finally:
            self.groups.clear()
            super().close()

    def render(self, key: tuple, hosts: list) -> bytes:
        """The block for one group."""
        outcome, status, stdout, stdout_size, stderr, stderr_size, error = key
        header = "%s (%d)  %s" % (fold(hosts), len(hosts), outcome)
        return self.palette.paint(header, status).encode() + b"\n" + _output_blocks(
            stdout, stdout_size, stderr, stderr_size, error)


class StatusLine(StreamObserver):
    """One live line on a terminal: done/total, ok, failed, ssh errors, timeouts, running, rate, ETA."""

    INTERVAL = 0.5

    def __init__(self, err: SafeStream, total: Optional[int], enabled: bool):
        super().__init__(err)
        self.err = err
        self.total = total
        self.enabled = enabled
        self.tally = Tally()
        self.started_at = time.monotonic()
        self.running = 0
        self.loop = None
        self.shown = False
        self.closed = False

    def attach(self, loop) -> None:
        """Refresh the line every INTERVAL seconds on ``loop``."""
        super().attach(loop)
        self.loop = loop
        if self.enabled:
            loop.call_later(self.INTERVAL, self._tick)

    def _tick(self) -> None:
        if self.closed:
            return
        self.show()
        self.loop.call_later(self.INTERVAL, self._tick)

    def started(self, task) -> None:
        """Count a running host."""
        self.running += 1

    def finished(self, task, record: Record) -> None:
        """Count a finished host."""
        self.running -= 1 if self.running else 0
        self.tally.add(record)

    def text(self) -> str:
        """The status text (without terminal control)."""
        counts = self.tally.counts
        done = self.tally.total
        elapsed = max(1e-6, time.monotonic() - self.started_at)
        rate = done / elapsed
        known = self.total is not None
        eta = "%ds" % ((self.total - done) / rate) if known and rate > 0 else "?"
        return ("%d/%s done, %d ok, %d failed, %d ssh errors, %d timeouts, %d running, "
                "%.1f/s, ETA %s" % (done, self.total if known else "?", counts[OK], counts[FAILED],
                                    counts[SSH_ERROR], counts[TIMEOUT] + counts[KILLED],
                                    self.running, rate, eta))

    def show(self) -> None:
        """Redraw the line; any other line written to ``err`` erases it first (it is
        drawn again at the next tick)."""
        if self.enabled:
            self.err.erase = b""
            self.err.write(b"\r\033[K" + self.text().encode())
            self.err.erase = b"\r\033[K"
            self.shown = True

    def close(self) -> None:
        """Erase the line for good."""
        self.closed = True
        try:
            if self.shown:
                self.err.erase = b""
                self.err.write(b"\r\033[K")
        finally:
            super().close()


class KeepOrder(Observer):
    """Shows hosts in target order (``-k``, as ``dshbak`` and ``clush -b`` do): the display it
    wraps gets a host's calls (``started``, ``output``, ``finished``) only once every host
    handed out before it was shown; the first host not shown yet gets them live.

    The order is the order tasks are made in: wrap the source's task maker with
    :meth:`numbered`. What a later host sends meanwhile waits in memory.
    """

    def __init__(self, display: Observer):
        self.display = display
        self.needs_output = display.needs_output
        self.order: deque = deque()  # keys made and not shown yet, in order
        self.held: Dict[str, list] = {}
        self.done: set = set()

    def numbered(self, make: Callable) -> Callable:
        """``make`` (target -> task), noting each task's place in the order."""
        def make_in_order(target):
            task = make(target)
            self.order.append(task.key)
            return task
        return make_in_order

    def attach(self, loop) -> None:
        """Attach the display."""
        self.display.attach(loop)

    def started(self, task) -> None:
        """Pass on, or hold until the host's turn."""
        self._pass(task.key, self.display.started, task)

    def output(self, task, fd: int, data: bytes) -> None:
        """Pass on, or hold until the host's turn."""
        self._pass(task.key, self.display.output, task, fd, data)

    def finished(self, task, record) -> None:
        """Pass on, or hold until the host's turn; then show the hosts now due."""
        self._pass(task.key, self.display.finished, task, record)
        self.done.add(task.key)
        self._advance()

    def close(self) -> None:
        """Show what still waits (in order), then close the display."""
        try:
            while self.order:
                self._replay(self.order.popleft())
            for key in list(self.held):
                self._replay(key)
        finally:
            self.held.clear()
            self.display.close()

    def _pass(self, key: str, hook: Callable, *args) -> None:
        if self.order and self.order[0] == key:
            hook(*args)
        else:
            self.held.setdefault(key, []).append((hook, args))

    def _advance(self) -> None:
        """Drop the shown hosts from the front; the next one's held calls go out."""
        while self.order and self.order[0] in self.done:
            self.done.discard(self.order.popleft())
            if self.order:
                self._replay(self.order[0])

    def _replay(self, key: str) -> None:
        for hook, args in self.held.pop(key, ()):
            hook(*args)
