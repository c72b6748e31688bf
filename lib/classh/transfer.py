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
import errno
import io
import os
import posixpath
import shlex
import shutil
import stat
import tarfile
from typing import Dict, List, Optional, Sequence, Tuple

from .observers import Observer, SinkError
from .remote import remote_word
from .results import OK, Record, ResultsError, result_path

__all__ = ["TransferError", "copy_plan", "pack", "slurp_command", "safe_extract", "SlurpSink",
           "PARTIAL_NAME"]

#: The temporary file a slurped archive is streamed to, inside ``DIR/host/``.
PARTIAL_NAME = ".classh-slurp.tar.partial"
_COPY_SIZE = 1 << 20


class TransferError(ValueError):
    """A transfer that cannot be done as asked; the one-line message names the path."""


# -- remote paths -----------------------------------------------------------------

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
    archive = pack(entries)
    target = remote_word(dest)
    if len(entries) == 1 and single_file_mode is not None and not dest.endswith("/"):
        write = "tar -x -O -f - > %s" % target
        if single_file_mode & 0o111:
            new_file = "%s && chmod +x -- %s" % (write, target)
            write = "if [ -e %s ] || [ -L %s ]; then %s; else %s; fi" % (
                target, target, write, new_file)
        command = "if [ -d %s ]; then tar -x -f - -C %s; else %s; fi" % (target, target, write)
    else:
        command = "mkdir -p -- %s && tar -x -f - -C %s" % (target, target)
    return command, archive


