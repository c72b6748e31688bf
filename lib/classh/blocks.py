"""Job-mode input cut into blocks: ``--input FILE... --task CMD`` (kssh's half of job mode).

Each block becomes the standard input of one run of ``--task`` on some node
slot; the scheduler takes blocks one at a time with :meth:`BlockInput.take`.

Interface (the scheduler and the CLI code against exactly this):

* :class:`Block` ``(index, data, source)``: ``index`` 1, 2, 3... in input
  order, ``data`` the block's bytes (lines whole, a last line without a
  newline kept as it is, any bytes: NULs, invalid UTF-8), ``source`` the file
  it came from (``'-'`` for standard input). ``identity()`` is
  ``"block-<index>:<first 16 hex digits of sha256(data)>"``, for ``--resume``
  and ``-o``.
* :class:`Cutter` ``(size)``: the incremental splitter. ``feed(data)`` returns
  the blocks of ``size`` lines completed by ``data``; ``finish()`` the last,
  partial block, or None when nothing is left. Cost is linear in the bytes
  fed, whatever the line lengths and chunk sizes (a line of many MB arriving
  in small pieces is not scanned again for each piece).
* :func:`check_paths` ``(paths)``: the CLI calls it before anything runs; a
  missing, unreadable or directory path, no path at all, or ``'-'`` given
  twice is a :class:`BlockError` (one line naming it; exit 2).
  :class:`BlockInput` runs the same check, so the call is only there to fail
  early.
* :class:`BlockInput` ``(paths, size=1, ahead=64)``: the blocks of
  ``--input`` paths. One path: cut into blocks of ``size`` lines. Several
  paths: each file is one block, ``size`` ignored (an empty file is an empty
  block, so block N is always the N-th file). ``size`` and ``ahead`` must be
  whole numbers of 1 or more (BlockError otherwise). The constructor opens
  the first file (a failure is a BlockError), so a pipe given as
  ``/dev/fd/N`` may be closed by the caller right after; the other files are
  opened when their turn comes. Call ``close()`` when the run ends early or
  never starts, to give the fd back.

  ``attach(loop, on_ready)`` starts reading; ``on_ready()`` is called from
  the loop after blocks arrived or the input ended (and once soon after
  ``attach`` while the input is a regular file), and the scheduler then
  calls ``take()`` until it returns None. ``take()`` never calls
  ``on_ready``. ``done`` is True once the input ended and every block was
  taken; ``ended`` once the whole input was read (or reading stopped on an
  error or ``close()``); ``held()`` counts the blocks read and not yet
  taken; ``errors`` holds one line per read error (a read error ends the
  input: the blocks already cut stay takeable, the unfinished one is
  dropped; the lead reports the line and fails the run).

Memory stays bounded whatever the size of the input:

* a regular file is read lazily, :data:`READ_SIZE` bytes at a time, inside
  ``take()``, only until the next block is complete (so ``take()`` works even
  without ``attach``). Several files are read one whole file per ``take()``.
* a pipe, tty or device (``-`` on a pipe, ``/dev/stdin``, a FIFO) is read
  through the event loop, non-blocking, at most :data:`READ_SIZE` bytes per
  callback, as :class:`~classh.streams.LineStreams` does. Once ``ahead``
  blocks (or :data:`MAX_HELD_BYTES` bytes of blocks) are held the reader is
  removed (the writer blocks on a full pipe); ``take()`` adds it back when
  fewer are held. So ``held()`` never exceeds ``ahead`` plus the blocks of
  one read, and memory is about ``min(ahead blocks, MAX_HELD_BYTES)`` plus
  the block being cut, whatever the input's size.
* the block being cut never holds an unfinished line (or, with several files,
  a file) of more than :data:`MAX_LINE` bytes: past that the input ends with
  one line in ``errors`` naming the file and the block (the lead: exit 2).

Standard input (``'-'``): a regular file on fd 0 (``< file``) is read
lazily through a duplicate of fd 0; a pipe, tty or device is opened again
through ``/dev/stdin`` (its own open file description, so making it
non-blocking does not touch the shell's fd 0); where that open fails (a
socket) fd 0 is duplicated and set non-blocking, and set back to blocking by
``close()`` or at the end. ``close()`` closes only the fds this module
opened; fd 0 itself is never closed.

Nothing here prints, starts a process or a thread.
"""
from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, List, Optional, Sequence, Tuple

from .streams import READ_SIZE, is_pipe_or_device, open_nonblocking
from .targets import TargetError

