"""Job mode's ssh connections against the real loopback sshd: masters opened as slots are
used, every one closed (and waited for) before its directory goes, however classh ends
(normal exit, SIGTERM, ``kill -9``), stale directories of dead runs swept, and a silent node
noticed by ssh's keepalives.

The ssh command is a small wrapper around the fleet's: it logs each command line (the
run's control directory is read from it) and can make chosen probes fail.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import CLASSH, ROOT, base_env
from leftovers import finish, pids_of, running_on_target, wait_for, with_marker

from classh.options import Options
from classh.ssh import SshCommand

LIB = os.path.join(ROOT, "lib")


def wrapper(tmp_path, fleet, fail=None, fail_after=None):
    """(ssh command, log path): the fleet's ssh, logging its argv; a probe (a master being
    opened) whose socket name ends with ``fail`` fails before connecting, one ending with
    ``fail_after`` fails after its master came up."""
    log = tmp_path / "ssh.log"
    script = tmp_path / "ssh"
    script.write_text("""#!/bin/sh
printf '%%s\\n' "$*" >> %(log)s
case "$*" in
*ControlMaster=yes*%(fail)s\\ *) echo "ssh: connect to host $2: Connection timed out" >&2; exit 255;;
*ControlMaster=yes*%(after)s\\ *) %(ssh)s "$@"; echo "probe made to fail" >&2; exit 255;;
esac
exec %(ssh)s "$@"
""" % {"log": log, "ssh": fleet.ssh_command, "fail": fail or "/nofail", "after": fail_after or "/nofail"})
    script.chmod(0o755)
    return str(script), log


def masters_opened(log):
    """How many ssh command lines opened a master."""
    return sum("ControlMaster=yes" in line for line in log.read_text().splitlines())


def control_dirs(log):
    """The control directories the run's ssh command lines name."""
    return set(re.findall(r"ControlPath=(\S+)/\d+-\d+ ", log.read_text()))


def masters_of(directory):
    """Pids of the ssh masters listening in ``directory`` (ssh names itself ``ssh: PATH [mux]``)."""
    want = ("ssh: %s/" % directory).encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as fh:
                    if fh.read().startswith(want):
                        found.append(int(name))
            except OSError:
                continue
    return found


def nothing_left(log, timeout=10.0):
    """True once no master of the run's control directories runs and none of them exists."""
    dirs = control_dirs(log)
    assert dirs, "no control directory in the ssh log"
    return wait_for(lambda: not any(masters_of(d) or os.path.exists(d) for d in dirs), timeout)


