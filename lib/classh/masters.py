"""A job run's private ssh ControlMasters: their directory, and their end however classh ends.

Job mode runs a node's jobs through ControlMasters of its own (:mod:`classh.jobs`). A
master outlives the ssh that opened it (``ControlPersist``), so something must end it:

* the directory, ``$TMPDIR/classh-jobs-PID-RANDOM`` (mode 0700), is made when the run
  starts (:meth:`ControlDir.make`), not before: a run refused at start leaves none. It
  holds each master's socket and, beside it, ``SOCKET.exit``: the ``ssh -O exit`` line
  that ends that master. classh holds a lock on ``DIR/lock`` while it lives.
* a *keeper* (a small ``sh``, :data:`KEEPER`, in a session of its own) is started with the
  directory and reads a pipe from classh that classh never writes to. When the pipe ends
  (:meth:`ControlDir.close`, or classh died, even by ``kill -9``) the keeper ends every
  master whose socket is there, waits until their sockets are gone (a master removes its
  socket as it exits) for at most :data:`KEEPER_WAIT` seconds, then removes the directory.
  A master's end closes its connection: sshd's session process then exits and the remote
  watchdog of a task with input (it watches that process) ends the task. If classh died
  (it did not say ``closed`` first), the keeper also sends SIGTERM to every process whose
  environment holds ``MARK=DIR``: classh gives it to all its children, so an ssh still
  logging in, or a job's own login (``--no-reuse``) goes too, and with it the task.
* at start, a directory of this form whose lock nobody holds (its run died with its keeper)
  gets a keeper of its own, which ends its masters and removes it.

Nothing here prints.
"""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shlex
import shutil
import tempfile
import time
from typing import List, Optional

from .spawn import Spawned, SpawnError, spawn

__all__ = ["ControlDir", "KEEPER", "KEEPER_WAIT", "MARK", "PREFIX", "sweep_dead_runs"]

#: The name of a run's control directory starts with this, then ``PID-RANDOM``.
PREFIX = "classh-jobs-"
#: Seconds the keeper waits for the masters to exit before it removes the directory.
KEEPER_WAIT = 5
#: The environment variable naming the control directory in the environment of classh's
#: children (never the keeper's).
MARK = "CLASSH_KEEPER"
#: ``$0`` of the keeper (what ``ps`` shows).
NAME = "classh-keeper"
_LOCK = "lock"
_EXIT = ".exit"

# $1: the control directory. Wait for the end of stdin; then each master whose socket is
# there gets its exit line (again each second while its socket stays), the sockets are
# waited for; unless classh said "closed", its children still there get SIGTERM; the
# directory is removed, and any exit line still hanging is ended.
KEEPER = "; ".join([
    "exec >/dev/null 2>&1",
    "classh_e=",
    "while read -r classh_l; do classh_e=$classh_l; done",
    "test -d \"$1\" || exit 0",
    "classh_n=0",
    "while :; do "
    "classh_s=; "
    "for classh_f in \"$1\"/*%s; do "
    "test -S \"${classh_f%%%s}\" || continue; classh_s=1; "
    "test $((classh_n %% 10)) = 0 && { (. \"$classh_f\") & }; "
    "done; "
    "test -z \"$classh_s\" && break; "
    "test $classh_n -ge %d && break; "
    "classh_n=$((classh_n + 1)); "
    "sleep 0.1 || sleep 1; "
    "done" % (_EXIT, _EXIT, KEEPER_WAIT * 10),
    "test \"$classh_e\" = closed || for classh_f in $(grep -l -a -F -e \"%s=$1\" "
    "/proc/[0-9]*/environ); do classh_f=${classh_f#/proc/}; kill -TERM ${classh_f%%/environ}; "
    "done" % MARK,
    "rm -rf -- \"$1\"",
    "trap '' TERM",
    "kill -TERM 0",
])