def pack(entries: Sequence[Tuple[str, str]]) -> bytes:
    """An uncompressed tar archive (bytes) holding each ``(source, name)``: the local
    ``source`` stored as ``name`` (directories recursively, symlinks inside them as links,
    a source given as a symlink followed; no owners). TransferError naming an unreadable path."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for source, name in entries:
            path = os.path.realpath(source) if os.path.islink(source) else source
            try:
                tar.add(path, arcname=name, recursive=True, filter=_clean_member)
            except OSError as exc:
                raise TransferError("cannot read %s: %s" % (exc.filename or source,
                                                             exc.strerror or exc)) from None
    return archive.getvalue()


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
    return "cd -- %s && tar -c -f - %s" % (remote_word(parent), shlex.quote(name))


# -- safe extraction ----------------------------------------------------------------

def _member_path(name: str) -> str:
    """A member name as a clean relative path ("" for the top itself); TransferError if unsafe."""
    if name.startswith("/"):
        raise TransferError("archive member %r has an absolute path" % name)
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise TransferError("archive member %r has a '..' component" % name)
    return "/".join(parts)


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


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _open_dir(name: str, dir_fd: Optional[int], create: bool = False, mode: int = 0o755,
              created: Optional[List[Tuple[str, bool]]] = None, shown: str = "") -> int:
    """An fd for directory ``name`` in ``dir_fd``, never through a symlink (made if ``create``)."""
    if create:
        try:
            os.mkdir(name, mode, dir_fd=dir_fd)
            if created is not None:
                created.append((shown, True))
        except FileExistsError:
            pass
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise TransferError("%s is not a directory (a symlink or a file)" % shown) from None
        raise


def _walk(root_fd: int, parts: List[str], root: str, create: bool = False,
          created: Optional[List[Tuple[str, bool]]] = None) -> int:
    """An fd for ``root/parts...``: each step opened relative to the last with O_NOFOLLOW,
    so a directory swapped for a link at any time is refused, never followed."""
    fd = os.dup(root_fd)
    path = root
    try:
        for part in parts:
            path = os.path.join(path, part)
            step = _open_dir(part, fd, create, 0o755, created, path)
            os.close(fd)
            fd = step
        return fd
    except BaseException:
        os.close(fd)
        raise


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str, root: str,
                    root_fd: int, created: List[Tuple[str, bool]],
                    dirs: List[Tuple[str, int]]) -> None:
    parts = rel.split("/")
    name, path = parts[-1], os.path.join(root, rel)
    parent = _walk(root_fd, parts[:-1], root, create=True, created=created)
    try:
        _make_member(tar, member, name, path, parent, root, root_fd, created)
        if member.isdir():
            dirs.append((rel, member.mtime))
    except OSError as exc:
        exc.filename, exc.filename2 = path, None  # the full path, for the message
        raise
    finally:
        os.close(parent)


def _make_member(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, path: str,
                 parent: int, root: str, root_fd: int, created: List[Tuple[str, bool]]) -> None:
    """Write one member as ``name`` in the directory ``parent`` (an fd)."""
    if member.isdir():
        os.close(_open_dir(name, parent, True, (member.mode & 0o755) | 0o700, created, path))
    elif member.isreg():
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
        fd = os.open(name, flags, (member.mode & 0o755) | 0o600, dir_fd=parent)
        created.append((path, False))
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(tar.extractfile(member), out, _COPY_SIZE)
            with contextlib.suppress(OSError):
                os.utime(out.fileno(), (member.mtime, member.mtime))
    elif member.issym():  # checked by _plan, and here with the links already made
        target = os.path.realpath(os.path.join(os.path.dirname(path), member.linkname))
        if not _inside(target, root):
            raise TransferError("archive member %r links outside the directory (to %r)"
                                % (member.name, member.linkname))
        os.symlink(member.linkname, name, dir_fd=parent)
        created.append((path, False))
    else:  # hard link to an earlier regular member (checked by _plan)
        source = _member_path(member.linkname).split("/")
        source_dir = _walk(root_fd, source[:-1], root)
        try:
            os.link(source[-1], name, src_dir_fd=source_dir, dst_dir_fd=parent,
                    follow_symlinks=False)
        finally:
            os.close(source_dir)
        created.append((path, False))


def _undo(created: List[Tuple[str, bool]], root: str, root_fd: int) -> None:
    """Remove what was made, newest first, each relative to a fresh O_NOFOLLOW walk."""
    for path, is_dir in reversed(created):
        parts = os.path.relpath(path, root).split("/")
        with contextlib.suppress(OSError, TransferError):
            parent = _walk(root_fd, parts[:-1], root)
            try:
                if is_dir:
                    os.rmdir(parts[-1], dir_fd=parent)
                else:
                    os.unlink(parts[-1], dir_fd=parent)
            finally:
                os.close(parent)


def _set_dir_times(dirs: List[Tuple[str, int]], root: str, root_fd: int) -> None:
    for rel, mtime in reversed(dirs):
        with contextlib.suppress(OSError, TransferError):
            fd = _walk(root_fd, rel.split("/"), root)
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


def safe_extract(archive_path, directory: str, dir_fd: Optional[int] = None) -> List[str]:
    """Unpack the uncompressed tar file ``archive_path`` (a path, or a binary file object)
    into ``directory`` (or, with ``dir_fd``, the directory that fd is open on, ``directory``
    then naming it in messages); return the top-level names written.

    Every member is checked before anything is written: absolute paths,
    ``..`` components, symlinks pointing outside ``directory``, hard links to
    anything but an earlier file of the archive, and devices, fifos and other
    special files are refused, and so is any member whose path exists already
    (only directories are merged: an existing file is never replaced). While
    unpacking, nothing is written through a symlink, whenever it appeared:
    every directory is opened relative to its parent's fd with
    ``O_NOFOLLOW`` and every file is made with ``O_EXCL | O_NOFOLLOW``. Owners
    are never set; setuid/setgid/sticky and group/other write bits are dropped.
    On any failure what was written is removed again and TransferError says
    why (the same on every Python version; tarfile's own filters are unused).
    """
    root = directory if dir_fd is not None else os.path.realpath(directory)
    created: List[Tuple[str, bool]] = []
    root_fd = -1
    plan: List[Tuple[tarfile.TarInfo, str]] = []
    try:
        root_fd = os.dup(dir_fd) if dir_fd is not None else os.open(root, _DIR_FLAGS)
        if isinstance(archive_path, (str, bytes, os.PathLike)):
            opened = tarfile.open(archive_path, mode="r:")
        else:
            opened = tarfile.open(fileobj=archive_path, mode="r:")
        with opened as tar:
            plan = _plan(tar, root)
            dirs: List[Tuple[str, int]] = []
            for member, rel in plan:
                _extract_member(tar, member, rel, root, root_fd, created, dirs)
            _set_dir_times(dirs, root, root_fd)
    except TransferError:
        _undo(created, root, root_fd)
        raise
    except tarfile.TarError as exc:
        _undo(created, root, root_fd)
        raise TransferError("bad tar archive: %s" % exc) from None
    except OSError as exc:
        _undo(created, root, root_fd)
        name = exc.filename2 or exc.filename
        if isinstance(exc, FileExistsError):
            raise TransferError("%s exists: classh never overwrites a file"
                                % (name or "a path")) from None
        where = " %s:" % name if name else ""
        raise TransferError("cannot unpack:%s %s" % (where, exc.strerror or exc)) from None
    finally:
        if root_fd >= 0:
            os.close(root_fd)
    if not plan:
        raise TransferError("the archive is empty")
    return sorted({rel.split("/", 1)[0] for _, rel in plan})


# -- the sink -------------------------------------------------------------------------

class _Pending:
    """One host's slurp in progress: its directory (and fd), the temporary archive's fd."""

    __slots__ = ("directory", "path", "dir_fd", "fd", "created", "error")

    def __init__(self):
        self.directory: Optional[str] = None
        self.path: Optional[str] = None
        self.dir_fd = -1
        self.fd = -1
        self.created = False
        self.error: Optional[str] = None

    def close(self) -> None:
        """Close the archive's fd (never raises)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def release(self) -> None:
        """Close every fd (never raises)."""
        self.close()
        if self.dir_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.dir_fd)
            self.dir_fd = -1


