"""The event loop: one thread, ``selectors`` over fds, a SIGCHLD wakeup fd, timers.

The loop never sleeps in a polling loop: it blocks in ``select`` until an fd
is ready, a timer is due, or a signal arrives (``signal.set_wakeup_fd`` writes
to a pipe the selector watches). It reaps only the pids it was asked to watch,
so other children of the program (a caller's own subprocesses) are left alone.

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
        self._timers: List[tuple] = []
        self._cancelled_timers = 0
        self._seq = itertools.count()
        self._children: Dict[int, Callable[[int], None]] = {}
        self._signal_handlers: Dict[int, Callable[[int], None]] = {}
        self._pending_signals: List[int] = []
        self._saved: Dict[int, object] = {}
        self._saved_wakeup: Optional[int] = None
        self._wake_r = self._wake_w = None
        self._polling = True

    # -- set-up --------------------------------------------------------
    def __enter__(self) -> "EventLoop":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Install the SIGCHLD wakeup (main thread only; else fall back to polling)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._saved_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self._saved[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore_signal)
        self.add_reader(self._wake_r, self._on_wakeup)
        self._polling = False

    def close(self) -> None:
        """Restore signal handlers and close the loop's own fds."""
        for signum, previous in self._saved.items():
            signal.signal(signum, previous)
        self._saved.clear()
        if self._wake_r is not None:
            signal.set_wakeup_fd(self._saved_wakeup if self._saved_wakeup is not None else -1)
            self.remove_reader(self._wake_r)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = None
        self._selector.close()

    def on_signal(self, signum: int, callback: Callable[[int], None]) -> bool:
        """Call ``callback(signum)`` from the loop when ``signum`` arrives.

        Returns False when handlers cannot be installed (not the main thread).
        """
        if self._polling:
            return False
        self._signal_handlers[signum] = callback
        if signum not in self._saved:
            self._saved[signum] = signal.signal(signum, self._record_signal)
        return True

    def _record_signal(self, signum, frame) -> None:
        self._pending_signals.append(signum)

    # -- fds -----------------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever ``fd`` is readable."""
        self._set_handler(fd, "reader", callback)

    def remove_reader(self, fd: int) -> None:
        """Stop watching ``fd`` for reading."""
        self._set_handler(fd, "reader", None)

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
            self._selector.register(fd, handlers.events(), handlers)
            return
        setattr(handlers, kind, callback)
        events = handlers.events()
        if events:
            self._selector.modify(fd, events, handlers)
        else:
            self._selector.unregister(fd)
            del self._fds[fd]

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
            timer.callback()

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
        return timeout

    # -- children ------------------------------------------------------
    def watch_child(self, pid: int, callback: Callable[[int], None]) -> None:
        """Reap ``pid`` when it exits and call ``callback(wait_status)``."""
        self._children[pid] = callback

    def _on_wakeup(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        self.reap()

    def reap(self) -> None:
        """Reap every watched child that has exited (never anyone else's)."""
        children = self._children
        while children:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            except AttributeError:  # pragma: no cover - no waitid on this platform
                info = -1
            if info is None:
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
                done, status = pid, 0
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
        for key, mask in self._selector.select(wait):
            handlers = key.data
            if mask & _READ and handlers.reader:
                handlers.reader()
            if mask & _WRITE and handlers.writer:
                handlers.writer()
        if self._polling and self._children:
            self._reap_each()
        if self._pending_signals:
            pending, self._pending_signals = self._pending_signals, []
            for signum in pending:
                self._signal_handlers[signum](signum)
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
