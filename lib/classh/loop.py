"""The event loop: one thread, ``selectors`` over fds, a SIGCHLD wakeup fd, timers.

The loop never sleeps in a polling loop: it blocks in ``select`` until an fd
is ready, a timer is due, or a signal arrives (``signal.set_wakeup_fd`` writes
to a pipe the selector watches). It reaps only the pids it was asked to watch,
so other children of the program (a caller's own subprocesses) are left alone.

The process has one wakeup fd and one handler per signal, but a program may
drive several loops at once (two ``SSHJobMan`` polled in turn): a module-wide
hub owns the wakeup pipe and the handlers while any loop is open, tells every
open loop that children may have exited, hands each caught signal to the
newest loop that asked for it, and restores the program's own settings when
the last loop closes, in whatever order loops close.

Signal handlers can only be installed from the main thread. Elsewhere (the
Python API called from a worker thread) the loop falls back to checking its
children every ``POLL_INTERVAL`` seconds.
"""
from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
import threading
import time
from typing import Callable, Dict, List, Optional

__all__ = ["EventLoop", "Timer", "read_ready"]

POLL_INTERVAL = 0.05
#: The longest single wait: a later timer just means waking up once more.
MAX_WAIT = 86400.0
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


def read_ready(fd: int, size: int = 65536) -> Optional[bytes]:
    """Read what a non-blocking ``fd`` has: None when nothing is there yet,
    ``b""`` at the end (a read error counts as the end: EIO from a closed pty)."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None
    except OSError:
        return b""


class Timer:
    """A pending call; ``cancel()`` stops it from running."""

    __slots__ = ("when", "callback", "cancelled", "loop")

    def __init__(self, when: float, callback: Callable[[], None], loop: "EventLoop"):
        self.when = when
        self.callback = callback
        self.cancelled = False
        self.loop = loop

    def cancel(self) -> None:
        """Do not run this timer's callback."""
        self.loop.cancel(self)


class _SignalHub:
    """The process's SIGCHLD wakeup pipe and signal handlers, shared by every open loop."""

    def __init__(self):
        self.loops: List["EventLoop"] = []
        self.read_fd = self.write_fd = None
        self._saved_wakeup = -1
        self._saved: Dict[int, object] = {}
        self._wanted: Dict[int, List["EventLoop"]] = {}

    def join(self, loop: "EventLoop") -> int:
        """Register ``loop`` (installing the wakeup pipe if it is the first); return the fd to watch."""
        if not self.loops:
            self.read_fd, self.write_fd = os.pipe()
            os.set_blocking(self.read_fd, False)
            os.set_blocking(self.write_fd, False)
            self._saved_wakeup = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
            self._saved[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore_signal)
        self.loops.append(loop)
        return self.read_fd

    def leave(self, loop: "EventLoop") -> None:
        """Unregister ``loop``; the last one out restores the program's signal settings."""
        if loop not in self.loops:
            return
        self.loops.remove(loop)
        for signum in list(self._wanted):
            self.release(signum, loop)
        if self.loops:
            return
        signal.set_wakeup_fd(self._saved_wakeup)
        signal.signal(signal.SIGCHLD, self._saved.pop(signal.SIGCHLD))
        os.close(self.read_fd)
        os.close(self.write_fd)
        self.read_fd = self.write_fd = None

    def drain(self) -> None:
        """Empty the wakeup pipe; every open loop then looks for exited children."""
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        for loop in self.loops:
            loop.children_may_have_exited = True

    def want(self, signum: int, loop: "EventLoop") -> None:
        """Deliver ``signum`` to ``loop`` (the newest loop asking for a signal gets it)."""
        loops = self._wanted.setdefault(signum, [])
        if not loops:
            self._saved[signum] = signal.signal(signum, self._deliver)
        if loop not in loops:
            loops.append(loop)

    def release(self, signum: int, loop: "EventLoop") -> None:
        """Stop delivering ``signum`` to ``loop``; restore the handler when nobody wants it."""
        loops = self._wanted.get(signum)
        if not loops or loop not in loops:
            return
        loops.remove(loop)
        if not loops:
            del self._wanted[signum]
            signal.signal(signum, self._saved.pop(signum))

    def saved_handler(self, signum: int):
        """The handler the program had for ``signum`` before any loop took it."""
        return self._saved.get(signum, signal.getsignal(signum))

    def _deliver(self, signum, frame) -> None:
        loops = self._wanted.get(signum)
        if loops:
            loops[-1].pending_signals.append(signum)