def kill_all(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def private_tmp():
    """A TMPDIR of the test's own (the control directories of its runs go there)."""
    path = tempfile.mkdtemp(prefix="classh-conn-")
    yield path
    for name in os.listdir(path):
        kill_all(masters_of(os.path.join(path, name)))
    subprocess.run(["rm", "-rf", path])


def start(ssh, args, env=None):
    merged = {"CLASSH_SSH": ssh}
    merged.update(env or {})
    return subprocess.Popen([sys.executable, CLASSH] + list(args), env=base_env(merged),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# -- masters as slots are used ---------------------------------------------------------
def test_two_jobs_on_a_node_of_300_slots_open_one_master_and_close_it(fleet, tmp_path):
    ssh, log = wrapper(tmp_path, fleet)
    _, out, err = finish(start(ssh, ["--node", "node1*300", "--job", "echo a", "--job", "echo b"]))
    assert sorted(out.split()) == ["a", "b"] and "2 ok" in err, err
    assert masters_opened(log) <= 2, "%d masters for 2 jobs" % masters_opened(log)
    assert nothing_left(log)


def test_more_jobs_than_a_master_carries_open_more_masters(fleet, tmp_path):
    ssh, log = wrapper(tmp_path, fleet)
    jobs = [arg for i in range(25) for arg in ("--job", "sleep 1; echo j%d" % i)]
    started = time.monotonic()
    _, out, err = finish(start(ssh, ["--node", "node1*30", "--stall-factor", "0"] + jobs))
    assert sorted(out.split()) == sorted("j%d" % i for i in range(25)) and "25 ok" in err, err
    assert 3 <= masters_opened(log) <= 4
    assert time.monotonic() - started < 15  # the 25 ran side by side
    assert nothing_left(log)


def test_a_failed_extra_connection_keeps_a_working_node(fleet, tmp_path):
    ssh, log = wrapper(tmp_path, fleet, fail="/0-1")
    jobs = [arg for i in range(14) for arg in ("--job", "sleep 0.5; echo j%d" % i)]
    _, out, err = finish(start(ssh, ["--node", "node1*20", "--stall-factor", "0"] + jobs))
    assert "dropped" not in err and "14 ok" in err, err
    assert sorted(out.split()) == sorted("j%d" % i for i in range(14))
    assert nothing_left(log)


# -- every master closed, however the run ends -----------------------------------------
def test_a_master_whose_probe_failed_is_closed_too(fleet, tmp_path):
    ssh, log = wrapper(tmp_path, fleet, fail_after="/1-0")
    _, out, err = finish(start(ssh, ["--node", "node1", "--node", "node2", "--job", "echo a"]))
    assert out.split() == ["a"] and "node2 dropped" in err, err
    assert nothing_left(log)


def block_run(tmp_path, fleet, mark, env=None):
    """classh running two block tasks (they hold their stdin) on two nodes, started."""
    ssh, log = wrapper(tmp_path, fleet)
    data = tmp_path / "in"
    data.write_text("1\n2\n")
    proc = start(ssh, ["--node", "node1*2", "--node", "node2", "--input", str(data),
                       "--task", "cat >/dev/null; sleep %s" % mark], env)
    running_on_target(mark, 2)
    return proc, log


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_block_tasks_and_masters_end_when_classh_is_killed(fleet, tmp_path, sweep, signum):
    mark, _ = with_marker("{m}")
    sweep.append(mark)
    proc, log = block_run(tmp_path, fleet, mark)
    proc.send_signal(signum)
    finish(proc)
    started = time.monotonic()
    assert nothing_left(log), "masters or control directory left"
    assert wait_for(lambda: not pids_of(mark), 10 - (time.monotonic() - started)), \
        "block tasks still running on the target"


def test_logins_of_their_own_end_with_a_killed_classh_too(fleet, tmp_path, sweep, private_tmp):
    mark, _ = with_marker("{m}")
    sweep.append(mark)
    data = tmp_path / "in"
    data.write_text("1\n2\n")
    proc = start(fleet.ssh_command, ["--no-reuse", "--node", "node1*2", "--input", str(data),
                                     "--task", "cat >/dev/null; sleep %s" % mark],
                 {"TMPDIR": private_tmp})
    running_on_target(mark, 2)
    proc.kill()
    finish(proc)
    assert wait_for(lambda: not pids_of(mark) and not os.listdir(private_tmp), 10), \
        (pids_of(mark), os.listdir(private_tmp))


def test_a_stale_directory_of_a_dead_run_is_swept_at_start(fleet, tmp_path, sweep, private_tmp):
    mark, _ = with_marker("{m}")
    sweep.append(mark)
    first = tmp_path / "first"
    first.mkdir()
    proc, log = block_run(first, fleet, mark, {"TMPDIR": private_tmp})
    keepers = [pid for pid in _pids_named(b"classh-keeper") if _child_of(pid, proc.pid)]
    os.kill(proc.pid, signal.SIGKILL)  # classh and its keeper both die: nothing cleans up
    kill_all(keepers)
    finish(proc)
    dirs = control_dirs(log)
    second = tmp_path / "second"
    second.mkdir()
    ssh, _ = wrapper(second, fleet)
    _, out, err = finish(start(ssh, ["--node", "node1", "--job", "echo a"], {"TMPDIR": private_tmp}))
    assert out.split() == ["a"], err
    assert wait_for(lambda: not any(masters_of(d) or os.path.exists(d) for d in dirs), 10)
    assert os.listdir(private_tmp) == []


def _pids_named(word):
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as fh:
                    if word in fh.read().split(b"\0"):
                        found.append(int(name))
            except OSError:
                continue
    return found


def _child_of(pid, parent):
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            return int(fh.read().rpartition(b")")[2].split()[1]) == parent
    except OSError:
        return False


def test_a_bad_task_leaves_no_control_directory(fleet, tmp_path, private_tmp):
    data = tmp_path / "in"
    data.write_text("1\n")
    proc = start(fleet.ssh_command, ["--node", "node1", "--input", str(data), "--task", " "],
                 {"TMPDIR": private_tmp})
    _, out, err = finish(proc)
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert os.listdir(private_tmp) == []


# -- a silent node -----------------------------------------------------------------------
def test_keepalives_are_on_by_default_and_yours_win():
    base = SshCommand(Options(ssh="ssh")).base
    assert "ServerAliveInterval=10" in base and "ServerAliveCountMax=2" in base
    base = SshCommand(Options(ssh="ssh", ssh_options=["ServerAliveInterval=3"])).base
    assert "ServerAliveInterval=10" not in base and "ServerAliveInterval=3" in base


def _session_of(pid):
    """The sshd process serving the connection that ``pid`` runs under."""
    while pid > 1:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            pid = int(fh.read().rpartition(b")")[2].split()[1])
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            if fh.read().startswith(b"sshd: ") and pid:
                return pid
    raise AssertionError("no sshd above the job")


def test_a_node_whose_sshd_stops_is_dropped_and_its_job_runs_elsewhere(fleet, remote_dir, sweep):
    mark, _ = with_marker("{m}")
    sweep.append(mark)
    flag = os.path.join(remote_dir, "flag")
    job = "test -e %s && echo done || { touch %s; sleep %s; }" % (flag, flag, mark)
    code = ("import sys; sys.path.insert(0, %r); import classh.ssh; "
            "classh.ssh.SERVER_ALIVE_INTERVAL = 1; from classh.cli import main; main()" % LIB)
    proc = subprocess.Popen([sys.executable, "-c", code, "--node", "node1", "--node", "node2",
                             "--stall-factor", "0", "--job", job],
                            env=base_env({"CLASSH_SSH": fleet.ssh_command}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stopped = None
    try:
        running_on_target(mark, 1)
        stopped = _session_of(pids_of(mark)[0])
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()
        _, out, err = finish(proc, timeout=40)
        took = time.monotonic() - started
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        kill_all(pids_of(mark))
    assert out.split() == ["done"] and "dropped" in err, err
    assert took < 15, took