__all__ = ["Block", "BlockError", "BlockInput", "Cutter", "LineTooLong", "check_paths",
           "MAX_HELD_BYTES", "MAX_LINE", "READ_SIZE"]

STDIN = "-"
#: Below this many lines still wanted, newlines are found one by one.
_FIND_LIMIT = 16
#: The first window counted for newlines; it grows while no cut falls in it.
_WINDOW = 4096
_MAX_WINDOW = 1 << 20
#: Reading from a stream also stops while the blocks held add up to this many bytes
#: (big blocks: ``ahead`` blocks of 10 MB would be 640 MB).
MAX_HELD_BYTES = 16 << 20
#: The longest line of a cut input, and the biggest whole-file block (several files): what
#: classh holds of one unfinished piece. Past it the input ends with an error (exit 2), so an
#: input without newlines (``cat /dev/zero``) never fills the memory.
MAX_LINE = 64 << 20


class BlockError(TargetError):
    """Bad ``--input``/``--blocksize``: ``str(e)`` is one line naming the offending text."""


class LineTooLong(ValueError):
    """A line (or a whole-file block) grew past :data:`MAX_LINE` bytes before it ended."""


@dataclass(frozen=True)
class Block:
    """One block of the input: the standard input of one run of ``--task``."""

    index: int
    data: bytes
    source: str

    def identity(self) -> str:
        """``block-<index>:<first 16 hex digits of the sha256 of data>`` (for --resume and -o)."""
        return "block-%d:%s" % (self.index, hashlib.sha256(self.data).hexdigest()[:16])


