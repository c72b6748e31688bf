"""Connection reuse across runs: one ssh ControlMaster per host (``--persist``).

Masters live in a private control directory (mode 0700, owned by the user):
``$XDG_RUNTIME_DIR/classh`` when set, else ``/tmp/classh-UID``. A socket is
named ``USER@NAME:PORT`` after ssh's ``%r@%n:%p``: ``%n`` is the name classh
was given, so aliases of one address (``node1``, ``node2`` on 127.0.0.1) get
masters of their own. Sockets whose master has gone are removed.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
from typing import List, Optional

from .targets import Target

__all__ = ["PersistError", "DEFAULT_PERSIST", "control_dir", "persist_options",
           "sweep_stale", "sockets_for"]

DEFAULT_PERSIST = 300  # seconds an idle master stays up


class PersistError(ValueError):
    """The control directory cannot be used safely; the message says why."""


def control_dir(environ=None) -> str:
    """The private control directory, created if needed and checked (0700, ours, no symlink)."""
    environ = os.environ if environ is None else environ
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        path = os.path.join(runtime, "classh")
    else:
        path = os.path.join(tempfile.gettempdir(), "classh-%d" % os.getuid())
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise PersistError("cannot create control directory %r: %s" % (path, exc.strerror)) from None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PersistError("control directory %r is not a directory of this user" % path)
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise PersistError("control directory %r is open to others (mode %o); it must be 0700"
                           % (path, stat.S_IMODE(info.st_mode)))
    return path


def persist_options(seconds: int, directory: str) -> List[str]:
    """The ssh ``-o`` values that make or reuse a master kept ``seconds`` after last use."""
    return ["ControlMaster=auto", "ControlPath=%s/%%r@%%n:%%p" % directory,
            "ControlPersist=%d" % seconds]


def sweep_stale(directory: str) -> int:
    """Remove sockets no master answers on any more; return how many went."""
    removed = 0
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue
        except OSError:
            continue
        if not _answers(path):
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
    return removed


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()


def sockets_for(target: Target, directory: str, names: Optional[List[str]] = None) -> List[str]:
    """The master sockets of ``target`` (any user or port, unless the target names them)."""
    names = os.listdir(directory) if names is None else names
    found = []
    for name in names:
        user, at, rest = name.partition("@")
        host, colon, port = rest.rpartition(":")
        if not (at and colon) or host != target.name:
            continue
        if target.user and user != target.user:
            continue
        if target.port and port != str(target.port):
            continue
        found.append(os.path.join(directory, name))
    return found