_HUB = _SignalHub()


class _FdHandlers:
    __slots__ = ("reader", "writer")

    def __init__(self):
        self.reader = None
        self.writer = None

    def events(self) -> int:
        return (_READ if self.reader else 0) | (_WRITE if self.writer else 0)


class EventLoop:
    """Selector, timers, child watching and signal dispatch for one thread."""

    def __init__(self):
        self._selector = selectors.DefaultSelector()
        self._fds: Dict[int, _FdHandlers] = {}
        #: fds the selector cannot wait on (a device such as /dev/null, a regular file): ready
        self._always: Dict[int, _FdHandlers] = {}
        self._timers: List[tuple] = []
        self._cancelled_timers = 0
        self._seq = itertools.count()
        self._children: Dict[int, Callable[[int], None]] = {}
        self._signal_handlers: Dict[int, Callable[[int], None]] = {}
        self.pending_signals: List[int] = []
        self.children_may_have_exited = False
        self._wake_fd: Optional[int] = None
        self._polling = True

    # -- set-up --------------------------------------------------------
    def __enter__(self) -> "EventLoop":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Join the SIGCHLD wakeup (main thread only; else fall back to polling)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._wake_fd = _HUB.join(self)
        self.add_reader(self._wake_fd, self._on_wakeup)
        self._polling = False

    def close(self) -> None:
        """Give back the signals this loop took and close its selector."""
        if self._wake_fd is not None:
            self.remove_reader(self._wake_fd)
            _HUB.leave(self)
            self._wake_fd = None
        self._signal_handlers.clear()
        self._selector.close()

    def on_signal(self, signum: int, callback: Callable[[int], None]) -> bool:
        """Call ``callback(signum)`` from the loop when ``signum`` arrives.

        Returns False when handlers cannot be installed (not the main thread).
        """
        if self._polling:
            return False
        self._signal_handlers[signum] = callback
        _HUB.want(signum, self)
        return True

    def release_signal(self, signum: int) -> None:
        """Stop handling ``signum`` here (the program's own handler is back once no loop wants it)."""
        if self._signal_handlers.pop(signum, None) is not None:
            _HUB.release(signum, self)

    @staticmethod
    def program_handler(signum: int):
        """The handler the program itself has for ``signum`` (not a loop's)."""
        return _HUB.saved_handler(signum)

    # -- fds -----------------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever ``fd`` is readable."""
        self._set_handler(fd, "reader", callback)

    def remove_reader(self, fd: int) -> None:
        """Stop watching ``fd`` for reading."""
        self._set_handler(fd, "reader", None)

    def reader_of(self, fd: int) -> Optional[Callable[[], None]]:
        """The callback watching ``fd`` for reading, None when nothing does."""
        handlers = self._fds.get(fd)
        return handlers.reader if handlers is not None else None

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever ``fd`` is writable."""
        self._set_handler(fd, "writer", callback)

    def remove_writer(self, fd: int) -> None:
        """Stop watching ``fd`` for writing."""
        self._set_handler(fd, "writer", None)

    def _set_handler(self, fd: int, kind: str, callback) -> None:
        handlers = self._fds.get(fd)
        if handlers is None:
            if callback is None:
                return
            handlers = self._fds[fd] = _FdHandlers()
            setattr(handlers, kind, callback)
            self._register(fd, handlers)
            return
        setattr(handlers, kind, callback)
        events = handlers.events()
        if fd in self._always:
            if not events:
                del self._always[fd], self._fds[fd]
            return
        if events:
            self._selector.modify(fd, events, handlers)
        else:
            self._selector.unregister(fd)
            del self._fds[fd]

    def _register(self, fd: int, handlers: _FdHandlers) -> None:
        """Watch ``fd``; one that epoll refuses (EPERM: /dev/null, /dev/zero, a regular
        file) is always ready, as poll(2) would say: its handlers run every round."""
        try:
            self._selector.register(fd, handlers.events(), handlers)
        except PermissionError:
            self._always[fd] = handlers

    def _run_always_ready(self) -> None:
        """Call the handlers of the fds that are always ready (each may remove itself)."""
        for fd, handlers in list(self._always.items()):
            if handlers.reader and self._always.get(fd) is handlers:
                handlers.reader()
            if handlers.writer and self._always.get(fd) is handlers:
                handlers.writer()

    # -- timers --------------------------------------------------------
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` after ``delay`` seconds (monotonic clock)."""
        return self.call_at(time.monotonic() + delay, callback)

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` at monotonic time ``when``."""
        timer = Timer(when, callback, self)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def cancel(self, timer: Optional[Timer]) -> None:
        """Cancel ``timer`` (None is allowed); the heap is compacted now and then."""
        if timer is None or timer.cancelled:
            return
        timer.cancelled = True
        timer.callback = None  # what it holds (a finished child, its input) is freed now
        self._cancelled_timers += 1
        if self._cancelled_timers > 512 and self._cancelled_timers > len(self._timers) // 2:
            self._timers = [entry for entry in self._timers if not entry[2].cancelled]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if timer.cancelled:
                self._cancelled_timers -= 1
                continue
            timer.cancelled = True
            callback, timer.callback = timer.callback, None
            callback()

    def _next_timeout(self) -> Optional[float]:
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
            self._cancelled_timers -= 1
        timeout = None
        if timers:
            timeout = max(0.0, timers[0][0] - time.monotonic())
        if self._polling and self._children:
            timeout = POLL_INTERVAL if timeout is None else min(timeout, POLL_INTERVAL)
        if self.children_may_have_exited or self.pending_signals:
            timeout = 0.0  # another loop drained the wakeup pipe for us
        if timeout is not None:
            timeout = min(timeout, MAX_WAIT)  # epoll refuses waits of 2**31 ms and more
        return timeout

    # -- children ------------------------------------------------------
    def watch_child(self, pid: int, callback: Callable[[Optional[int]], None]) -> None:
        """Reap ``pid`` when it exits and call ``callback(wait_status)``.

        The status is None when another part of the program reaped the child first.
        """
        self._children[pid] = callback

    def _on_wakeup(self) -> None:
        _HUB.drain()
        self.reap()

    def reap(self) -> None:
        """Reap every watched child that has exited (never anyone else's)."""
        self.children_may_have_exited = False
        children = self._children
        while children:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = -1  # no child at all: ours were reaped by someone else
            except AttributeError:  # pragma: no cover - no waitid on this platform
                info = -1
            if info is None:
                # SIGCHLD came, yet no child is waiting to be reaped: one of ours
                # may have been reaped by someone else. Ask for ours by pid.
                self._reap_each()
                return
            pid = getattr(info, "si_pid", None)
            if pid not in children:
                # Someone else's child is first in line: ask for ours by pid.
                self._reap_each()
                return
            self._reaped(pid, os.waitpid(pid, 0)[1])

    def _reap_each(self) -> None:
        for pid in list(self._children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, None  # reaped behind our back: its status is lost
            if done:
                self._reaped(pid, status)

    def _reaped(self, pid: int, status: int) -> None:
        callback = self._children.pop(pid)
        callback(status)

    # -- running -------------------------------------------------------
    def run_once(self, timeout: Optional[float] = None) -> None:
        """Wait (at most ``timeout`` seconds, if given) for and dispatch one round of events."""
        wait = self._next_timeout()
        if timeout is not None:
            wait = timeout if wait is None else min(wait, timeout)
        if self._always:
            wait = 0
        for key, mask in self._selector.select(wait):
            handlers = key.data
            if mask & _READ and handlers.reader:
                handlers.reader()
            if mask & _WRITE and handlers.writer:
                handlers.writer()
        self._run_always_ready()
        if self._polling and self._children:
            self._reap_each()
        elif self.children_may_have_exited:
            self.reap()
        if self.pending_signals:
            pending, self.pending_signals = self.pending_signals, []
            for signum in pending:
                handler = self._signal_handlers.get(signum)
                if handler is not None:
                    handler(signum)
        self._run_due_timers()

    def run_until(self, done: Callable[[], bool]) -> None:
        """Dispatch events until ``done()`` is true."""
        while not done():
            self.run_once()

    @property
    def has_pending_timers(self) -> bool:
        """True while any timer is waiting to run."""
        return len(self._timers) > self._cancelled_timers


def _ignore_signal(signum, frame) -> None:
    """A Python-level SIGCHLD handler, so that set_wakeup_fd sees the signal."""
