"""Controlling a job run while it goes: SIGUSR1 pauses, SIGHUP drains, a --node-file that
changes is re-read; the plan shown before a run.

End to end against the real loopback sshd (``fleet``): the target is this machine, so the
jobs write the time they start into a file, and the test reads it.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import CLASSH, base_env
from leftovers import finish, leftovers, wait_for, with_marker

from classh.jobviews import JobStatusLine
from classh.options import Options
from classh.run import Run
from classh.supervisor import ListSource, Task


def default_signals():
    """In the child: SIGHUP and SIGUSR1 as on a terminal (the test runner may ignore SIGHUP,
    and an ignored signal stays ignored)."""
    for signum in (signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)


def start(fleet, args, stderr=subprocess.PIPE):
    """classh in the background against the fleet (stdout piped; stderr piped or a file)."""
    return subprocess.Popen([sys.executable, CLASSH] + list(args),
                            env=base_env({"CLASSH_SSH": fleet.ssh_command}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=stderr, preexec_fn=default_signals)


def stamps(path):
    """The start times the jobs wrote (one float a line)."""
    try:
        with open(path) as fh:
            return [float(line.split()[0]) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def stamping(path, rest, tag=""):
    """A job command that appends its start time (and ``tag``) to ``path``, then runs ``rest``."""
    return "echo $(date +%%s.%%N) %s >> %s; %s" % (tag, path, rest)


def replace_file(path, text):
    """Write ``path`` whole at once (a reader never sees it half written)."""
    with open(path + ".new", "w") as fh:
        fh.write(text)
    os.replace(path + ".new", path)


# -- the run driver's seam: a source may claim a signal -------------------------------

class Claiming(ListSource):
    def __init__(self, tasks):
        super().__init__(tasks)
        self.got = []

    def signal_handlers(self):
        return {signal.SIGHUP: self.got.append}


def hup_task():
    return Task("a", ["/bin/sh", "-c", "kill -HUP $PPID; sleep 0.3; echo done"])


def run_with_sighup_handler(handler):
    """Run a task sending SIGHUP to this process, the program's handler being ``handler``;
    (source, summary, the handler in place during the run's end)."""
    source = Claiming([hup_task()])
    saved = signal.signal(signal.SIGHUP, handler)
    try:
        summary = Run(source, Options()).run()
        after = signal.getsignal(signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, saved)
    return source, summary, after


def test_a_claimed_signal_goes_to_the_source_and_the_run_goes_on():
    program = []
    handler = lambda signum, frame: program.append(signum)  # noqa: E731
    source, summary, after = run_with_sighup_handler(handler)
    assert source.got == [signal.SIGHUP] and program == []
    assert summary.interrupted_by is None and summary.tally.total == 1
    assert after is handler  # the program's own handler is back


def test_an_ignored_signal_stays_ignored_even_when_claimed():
    source, summary, after = run_with_sighup_handler(signal.SIG_IGN)
    assert source.got == [] and summary.interrupted_by is None and summary.tally.total == 1
    assert after is signal.SIG_IGN


# -- SIGUSR1: pause and resume -----------------------------------------------------------

def test_sigusr1_pauses_dispatch_and_a_second_resumes(fleet, remote_dir):
    path = os.path.join(remote_dir, "starts")
    proc = start(fleet, ["-q", "--node", "node1*2"] + ["--job", stamping(path, "sleep 1")] * 6)
    assert wait_for(lambda: len(stamps(path)) >= 2, 30), "no job started"
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.7)  # a job handed out just before the signal has written its stamp
    paused_at, before = time.time(), len(stamps(path))
    time.sleep(3)  # unpaused, the two slots would start about 6 jobs in that time
    resumed_at, during = time.time(), stamps(path)
    proc.send_signal(signal.SIGUSR1)
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert before < 6 and len(during) == before
    assert not [t for t in stamps(path) if paused_at < t < resumed_at]
    assert len(stamps(path)) == 6  # every job ran, after the resume
    assert "classh: paused (SIGUSR1 again to resume)\n" in err and "classh: resumed\n" in err


def test_status_line_says_paused():
    class Source:
        jobs = {1: None}
        counts = {}
        paused = True

        def node_states(self):
            return [("node1", "ready", 1, 0)]

        def pending(self):
            return 1

    line = JobStatusLine(None, Source(), enabled=False)
    assert line.text().startswith("PAUSED (SIGUSR1 to resume): 0 of 1 jobs complete")
    Source.paused = False
    assert line.text().startswith("0 of 1 jobs complete")


# -- SIGHUP: drain ---------------------------------------------------------------------------

def test_sighup_drains_running_jobs_finish_the_rest_is_undone_exit_4(fleet, remote_dir):
    path = os.path.join(remote_dir, "starts")
    job = stamping(path, "echo start; sleep 2; echo end")
    proc = start(fleet, ["--format", "json", "--node", "node1*2"] + ["--job", job] * 6)
    assert wait_for(lambda: len(stamps(path)) >= 2, 30), "no job started"
    proc.send_signal(signal.SIGHUP)
    rc, out, err = finish(proc)
    assert rc == 4, err
    records = {d["job"]: d for d in map(json.loads, out.splitlines())}
    assert sorted(records) == [1, 2]
    assert all((d["exitcode"], d["stdout"]) == (0, "start\nend\n") for d in records.values())
    assert len(stamps(path)) == 2  # no job started after the signal
    for number in range(3, 7):
        assert "classh: undone: job-%d: %s\n" % (number, job) in err
    assert "classh: draining: 2 running jobs finish, 4 not started" in err
    assert "4 undone" in err.splitlines()[-1]


