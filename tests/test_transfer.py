"""File transfer: copy plans, slurp commands, safe extraction, and both directions
through a real loopback sshd."""
import io
import os
import shutil
import stat
import subprocess
import tarfile
import uuid

import pytest

from classh.hostmode import TargetSource, task_maker
from classh.observers import Observer
from classh.run import Run
from classh.options import Options
from classh.results import FAILED, OK, SSH_ERROR, Record
from classh.supervisor import Task
from classh.targets import resolve
from classh.transfer import (PARTIAL_NAME, SlurpSink, TransferError, copy_plan,
                             safe_extract, slurp_command)


# -- helpers ------------------------------------------------------------------------

def sh(command, cwd, input=None):
    """Run a 'remote' command with the local /bin/sh (as the remote shell would)."""
    return subprocess.run(["sh", "-c", command], cwd=str(cwd), input=input,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def write(path, data=b"", mode=0o644):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), "wb") as f:
        f.write(data)
    os.chmod(str(path), mode)


def read(path):
    with open(str(path), "rb") as f:
        return f.read()


def members(archive):
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: m for m in tar.getmembers()}


def tree(top):
    """{relative path: bytes, 'dir/' or '-> target'} of everything under ``top``."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(str(top)):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, str(top))
            if os.path.islink(full):
                found[rel] = "-> " + os.readlink(full)
            elif os.path.isdir(full):
                found[rel] = "dir/"
            else:
                found[rel] = read(full)
    return found


def make_tree(base):
    """A small source tree: files, a subdirectory, a relative symlink."""
    write(base / "tree" / "a.txt", b"alpha\n")
    write(base / "tree" / "sub" / "b.bin", bytes(range(256)) * 10)
    write(base / "tree" / "sub" / "run.sh", b"#!/bin/sh\necho hi\n", 0o755)
    os.symlink("sub/b.bin", str(base / "tree" / "link"))
    return base / "tree"


def archive_of(entries):
    """A tar (bytes) from (TarInfo kwargs, data) pairs, built by hand."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for fields, data in entries:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def feed_sink(sink, host, archive, exitcode=0):
    """Drive a SlurpSink as the supervisor would; return the record."""
    task = Task(key=host, argv=["ssh"])
    record = Record(host=host, exitcode=exitcode, stdout=archive[:100], stdout_size=len(archive))
    sink.started(task)
    for start in range(0, len(archive), 1000):
        sink.output(task, 1, archive[start:start + 1000])
    sink.output(task, 2, b"some stderr\n")
    sink.finished(task, record)
    return record


class Collector(Observer):
    """Observer keeping every finished record by host."""

    def __init__(self):
        self.records = {}

    def finished(self, task, record):
        self.records[record.host] = record


def run_hosts(fleet, pattern, command, observers=(), input=None):
    """Run ``command`` on ``pattern`` through the real engine; {host: Record}."""
    opts = Options(ssh=fleet.ssh_command, input=input, timeout=60)
    source = TargetSource(resolve([pattern]), task_maker(command, opts))
    collector = Collector()
    Run(source, opts, list(observers) + [collector], keep=(0, None)).run()
    return collector.records


@pytest.fixture
def remote_tmp():
    """A fresh world-writable dir in /tmp the fleet's login user can write into."""
    path = "/tmp/classh-xfer-%s" % uuid.uuid4().hex[:12]
    os.mkdir(path)
    os.chmod(path, 0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def shared_dir(path):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o777)
    return path


# -- copy_plan: unit ----------------------------------------------------------------

def test_copy_plan_single_file_archive_holds_only_its_basename(tmp_path):
    write(tmp_path / "dir" / "notes.txt", b"hello\n")
    command, archive = copy_plan([str(tmp_path / "dir" / "notes.txt")], "/srv/x.txt")
    found = members(archive)
    assert list(found) == ["notes.txt"]
    assert found["notes.txt"].uid == 0 and found["notes.txt"].uname == ""
    assert "tar -x -O -f - > /srv/x.txt" in command


