"""``classh --kill RUN-ID[.JOB-ID]``, the run id's files, and the API's kill of one job.

Against the real loopback sshd: job runs started by classh in the background
are killed by tag (their processes found on the target by the ``sleep MARK``
markers of tests/leftovers.py); processes without the tag or with a similar
one, started over ssh, survive.
"""
import json
import os
import subprocess
import time

import pytest

from conftest import STANDIN, run_classh
from leftovers import leftovers, pids_of, start_classh, wait_for, with_marker

from classh.jobs import JobOptions
from classh.kill import kill_command, parse_kill_id
from classh.options import OptionError
from test_jobs import finish, options_for, start_run, step_until


# -- helpers ---------------------------------------------------------------
def run_id_of(proc):
    """The run id a background classh printed first on stderr (``classh: run ID``)."""
    line = proc.stderr.readline().decode()
    assert line.startswith("classh: run "), line
    return line.split()[-1]


def stop(proc):
    """End a background process (by pid) and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def ssh_session(fleet, host, command):
    """A command started over ssh on ``host`` (its own session and process group)."""
    return subprocess.Popen(fleet.ssh_argv + [host, command], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- the id ------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", ".", "ab.", ".1", "ab.1.2", "ab.x1", "a b", "ab;id",
                                  "$(id)", "ab.1;id", "'ab'", "ab\n.1", "-ab", "a" * 33, "ab.-1",
                                  "ab.1 ", "ab*", "ab.*", "ab\\.1"])
def test_bad_kill_ids_are_refused(text):
    with pytest.raises(OptionError) as caught:
        kill_command(text)
    assert repr(text) in str(caught.value)


def test_kill_ids_are_a_run_or_a_run_and_a_job():
    assert parse_kill_id("Ab12") == ("Ab12", None)
    assert parse_kill_id("Ab12.7") == ("Ab12", "7")


@pytest.mark.parametrize("text", ["ab;touch {f}", "$(touch {f})", "ab.1`touch {f}`", "x' ; touch {f} '"])
def test_hostile_kill_ids_exit_2_and_run_nothing(classh, tmp_path, text):
    flag = tmp_path / "flag"
    r = classh("--kill", text.replace("{f}", str(flag)), "node1")
    assert r.rc == 2 and r.out == ""
    assert len(r.err.splitlines()) == 1 and "bad --kill" in r.err
    assert not flag.exists()


def test_kill_takes_targets_or_nodes_not_both(classh):
    r = classh("--kill", "ab", "--node", "node1", "node2")
    assert r.rc == 2 and "not both" in r.err


# -- the kill script on the target ----------------------------------------------
def test_only_exactly_tagged_processes_die(fleet, sweep):
    run = "k%d" % os.getpid()
    marks = {}
    sessions = []
    env_of = {"job1": "CLASSH_TAG=%s.1" % run, "job2": "CLASSH_TAG=%s.2" % run,
              "run2": "CLASSH_TAG=%s2.1" % run, "xrun": "CLASSH_TAG=x%s.1" % run,
              "none": "CLASSH_NOTAG=%s.1" % run,
              # A value holding a newline cannot fake an entry of its own.
              "faked": "FAKE=\"$(printf 'a\\nCLASSH_TAG=%s.1')\"" % run}
    for name, assignment in env_of.items():
        mark, command = with_marker("export %s; sleep {m}; :" % assignment)
        marks[name] = mark
        sweep.append(mark)
        sessions.append(ssh_session(fleet, "node1", command))
    try:
        for mark in marks.values():
            assert wait_for(lambda: pids_of(mark), 60), "a session never started: %s" % mark
        r = run_classh(["--kill", run + ".1", "node1"], env={"CLASSH_SSH": fleet.ssh_command})
        assert (r.rc, r.out) == (0, "node1: 1 process\n"), r
        assert leftovers(marks["job1"]) == []
        survivors = [name for name, mark in marks.items() if pids_of(mark)]
        assert survivors == ["job2", "run2", "xrun", "none", "faked"]
        r = run_classh(["--kill", run, "node1"], env={"CLASSH_SSH": fleet.ssh_command})
        assert (r.rc, r.out) == (0, "node1: 1 process\n"), r
        assert leftovers(marks["job2"]) == []
        assert [name for name, mark in marks.items() if pids_of(mark)] == [
            "run2", "xrun", "none", "faked"]
    finally:
        for session in sessions:
            stop(session)


def test_no_process_found_is_exit_0_and_a_dead_host_is_an_ssh_error(classh):
    r = classh("--kill", "nosuchrun%d" % os.getpid(), "node1,node2")
    assert r.rc == 0 and sorted(r.out.splitlines()) == ["node1: 0 processes", "node2: 0 processes"]
    r = classh("--connect-timeout", "2", "--kill", "nosuchrun", "node1", "refused")
    assert r.rc == 4 and "node1: 0 processes" in r.out


# -- job runs ------------------------------------------------------------------
def test_kill_a_run_and_one_job_of_another_over_the_node_file(fleet, sweep, tmp_path):
    a, command_a = with_marker("sleep {m}")
    b1, command_b1 = with_marker("sleep {m}")
    b2, command_b2 = with_marker("sleep {m}")
    sweep.extend([a, b1, b2])
    nodes = tmp_path / "nodes"
    nodes.write_text("# the run's nodes\nnode1*4\n")
    run_a = start_classh(fleet, ["-q", "--retries", "1", "--node-file", str(nodes)]
                         + ["--job", command_a] * 4)
    run_b = start_classh(fleet, ["-q", "--retries", "1", "--node", "node3*2",
                                 "--job", command_b1, "--job", command_b2])
    try:
        id_a, id_b = run_id_of(run_a), run_id_of(run_b)
        assert wait_for(lambda: len(pids_of(a)) == 4 and pids_of(b1) and pids_of(b2), 30)
        r = run_classh(["--kill", id_a, "--node-file", str(nodes)],
                       env={"CLASSH_SSH": fleet.ssh_command})
        assert (r.rc, r.out) == (0, "node1: 4 processes\n"), r
        assert leftovers(a) == []
        assert len(pids_of(b1)) == 1 and len(pids_of(b2)) == 1
        r = run_classh(["--kill", id_b + ".2", "node3"], env={"CLASSH_SSH": fleet.ssh_command})
        assert (r.rc, r.out) == (0, "node3: 1 process\n"), r
        assert leftovers(b2) == []
        assert len(pids_of(b1)) == 1
        assert run_a.wait(30) != 0  # its jobs were killed
    finally:
        stop(run_a)
        stop(run_b)


def test_jobs_of_a_live_run_killed_by_tag_are_not_run_again_nor_their_node_dropped(fleet,
                                                                                   sweep):
    """ssh says nothing and exits 255 when the job's process dies of a signal: the running
    classh must not take that for a dead node and start the job again elsewhere."""
    a, command_a = with_marker("sleep {m}")
    sweep.append(a)
    run = start_classh(fleet, ["--retries", "3", "--node", "node1*2", "--node", "node2*2",
                               "--node", "node3", "--job", command_a, "--job", command_a,
                               "--job", "sleep 4; echo late"])
    try:
        run_id = run_id_of(run)
        assert wait_for(lambda: len(pids_of(a)) == 2, 30)
        r = run_classh(["--kill", "%s.1" % run_id, "node1", "node2", "node3"],
                       env={"CLASSH_SSH": fleet.ssh_command})
        assert r.rc == 0, r
        r = run_classh(["--kill", "%s.2" % run_id, "node1", "node2", "node3"],
                       env={"CLASSH_SSH": fleet.ssh_command})
        assert r.rc == 0, r
        out, err = run.communicate(timeout=60)
    finally:
        stop(run)
    assert leftovers(a) == []
    err = err.decode()
    assert "dropped" not in err and "retried" not in err, err
    assert "killed on the node" in err and out == b"late\n"
    assert run.returncode == 3, err  # killed jobs


def test_twenty_hosts_one_run_killed_the_other_untouched(fleet, sweep):
    # How fast (the 3 s bar) is measured by make bench's kill-run scenario; this test
    # asserts what happens, with room for a loaded machine.
    a, command_a = with_marker("sleep {m}")
    b, command_b = with_marker("sleep {m}")
    sweep.extend([a, b])
    runs = [start_classh(fleet, ["-q", "--retries", "1", "--node", "node[1-20]"]
                         + ["--job", command] * 20) for command in (command_a, command_b)]
    try:
        id_a = run_id_of(runs[0])
        assert wait_for(lambda: len(pids_of(a)) == 20 and len(pids_of(b)) == 20, 90)
        before_b = sorted(pids_of(b))
        started = time.monotonic()
        kill = start_classh(fleet, ["--kill", id_a, "node[1-20]"])
        gone = wait_for(lambda: not pids_of(a), 15)
        elapsed = time.monotonic() - started
        out, err = kill.communicate(timeout=60)
        print("classh --kill over 20 hosts: the run's 20 jobs gone in %.2f s" % elapsed)
        assert kill.returncode == 0, err
        assert gone, "run A's jobs still running %.1f s after classh --kill" % elapsed
        assert sorted(pids_of(b)) == before_b  # the other run's jobs all alive, the same ones
    finally:
        for proc in runs:
            stop(proc)


# -- run id files --------------------------------------------------------------
def test_run_id_is_in_the_results_dir(tmp_path):
    results = tmp_path / "r"
    r = run_classh(["-q", "-o", str(results), "--node", "n1", "--job", "echo $CLASSH_TAG"],
                   env={"CLASSH_SSH": STANDIN})
    assert r.rc == 0, r
    run_id = r.err.splitlines()[0].split()[-1]
    assert (results / "run-id").read_text() == run_id + "\n"
    assert (results / "job-1.out").read_text() == run_id + ".1\n"


# -- the API ---------------------------------------------------------------------
def test_api_kill_of_one_job_requeues_nothing(fleet, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    run, source, lines = start_run(["node1*2"], [command, "sleep 0.5"], options_for(fleet),
                                   JobOptions(retries=3))
    step_until(run, lambda: pids_of(mark))
    run.kill("job-1")
    summary = finish(run)
    assert leftovers(mark) == []
    assert source.jobs[1].attempts == 1
    assert source.counts["retried"] == 0 and source.counts["dropped"] == 0
    assert summary.tally.counts["killed"] == 1 and summary.tally.counts["ok"] == 1
    assert lines == [] and summary.exit_status == 3


def test_kill_a_run_over_its_machines_file_each_node_through_its_connect_cmd(fleet, sweep,
                                                                          tmp_path):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    machines = tmp_path / "machines.json"
    # The run-wide ssh is broken: only each machine's connect_cmd reaches the fleet.
    machines.write_text(json.dumps([{"hostname": "default", "connect_cmd": fleet.ssh_command},
                                    {"hostname": "node1", "slots": 2}, {"hostname": "node2"}]))
    broken = {"CLASSH_SSH": "ssh -F /nonexistent/ssh_config"}
    run = start_classh(fleet, ["-q", "--retries", "1", "--machines", str(machines)]
                       + ["--job", command] * 3, env=broken)
    try:
        run_id = run_id_of(run)
        assert wait_for(lambda: len(pids_of(mark)) == 3, 30)
        r = run_classh(["--kill", run_id, "--machines", str(machines)], env=broken)
        assert r.rc == 0, r
        # One machine behind every name: each node's kill may find all three.
        assert [line.split(":")[0] for line in sorted(r.out.splitlines())] == ["node1", "node2"]
        assert "processes" in r.out and leftovers(mark) == []
        assert run.wait(30) != 0
    finally:
        stop(run)