class ControlDir:
    """The control directory of one run and its keeper (see the module's documentation)."""

    def __init__(self, env: Optional[dict] = None):
        self.path = os.path.join(tempfile.gettempdir(), "%s%d-%s" % (
            PREFIX, os.getpid(), secrets.token_hex(4)))  # short: sockets live in it
        self._env = None if env is None else dict(env)  # without MARK, whatever the caller adds
        self._lock: Optional[int] = None
        self._keeper: Optional[Spawned] = None
        self._made = False
        self._pending: List[tuple] = []  # exit lines recorded before the directory was made
        self._swept: List[Spawned] = []  # keepers of dead runs' directories

    def socket(self, name: str) -> str:
        """The path of the socket ``name`` in the directory (made or not yet)."""
        return os.path.join(self.path, name)

    def record(self, socket: str, exit_argv: List[str]) -> None:
        """A master may listen on ``socket`` from now on: ``exit_argv`` ends it."""
        if self._made:
            _write_exit(socket, exit_argv)
        else:
            self._pending.append((socket, exit_argv))

    def make(self) -> None:
        """Make the directory, lock it, start its keeper (and sweep dead runs' directories).
        An OSError names the directory."""
        self._swept = sweep_dead_runs(self._env)
        try:
            os.mkdir(self.path, 0o700)
            try:
                self._lock = _hold_lock(self.path)
            except OSError:
                shutil.rmtree(self.path, ignore_errors=True)
                raise
        except OSError as exc:
            raise OSError(exc.errno, "cannot create control directory %r: %s"
                          % (self.path, exc.strerror)) from None
        self._made = True
        self._keeper = _start_keeper(self.path, self._env, hold=True)
        for socket, argv in self._pending:
            _write_exit(socket, argv)
        self._pending = []

    def close(self, wait: float = KEEPER_WAIT + 5.0) -> None:
        """End every master and remove the directory (through the keeper); wait for it."""
        if not self._made:
            return
        self._made = False
        keeper = self._keeper
        if keeper is None:  # it could not be started then: one does the work now
            keeper = _start_keeper(self.path, self._env, hold=False)
        elif keeper.stdin is not None:
            try:
                os.write(keeper.stdin, b"closed\n")  # classh's children are all gone
            except OSError:
                pass
            os.close(keeper.stdin)
        if keeper is not None:
            _reap(keeper.pid, time.monotonic() + wait)
        os.close(self._lock)  # the run is over: a sweep may take what the keeper left
        for swept in self._swept:
            _reap(swept.pid, time.monotonic())


def _write_exit(socket: str, argv: List[str]) -> None:
    """``SOCKET.exit``: the line ending the master of ``socket`` (the keeper runs it)."""
    try:
        fd = os.open(socket + _EXIT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return  # the directory is gone (the run is ending)
    try:
        os.write(fd, (" ".join(shlex.quote(word) for word in argv) + " </dev/null\n").encode(
            errors="surrogateescape"))
    except OSError:
        pass
    finally:
        os.close(fd)


def _hold_lock(directory: str) -> int:
    """The fd of ``DIRECTORY/lock``, locked: it appears under that name already locked, so a
    sweep never takes a run being made for a dead one."""
    fresh = os.path.join(directory, _LOCK + ".new")
    fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(fresh, os.path.join(directory, _LOCK))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _start_keeper(path: str, env: Optional[dict], hold: bool) -> Optional[Spawned]:
    """A keeper of ``path``: it waits for the end of a pipe from classh (``hold``), else
    starts at once. None if it cannot be started."""
    try:
        keeper = spawn(["/bin/sh", "-c", KEEPER, NAME, path], stdin_pipe=hold, env=env)
    except SpawnError:
        return None
    os.close(keeper.stdout)  # it writes nothing
    os.close(keeper.stderr)
    return keeper


def _reap(pid: int, deadline: float) -> bool:
    """Wait for ``pid`` until ``deadline`` (never killing it); True once reaped."""
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done or time.monotonic() >= deadline:
            return bool(done)
        time.sleep(0.01)


def sweep_dead_runs(env: Optional[dict] = None) -> List[Spawned]:
    """Give a keeper to every control directory of this user whose run is dead (nobody holds
    its lock): it ends the masters left there and removes it. The keepers started."""
    top = tempfile.gettempdir()
    keepers = []
    try:
        names = [name for name in os.listdir(top) if name.startswith(PREFIX)]
    except OSError:
        return keepers
    for name in names:
        path = os.path.join(top, name)
        if _is_dead_run(path):
            keeper = _start_keeper(path, env, hold=False)
            if keeper is not None:
                keepers.append(keeper)
    return keepers


def _is_dead_run(path: str) -> bool:
    """True for a directory of this user holding a lock file nobody holds."""
    try:
        info = os.lstat(path)
        if not os.path.isdir(path) or os.path.islink(path) or info.st_uid != os.getuid():
            return False
        fd = os.open(os.path.join(path, _LOCK), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # not ours, or being made (its lock comes next)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        return exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)