def test_copy_plan_file_to_new_name_and_into_dir(tmp_path):
    write(tmp_path / "src" / "f.txt", b"content\n")
    command, archive = copy_plan([str(tmp_path / "src" / "f.txt")], "renamed")
    remote = tmp_path / "remote"
    remote.mkdir()
    assert sh(command, remote, archive).returncode == 0
    assert tree(remote) == {"renamed": b"content\n"}
    # the same plan with an existing directory as dest puts the file inside it
    (remote / "d").mkdir()
    command, archive = copy_plan([str(tmp_path / "src" / "f.txt")], "d")
    assert sh(command, remote, archive).returncode == 0
    assert read(remote / "d" / "f.txt") == b"content\n"
    # a trailing slash means a directory, created if missing
    command, archive = copy_plan([str(tmp_path / "src" / "f.txt")], "new/deeper/")
    assert sh(command, remote, archive).returncode == 0
    assert read(remote / "new" / "deeper" / "f.txt") == b"content\n"


def test_copy_plan_executable_file_to_new_name_stays_executable(tmp_path):
    write(tmp_path / "tool.sh", b"#!/bin/sh\n", 0o755)
    command, archive = copy_plan([str(tmp_path / "tool.sh")], "out/tool")
    remote = tmp_path / "remote"
    (remote / "out").mkdir(parents=True)
    assert sh(command, remote, archive).returncode == 0
    assert os.stat(str(remote / "out" / "tool")).st_mode & 0o100


def test_copy_plan_many_sources_and_tree(tmp_path):
    src = make_tree(tmp_path / "src")
    write(tmp_path / "src" / "one", b"1")
    write(tmp_path / "src" / "two", b"22")
    sources = [str(tmp_path / "src" / "one"), str(tmp_path / "src" / "two"), str(src) + "/"]
    command, archive = copy_plan(sources, "dest")
    assert command.startswith("mkdir -p -- dest && ")
    assert not any(name.startswith("/") for name in members(archive))
    remote = tmp_path / "remote"
    remote.mkdir()
    assert sh(command, remote, archive).returncode == 0
    got = tree(remote / "dest")
    assert got == {
        "one": b"1", "two": b"22", "tree": "dir/", "tree/a.txt": b"alpha\n",
        "tree/sub": "dir/", "tree/sub/b.bin": bytes(range(256)) * 10,
        "tree/sub/run.sh": b"#!/bin/sh\necho hi\n", "tree/link": "-> sub/b.bin",
    }


def test_copy_plan_follows_a_symlink_given_as_source(tmp_path):
    write(tmp_path / "real.txt", b"real")
    os.symlink("real.txt", str(tmp_path / "alias"))
    command, archive = copy_plan([str(tmp_path / "alias")], "x")
    found = members(archive)
    assert list(found) == ["alias"] and found["alias"].isreg()


@pytest.mark.parametrize("dest", [
    "a b $HOME 'q\" `echo x` ; touch injected",
    "-n",
    "--help",
    "$(touch injected)",
])
def test_copy_plan_dest_is_never_interpreted(tmp_path, dest):
    write(tmp_path / "f", b"data")
    remote = tmp_path / "remote"
    remote.mkdir()
    command, archive = copy_plan([str(tmp_path / "f")], dest)
    result = sh(command, remote, archive)
    assert result.returncode == 0, result.stderr
    assert tree(remote) == {dest: b"data"}
    # and as a directory destination
    write(tmp_path / "g", b"more")
    command, archive = copy_plan([str(tmp_path / "f"), str(tmp_path / "g")], dest + "2")
    assert sh(command, remote, archive).returncode == 0
    assert read(remote / (dest + "2") / "g") == b"more"
    assert not os.path.exists(str(remote / "injected"))


