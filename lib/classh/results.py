"""Result records: plain data about one host's run, and what follows from them.

A :class:`Record` is what classh knows about one target once its command has
ended. Displays, result files and routers consume records; nothing here prints.
"""
from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional

__all__ = [
    "Record", "Capture", "Tally",
    "OK", "FAILED", "SSH_ERROR", "TIMEOUT", "KILLED",
    "STATUSES", "PROGRESS_CHAR", "exit_status", "describe_exit",
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

    @property
    def status(self) -> str:
        """One of OK, FAILED, SSH_ERROR, TIMEOUT, KILLED."""
        if self.timed_out:
            return TIMEOUT
        if self.interrupted or self.signal is not None:
            return KILLED
        if self.ssh_error or self.exitcode == SSH_ERROR_EXIT or self.exitcode is None:
            return SSH_ERROR
        return OK if self.exitcode == 0 else FAILED

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


def describe_exit(record: Record) -> str:
    """Short text for a record's outcome: ``0``, ``7``, ``timeout``, ``SIGKILL``..."""
    if record.timed_out:
        return "timeout"
    if record.interrupted:
        return "interrupted"
    if record.signal is not None:
        try:
            return _signal.Signals(record.signal).name
        except ValueError:
            return "signal %d" % record.signal
    if record.exitcode is None:
        return "error"
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

