"""Starting child processes: the only module of classh that creates processes.

Children are started with ``posix_spawn`` (vfork speed, no Python code runs in
the child) in a session of their own, so a whole process group can be killed.
Their stdout and stderr are separate pipes; stdin is /dev/null unless the
caller asks for a pipe (to write input to, or to hold open writing nothing:
the remote watchdog's sign that ssh is gone). Optionally the child gets a pseudo
terminal as its controlling terminal (for ssh's password prompts), while its
stdout and stderr stay on their pipes.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

__all__ = [
    "Spawned", "SpawnError", "spawn", "find_executable", "kill_group", "live_groups",
    "raise_fd_limit", "seal_inherited_fds",
]


class SpawnError(OSError):
    """A child could not be started (the executable is missing, no resources)."""


@dataclass
class Spawned:
    """File descriptors and pid of a started child (all fds are the parent's ends)."""

    pid: int
    stdout: int
    stderr: int
    stdin: Optional[int] = None  # a pipe to the child's stdin, when input was asked for
    pty: Optional[int] = None  # the master side of the child's controlling terminal
    pty_slave: Optional[int] = None  # its slave side, kept open by the parent


def find_executable(name: str) -> Optional[str]:
    """Return the absolute path of ``name`` (a path or a command on PATH), or None."""
    if os.sep in name:
        return os.path.abspath(name) if os.access(name, os.X_OK) and os.path.isfile(name) else None
    found = shutil.which(name)
    return os.path.abspath(found) if found else None


def spawn(
    argv: Sequence[str],
    *,
    stdin_pipe: bool = False,
    use_pty: bool = False,
    env: Optional[Mapping[str, str]] = None,
    capture: bool = True,
    new_session: bool = True,
) -> Spawned:
    """Start ``argv`` (``argv[0]`` an absolute path) and return its fds, all non-blocking.

    ``env`` defaults to a copy of os.environ; callers starting many children
    pass one plain dict to all of them (os.environ decodes on every access).
    Without ``capture`` the child shares classh's stdout and stderr (and
    ``Spawned.stdout``/``stderr`` are -1); without ``new_session`` it stays
    in classh's process group, so a Ctrl-C on the terminal reaches it too.
    See :func:`seal_inherited_fds` for the fds a child inherits. With ``use_pty`` the parent keeps the
    terminal's slave side open too (``Spawned.pty_slave``), so the master
    never reads as hung up while ssh has no fd on its terminal.
    Raises SpawnError when the process cannot be started; nothing is left open then.
    """
    parent_fds = []
    child_fds = []

    def pipe(child_writes: bool):
        """A pipe as (parent's end, child's end)."""
        read_end, write_end = os.pipe()
        ends = (read_end, write_end) if child_writes else (write_end, read_end)
        parent_fds.append(ends[0])
        child_fds.append(ends[1])
        return ends

    try:
        actions = []
        out_r = err_r = in_w = master = slave = -1
        if stdin_pipe:
            in_w, in_r = pipe(child_writes=False)
            actions.append((os.POSIX_SPAWN_DUP2, in_r, 0))
        else:
            actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
        if capture:
            out_r, out_w = pipe(child_writes=True)
            err_r, err_w = pipe(child_writes=True)
            actions += [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
        if use_pty:
            master, slave = os.openpty()
            parent_fds.append(master)
            parent_fds.append(slave)
            # Opened by name after setsid(), the terminal becomes the child's
            # controlling terminal; fd 3 is closed again before exec.
            actions.append((os.POSIX_SPAWN_OPEN, 3, os.ttyname(slave), os.O_RDWR, 0))
            actions.append((os.POSIX_SPAWN_CLOSE, 3))
        pid = os.posix_spawn(
            argv[0], list(argv), dict(os.environ) if env is None else env,
            file_actions=actions, setsid=new_session,
            # Python ignores SIGPIPE; children get the default back, as with subprocess.
            setsigdef=_DEFAULT_SIGNALS,
        )
    except BaseException as exc:
        for fd in parent_fds:
            os.close(fd)
        if isinstance(exc, OSError):
            raise SpawnError(exc.errno, "cannot start %s: %s" % (argv[0], exc.strerror)) from None
        raise
    finally:
        for fd in child_fds:
            os.close(fd)
    for fd in parent_fds:
        os.set_blocking(fd, False)
    return Spawned(pid=pid, stdout=out_r, stderr=err_r, stdin=in_w if in_w >= 0 else None,
                   pty=master if master >= 0 else None, pty_slave=slave if slave >= 0 else None)


def seal_inherited_fds() -> None:
    """Make this process's inheritable fds above 2 close-on-exec.

    posix_spawn passes every inheritable fd on, and an ssh that outlives
    classh (a ControlPersist master) would keep, say, a caller's pipe open.
    Python opens its own fds non-inheritable; what is left came from
    classh's parent.
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = [str(fd) for fd in range(3, 256)]
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except OSError:
                continue


_DEFAULT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, name))


def kill_group(pgid: int, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to the process group ``pgid``; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def live_groups(pgids) -> set:
    """The process groups among ``pgids`` that still have a live (non-zombie) member.

    ``kill(-pgid, 0)`` succeeds while only zombies remain (an orphan waiting
    for init to reap it), so /proc is read instead where it exists.
    """
    wanted = set(pgids)
    if not wanted:
        return set()
    if not os.path.isdir("/proc/self"):
        return {pgid for pgid in wanted if kill_group(pgid, 0)}
    alive = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, ...
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) in wanted:
            alive.add(int(fields[2]))
    return alive

#: Descriptors one running child can hold in classh: two pipes, a pty, result files.
FDS_PER_CHILD = 6
FDS_RESERVED = 64


def raise_fd_limit(children: int) -> int:
    """Raise the open-file limit for ``children`` at once; return how many fit.

    The soft limit is raised towards the hard limit; when even that is too low
    the returned number is smaller than ``children``.
    """
    needed = children * FDS_PER_CHILD + FDS_RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return children
    return max(1, (soft - FDS_RESERVED) // FDS_PER_CHILD)