def test_copy_plan_tilde_means_remote_home(tmp_path):
    write(tmp_path / "f", b"data")
    command, archive = copy_plan([str(tmp_path / "f")], "~/sub/")
    assert '"$HOME"/' in command
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(["sh", "-c", command], input=archive, cwd="/",
                            env=dict(os.environ, HOME=str(home)), capture_output=True)
    assert result.returncode == 0, result.stderr
    assert read(home / "sub" / "f") == b"data"


def test_copy_plan_errors(tmp_path):
    write(tmp_path / "a" / "f", b"1")
    write(tmp_path / "b" / "f", b"2")
    missing = str(tmp_path / "no such file")
    with pytest.raises(TransferError, match="no such file"):
        copy_plan([missing], "x")
    with pytest.raises(TransferError) as info:
        copy_plan([str(tmp_path / "a" / "f"), missing], "x")
    assert missing in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TransferError, match="empty"):
        copy_plan([str(tmp_path / "a" / "f")], "")
    with pytest.raises(TransferError, match="no source"):
        copy_plan([], "x")
    with pytest.raises(TransferError, match="named 'f'"):
        copy_plan([str(tmp_path / "a" / "f"), str(tmp_path / "b" / "f")], "x")
    os.mkfifo(str(tmp_path / "fifo"))
    with pytest.raises(TransferError, match="not a regular file"):
        copy_plan([str(tmp_path / "fifo")], "x")
    assert issubclass(TransferError, ValueError)


# -- slurp_command: unit --------------------------------------------------------------

def slurped_names(command, cwd):
    result = sh(command, cwd)
    assert result.returncode == 0, result.stderr
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        return sorted(m.name for m in tar.getmembers())


def test_slurp_command_file_dir_and_odd_names(tmp_path):
    write(tmp_path / "d" / "f.txt", b"x")
    write(tmp_path / "d" / "sub" / "g", b"y")
    write(tmp_path / "-dash" / "$x 'y'", b"z")
    assert slurped_names(slurp_command("d/f.txt"), tmp_path) == ["f.txt"]
    assert slurped_names(slurp_command(str(tmp_path / "d") + "//"), "/") == \
        ["d", "d/f.txt", "d/sub", "d/sub/g"]
    assert slurped_names(slurp_command("-dash/$x 'y'"), tmp_path) == ["$x 'y'"]
    assert slurped_names(slurp_command("-dash"), tmp_path) in (
        ["-dash", "-dash/$x 'y'"], ["./-dash", "./-dash/$x 'y'"])


def test_slurp_command_ignores_cdpath(tmp_path):
    write(tmp_path / "d" / "f", b"x")
    result = subprocess.run(["sh", "-c", slurp_command("d/f")], cwd=str(tmp_path),
                            env=dict(os.environ, CDPATH="/"), capture_output=True)
    assert result.returncode == 0
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        assert tar.getnames() == ["f"]


def test_slurp_command_missing_path_fails_with_a_message(tmp_path):
    (tmp_path / "d").mkdir()
    for path in ("d/nothere", "nodir/nothere"):
        result = sh(slurp_command(path), tmp_path)
        assert result.returncode != 0
        assert b"nothere" in result.stderr or b"nodir" in result.stderr


@pytest.mark.parametrize("bad", ["", "/", "///", ".", "a/..", "~"])
def test_slurp_command_refuses_paths_without_a_basename(bad):
    with pytest.raises(TransferError):
        slurp_command(bad)


# -- SlurpSink / safe_extract: unit -----------------------------------------------------