class SlurpSink(Observer):
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

    Nothing is written through a symlink: an existing ``dest_dir/host`` that
    is a link (or not a directory) fails the host, and everything is made
    relative to fds of the directories, opened with ``O_NOFOLLOW``. A write
    error on the temporary file raises :class:`SinkError` for the host.

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
            self._dest_fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY
                                    | getattr(os, "O_CLOEXEC", 0))
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
            name = os.path.basename(pending.directory)
            try:
                os.mkdir(name, 0o755, dir_fd=self._dest_fd)
                pending.created = True
            except FileExistsError:
                pass
            pending.dir_fd = _open_dir(name, self._dest_fd, shown=pending.directory)
            pending.path = os.path.join(pending.directory, PARTIAL_NAME)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(PARTIAL_NAME, dir_fd=pending.dir_fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            pending.fd = os.open(PARTIAL_NAME, flags, 0o600, dir_fd=pending.dir_fd)
        except TransferError as exc:
            pending.error = str(exc)
        except OSError as exc:
            pending.error = "cannot write %s: %s" % (pending.path or pending.directory
                                                     or self.dest_dir, exc.strerror)

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
            raise SinkError(pending.path, exc, task.key) from exc

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
                names = self._extract(pending)
            except TransferError as exc:
                self._fail(record, str(exc))
            else:
                record.extra["slurped"] = [os.path.join(pending.directory, n) for n in names]
        finally:
            self._clean(pending)

    def _extract(self, pending: _Pending) -> List[str]:
        """Unpack the host's archive into its directory; the top-level names written."""
        with self._archive(pending) as archive:
            return safe_extract(archive, pending.directory, dir_fd=pending.dir_fd)

    @staticmethod
    def _archive(pending: _Pending):
        """The host's temporary archive, open for reading (never through a symlink)."""
        try:
            fd = os.open(PARTIAL_NAME, os.O_RDONLY | _NOFOLLOW, dir_fd=pending.dir_fd)
        except OSError as exc:
            raise TransferError("cannot read %s: %s" % (pending.path, exc.strerror)) from None
        return os.fdopen(fd, "rb")

    @staticmethod
    def _fail(record: Record, reason: str) -> None:
        record.error = " ".join(reason.split())  # one line
        if record.exitcode == 0:
            record.exitcode = 1

    def _clean(self, pending: _Pending) -> None:
        if pending.dir_fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(PARTIAL_NAME, dir_fd=pending.dir_fd)
        if pending.created:
            with contextlib.suppress(OSError):  # only when empty: nothing was unpacked
                os.rmdir(os.path.basename(pending.directory), dir_fd=self._dest_fd)
        pending.release()

    def close(self) -> None:
        """Drop the temporary files of hosts that never finished (an aborted run); close
        every fd (never raises)."""
        for pending in self._pending.values():
            self._clean(pending)
        self._pending.clear()
        if self._dest_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._dest_fd)
            self._dest_fd = -1
