"""The observer protocol: what a run tells its sinks, and how a sink says it failed.

Displays, result files, routers and collectors are observers of a run. The
run driver calls, in this order: ``attach(loop)`` once before the first task,
``started(task)`` when a task's child is running, ``output(task, fd, data)``
for each chunk of its stdout (fd 1) or stderr (fd 2), ``finished(task,
record)`` with the task's final record (or ``retried(task, record)`` for an
attempt that the source runs again), and ``close()`` once at the end; the
run then waits while ``busy`` is true (a pipeline router still reading),
passing any SIGINT/SIGTERM/SIGHUP to ``signal(signum)``.
Every method of :class:`Observer` does nothing, so a sink overrides only what
it needs.

A sink that cannot write raises :class:`SinkError`. With a ``host`` the
failure is that host's alone (its result file): the host is failed and the
others go on. Without one it concerns every host (the display,
``summary.jsonl``): the run ends cleanly.
"""
from __future__ import annotations

import os
from typing import List, Optional

__all__ = ["Observer", "SinkError"]


class Observer:
    """Base class of everything that watches a run; every hook is a no-op."""

    #: True when records must carry the whole captured output (a display of it).
    needs_output = False

    @property
    def busy(self) -> bool:
        """True while the sink still has work after ``close()`` (the run waits)."""
        return False

    def attach(self, loop) -> None:
        """Called once with the run's event loop, before the first task starts."""

    def started(self, task) -> None:
        """A task's child is running."""

    def output(self, task, fd: int, data: bytes) -> None:
        """``data`` arrived on the task's stdout (``fd`` 1) or stderr (``fd`` 2)."""

    def finished(self, task, record) -> None:
        """The task has its final record."""

    def retried(self, task, record) -> None:
        """This attempt of the task failed and the task will run again (job mode): ``record``
        is not a result; what was written for the attempt may be dropped."""

    def close(self) -> None:
        """The run is over: release files, end pipelines."""

    def signal(self, signum: int) -> None:
        """``signum`` arrived while the run waits for this busy sink: pass it on."""

    def failures(self) -> List[str]:
        """After the run: one line for each way this sink failed that no host's record shows
        (a ``-S`` command that exited non-zero)."""
        return []


class SinkError(Exception):
    """A sink could not write ``path``: ``error`` is the OSError, ``host`` the host whose
    file it was (None when every host needs the sink: the display, the summary)."""

    def __init__(self, path: str, error: BaseException, host: Optional[str] = None):
        reason = getattr(error, "strerror", None) or str(error)
        super().__init__("cannot write %s: %s" % (path, reason))
        self.path = path
        self.error = error
        self.host = host

    @classmethod
    def wrap(cls, path: str, host: Optional[str] = None):
        """A context manager turning an OSError inside it into a SinkError for ``path``."""
        return _Wrap(cls, path, host)


class _Wrap:
    __slots__ = ("cls", "path", "host")

    def __init__(self, cls, path, host):
        self.cls, self.path, self.host = cls, path, host

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, OSError):
            raise self.cls(os.fspath(self.path), exc, self.host) from exc
        return False