def test_sink_extracts_and_cleans_up(tmp_path):
    sink = SlurpSink(str(tmp_path / "out"))
    archive = archive_of([({"name": "d", "type": tarfile.DIRTYPE, "mode": 0o755}, None),
                          ({"name": "d/f", "mode": 0o4777}, b"data"),
                          ({"name": "d/l", "type": tarfile.SYMTYPE, "linkname": "f"}, None),
                          ({"name": "d/h", "type": tarfile.LNKTYPE, "linkname": "d/f"}, None)])
    record = feed_sink(sink, "node1", archive)
    assert record.status == OK and record.error is None
    assert record.stdout == b"" and record.stdout_size == 0
    assert record.extra["slurped"] == [str(tmp_path / "out" / "node1" / "d")]
    assert tree(tmp_path / "out") == {"node1": "dir/", "node1/d": "dir/", "node1/d/f": b"data",
                                      "node1/d/l": "-> f", "node1/d/h": b"data"}
    mode = os.stat(str(tmp_path / "out" / "node1" / "d" / "f")).st_mode
    assert not mode & (stat.S_ISUID | stat.S_IWOTH)
    assert SlurpSink.needs_output is False


MALICIOUS = {
    "dotdot": [({"name": "ok.txt"}, b"fine"), ({"name": "../evil"}, b"evil")],
    "absolute": [({"name": "/tmp/classh-abs-evil-%s" % uuid.uuid4().hex}, b"evil")],
    "nested dotdot": [({"name": "a/../../evil"}, b"evil")],
    "symlink out": [({"name": "l", "type": tarfile.SYMTYPE, "linkname": "../.."}, None),
                    ({"name": "l/evil"}, b"evil")],
    "absolute symlink": [({"name": "l", "type": tarfile.SYMTYPE, "linkname": "/etc"}, None)],
    "hard link out": [({"name": "h", "type": tarfile.LNKTYPE, "linkname": "../evil"}, None)],
    "device": [({"name": "dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None)],
    "fifo": [({"name": "p", "type": tarfile.FIFOTYPE}, None)],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_sink_rejects_malicious_archives(tmp_path, case):
    outside = tmp_path / "outer"
    dest = outside / "out"
    sink = SlurpSink(str(dest))
    before = set(os.listdir("/tmp"))
    record = feed_sink(sink, "node1", archive_of([(dict(f), d) for f, d in MALICIOUS[case]]))
    assert record.status == FAILED and record.exitcode == 1
    assert record.error and "\n" not in record.error
    assert record.stdout == b""
    assert tree(outside) == {"out": "dir/"}  # nothing written, host dir removed again
    assert not [n for n in set(os.listdir("/tmp")) - before if "evil" in n]


def test_sink_never_overwrites_and_leaves_the_file_alone(tmp_path):
    dest = tmp_path / "out"
    write(dest / "node1" / "f", b"old")
    sink = SlurpSink(str(dest))
    record = feed_sink(sink, "node1", archive_of([({"name": "g"}, b"new g"),
                                                  ({"name": "f"}, b"new")]))
    assert record.exitcode == 1
    assert str(dest / "node1" / "f") in record.error
    assert tree(dest) == {"node1": "dir/", "node1/f": b"old"}  # g not left behind either


def test_sink_merges_into_existing_directories_without_replacing(tmp_path):
    dest = tmp_path / "out"
    write(dest / "node1" / "d" / "old", b"old")
    sink = SlurpSink(str(dest))
    record = feed_sink(sink, "node1", archive_of([
        ({"name": "d", "type": tarfile.DIRTYPE}, None), ({"name": "d/new"}, b"new")]))
    assert record.ok, record.error
    assert tree(dest / "node1") == {"d": "dir/", "d/old": b"old", "d/new": b"new"}


def test_sink_leaves_failed_hosts_alone_and_rejects_garbage(tmp_path):
    dest = tmp_path / "out"
    sink = SlurpSink(str(dest))
    good = archive_of([({"name": "f"}, b"x")])
    record = feed_sink(sink, "node1", good, exitcode=2)
    assert record.exitcode == 2 and record.error is None
    record = feed_sink(sink, "node2", b"this is not a tar archive" * 40)
    assert record.exitcode == 1 and "tar" in record.error
    record = feed_sink(sink, "node3", b"")
    assert record.exitcode == 1
    assert os.listdir(str(dest)) == []
    # a host name that is not a file name fails only that host
    record = feed_sink(sink, "..", good)
    assert record.exitcode == 1 and "file name" in record.error


def test_sink_refuses_a_file_as_destination(tmp_path):
    write(tmp_path / "file", b"")
    with pytest.raises(TransferError):
        SlurpSink(str(tmp_path / "file"))


def test_safe_extract_direct(tmp_path):
    path = tmp_path / "a.tar"
    write(path, archive_of([({"name": "./x/y"}, b"1")]))
    (tmp_path / "dest").mkdir()
    assert safe_extract(str(path), str(tmp_path / "dest")) == ["x"]
    assert read(tmp_path / "dest" / "x" / "y") == b"1"


# -- through the real sshd ------------------------------------------------------------

def test_copy_file_to_new_name(fleet, remote_tmp, tmp_path):
    write(tmp_path / "hello.txt", b"hello world\n")
    command, archive = copy_plan([str(tmp_path / "hello.txt")], remote_tmp + "/{host}.txt")
    records = run_hosts(fleet, "node[1-3]", command, input=archive)
    assert {h: r.status for h, r in records.items()} == {"node1": OK, "node2": OK, "node3": OK}
    for host in ("node1", "node2", "node3"):
        assert read("%s/%s.txt" % (remote_tmp, host)) == b"hello world\n"


def test_copy_file_into_existing_dir(fleet, remote_tmp, tmp_path):
    write(tmp_path / "hello.txt", b"into dir\n")
    for host in ("node1", "node2"):
        shared_dir("%s/%s" % (remote_tmp, host))
    command, archive = copy_plan([str(tmp_path / "hello.txt")], remote_tmp + "/{host}")
    records = run_hosts(fleet, "node[1-2]", command, input=archive)
    assert all(r.ok for r in records.values()), records
    for host in ("node1", "node2"):
        assert tree("%s/%s" % (remote_tmp, host)) == {"hello.txt": b"into dir\n"}


def test_copy_files_and_tree(fleet, remote_tmp, tmp_path):
    src = make_tree(tmp_path / "src")
    write(tmp_path / "src" / "one", b"1")
    write(tmp_path / "src" / "two", b"2" * 100000)
    command, archive = copy_plan([str(tmp_path / "src" / "one"), str(tmp_path / "src" / "two"),
                                  str(src)], remote_tmp + "/{host}/deep/er/")
    records = run_hosts(fleet, "node[1-3]", command, input=archive)
    assert all(r.ok for r in records.values()), records
    expected = tree(tmp_path / "src")
    for host in ("node1", "node2", "node3"):
        assert tree("%s/%s/deep/er" % (remote_tmp, host)) == expected
        assert os.stat("%s/%s/deep/er/tree/sub/run.sh" % (remote_tmp, host)).st_mode & 0o100


def test_copy_dest_with_space_and_dollar(fleet, remote_tmp, tmp_path):
    write(tmp_path / "f", b"odd\n")
    dest = remote_tmp + "/{host} a $HOME 'q\"; `touch injected` $(touch injected2)"
    command, archive = copy_plan([str(tmp_path / "f")], dest)
    records = run_hosts(fleet, "node[1-2]", command, input=archive)
    assert all(r.ok for r in records.values()), records
    names = sorted(os.listdir(remote_tmp))
    assert names == sorted(os.path.basename(dest.replace("{host}", h)) for h in ("node1", "node2"))
    assert read(dest.replace("{host}", "node2")) == b"odd\n"
    home = os.path.expanduser("~" + fleet.user)
    assert not [n for n in os.listdir(home) if n.startswith("injected")]


def test_copy_to_refused_host_is_an_ssh_error(fleet, remote_tmp, tmp_path):
    write(tmp_path / "f", b"x")
    command, archive = copy_plan([str(tmp_path / "f")], remote_tmp + "/{host}")
    records = run_hosts(fleet, "node1,refused", command, input=archive)
    assert records["node1"].ok
    assert records["refused"].status == SSH_ERROR
    assert not os.path.exists(remote_tmp + "/refused")


def make_remote_files(remote_tmp, hosts):
    for host in hosts:
        write("%s/%s/f" % (remote_tmp, host), ("file of %s\n" % host).encode() + bytes(range(256)))
        write("%s/%s/dir/sub/g" % (remote_tmp, host), host.encode())
        os.symlink("sub/g", "%s/%s/dir/link" % (remote_tmp, host))


def test_slurp_file_from_three_hosts(fleet, remote_tmp, tmp_path):
    hosts = ("node1", "node2", "node3")
    make_remote_files(remote_tmp, hosts)
    dest = str(tmp_path / "got")
    records = run_hosts(fleet, "node[1-3]", slurp_command(remote_tmp + "/{host}/f"),
                        [SlurpSink(dest)])
    for host in hosts:
        assert records[host].ok, records[host]
        assert records[host].stdout == b"" and records[host].stdout_size == 0
        assert tree(os.path.join(dest, host)) == {
            "f": ("file of %s\n" % host).encode() + bytes(range(256))}


def test_slurp_directory(fleet, remote_tmp, tmp_path):
    make_remote_files(remote_tmp, ("node1", "node2"))
    dest = str(tmp_path / "got")
    records = run_hosts(fleet, "node[1-2]", slurp_command(remote_tmp + "/{host}/dir/"),
                        [SlurpSink(dest)])
    assert all(r.ok for r in records.values()), records
    for host in ("node1", "node2"):
        assert tree(os.path.join(dest, host)) == {
            "dir": "dir/", "dir/sub": "dir/", "dir/sub/g": host.encode(), "dir/link": "-> sub/g"}


def test_slurp_missing_on_one_host(fleet, remote_tmp, tmp_path):
    make_remote_files(remote_tmp, ("node1", "node3"))
    shared_dir(remote_tmp + "/node2")
    dest = str(tmp_path / "got")
    records = run_hosts(fleet, "node[1-3]", slurp_command(remote_tmp + "/{host}/f"),
                        [SlurpSink(dest)])
    assert records["node1"].ok and records["node3"].ok
    bad = records["node2"]
    assert bad.status == FAILED and bad.exitcode not in (0, None)
    assert b"f" in bad.stderr and b"No such file" in bad.stderr, bad.stderr
    assert sorted(os.listdir(dest)) == ["node1", "node3"]


def test_slurp_refused_host_and_existing_file(fleet, remote_tmp, tmp_path):
    make_remote_files(remote_tmp, ("node1", "node2"))
    dest = tmp_path / "got"
    write(dest / "node1" / "f", b"keep me")
    records = run_hosts(fleet, "node[1-2],refused", slurp_command(remote_tmp + "/{host}/f"),
                        [SlurpSink(str(dest))])
    assert records["refused"].status == SSH_ERROR
    assert records["node1"].status == FAILED and records["node1"].exitcode == 1
    assert str(dest / "node1" / "f") in records["node1"].error
    assert read(dest / "node1" / "f") == b"keep me"
    assert records["node2"].ok
    assert sorted(os.listdir(str(dest))) == ["node1", "node2"]
    assert not os.path.exists(str(dest / "node1" / PARTIAL_NAME))


def test_a_copy_to_a_missing_directory_reads_as_the_shell_says_it(classh, tmp_path):
    source = tmp_path / "f"
    source.write_text("x\n")
    r = classh("--copy", str(source), "--dest", "/nonexistent-classh/f", "node1")
    assert r.rc == 5, r
    assert "sh: 1: cannot create /nonexistent-classh/f: Directory nonexistent" in r.out, r
    assert "eval" not in r.out
