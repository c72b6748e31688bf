"""File transfer: ``--copy`` pushes local files to every host, ``--slurp`` pulls one
remote path from every host into ``DIR/host/``.

Design: transfers run over the SAME ssh command line as host mode (so
``--ssh``, ``-O``, ``-l``/``-p``, passwords and ControlMaster reuse all
apply), with ``tar`` on both ends instead of scp/sftp: scp cannot take an
arbitrary ssh command line with arguments, and cannot be answered through
classh's prompt handling. A transfer is just a host-mode task whose remote
command is built here:

* copy: :func:`copy_plan` builds an uncompressed tar archive of the sources in
  memory; it is fed to every host's stdin (``Options.input``) and the remote
  command unpacks it.
* slurp: :func:`slurp_command` makes the remote side write a tar stream of the
  path to stdout; :class:`SlurpSink` (an observer of the supervisor) streams
  it to a temporary file per host and, once the host has exited 0, unpacks it
  safely into ``DIR/host/``.

Remote hosts need only ``sh`` and a POSIX, GNU or busybox ``tar``: the
commands use only ``c``, ``x``, ``f -``, ``-C`` and ``-O``. Every path is
quoted with :func:`shlex.quote`; a relative path beginning with ``-`` gets a
``./`` prefix so that no tool takes it for an option, and a leading ``~/``
means the remote ``$HOME``. ``{host}`` in a remote path becomes the host's
name (host mode's own replacement, done by ``task_maker``).
"""
from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shlex
import shutil
import stat
import tarfile
from typing import Dict, List, Optional, Sequence, Tuple

from .results import OK, Record, ResultsError, result_path

__all__ = ["TransferError", "copy_plan", "slurp_command", "safe_extract", "SlurpSink",
           "PARTIAL_NAME"]

#: The temporary file a slurped archive is streamed to, inside ``DIR/host/``.
PARTIAL_NAME = ".classh-slurp.tar.partial"
_COPY_SIZE = 1 << 20


class TransferError(ValueError):
    """A transfer that cannot be done as asked; the one-line message names the path."""


# -- remote paths -----------------------------------------------------------------

