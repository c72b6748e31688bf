"""Files that are not files (issue 15, item 3): ``-`` and ``/dev/stdout`` are stdout for a
joblog or a JSON file; links, devices and pipes are refused and never unlinked nor renamed
over; a device given as input is read as a stream; ``--resume`` appends to its joblog.

Tests run as root here: no test lets classh write to a real /dev node other than its own
stdout (a pipe), and /dev/stdout is checked to still be a link afterwards."""
import os
import stat
import subprocess
import sys

import pytest

from conftest import CLASSH, base_env

from classh.loop import EventLoop
from classh.results import ResultsError
from classh.jobviews import JOBLOG_HEADER, JobLog


def _run(fleet, tmp_path, *args, timeout=60):
    """classh with ``args`` in ``tmp_path`` (stdout a pipe): (rc, stdout bytes, stderr text)."""
    proc = subprocess.run([sys.executable, CLASSH] + list(args), cwd=str(tmp_path),
                          env=base_env({"CLASSH_SSH": fleet.ssh_command}),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")


def _one_line(err, *words):
    lines = [line for line in err.splitlines() if not line.startswith("classh: run ")]
    assert len(lines) == 1 and lines[0].startswith("classh: "), err
    for word in words:
        assert word in lines[0], (word, err)
    assert "internal error" not in err


def _special_paths(tmp_path):
    """Things at a joblog's path that are not regular files, all inside ``tmp_path``."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(str(victim), str(tmp_path / "link-to-file"))
    os.symlink("/dev/null", str(tmp_path / "link-to-null"))
    os.mkfifo(str(tmp_path / "fifo"))
    paths = ["link-to-file", "link-to-null", "fifo"]
    if os.geteuid() == 0:
        os.mknod(str(tmp_path / "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        paths.append("null")
    return paths


def _kinds(tmp_path, names):
    return {name: stat.S_IFMT(os.lstat(str(tmp_path / name)).st_mode) for name in names}


# -- stdout ------------------------------------------------------------------------------

def test_joblog_dash_is_stdout_not_a_file_named_dash(fleet, tmp_path):
    rc, out, err = _run(fleet, tmp_path, "-q", "--node", "node1", "--job", "echo hi",
                        "--joblog", "-")
    assert rc == 0, err
    assert not os.path.lexists(str(tmp_path / "-"))
    assert out.startswith(JOBLOG_HEADER) and out.count(b"\n") == 2, out
    assert out.split(b"\n")[1].split(b"\t")[-1] == b"echo hi"


def test_joblog_dev_stdout_with_overwrite_writes_stdout_and_keeps_the_link(fleet, tmp_path):
    if not os.path.islink("/dev/stdout"):
        pytest.skip("/dev/stdout is not a link here")
    target = os.readlink("/dev/stdout")
    try:
        rc, out, err = _run(fleet, tmp_path, "-q", "--overwrite", "--node", "node1",
                            "--job", "echo hi", "--joblog", "/dev/stdout")
    finally:
        assert os.path.islink("/dev/stdout") and os.readlink("/dev/stdout") == target
    assert rc == 0, err
    assert out.startswith(JOBLOG_HEADER) and b"\techo hi\n" in out, out


def test_json_dash_is_stdout(fleet, tmp_path):
    rc, out, err = _run(fleet, tmp_path, "-q", "--json", "-", "echo hi", "node1")
    assert rc == 0, err
    assert not os.path.lexists(str(tmp_path / "-"))
    assert b'"host": "node1"' in out and out.count(b"\n") == 1, out


# -- links, devices, pipes: refused, never unlinked ---------------------------------------

@pytest.mark.parametrize("flag", ["--joblog", "--json"])
def test_overwrite_refuses_what_is_not_a_regular_file_and_unlinks_nothing(fleet, tmp_path, flag):
    names = _special_paths(tmp_path)
    before = _kinds(tmp_path, names)
    for name in names:
        ran = tmp_path / ("ran-" + name)
        if flag == "--joblog":
            argv = ["--node", "node1", "--job", "touch %s" % ran, "--joblog", name]
        else:
            argv = ["--json", name, "touch %s" % ran, "node1"]
        rc, out, err = _run(fleet, tmp_path, "-q", "--overwrite", *argv)
        assert rc == 2, (name, err)
        _one_line(err, repr(name), "regular file")
        assert not ran.exists()
    assert _kinds(tmp_path, names) == before
    assert (tmp_path / "victim").read_text() == "precious\n"


def test_active_nodes_is_never_renamed_over_a_link_or_device(fleet, tmp_path):
    names = _special_paths(tmp_path)
    before = _kinds(tmp_path, names)
    for name in names + ["-"]:
        rc, out, err = _run(fleet, tmp_path, "-q", "--node", "node1", "--job", "true",
                            "--active-nodes", name)
        assert rc == 2, (name, err)
        _one_line(err, repr(name))
    assert _kinds(tmp_path, names) == before


def test_overwrite_truncates_a_regular_joblog_in_place(tmp_path):
    path = tmp_path / "log"
    path.write_text("old rows\n" * 10)
    inode = os.stat(str(path)).st_ino
    JobLog(str(path), overwrite=True).close()
    assert path.read_bytes() == JOBLOG_HEADER and os.stat(str(path)).st_ino == inode


def test_a_regular_file_that_is_not_overwritten_is_refused(tmp_path):
    (tmp_path / "log").write_text("precious\n")
    with pytest.raises(ResultsError, match="exists"):
        JobLog(str(tmp_path / "log"))
    assert (tmp_path / "log").read_text() == "precious\n"


# -- --resume appends ------------------------------------------------------------------

def test_resume_appends_to_the_same_joblog(fleet, tmp_path, remote_dir):
    flag = os.path.join(remote_dir, "second")
    job = "test -e %s" % flag
    argv = ["-q", "-o", "R", "--joblog", "L", "--node", "node1", "--job", "echo one",
            "--job", job]
    rc, out, err = _run(fleet, tmp_path, *argv)
    assert rc == 5, err
    open(flag, "w").close()
    rc, out, err = _run(fleet, tmp_path, "--resume", *argv)
    assert rc == 0, err
    text = (tmp_path / "L").read_bytes()
    assert text.startswith(JOBLOG_HEADER) and text.count(JOBLOG_HEADER) == 1, text
    rows = [line.split(b"\t") for line in text.splitlines()[1:]]
    assert [(row[6], row[-1]) for row in rows].count((b"0", job.encode())) == 1, rows
    assert len(rows) == 3, rows


# -- devices as input -------------------------------------------------------------------

@pytest.mark.parametrize("argv,why", [
    (["--input", "/dev/null", "--task", "cat"], "the input holds no block"),
    (["--job-file", "/dev/null"], "the job files brought none"),
])
def test_dev_null_as_input_is_no_job(fleet, tmp_path, argv, why):
    rc, out, err = _run(fleet, tmp_path, "--node", "node1", *argv)
    assert rc == 2, err
    assert "no job to run (%s)" % why in err and "internal error" not in err


def test_the_loop_reads_a_device_epoll_refuses():
    """/dev/zero and /dev/null cannot be waited on (EPERM): they are always ready."""
    got = {}
    fds = [os.open(path, os.O_RDONLY | os.O_NONBLOCK) for path in ("/dev/zero", "/dev/null")]
    try:
        with EventLoop() as loop:
            def reader(fd):
                def read():
                    got[fd] = os.read(fd, 4)
                    loop.remove_reader(fd)
                return read
            for fd in fds:
                loop.add_reader(fd, reader(fd))
            loop.run_once(timeout=5)
            assert got == {fds[0]: b"\0" * 4, fds[1]: b""}
            loop.run_once(timeout=0.01)  # removed: not called again
    finally:
        for fd in fds:
            os.close(fd)


def test_joblog_on_stdout_never_lands_inside_a_jobs_output(fleet, tmp_path):
    """Rows go through the display's own stream: each job's 300 KB line stays whole."""
    jobs = ["head -c 300000 /dev/zero | tr '\\0' %s; echo" % letter for letter in "abc"]
    argv = ["--node", "node1*3", "--joblog", "-"]
    for job in jobs:
        argv += ["--job", job]
    rc, out, err = _run(fleet, tmp_path, *argv)
    assert rc == 0, err
    lines = out.split(b"\n")
    assert lines.pop() == b""
    outputs = sorted(line for line in lines if not b"\t" in line)
    assert outputs == [letter.encode() * 300000 for letter in "abc"], [len(x) for x in outputs]
    assert len(lines) == 1 + 3 + 3 and lines[0] + b"\n" == JOBLOG_HEADER


def test_route_to_dev_stdout_is_stdout(fleet, tmp_path):
    rc, out, err = _run(fleet, tmp_path, "-q", "-S", "/dev/stdout", "true", "node1")
    assert rc == 0, err
    assert out == b"node1\n" and os.path.islink("/dev/stdout")


def test_dev_null_as_a_host_file_is_no_host(fleet, tmp_path):
    # A device is read as a stream; a stream that ends with no host is nothing to do
    # (an earlier pipeline stage had no host to hand on), never an internal error.
    rc, out, err = _run(fleet, tmp_path, "-q", "true", "/dev/null")
    assert rc == 0 and "nothing to do: no host to run on" in err, err
    assert "internal error" not in err


@pytest.mark.parametrize("argv,words", [
    (["--node", "node1", "--job", "true", "--joblog", "-"], "--joblog"),
    (["--json", "/dev/stdout", "true", "node1"], "--json"),
])
def test_closed_stdout_refuses_a_file_written_to_stdout(fleet, argv, words):
    proc = subprocess.run([sys.executable, CLASSH, "-q"] + argv,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=base_env({"CLASSH_SSH": fleet.ssh_command}), timeout=60,
                          preexec_fn=lambda: os.close(1))
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "stdout is closed" in err and words in err, err
