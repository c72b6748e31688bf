"""Host mode: one command on every target, through the supervisor."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

from .loop import EventLoop
from .options import Options
from .results import Record, Tally
from .spawn import raise_fd_limit
from .ssh import SshCommand
from .supervisor import ListSource, Supervisor, Task
from .targets import Target

__all__ = ["HostRun", "RunSummary", "host_tasks"]

_EXIT_ON_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class RunSummary:
    """What a whole run came to."""

    tally: Tally
    elapsed: float
    interrupted_by: Optional[int] = None
    numjobs: int = 0

    @property
    def exit_status(self) -> int:
        """130/143 when interrupted, else the records' exit status."""
        if self.interrupted_by is not None:
            return _EXIT_ON_SIGNAL.get(self.interrupted_by, 128 + self.interrupted_by)
        return self.tally.exit_status()


def host_tasks(targets: Iterable[Target], command: Optional[str], options: Options,
               ssh: SshCommand) -> Iterable[Task]:
    """One task per target running ``command`` over ssh."""
    env = dict(os.environ)
    for target in targets:
        yield Task(
            key=target.label,
            argv=ssh.argv(target, command),
            input=options.input,
            timeout=options.timeout,
            env=env,
            context=target,
        )


class _TallyObserver:
    def __init__(self):
        self.tally = Tally()

    def finished(self, task, record: Record) -> None:
        self.tally.add(record)


class HostRun:
    """Runs ``command`` on ``targets``; observers receive output and records.

    ``keep`` bounds the bytes of each stream kept in memory per host.
    SIGINT/SIGTERM (when run from the main thread) kill every running child,
    record them as interrupted and end the run.
    """

    def __init__(self, targets: Sequence[Target], command: Optional[str], options: Options,
                 observers: Sequence[object] = (), keep: Optional[int] = None,
                 tasks: Optional[Iterable[Task]] = None):
        self.targets = list(targets)
        self.options = options
        self.observers = list(observers)
        self.keep = keep
        self._tasks = tasks if tasks is not None else host_tasks(
            self.targets, command, options, SshCommand(options, batch=options.password is None))
        self.supervisor: Optional[Supervisor] = None

    def run(self) -> RunSummary:
        """Run to the end (or until interrupted) and summarise."""
        started = time.monotonic()
        numjobs = raise_fd_limit(min(self.options.numjobs, max(1, len(self.targets))))
        tally = _TallyObserver()
        with EventLoop() as loop:
            supervisor = self.supervisor = Supervisor(
                loop, numjobs=numjobs, observers=[tally] + self.observers,
                keep=self.keep, kill_grace=self.options.kill_grace)
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.on_signal(signum, supervisor.interrupt)
            supervisor.run(ListSource(self._tasks))
        return RunSummary(tally.tally, time.monotonic() - started, supervisor.interrupted_by, numjobs)