def _remote_word(path: str) -> str:
    """``path`` as one safe remote shell word: quoted, ``~/`` -> ``"$HOME"/``,
    relative ``-x`` -> ``./-x``."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"/' + (shlex.quote(rest) if rest else "")
    if path.startswith("-"):
        path = "./" + path
    return shlex.quote(path)


def _check_path(path: str, what: str) -> None:
    if not path:
        raise TransferError("the %s is empty" % what)
    if "\0" in path or "\n" in path:
        raise TransferError("the %s %r holds a NUL or newline" % (what, path))


# -- copy -------------------------------------------------------------------------

def _clean_member(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
    """tar.add filter: regular files, directories and links only; no local owner."""
    if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
        return None  # sockets, fifos, devices inside a tree are left out
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = int(info.mtime)
    return info


def copy_plan(sources: Sequence[str], dest: str) -> Tuple[str, bytes]:
    """The remote command and the tar archive (bytes) copying ``sources`` to ``dest``.

    Each source is stored under its basename (directories recursively;
    symlinks inside them as links; a source given as a symlink is followed,
    like scp does). Owners are not kept (the remote user owns the copies);
    modes and times are, as the remote tar does by default.

    Remote side: one regular-file source with ``dest`` not ending in ``/`` and
    not an existing directory writes the file's content to ``dest`` (a new
    file gets the executable bits when the source has any); otherwise
    ``mkdir -p -- DEST`` and the archive is unpacked inside it.

    Raises TransferError for a missing or unreadable source, a source that is
    neither file nor directory, two sources with the same basename, or an
    empty destination.
    """
    if isinstance(sources, str):
        sources = [sources]
    sources = list(sources)
    _check_path(dest, "destination")
    if not sources:
        raise TransferError("nothing to copy: no source given")
    entries: List[Tuple[str, str]] = []
    names: Dict[str, str] = {}
    single_file_mode = None
    for source in sources:
        _check_path(source, "source path")
        try:
            info = os.stat(source)
        except FileNotFoundError:
            raise TransferError("%s: no such file or directory" % source) from None
        except OSError as exc:
            raise TransferError("cannot read %s: %s" % (source, exc.strerror)) from None
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            raise TransferError("%s is not a regular file or directory" % source)
        name = os.path.basename(os.path.abspath(source))
        if not name:
            raise TransferError("cannot copy %s: it has no name" % source)
        if name in names:
            raise TransferError("two sources are named %r: %s and %s" % (name, names[name], source))
        names[name] = source
        entries.append((source, name))
        if stat.S_ISREG(info.st_mode):
            single_file_mode = info.st_mode
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for source, name in entries:
            path = os.path.realpath(source) if os.path.islink(source) else source
            try:
                tar.add(path, arcname=name, recursive=True, filter=_clean_member)
            except OSError as exc:
                raise TransferError("cannot read %s: %s" % (exc.filename or source,
                                                             exc.strerror or exc)) from None
    target = _remote_word(dest)
    if len(entries) == 1 and single_file_mode is not None and not dest.endswith("/"):
        write = "tar -x -O -f - > %s" % target
        if single_file_mode & 0o111:
            new_file = "%s && chmod +x -- %s" % (write, target)
            write = "if [ -e %s ] || [ -L %s ]; then %s; else %s; fi" % (
                target, target, write, new_file)
        command = "if [ -d %s ]; then tar -x -f - -C %s; else %s; fi" % (target, target, write)
    else:
        command = "mkdir -p -- %s && tar -x -f - -C %s" % (target, target)
    return command, archive.getvalue()


# -- slurp ------------------------------------------------------------------------

def slurp_command(remote: str) -> str:
    """The remote command writing a tar stream of ``remote`` (file or directory) to stdout.

    It runs ``cd -- PARENT && tar -c -f - NAME``, so the archive holds
    ``basename(remote)`` and what is under it. A missing path makes it exit
    non-zero with the shell's or tar's message on stderr. Trailing slashes
    are ignored; ``/``, ``.``, ``..`` and ``~`` alone have no basename to
    store and raise TransferError, as does an empty path.
    """
    _check_path(remote, "remote path")
    path = remote.rstrip("/")
    if not path:
        raise TransferError("cannot slurp %r: name a file or directory under it" % remote)
    parent, name = posixpath.split(path)
    if name in (".", "..") or path == "~":
        raise TransferError("cannot slurp %r: name a file or directory under it" % remote)
    if not parent:
        parent = "."
    elif not parent.startswith(("/", "~/")) and parent != "~":
        parent = "./" + parent  # never looked up in CDPATH (cd would print it to stdout)
    if name.startswith("-"):
        name = "./" + name
    return "cd -- %s && tar -c -f - %s" % (_remote_word(parent), shlex.quote(name))


# -- safe extraction ----------------------------------------------------------------

def _member_path(name: str) -> str:
    """A member name as a clean relative path ("" for the top itself); TransferError if unsafe."""
    if name.startswith("/"):
        raise TransferError("archive member %r has an absolute path" % name)
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise TransferError("archive member %r has a '..' component" % name)
    return "/".join(parts)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _plan(tar: tarfile.TarFile, root: str) -> List[Tuple[tarfile.TarInfo, str]]:
    """Check every member before anything is written; return (member, relative path) pairs."""
    plan = []
    files = set()
    for member in tar.getmembers():
        rel = _member_path(member.name)
        if not rel:
            if member.isdir():
                continue
            raise TransferError("archive member %r has no name" % member.name)
        if member.issym():
            link = member.linkname
            target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), link))
            if not link or link.startswith("/") or target == ".." or target.startswith("../"):
                raise TransferError("archive member %r links outside the directory (to %r)"
                                    % (member.name, link))
        elif member.islnk():
            if _member_path(member.linkname) not in files:
                raise TransferError("archive member %r is a hard link to %r, not an earlier file"
                                    % (member.name, member.linkname))
        elif member.isreg():
            files.add(rel)
        elif not member.isdir():
            raise TransferError("archive member %r is a device or special file" % member.name)
        plan.append((member, rel))
    for member, rel in plan:
        path = os.path.join(root, rel)
        if not os.path.lexists(path):
            continue
        if member.isdir() and os.path.isdir(path):
            continue  # files go into an existing directory; none is replaced
        raise TransferError("%s exists: classh never overwrites a file" % path)
    return plan


def _make_parents(root: str, rel: str, created: List[Tuple[str, bool]]) -> str:
    """Create the missing directories above ``root/rel``; return its parent's real path."""
    path = root
    for part in rel.split("/")[:-1]:
        path = os.path.join(path, part)
        if not os.path.lexists(path):
            os.mkdir(path, 0o755)
            created.append((path, True))
        elif not os.path.isdir(path):
            raise TransferError("%s is not a directory" % path)
    real = os.path.realpath(path)
    if not _inside(real, root):
        raise TransferError("%s leads outside %s" % (path, root))
    return real


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str, root: str,
                    created: List[Tuple[str, bool]], dirs: List[Tuple[str, int]]) -> None:
    parent = _make_parents(root, rel, created)
    path = os.path.join(parent, posixpath.basename(rel))
    if member.isdir():
        if not os.path.isdir(path):
            os.mkdir(path, (member.mode & 0o755) | 0o700)
            created.append((path, True))
        dirs.append((path, member.mtime))
    elif member.isreg():
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, (member.mode & 0o755) | 0o600)
        created.append((path, False))
        with os.fdopen(fd, "wb") as out:
            data = tar.extractfile(member)
            shutil.copyfileobj(data, out, _COPY_SIZE)
        with contextlib.suppress(OSError):
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
    elif member.issym():
        target = os.path.realpath(os.path.join(parent, member.linkname))
        if not _inside(target, root):
            raise TransferError("archive member %r links outside the directory (to %r)"
                                % (member.name, member.linkname))
        os.symlink(member.linkname, path)
        created.append((path, False))
    else:  # hard link to an earlier regular member (checked by _plan)
        os.link(os.path.join(root, _member_path(member.linkname)), path, follow_symlinks=False)
        created.append((path, False))