@pytest.mark.parametrize("second,rc", [(signal.SIGHUP, 129), (signal.SIGINT, 130),
                                       (signal.SIGTERM, 143)])
def test_a_signal_during_the_drain_ends_the_run_at_once(fleet, remote_dir, sweep, tmp_path,
                                                        second, rc):
    path = os.path.join(remote_dir, "starts")
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    log = str(tmp_path / "stderr")
    with open(log, "wb") as err_file:
        proc = start(fleet, ["-q", "--node", "node1"] + ["--job", stamping(path, command)] * 3,
                     stderr=err_file)
    assert wait_for(lambda: len(stamps(path)) >= 1, 30), "no job started"
    proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "classh: draining: 1 running job finish" in open(log).read(), 10)
    assert proc.poll() is None  # draining: the running job goes on
    proc.send_signal(second)
    status, _, _ = finish(proc, timeout=20)
    assert status == rc, open(log).read()
    assert leftovers(mark) == []
    assert len(stamps(path)) == 1


# -- a node file that changes -------------------------------------------------------------

def jobs_by_node(out):
    found = {}
    for record in map(json.loads, out.splitlines()):
        found.setdefault(record["node"], []).append(record["job"])
    return {node: sorted(jobs) for node, jobs in found.items()}


def test_nodes_added_to_the_node_file_get_jobs_and_removed_ones_none(fleet, remote_dir, tmp_path):
    nodes = str(tmp_path / "nodes")
    replace_file(nodes, "node1\n")
    path = os.path.join(remote_dir, "starts")
    proc = start(fleet, ["--format", "json", "--node-file", nodes]
                 + ["--job", stamping(path, "sleep 3")] * 4)
    assert wait_for(lambda: len(stamps(path)) >= 1, 30), "no job started"
    replace_file(nodes, "# node1 leaves, node2 comes\nnode2*2\n")
    rc, out, err = finish(proc)
    assert rc == 0, err
    # node1 ran the job it had when the file changed, and none after it ended
    assert jobs_by_node(out) == {"node1": [1], "node2": [2, 3, 4]}
    assert ("classh: node file re-read: added node2 (2 slots); removed node1 "
            "(no new job there; running ones finish)\n") in err


def test_a_node_file_turned_bad_keeps_the_pool_with_one_line(fleet, remote_dir, tmp_path):
    nodes = str(tmp_path / "nodes")
    replace_file(nodes, "node1*2\n")
    path = os.path.join(remote_dir, "starts")
    proc = start(fleet, ["--format", "json", "--node-file", nodes]
                 + ["--job", stamping(path, "sleep 2")] * 4)
    assert wait_for(lambda: len(stamps(path)) >= 1, 30), "no job started"
    replace_file(nodes, "node[1-\n")
    rc, out, err = finish(proc)
    assert rc == 0, err
    assert jobs_by_node(out) == {"node1": [1, 2, 3, 4]}
    bad = [line for line in err.splitlines() if line.startswith("classh: node file")]
    assert len(bad) == 1 and bad[0].startswith("classh: node file not re-read: %s:1: " % nodes)
    assert bad[0].endswith("(the nodes stay as they were)")


# -- the plan --------------------------------------------------------------------------------

def plan(err):
    """The plan's lines (after the run id line)."""
    lines = err.splitlines()
    assert lines[0].startswith("classh: run ") and lines[0][len("classh: run "):].isalnum()
    return lines[1:3]


def test_plan_names_jobs_nodes_and_slots_even_with_q(classh):
    r = classh("-q", "--node", "node1*2", "--node", "node2", "--job", "true", "--job", "true")
    assert r.rc == 0, r
    assert plan(r.err) == ["classh: jobs: 2 to run", "classh: nodes: 2 with 3 slots asked for"]


def test_plan_counts_jobs_done_before_and_followed_node_files(classh, tmp_path):
    results = str(tmp_path / "r")
    nodes = str(tmp_path / "nodes")
    replace_file(nodes, "node1\nnode1\n")
    r = classh("-q", "-o", results, "--node-file", nodes, "--job", "echo a", "--job", "echo b")
    assert r.rc == 0, r
    r = classh("-q", "-o", results, "--resume", "--node-file", nodes, "--job", "echo a",
               "--job", "echo b", "--job", "echo c")
    assert r.rc == 0, r
    assert plan(r.err) == ["classh: jobs: 1 to run; 2 done before in %s (skipped)" % results,
                           "classh: nodes: 1 with 2 slots asked for; the node files are followed"]


def test_plan_says_more_jobs_may_come_from_a_pipe(fleet):
    proc = subprocess.run([sys.executable, CLASSH, "-q", "--node", "node1", "--job", "true",
                           "--job-file", "-"], input=b"true\n", capture_output=True,
                          env=base_env({"CLASSH_SSH": fleet.ssh_command}), timeout=60)
    assert proc.returncode == 0, proc
    assert plan(proc.stderr.decode()) == ["classh: jobs: 1 to run + streamed",
                                          "classh: nodes: 1 with 1 slot asked for"]
