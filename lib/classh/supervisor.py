"""Supervision: runs tasks as child processes, at most N at a time.

The supervisor pulls :class:`Task` objects from a *source*, starts each as a
child (see :mod:`classh.spawn`), reads its stdout and stderr as they arrive,
enforces its timeout (SIGTERM to the whole process group, then SIGKILL after a
grace), reaps it, and hands a :class:`~classh.results.Record` to the source
and to every observer. Sources decide what runs next: host mode hands out one
task per target; job mode hands tasks to node slots and can requeue them.

Observers follow :class:`classh.observers.Observer`. A :class:`SinkError`
raised by one of them never breaks the run: one host's file failing fails
that host (it is killed, its record names the error, the others go on); a
failure of a sink every host needs ends the run cleanly (every child killed
and reaped, finished records kept). Either way the error is kept in
``sink_errors`` / ``fatal`` for the run's summary.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from collections import deque
from typing import Callable, Deque, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from .loop import EventLoop, Timer, read_ready
from .observers import SinkError
from .results import Capture, Record
from .spawn import SpawnError, kill_group, live_groups, seal_inherited_fds, spawn

__all__ = ["Task", "TaskSource", "Supervisor", "ListSource", "DEFAULT_KILL_GRACE"]

DEFAULT_KILL_GRACE = 2.0
#: How long a child's pipes may stay silent after the child itself has exited
#: before they are given up (a background grandchild may hold them open
#: forever). The wait starts again whenever output arrives, so a writer that is
#: slow only because the machine is loaded (an ssh ControlMaster still writing
#: a job's output after its client exited) is read to the end; a record whose
#: pipes had to be given up says so (``Record.output_cut``) and is not ok.
LINGER = 5.0
READ_SIZE = 65536
#: How often to look again at killed process groups still exiting at the end of a run.
GROUP_RECHECK = 0.05
_RETRYABLE = {errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ENOMEM}
#: Bytes of stderr kept in a record when ``keep`` wants none (the source's reasons).
SOURCE_STDERR = 4096
#: Bytes of each stream kept for a task with ``keep_output`` (a node's nvidia-smi report).
PROBE_OUTPUT = 1 << 20
#: The exit status of a child reaped by someone else (see EventLoop.watch_child).
LOST = -1


@dataclass
class Task:
    """One command to run: ``argv`` for target/job ``key``."""

    key: str
    argv: Sequence[str]
    input: Optional[bytes] = None
    timeout: Optional[float] = None
    env: Optional[Mapping[str, str]] = None
    context: object = None  # the source's own data (a Target, a job...)
    attempt: int = 1
    auth: object = None  # a prompts.HostAuth when prompts must be answered
    #: Probes and connection set-up: the source sees the record, observers never see the task.
    internal: bool = False
    #: Keep a pipe to the child's stdin open until it exits, writing nothing but
    #: ``input`` (a long command's line, see :func:`classh.remote.remote_task`) and
    #: sudo's password: the remote watchdog's sign that ssh is gone.
    hold_stdin: bool = False
    #: The record keeps :data:`PROBE_OUTPUT` bytes of the task's stdout and stderr,
    #: whatever the run's ``keep`` (a probe whose output the source reads); a number:
    #: that many bytes of each (job mode's backup copy of a block, see :meth:`Supervisor.publish`).
    keep_output: Union[bool, int] = False
    #: A filter of stderr (``feed(data)`` -> bytes: see :class:`classh.muxnotes.MuxNotes`)
    #: taking ssh's own lines off its start before anyone sees them.
    stderr_notes: object = None


class TaskSource:
    """Where a run's tasks come from: the seam between the supervisor and a mode.

    The supervisor asks ``next_task()`` whenever a slot is free (None: nothing
    ready now), tells ``completed(task, record)`` when an attempt has ended
    (its answer says whether that record is the task's final one; observers
    get ``finished`` for a final record, ``retried`` otherwise), and stops
    once ``exhausted()``. ``pending()`` is
    how many tasks are known to be left (None while more may arrive).
    ``attach`` is called once with the loop and the supervisor (to read
    streams, to call ``supervisor.fill()`` when tasks arrive); ``close`` at
    the end; ``errors`` are bad input lines met on the way; ``undone`` names
    the work that no one could run (job mode: no node was left).
    ``signal_handlers()`` lets a source claim signals of the run (job mode:
    SIGUSR1 pauses, SIGHUP drains); the run driver calls them from the loop.
    """

    errors: List[str] = []
    undone: List[str] = []

    def next_task(self) -> Optional[Task]:
        """The next task to start, or None when none is ready."""
        raise NotImplementedError

    def pending(self) -> Optional[int]:
        """How many tasks are still to hand out (None: unknown yet)."""
        raise NotImplementedError

    def exhausted(self) -> bool:
        """True once no task will come any more."""
        raise NotImplementedError

    def completed(self, task: Task, record: Record) -> bool:
        """``task``'s attempt ended with ``record``; True when that is its final record
        (False: the source runs it again, or the task was internal)."""
        return True

    def timed_out(self, task: Task) -> None:
        """``task`` ran past its timeout and is being killed (its record comes later)."""

    def attach(self, loop: EventLoop, supervisor: "Supervisor") -> None:
        """Called once before the first task is asked for."""

    def signal_handlers(self) -> Dict[int, Callable[[int], None]]:
        """``{signum: handler(signum)}`` for the signals this source handles itself.

        :class:`~classh.run.Run` installs them (from the loop, never in a
        signal handler) instead of its own interrupt, unless the program
        ignores that signal. None by default: every run signal ends the run.
        """
        return {}

    def close(self) -> None:
        """The run is over (or interrupted): release what is still open."""


class ListSource(TaskSource):
    """A source handing out a sequence of tasks once each."""

    def __init__(self, tasks):
        self._tasks = list(tasks)
        self._tasks.reverse()

    def next_task(self) -> Optional[Task]:
        """The next task, or None when there are no more."""
        return self._tasks.pop() if self._tasks else None

    def pending(self) -> int:
        """How many tasks are still to hand out."""
        return len(self._tasks)

    def exhausted(self) -> bool:
        """True once every task has been handed out."""
        return not self._tasks


class _Child:
    """A running task's process and what has been read from it so far.

    Its life is a small state machine:

    ``RUNNING``  the process runs; stdout/stderr are read, input written, the
                 timeout armed.
        -> ``EXITED`` when it is reaped: stdin and the terminal are closed;
           the pipes are read to their end (LINGER seconds of silence bound a
           grandchild that keeps them open).
        -> ``FINISHED`` when both pipes are closed (or stayed silent for
           LINGER: the record is marked ``output_cut``): the record is
           complete and published, the slot is free.

    A kill (timeout, interrupt, failed login, failed sink) only signals the
    process group; the child goes through the same states afterwards.
    """

    RUNNING, EXITED, FINISHED = "running", "exited", "finished"

    __slots__ = (
        "task", "pid", "record", "state", "fds", "captures", "stdin", "pending_input",
        "close_input", "tty", "exit_status", "timer", "linger", "exited_at", "muted",
    )

    def __init__(self, task: Task, pid: int, record: Record):
        self.task = task
        self.pid = pid
        self.record = record
        self.state = self.RUNNING
        self.fds: Dict[int, int] = {}  # open parent fd -> 1 (stdout) or 2 (stderr)
        self.captures = None
        self.stdin = None
        self.pending_input: Deque[memoryview] = deque()  # views of shared bytes, never copies
        self.close_input = False
        self.tty = None  # (master, slave) of the child's terminal, when it has one
        self.exit_status: Optional[int] = None
        self.timer: Optional[Timer] = None
        self.linger: Optional[Timer] = None
        self.exited_at = 0.0
        self.muted = False  # its own sink failed: observers get no more of its output


class Supervisor:
    """Runs tasks from a source with a fanout, timeouts and clean kills.

    ``keep`` bounds the bytes of each stream kept in memory (None: all); a
    pair bounds stdout and stderr apart.
    """

    def __init__(
        self,
        loop: EventLoop,
        numjobs: int = 100,
        observers: Sequence[object] = (),
        keep: Optional[int] = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
    ):
        if numjobs < 1:
            raise ValueError("numjobs must be at least 1")
        self.loop = loop
        self.numjobs = numjobs
        self.keep = keep if isinstance(keep, tuple) else (keep, keep)
        self.kill_grace = kill_grace
        self.interrupted_by: Optional[int] = None
        #: The error of a sink every host needed; the run stopped because of it.
        self.fatal: Optional[str] = None
        #: One line for each failure of a host's own sink.
        self.sink_errors: List[str] = []
        self._observers = list(observers)
        self._hooks: Dict[str, List[Callable]] = {}
        self._bind_hooks()
        # Not keyed by pid: a reaped child may still be reading its pipes (LINGER)
        # while the kernel gives its pid to the next child.
        self._running: Set[_Child] = set()
        self._deferred: List[Task] = []
        self._hard_kills: Dict[int, Timer] = {}
        self._recheck: Optional[Timer] = None
        #: finished internal tasks handed to the observers (see publish); while a record
        #: is being judged and published (``_publishing``) they wait for it to go out
        self._handed: Deque[Tuple[Task, Record]] = deque()
        self._publishing = False
        seal_inherited_fds()
        self._source = None

    def _bind_hooks(self) -> None:
        self._hooks = {name: [getattr(o, name) for o in self._observers]
                       for name in ("started", "output", "finished", "retried")}

    # -- public --------------------------------------------------------
    @property
    def running(self) -> int:
        """Number of children running now."""
        return len(self._running)

    @property
    def stopping(self) -> bool:
        """True once the run was interrupted or stopped by a failed sink: nothing new starts."""
        return self.interrupted_by is not None or self.fatal is not None

    def run(self, source) -> None:
        """Run every task ``source`` hands out; return when all have finished."""
        self.start(source)
        self.loop.run_until(self.done)

    def start(self, source) -> None:
        """Begin taking tasks from ``source`` (the caller drives the loop)."""
        self._source = source
        self.fill()

    def done(self) -> bool:
        """True when nothing runs, nothing more will start, and no kill is pending."""
        if self._running:
            return False
        if not self.stopping and self._source is not None:
            if self._deferred or not self._source.exhausted():
                return False
        if self._hard_kills and self._recheck is None:
            # The last children are gone; groups with nobody alive left need no
            # SIGKILL. Members still exiting are looked at again shortly.
            alive = live_groups(self._hard_kills)
            for pgid in [p for p in self._hard_kills if p not in alive]:
                self.loop.cancel(self._hard_kills.pop(pgid))
            if self._hard_kills:
                self._recheck = self.loop.call_later(GROUP_RECHECK, self._end_recheck)
        return not self._hard_kills

    def _end_recheck(self) -> None:
        self._recheck = None

    def fill(self) -> None:
        """Start tasks until the fanout is reached or the source has none ready."""
        while len(self._running) < self.numjobs and not self.stopping:
            task = self._deferred.pop() if self._deferred else self._source.next_task()
            if task is None:
                return
            if not self._launch(task):
                return

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """Stop starting tasks and kill every running one (a second call: SIGKILL at once)."""
        again = self.interrupted_by is not None
        self.interrupted_by = signum
        self._kill_all(signal.SIGKILL if again else signal.SIGTERM)

    def stop(self, reason: str) -> None:
        """End the run because something every task needs failed (``reason`` says what)."""
        if self.fatal is None:
            self.fatal = reason
            self._kill_all(signal.SIGTERM)

    def mute(self) -> None:
        """Deliver nothing more to any observer (a broken observer: the run is being torn down)."""
        self._observers = []
        self._bind_hooks()

    def kill(self, key: str) -> bool:
        """Kill the running task ``key`` (recorded as killed); False if not running."""
        for child in self._running:
            if child.task.key == key:
                child.record.interrupted = True
                self._terminate(child.pid, signal.SIGTERM)
                return True
        return False

    def _kill_all(self, sig: int) -> None:
        self._deferred.clear()
        for child in list(self._running):
            child.record.interrupted = True
            self._terminate(child.pid, sig)

    # -- observers -----------------------------------------------------
    def _notify(self, name: str, child: Optional[_Child], *args) -> None:
        """Call hook ``name`` of every observer; a SinkError fails a host or ends the run."""
        for hook in self._hooks[name]:
            try:
                hook(*args)
            except SinkError as exc:
                self.sink_failed(exc, hook.__self__, child)

    def sink_failed(self, exc: SinkError, observer=None, child: Optional[_Child] = None) -> None:
        """Handle a sink's write error: a host's own file fails that host; anything
        else (``exc.host`` None) stops the run, and ``observer`` gets nothing more."""
        if exc.host is None:
            if observer in self._observers:
                self._observers.remove(observer)  # it can take nothing more
                self._bind_hooks()
            self.stop(str(exc))
            return
        self.sink_errors.append(str(exc))
        if child is None:
            child = next((c for c in self._running if c.task.key == exc.host), None)
        if child is not None and child.state != _Child.FINISHED:
            # Failed before its record goes out, so no sink writes it as a success.
            child.muted = True
            child.record.error = str(exc)
            child.record.interrupted = True
            if child.state == _Child.RUNNING:
                self._terminate(child.pid, signal.SIGTERM)

    # -- starting ------------------------------------------------------
    def _launch(self, task: Task) -> bool:
        record = Record(host=task.key, started=time.time())
        auth = task.auth
        try:
            spawned = spawn(task.argv, env=task.env,
                            stdin_pipe=(task.input is not None or task.hold_stdin
                                        or bool(auth and auth.uses_stdin)),
                            use_pty=bool(auth and auth.uses_tty))
        except (SpawnError, ValueError) as exc:
            if getattr(exc, "errno", None) in _RETRYABLE and self._running:
                self._deferred.append(task)  # retried when a child ends
                return False
            record.error = getattr(exc, "strerror", None) or str(exc)
            record.ssh_error = True
            record.stopped = time.time()
            self._publish(task, record, None)
            return True
        child = _Child(task, spawned.pid, record)
        # The source judges attempts by their stderr too (ssh's reason for a
        # dropped node), so a little of it is kept even when no sink wants any.
        if task.keep_output:
            keep = PROBE_OUTPUT if task.keep_output is True else task.keep_output
            child.captures = {1: Capture(keep), 2: Capture(keep)}
        else:
            err_keep = self.keep[1] if self.keep[1] != 0 else SOURCE_STDERR
            child.captures = {1: Capture(self.keep[0]), 2: Capture(err_keep)}
        self._running.add(child)
        for fd, stream in ((spawned.stdout, 1), (spawned.stderr, 2)):
            child.fds[fd] = stream
            self.loop.add_reader(fd, self._reader(child, fd, stream))
        if spawned.stdin is not None:
            child.stdin = spawned.stdin
            # held stdin is closed only when the child exits (_exited); with
            # sudo, input waits until sudo is done
            if not (auth and auth.uses_stdin) and (task.input or not task.hold_stdin):
                self._send_input(child, task.input or b"", close=not task.hold_stdin)
        if spawned.pty is not None:
            child.tty = (spawned.pty, spawned.pty_slave)
            auth.attach_tty(spawned.pty)
            self.loop.add_reader(spawned.pty, lambda: self._tty_readable(child))
        self.loop.watch_child(spawned.pid, lambda status: self._exited(child, status))
        if task.timeout is not None and task.timeout > 0:
            child.timer = self.loop.call_later(task.timeout, lambda: self._timed_out(child))
        if task.internal:
            child.muted = True  # observers never see internal tasks
        else:
            self._notify("started", child, task)
        return True

    # -- i/o -----------------------------------------------------------
    def _reader(self, child: _Child, fd: int, stream: int) -> Callable[[], None]:
        capture = child.captures[stream]
        task = child.task
        auth = task.auth if stream == 2 and task.auth and task.auth.uses_stdin else None
        notes = task.stderr_notes if stream == 2 else None

        def deliver(data: bytes) -> None:
            if notes is not None:
                data = notes.feed(data)
            if data:
                capture.write(data)
                if child.linger is not None:
                    self._linger(child)  # still writing: the silence starts again
                if not child.muted:
                    self._notify("output", child, task, stream, data)

        def read() -> None:
            data = read_ready(fd, READ_SIZE)
            if data is None:
                return
            if not data:
                if auth is not None:
                    deliver(auth.stderr_end())  # what was held back as a possible marker
                self._close_stream(child, fd)
                return
            deliver(self._follow_sudo(child, auth, data) if auth is not None else data)

        return read

    def _follow_sudo(self, child: _Child, auth, data: bytes) -> bytes:
        """Strip sudo's markers from stderr; answer its prompt; release the input."""
        data, answer, ready, failure = auth.stderr(data)
        if failure:
            self._fail_login(child, failure)
        elif answer:
            self._send_input(child, answer, close=False)
        elif ready:  # a held stdin stays open after sudo, for the watchdog inside it
            self._send_input(child, child.task.input or b"", close=not child.task.hold_stdin)
        return data

    def _tty_readable(self, child: _Child) -> None:
        failure = child.task.auth.tty_readable()
        if failure:
            self._fail_login(child, failure)

    def _fail_login(self, child: _Child, reason: str) -> None:
        """A prompt classh cannot answer: the host is an ssh error, at once."""
        if child.record.ssh_error:
            return
        child.record.ssh_error = True
        child.record.error = reason
        self._close_tty(child)
        self._terminate(child.pid, signal.SIGTERM)

    def _close_tty(self, child: _Child) -> None:
        if child.tty is not None:
            self.loop.remove_reader(child.tty[0])
            for fd in child.tty:
                os.close(fd)
            child.tty = None

    def _close_stream(self, child: _Child, fd: int) -> None:
        self.loop.remove_reader(fd)
        os.close(fd)
        del child.fds[fd]
        if not child.fds and child.state == _Child.EXITED:
            self._finish(child)

    def _send_input(self, child: _Child, data: bytes, close: bool) -> None:
        """Queue ``data`` for the child's stdin; with ``close``, end stdin after it.

        ``data`` is referenced, not copied: one input shared by a thousand
        hosts stays one buffer.
        """
        if child.stdin is None:
            return
        if data:
            child.pending_input.append(memoryview(data))
        child.close_input = close
        self._write_input(child)

    def _write_input(self, child: _Child) -> None:
        pending = child.pending_input
        try:
            while pending:
                written = os.write(child.stdin, pending[0][:READ_SIZE])
                rest = pending[0][written:]
                if rest:
                    pending[0] = rest
                else:
                    pending.popleft()
        except BlockingIOError:
            self.loop.add_writer(child.stdin, lambda: self._write_input(child))
            return
        except OSError:  # the child closed its stdin (EPIPE): it wants no more
            pending.clear()
            child.close_input = True
        self.loop.remove_writer(child.stdin)
        if child.close_input:
            self._close_stdin(child)

    def _close_stdin(self, child: _Child) -> None:
        if child.stdin is not None:
            self.loop.remove_writer(child.stdin)
            os.close(child.stdin)
            child.stdin = None
            child.pending_input.clear()

    # -- ending --------------------------------------------------------
    def _timed_out(self, child: _Child) -> None:
        child.timer = None
        child.record.timed_out = True
        self._terminate(child.pid, signal.SIGTERM)
        hook = getattr(self._source, "timed_out", None)
        if hook is not None:
            hook(child.task)

    def _terminate(self, pgid: int, sig: int) -> None:
        """Signal a child's process group; SIGTERM is followed by SIGKILL after the grace."""
        if not kill_group(pgid, sig):
            return
        if sig == signal.SIGKILL:
            self.loop.cancel(self._hard_kills.pop(pgid, None))
        elif pgid not in self._hard_kills:
            self._hard_kills[pgid] = self.loop.call_later(
                self.kill_grace, lambda: self._kill_hard(pgid))

    def _kill_hard(self, pgid: int) -> None:
        self._hard_kills.pop(pgid, None)
        kill_group(pgid, signal.SIGKILL)

    def _exited(self, child: _Child, status: Optional[int]) -> None:
        """RUNNING -> EXITED: the process was reaped; its pipes may still hold output."""
        child.state = _Child.EXITED
        child.exit_status = LOST if status is None else status
        child.exited_at = time.time()
        self.loop.cancel(child.timer)  # it ended in time; LINGER bounds the rest
        child.timer = None
        self._close_stdin(child)
        self._close_tty(child)
        if not child.fds:
            self._finish(child)
        else:
            # The loop reads what is left; a grandchild holding the pipes open
            # gets LINGER seconds of silence before they are given up.
            self._linger(child)

    def _linger(self, child: _Child) -> None:
        """(Re)start the wait for an exited child's pipes to close."""
        self.loop.cancel(child.linger)
        child.linger = self.loop.call_later(LINGER, lambda: self._linger_ended(child))

    def _linger_ended(self, child: _Child) -> None:
        """LINGER seconds without output since the child exited: read what the pipes
        hold now (the timer may have come in the same round as a full read); if they
        are still open and silent, give them up and say the output may be cut."""
        child.linger = None
        for fd in list(child.fds):
            self._drain(child, fd)
        if child.state == _Child.FINISHED:
            return
        if child.linger is None:  # nothing came: a process still holds the pipes
            child.record.output_cut = True
            child.record.error = child.record.error or (
                "output may be incomplete: its stdout/stderr stayed open and silent"
                " %g s after the command ended" % LINGER)
            self._finish(child)

    def _drain(self, child: _Child, fd: int) -> None:
        """Read ``fd`` until it has nothing more for now or ends."""
        read = self.loop.reader_of(fd)
        while read is not None and fd in child.fds and child.state != _Child.FINISHED:
            before = child.captures[child.fds[fd]].size
            read()
            if fd in child.fds and child.captures[child.fds[fd]].size == before:
                return

    def _finish(self, child: _Child) -> None:
        """EXITED -> FINISHED: close what is left, complete the record, free the slot."""
        if child.state == _Child.FINISHED:
            return
        child.state = _Child.FINISHED
        self._running.discard(child)
        self.loop.cancel(child.linger)
        for fd in list(child.fds):
            self.loop.remove_reader(fd)
            os.close(fd)
        child.fds.clear()
        record = child.record
        status = child.exit_status
        if status is LOST:
            record.error = record.error or "exit status lost: another part of the program reaped the process"
        elif os.WIFSIGNALED(status):
            record.signal = os.WTERMSIG(status)
        else:
            record.exitcode = os.WEXITSTATUS(status)
        out, err = child.captures[1], child.captures[2]
        record.stdout, record.stdout_size = out.value(), out.size
        record.stderr, record.stderr_size = err.value(), err.size
        record.stopped = child.exited_at
        self._publish(child.task, record, child)
        self.fill()

    def _publish(self, task: Task, record: Record, child: Optional[_Child]) -> None:
        """The source learns of the attempt first: it decides whether the record is final."""
        self._publishing = True
        try:
            final = self._source.completed(task, record) if self._source is not None else True
            if not task.internal:
                self._notify("finished" if final else "retried", child, task, record)
        finally:
            self._publishing = False
        self._hand_over()

    def publish(self, task: Task, record: Record) -> None:
        """Show the observers a task that ran out of their sight (``internal``: job mode's
        backup copy of a block) as one that just ran: ``started(task)``, its kept output
        (``record.stdout``, then ``record.stderr``, one chunk each, cut to the run's
        ``keep`` in the record), ``finished(task, record)``. ``task`` is what they are to
        see (its key, not internal). Called while the source judges another record (in
        ``completed``), it waits until that record went out: a retried attempt of the same
        key drops its files first."""
        self._handed.append((task, record))
        if not self._publishing:
            self._hand_over()

    def _hand_over(self) -> None:
        """Deliver the records :meth:`publish` was given."""
        while self._handed:
            task, record = self._handed.popleft()
            self._notify("started", None, task)
            for stream, data in ((1, record.stdout), (2, record.stderr)):
                if data:
                    self._notify("output", None, task, stream, data)
            out_keep, err_keep = self.keep[0], self.keep[1] if self.keep[1] != 0 else SOURCE_STDERR
            if out_keep is not None:
                record.stdout = record.stdout[:out_keep]
            if err_keep is not None:
                record.stderr = record.stderr[:err_keep]
            self._notify("finished", None, task, record)