def _whole_number(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BlockError("bad %s %r: it must be a whole number of 1 or more" % (what, value))
    return value


def _after_newlines(data: bytes, pos: int, wanted: int) -> Tuple[int, int]:
    """Where ``wanted`` newlines from ``pos`` end: (offset after the last one, wanted),
    or (-1, newlines found) when ``data`` has fewer. Linear in the bytes looked at:
    windows are counted in C, growing while they hold no cut, halving around one."""
    found, end, width = 0, len(data), _WINDOW
    while wanted - found > _FIND_LIMIT:
        stop = min(pos + width, end)
        count = data.count(b"\n", pos, stop)
        if found + count < wanted:
            found += count
            pos = stop
            if pos >= end:
                return -1, found
            width = min(width * 2, _MAX_WINDOW)
        else:
            width = max(1, width // 2)
    while found < wanted:
        at = data.find(b"\n", pos)
        if at < 0:
            return -1, found
        found += 1
        pos = at + 1
    return pos, found


class Cutter:
    """Incremental splitter: ``feed(bytes)`` -> the complete blocks' bytes of ``size`` lines;
    ``finish()`` -> the last partial block's bytes, or None when nothing is left.

    Lines are never cut; the total cost is linear in the bytes fed (a line of
    several MB arriving in many small chunks is scanned once). A line still
    unfinished past :data:`MAX_LINE` bytes raises :class:`LineTooLong`.
    """

    def __init__(self, size: int):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError("block size must be a whole number of 1 or more, not %r" % (size,))
        self.size = size
        self._pieces: List[bytes] = []
        self._lines = 0  # complete lines in _pieces
        self._line_bytes = 0  # bytes of the unfinished last line in _pieces

    def feed(self, data: bytes) -> List[bytes]:
        """Take the next bytes of the input; return the blocks they complete, in order."""
        blocks = []
        pos, end = 0, len(data)
        while pos < end:
            cut, found = _after_newlines(data, pos, self.size - self._lines)
            if cut < 0:
                self._hold_rest(data, pos, found)
                break
            self._pieces.append(data[pos:cut])
            blocks.append(b"".join(self._pieces))
            self._pieces, self._lines, self._line_bytes = [], 0, 0
            pos = cut
        return blocks

    def _hold_rest(self, data: bytes, pos: int, found: int) -> None:
        """Keep ``data[pos:]`` (``found`` newlines) for the next block; LineTooLong when its
        last line is unfinished past MAX_LINE bytes."""
        newline = data.rfind(b"\n", pos) if found else -1
        self._line_bytes = len(data) - newline - 1 if newline >= 0 \
            else self._line_bytes + len(data) - pos
        if self._line_bytes > MAX_LINE:
            raise LineTooLong(self._line_bytes)
        self._pieces.append(data[pos:])
        self._lines += found

    def finish(self) -> Optional[bytes]:
        """The input ended: the last block's bytes (fewer lines, maybe no final newline), or None."""
        pieces, self._pieces, self._lines, self._line_bytes = self._pieces, [], 0, 0
        return b"".join(pieces) if pieces else None


class _WholeFile:
    """A Cutter for ``--input`` with several files: the whole file is one block (even empty)."""

    def __init__(self):
        self._pieces: List[bytes] = []
        self._bytes = 0

    def feed(self, data: bytes) -> List[bytes]:
        """Keep ``data``; LineTooLong once the file passes MAX_LINE bytes."""
        self._bytes += len(data)
        if self._bytes > MAX_LINE:
            raise LineTooLong(self._bytes)
        self._pieces.append(data)
        return []

    def finish(self) -> Optional[bytes]:
        pieces, self._pieces = self._pieces, []
        return b"".join(pieces)


def _cannot_read(path: str, reason) -> BlockError:
    return BlockError("cannot read input file %r: %s" % (path, reason))


def check_paths(paths: Sequence[str]) -> None:
    """Refuse bad ``--input`` paths before anything runs: no path, ``'-'`` twice, a path that
    is missing, unreadable or a directory. Raises a BlockError naming it (exit 2)."""
    if not paths:
        raise BlockError("no input file: give --input FILE... ('-' for standard input)")
    if list(paths).count(STDIN) > 1:
        raise BlockError("standard input %r can be given only once in --input" % STDIN)
    for path in paths:
        if path == STDIN:
            try:
                os.fstat(0)
            except OSError:
                raise _cannot_read(path, "standard input is closed") from None
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise _cannot_read(path, exc.strerror or exc) from None
        if stat.S_ISDIR(mode):
            raise _cannot_read(path, "it is a directory")
        if not os.access(path, os.R_OK):
            raise _cannot_read(path, "permission denied")


class _Source:
    """One open input file: its fd, and whether it is read through the loop (a stream)."""

    __slots__ = ("path", "fd", "stream", "restore_blocking")

    def __init__(self, path: str, fd: int, stream: bool, restore_blocking: bool = False):
        self.path = path
        self.fd = fd
        self.stream = stream
        self.restore_blocking = restore_blocking  # a dup of fd 0 we made non-blocking

    def close(self) -> None:
        """Close our fd (fd 0's blocking mode set back first when we changed it)."""
        if self.restore_blocking:
            try:
                os.set_blocking(self.fd, True)
            except OSError:
                pass
        os.close(self.fd)


def _open_stdin() -> _Source:
    if stat.S_ISREG(os.fstat(0).st_mode):
        return _Source(STDIN, os.dup(0), stream=False)
    try:
        return _Source(STDIN, open_nonblocking("/dev/stdin"), stream=True)
    except OSError:  # a socket cannot be opened again: share fd 0's description
        fd = os.dup(0)
        os.set_blocking(fd, False)
        return _Source(STDIN, fd, stream=True, restore_blocking=True)


def _open_source(path: str) -> _Source:
    """Open ``path`` for reading (OSError for the caller to name)."""
    if path == STDIN:
        return _open_stdin()
    if is_pipe_or_device(path):
        return _Source(path, open_nonblocking(path), stream=True)
    return _Source(path, os.open(path, os.O_RDONLY), stream=False)


class BlockInput:
    """The blocks of ``--input FILES`` (a list of paths, ``'-'`` = standard input).

    One file: cut into blocks of ``size`` lines. Several files: each file is
    one block (``size`` ignored). Regular files are read lazily in ``take()``;
    pipes, ttys and devices through the event loop, non-blocking, with at
    most ``ahead`` blocks held; see the module's documentation. Bad paths or
    numbers, or a first file that cannot be opened, are a BlockError.
    """

    def __init__(self, paths: Sequence[str], size: int = 1, ahead: int = 64):
        self.paths = list(paths)
        check_paths(self.paths)
        self.size = _whole_number(size, "block size")
        self.ahead = _whole_number(ahead, "number of blocks read ahead")
        self.errors: List[str] = []
        self._next_path = 0
        self._current: Optional[_Source] = None
        self._cutter = None
        self._ready: Deque[Tuple[bytes, str]] = deque()
        self._taken = 0
        self._held_bytes = 0
        self._ended = False
        self._loop = None
        self._on_ready: Callable[[], None] = lambda: None
        self._reading = False  # our reader is registered with the loop
        self._open_next()
        if self.errors:
            raise BlockError(self.errors[0])

    # -- the scheduler's side -------------------------------------------
    def attach(self, loop, on_ready: Callable[[], None]) -> None:
        """Start reading streams through ``loop``; ``on_ready()`` is called after new blocks
        arrived or the input ended (the scheduler then calls ``take()``)."""
        self._loop = loop
        self._on_ready = on_ready
        if self._current is not None and self._current.stream:
            self._resume()
        else:
            loop.call_later(0, self._on_ready)  # blocks of a regular file are there for the taking

    def take(self) -> Optional[Block]:
        """The next block, or None if none is ready now (more may come: see ``done``)."""
        while not self._ready and self._current is not None and not self._current.stream:
            self._read_regular()
        if not self._ready:
            return None
        data, source = self._ready.popleft()
        self._taken += 1
        self._held_bytes -= len(data)
        if self._current is not None and self._current.stream and self._has_room():
            self._resume()
        return Block(self._taken, data, source)

    @property
    def done(self) -> bool:
        """True once every block has been taken and the input ended."""
        return self._ended and not self._ready

    @property
    def ended(self) -> bool:
        """True once the whole input has been read (blocks may still wait to be taken)."""
        return self._ended

    def held(self) -> int:
        """Blocks read and not yet taken (at most ``ahead`` plus the blocks of one read)."""
        return len(self._ready)

    def close(self) -> None:
        """Stop reading and close the fds this object opened (never fd 0 itself); blocks
        still held are dropped and the input counts as ended."""
        self._close_current()
        self._next_path = len(self.paths)
        self._ended = True
        self._ready.clear()
        self._held_bytes = 0

    # -- reading ---------------------------------------------------------
    def _open_next(self) -> None:
        """Open the next path (or end the input); a stream starts being read if attached."""
        if self._next_path >= len(self.paths):
            self._ended = True
            return
        path = self.paths[self._next_path]
        self._next_path += 1
        try:
            self._current = _open_source(path)
        except OSError as exc:
            self._fail(path, exc)
            return
        self._cutter = Cutter(self.size) if len(self.paths) == 1 else _WholeFile()
        if self._current.stream and self._loop is not None and self._has_room():
            self._resume()

    def _read_regular(self) -> None:
        source = self._current
        try:
            data = os.read(source.fd, READ_SIZE)
        except OSError as exc:
            self._fail(source.path, exc)
            return
        self._consume(data)

    def _on_readable(self) -> None:
        source = self._current
        try:
            data = os.read(source.fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(source.path, exc)
            self._on_ready()
            return
        self._consume(data)
        if not self._has_room():
            self._pause()
        self._on_ready()

    def _consume(self, data: bytes) -> None:
        """Cut ``data`` of the current file into blocks; ``b""`` ends the file."""
        path = self._current.path
        if data:
            try:
                blocks = self._cutter.feed(data)
            except LineTooLong:
                self._too_long(path)
                return
            for block in blocks:
                self._hold(block, path)
            return
        last = self._cutter.finish()
        if last is not None:
            self._hold(last, path)
        self._close_current()
        self._open_next()

    def _hold(self, data: bytes, path: str) -> None:
        self._ready.append((data, path))
        self._held_bytes += len(data)

    def _has_room(self) -> bool:
        """Whether a stream may be read further (fewer than ``ahead`` blocks and bytes held)."""
        return len(self._ready) < self.ahead and self._held_bytes < MAX_HELD_BYTES

    def _resume(self) -> None:
        if not self._reading and self._current is not None:
            self._loop.add_reader(self._current.fd, self._on_readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._current.fd)
            self._reading = False

    def _close_current(self) -> None:
        if self._current is None:
            return
        self._pause()
        self._current.close()
        self._current = None
        self._cutter = None

    def _too_long(self, path: str) -> None:
        """A line (a whole-file block) past MAX_LINE ends the input; the line is kept in
        ``errors``. The blocks cut before it stay takeable."""
        block, mib = self._taken + len(self._ready) + 1, MAX_LINE >> 20
        if len(self.paths) == 1:
            self._end("input file %r: a line of block %d is longer than %d MiB (no newline "
                      "within it): a line is at most %d MiB" % (path, block, mib, mib))
        else:
            self._end("input file %r (block %d) is longer than %d MiB: a file given with "
                      "others is one block, at most %d MiB" % (path, block, mib, mib))

    def _fail(self, path: str, exc: OSError) -> None:
        """A read error ends the input; the line is kept in ``errors``."""
        self._end("cannot read input file %r: %s" % (path, exc.strerror or exc))

    def _end(self, error: str) -> None:
        """End the input on ``error`` (one line, kept in ``errors``)."""
        self.errors.append(error)
        self._close_current()
        self._next_path = len(self.paths)
        self._ended = True
