"""Host mode: one command on every target, through the supervisor."""
from __future__ import annotations

import os
import signal
import stat
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from .loop import EventLoop, read_ready
from .options import Options
from .prompts import HostAuth, SudoWrapper
from .results import Record, Tally
from .spawn import raise_fd_limit
from .ssh import SshCommand
from .supervisor import Supervisor, Task
from .targets import Resolver, Target, TargetError, is_host_file

__all__ = ["HostRun", "RunSummary", "TargetSource", "task_maker", "is_stream", "open_stream"]

_EXIT_ON_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
READ_SIZE = 65536


@dataclass
class RunSummary:
    """What a whole run came to."""

    tally: Tally
    elapsed: float
    interrupted_by: Optional[int] = None
    numjobs: int = 0
    input_errors: Sequence[str] = ()

    @property
    def exit_status(self) -> int:
        """130/143 when interrupted; 2 when streamed targets were bad; else the records' status."""
        if self.interrupted_by is not None:
            return _EXIT_ON_SIGNAL.get(self.interrupted_by, 128 + self.interrupted_by)
        if self.input_errors:
            return 2
        return self.tally.exit_status()


def task_maker(command: Optional[str], options: Options) -> Callable[[Target], Task]:
    """A function making the task that runs ``command`` on one target over ssh."""
    ssh = SshCommand(options)
    env = dict(os.environ)  # one plain copy for every child
    sudo = SudoWrapper(options.sudo_user) if options.sudo else None
    if sudo is not None and command is not None:
        command = sudo.wrap(command)
    tty = options.password is not None

    def make(target: Target) -> Task:
        auth = HostAuth(options.password, tty, sudo) if tty or sudo else None
        return Task(key=target.label, argv=ssh.argv(target, command), input=options.input,
                    timeout=options.timeout, env=env, context=target, auth=auth)

    return make