def _undo(created: List[Tuple[str, bool]]) -> None:
    for path, is_dir in reversed(created):
        with contextlib.suppress(OSError):
            if is_dir:
                os.rmdir(path)
            else:
                os.unlink(path)


def safe_extract(archive_path: str, directory: str) -> List[str]:
    """Unpack the uncompressed tar file ``archive_path`` into ``directory``; return the
    top-level names written.

    Every member is checked before anything is written: absolute paths,
    ``..`` components, symlinks pointing outside ``directory``, hard links to
    anything but an earlier file of the archive, and devices, fifos and other
    special files are refused, and so is any member whose path exists already
    (only directories are merged: an existing file is never replaced). While
    unpacking, no file is written through a symlink leading outside. Owners
    are never set; setuid/setgid/sticky and group/other write bits are dropped.
    On any failure what was written is removed again and TransferError says
    why (the same on every Python version; tarfile's own filters are unused).
    """
    root = os.path.realpath(directory)
    created: List[Tuple[str, bool]] = []
    try:
        with tarfile.open(archive_path, mode="r:") as tar:
            plan = _plan(tar, root)
            dirs: List[Tuple[str, int]] = []
            for member, rel in plan:
                _extract_member(tar, member, rel, root, created, dirs)
            for path, mtime in reversed(dirs):
                with contextlib.suppress(OSError):
                    os.utime(path, (mtime, mtime))
    except TransferError:
        _undo(created)
        raise
    except tarfile.TarError as exc:
        _undo(created)
        raise TransferError("bad tar archive: %s" % exc) from None
    except OSError as exc:
        _undo(created)
        name = exc.filename2 or exc.filename
        if isinstance(exc, FileExistsError):
            raise TransferError("%s exists: classh never overwrites a file"
                                % (name or "a path")) from None
        where = " %s:" % name if name else ""
        raise TransferError("cannot unpack:%s %s" % (where, exc.strerror or exc)) from None
    if not plan:
        raise TransferError("the archive is empty")
    return sorted({rel.split("/", 1)[0] for _, rel in plan})


# -- the sink -------------------------------------------------------------------------

