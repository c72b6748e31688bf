"""Output held until it can be written, in bounded memory: a :class:`Spill` and its spools.

A display that writes a job's output only when the job ends (job mode's
default, ``-k``, ``--format json``) or a line only when it is complete
(``--format lines``) must hold bytes for a while. Each held stream is a
:class:`Spool`; the spools of one display share a :class:`Spill`: together
they keep at most ``budget`` bytes in memory (small outputs never touch the
disk), and whatever comes past that is appended to one unnamed temporary
file (``$TMPDIR``, removed by the system when classh ends, even on a kill).
``pieces()`` gives a spool's bytes back in order, at most :data:`PIECE`
bytes at a time, so a 1.5 GB output is never whole in memory. The file is
emptied whenever no spool holds bytes in it any more.

A write to the temporary file that fails (a full disk) raises
:class:`~classh.observers.SinkError` (``host`` None): output is never dropped
quietly. Nothing here prints.
"""
from __future__ import annotations

import os
import tempfile
from typing import Iterator, List, Optional, Union

from .observers import SinkError

__all__ = ["Spill", "Spool", "SPILL_BUDGET", "PIECE"]

#: Bytes all the spools of one Spill keep in memory together.
SPILL_BUDGET = 16 << 20
#: The most bytes ``pieces()`` hands out at once.
PIECE = 1 << 20
#: What a piece kept in memory costs beyond its bytes (the object, its list slot).
_PART_COST = 64


class Spill:
    """The memory budget and the temporary file shared by the spools of one display."""

    def __init__(self, budget: int = SPILL_BUDGET, directory: Optional[str] = None):
        self.budget = budget
        self.directory = directory
        self.in_memory = 0  # bytes (plus _PART_COST each piece) held in memory
        self.on_disk = 0    # bytes held in the file by live spools
        self._fd = -1
        self._end = 0

    def spool(self) -> "Spool":
        """A new, empty spool drawing on this spill."""
        return Spool(self)

    def _where(self) -> str:
        return "a temporary file in %s (output held for the display)" % (
            self.directory or tempfile.gettempdir())

    def _store(self, data: bytes) -> int:
        """Append ``data`` to the file; its offset. SinkError when it cannot be written."""
        with SinkError.wrap(self._where()):
            if self._fd < 0:
                handle = tempfile.TemporaryFile(dir=self.directory)
                self._fd = os.dup(handle.fileno())
                handle.close()
            offset, view, done = self._end, memoryview(data), 0
            while done < len(data):
                done += os.pwrite(self._fd, view[done:], offset + done)
            self._end = offset + len(data)
        self.on_disk += len(data)
        return offset

    def _load(self, offset: int, length: int) -> bytes:
        """``length`` bytes of the file from ``offset`` (SinkError when it cannot be read)."""
        with SinkError.wrap(self._where()):
            data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise SinkError(self._where(), OSError("it was cut short"))
        return data

    def _freed(self, memory: int, disk: int) -> None:
        """A spool let go of ``memory`` and ``disk`` bytes; an unused file is emptied."""
        self.in_memory -= memory
        self.on_disk -= disk
        if not self.on_disk and self._end:
            self._end = 0
            os.ftruncate(self._fd, 0)

    def close(self) -> None:
        """Close the temporary file (its space goes back to the system)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._end = 0


class Spool:
    """One held stream: ``write`` bytes, read them back with ``pieces()``, ``release()``.

    ``size`` counts the bytes held; ``last`` is the last byte (b"" when empty).
    """

    __slots__ = ("spill", "size", "last", "_parts", "_memory", "_disk")

    def __init__(self, spill: Spill):
        self.spill = spill
        self.size = 0
        self.last = b""
        self._parts: List[Union[bytes, List[int]]] = []  # bytes, or [offset, length] on disk
        self._memory = 0
        self._disk = 0

    def write(self, data: bytes) -> None:
        """Hold ``data`` after what is held: in memory while the spill's budget allows."""
        if not data:
            return
        spill = self.spill
        cost = len(data) + _PART_COST
        if spill.in_memory + cost <= spill.budget:
            self._parts.append(bytes(data))
            self._memory += cost
            spill.in_memory += cost
        else:
            self._append_on_disk(spill._store(data), len(data))
        self.size += len(data)
        self.last = data[-1:]

    def _append_on_disk(self, offset: int, length: int) -> None:
        last = self._parts[-1] if self._parts else None
        if isinstance(last, list) and last[0] + last[1] == offset:
            last[1] += length  # right after our last piece on disk: one segment
        else:
            self._parts.append([offset, length])
        self._disk += length

    def pieces(self, size: int = PIECE) -> Iterator[bytes]:
        """The held bytes in order, at most ``size`` bytes a piece (those on disk read back)."""
        for part in self._parts:
            if isinstance(part, bytes):
                yield part
                continue
            offset, length = part
            for at in range(offset, offset + length, size):
                yield self.spill._load(at, min(size, offset + length - at))

    def value(self) -> bytes:
        """Everything held, as one bytes object (for small spools only)."""
        return b"".join(self.pieces())

    def release(self) -> None:
        """Let go of everything held (the spool is empty again)."""
        self.spill._freed(self._memory, self._disk)
        self._parts = []
        self._memory = self._disk = self.size = 0
        self.last = b""