def is_stream(arg: str) -> bool:
    """True for a host-file argument that is a pipe or device (read as lines arrive)."""
    if not is_host_file(arg):
        return False
    try:
        mode = os.stat(arg).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def open_stream(path: str) -> int:
    """Open a streamed host file for non-blocking reads (TargetError naming it on failure)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise TargetError("cannot read host file %r: %s" % (path, exc.strerror)) from None


class TargetSource:
    """Hands out one task per target, in order; more targets may arrive from streams.

    ``streams`` maps an open, non-blocking fd to its path (``/dev/stdin`` fed
    by an earlier classh stage): its lines are resolved as they arrive, so a
    next stage starts its first hosts while the earlier one still runs. A bad
    streamed line is skipped and kept in ``errors``. Targets in ``skip`` (done
    before, ``--resume``) are never run.
    """

    def __init__(self, targets: Iterable[Target], make_task: Callable[[Target], Task],
                 streams: Optional[Dict[int, str]] = None, resolver: Optional[Resolver] = None,
                 skip: Iterable[str] = ()):
        self.queue = deque(targets)
        self.make_task = make_task
        self.streams = dict(streams or {})
        self.resolver = resolver
        self.skip = set(skip)
        self.skipped = 0
        self.errors: List[str] = []
        self._partial: Dict[int, bytes] = {}
        self._lines: Dict[int, int] = {}
        self._supervisor = None
        self._loop = None

    def attach(self, loop: EventLoop, supervisor: Supervisor) -> None:
        """Start reading the streams."""
        self._loop, self._supervisor = loop, supervisor
        for fd in self.streams:
            loop.add_reader(fd, lambda fd=fd: self._read(fd))

    def next_task(self) -> Optional[Task]:
        """The task for the next target not skipped, or None for now."""
        while self.queue:
            target = self.queue.popleft()
            if target.label in self.skip:
                self.skipped += 1
                continue
            return self.make_task(target)
        return None

    def pending(self) -> Optional[int]:
        """Targets still to hand out, or None while streams may bring more."""
        return None if self.streams else len(self.queue)

    def exhausted(self) -> bool:
        """True once every stream has ended and every target was handed out."""
        return not self.queue and not self.streams

    def completed(self, task: Task, record: Record) -> None:
        """Nothing to do: host mode never requeues."""

    def _read(self, fd: int) -> None:
        data = read_ready(fd, READ_SIZE)
        if data is None:
            return
        text = self._partial.pop(fd, b"") + data
        if data:
            text, _, rest = text.rpartition(b"\n")
            if rest:
                self._partial[fd] = rest
        else:
            self._loop.remove_reader(fd)
            os.close(fd)
        path = self.streams[fd] if data else self.streams.pop(fd)
        for line in text.decode("utf-8", "replace").splitlines():
            self._lines[fd] = number = self._lines.get(fd, 0) + 1
            try:
                self.queue.extend(self.resolver.add_line(line, "%s:%d: " % (path, number)))
            except TargetError as exc:
                self.errors.append(str(exc))
        self._supervisor.fill()

    def close(self) -> None:
        """Close streams left open (an interrupted run)."""
        for fd in self.streams:
            self._loop.remove_reader(fd)
            os.close(fd)
        self.streams.clear()


class _TallyObserver:
    def __init__(self):
        self.tally = Tally()

    def finished(self, task, record: Record) -> None:
        self.tally.add(record)


class HostRun:
    """Runs the tasks of ``source`` (a TargetSource, or any source with ``pending()``);
    observers get output and records.

    ``keep`` bounds the bytes of each stream kept in memory per host. With
    ``handle_signals`` (the default, honoured in the main thread only)
    SIGINT/SIGTERM kill every running child, record them as interrupted and
    end the run. Observers may also have ``attach(loop)`` (called first),
    ``close()`` (called at the end) and a ``busy`` property (the run waits
    until it is false, e.g. a pipeline router).

    :meth:`run` runs to the end; :meth:`start`, :meth:`step` and
    :meth:`kill` let a caller drive the run bit by bit (the API's SSHJobMan).
    """

    def __init__(self, source: TargetSource, options: Options,
                 observers: Sequence[object] = (), keep=None, handle_signals: bool = True):
        self.source = source
        self.options = options
        self.observers = list(observers)
        self.keep = keep
        self.handle_signals = handle_signals
        self.supervisor: Optional[Supervisor] = None
        self.summary: Optional[RunSummary] = None
        self._loop: Optional[EventLoop] = None
        self._tally = _TallyObserver()
        self._started = 0.0

    def run(self) -> RunSummary:
        """Run to the end (or until interrupted) and summarise."""
        self.start()
        while not self.step():
            pass
        return self.summary

    def start(self) -> None:
        """Start the first tasks."""
        self._started = time.monotonic()
        known = self.source.pending()
        wanted = self.options.numjobs if known is None else min(self.options.numjobs, known)
        loop = self._loop = EventLoop()
        loop.open()
        try:
            self.supervisor = Supervisor(
                loop, numjobs=raise_fd_limit(max(1, wanted)), observers=self.observers + [self._tally],
                keep=self.keep, kill_grace=self.options.kill_grace)
            if self.handle_signals:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.on_signal(signum, self.supervisor.interrupt)
            for observer in self.observers:
                if hasattr(observer, "attach"):
                    observer.attach(loop)
            if hasattr(self.source, "attach"):
                self.source.attach(loop, self.supervisor)
            self.supervisor.start(self.source)
        except BaseException:
            self._end()
            raise

    def step(self, timeout: Optional[float] = None) -> bool:
        """Handle one round of events (waiting at most ``timeout`` s); True once all is over."""
        if self.summary is not None:
            return True
        try:
            if not self.supervisor.done():
                self._loop.run_once(timeout)
            if self.supervisor.done():
                self._end()
        except BaseException:
            self.supervisor.interrupt(signal.SIGINT)
            self.supervisor.interrupt(signal.SIGINT)  # again: SIGKILL, nothing left behind
            self._loop.run_until(self.supervisor.done)
            self._end()
            raise
        return self.summary is not None

    def kill(self, key: Optional[str] = None) -> None:
        """Kill one running task (by target label) or, with no key, end the whole run."""
        if key is None:
            self.supervisor.interrupt(signal.SIGTERM)
        else:
            self.supervisor.kill(key)

    def _end(self) -> None:
        loop = self._loop
        try:
            if hasattr(self.source, "close"):
                self.source.close()
            for observer in self.observers:
                if hasattr(observer, "close"):
                    observer.close()
            loop.run_until(lambda: not any(getattr(o, "busy", False) for o in self.observers))
        finally:
            loop.close()
        supervisor = self.supervisor
        self.summary = RunSummary(
            self._tally.tally, time.monotonic() - self._started,
            supervisor.interrupted_by if supervisor else None,
            supervisor.numjobs if supervisor else 0, list(getattr(self.source, "errors", ())))