class _Pending:
    __slots__ = ("directory", "path", "fd", "created", "error")

    def __init__(self):
        self.directory: Optional[str] = None
        self.path: Optional[str] = None
        self.fd = -1
        self.created = False
        self.error: Optional[str] = None

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class SlurpSink:
    """Observer unpacking each host's slurped tar stream into ``dest_dir/host/``.

    ``started`` creates ``dest_dir/host/`` and a temporary ``PARTIAL_NAME``
    file in it; ``output`` appends the host's stdout (the remote tar stream)
    to that file as it arrives (stderr is left to the supervisor's capture);
    ``finished`` unpacks it with :func:`safe_extract` when the host exited 0.
    A host whose archive cannot be unpacked (an unsafe member, a path that
    exists already, a full disk...) becomes a failure: ``record.error`` says
    why and an exit code of 0 becomes 1. The temporary file is always
    removed, and so is the host directory when this sink created it and
    nothing was unpacked. ``record.stdout`` is emptied (it would hold tar
    bytes) and ``record.extra["slurped"]`` lists the top-level paths written.

    Put it before any observer that reads records (displays, result files),
    since those must see the final status.
    """

    needs_output = False

    def __init__(self, dest_dir: str):
        if not dest_dir:
            raise TransferError("the destination directory is empty")
        if os.path.lexists(dest_dir) and not os.path.isdir(dest_dir):
            raise TransferError("%s exists and is not a directory" % dest_dir)
        try:
            os.makedirs(dest_dir, exist_ok=True)
        except OSError as exc:
            raise TransferError("cannot create %s: %s" % (dest_dir, exc.strerror)) from None
        self.dest_dir = dest_dir
        self._pending: Dict[str, _Pending] = {}

    def host_dir(self, host: str) -> str:
        """``dest_dir/host``, refusing a host name that could leave ``dest_dir``."""
        try:
            return result_path(self.dest_dir, host, "")
        except ResultsError as exc:
            raise TransferError(str(exc)) from None

    def started(self, task) -> None:
        """Create the host's directory and open its temporary archive file."""
        pending = self._pending[task.key] = _Pending()
        try:
            pending.directory = self.host_dir(task.key)
            try:
                os.mkdir(pending.directory, 0o755)
                pending.created = True
            except FileExistsError:
                if not os.path.isdir(pending.directory):
                    raise TransferError("%s exists and is not a directory"
                                        % pending.directory) from None
            pending.path = os.path.join(pending.directory, PARTIAL_NAME)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
            pending.fd = os.open(pending.path, flags, 0o600)
        except TransferError as exc:
            pending.error = str(exc)
        except OSError as exc:
            pending.error = "cannot write %s: %s" % (exc.filename or self.dest_dir, exc.strerror)

    def output(self, task, fd: int, data: bytes) -> None:
        """Append stdout (fd 1) to the host's temporary archive; ignore stderr."""
        if fd != 1:
            return
        pending = self._pending.get(task.key)
        if pending is None or pending.fd < 0:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(pending.fd, view):]
        except OSError as exc:
            pending.error = "cannot write %s: %s" % (pending.path, exc.strerror)
            pending.close()

    def finished(self, task, record: Record) -> None:
        """Unpack the archive of a host that exited 0 (or fail it), then clean up."""
        record.stdout = b""
        record.stdout_size = 0
        pending = self._pending.pop(task.key, None)
        if pending is None:  # never started (ssh could not be spawned)
            return
        pending.close()
        try:
            if record.status != OK:
                return
            if pending.error:
                self._fail(record, pending.error)
                return
            try:
                names = safe_extract(pending.path, pending.directory)
            except TransferError as exc:
                self._fail(record, str(exc))
            else:
                record.extra["slurped"] = [os.path.join(pending.directory, n) for n in names]
        finally:
            self._clean(pending)

    @staticmethod
    def _fail(record: Record, reason: str) -> None:
        record.error = " ".join(reason.split())  # one line
        if record.exitcode == 0:
            record.exitcode = 1

    @staticmethod
    def _clean(pending: _Pending) -> None:
        if pending.path:
            with contextlib.suppress(OSError):
                os.unlink(pending.path)
        if pending.created:
            with contextlib.suppress(OSError):
                os.rmdir(pending.directory)  # only when empty: nothing was unpacked

    def close(self) -> None:
        """Drop the temporary files of hosts that never finished (an aborted run)."""
        for pending in self._pending.values():
            pending.close()
            self._clean(pending)
        self._pending.clear()
