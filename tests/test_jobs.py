"""Job mode's scheduler (classh.jobs, JobSource) against a real loopback sshd.

The command line is tested elsewhere; here the API and the source itself:
node slots, probes, one ControlMaster per node, retries, dropped nodes,
undone jobs, streamed job files, kills with no remote leftovers.
"""
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from conftest import ROOT, base_env
from fleet import Fleet
from leftovers import leftovers, pids_of, with_marker

import classh
from classh.jobs import JobOptions, JobSource, parse_nodes, read_jobs
from classh.results import ResultsError
from classh.resume import JobsDone
from classh.run import Run
from classh.targets import Target, TargetError


# -- helpers ---------------------------------------------------------------
def options_for(fleet, **changes):
    """Options reaching ``fleet``; a short connect timeout for the fault hosts."""
    values = {"ssh": fleet.ssh_command, "connect_timeout": 3}
    values.update(changes)
    return classh.Options(**values)


def start_run(nodes, commands, options, job_options=None, **kwargs):
    """(Run, JobSource, notify lines) started, for a test to step through."""
    lines = []
    source = JobSource(parse_nodes(nodes), commands, options, job_options or JobOptions(),
                       notify=lines.append, **kwargs)
    run = Run(source, options, [], fanout=source.fanout(), handle_signals=False)
    run.start()
    return run, source, lines


def step_until(run, predicate, timeout=30):
    """Step ``run`` until ``predicate()``; fail the test if it never holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        assert not run.step(0.05), "the run ended first"


def finish(run, timeout=60):
    """Step ``run`` to its end; its summary."""
    deadline = time.monotonic() + timeout
    while not run.step(0.2):
        assert time.monotonic() < deadline, "the run did not end"
    return run.summary


def processes_mentioning(text):
    """Pids of live processes whose command line holds ``text`` (ssh masters show their ControlPath)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as fh:
                    if text.encode() in fh.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


def masters_in(directory):
    """Pids of the ssh masters whose socket is in ``directory`` (ssh titles them ``ssh: PATH [mux]``)."""
    found = []
    for pid in processes_mentioning(directory):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                if b"[mux]" in fh.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def connections(records):
    """{node: set of ssh client ports} seen by the jobs (each printed $SSH_CONNECTION)."""
    seen = collections.defaultdict(set)
    for record in records.values():
        assert record.ok, record
        seen[record.node].add(record.stdout.split()[1])
    return seen


@pytest.fixture
def extra_fleet():
    """Starts more fleets on their own ports (``extra_fleet(**kwargs)``); all stopped at the end."""
    started = []

    def start(**kwargs):
        workdir = tempfile.mkdtemp(prefix="classh-jobfleet-")
        fleet = Fleet(workdir, **kwargs).start()
        started.append((fleet, workdir))
        return fleet

    yield start
    for fleet, workdir in started:
        fleet.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def combined_config(fleet, other, path):
    """An ssh config: ``dying`` is ``other``'s sshd, ``gone1`` a closed port, the rest ``fleet``."""
    with open(fleet.ssh_config) as fh:
        rest = fh.read()
    head = ("Host dying\n    HostName 127.0.0.1\n    Port %d\n    IdentityFile %s\n"
            "    UserKnownHostsFile %s\n"
            "Host gone1\n    HostName 127.0.0.1\n    Port %d\n"
            % (other.port, other.client_key, os.path.join(other.workdir, "known_hosts"),
               fleet.refused_port))
    with open(path, "w") as fh:
        fh.write(head + rest)
    return "ssh -F %s" % path


# -- input -----------------------------------------------------------------
def test_slots_come_from_repeats_and_star_counts(tmp_path):
    node_file = tmp_path / "nodes"
    node_file.write_text("# the pool\nn[1-2]*3   # three each\n\nb\nb\nuser@c:2222*2\n")
    specs = parse_nodes(["a*2,b", "a"], [str(node_file)])
    assert [(s.target.label, s.slots) for s in specs] == [
        ("a", 3), ("b", 3), ("n1", 3), ("n2", 3), ("user@c:2222", 2)]
    assert specs[-1].target == Target("c", user="user", port=2222)


@pytest.mark.parametrize("text,named", [
    ("host*0", "host*0"), ("host*x", "host*x"), ("host*-1", "host*-1"),
    ("host*99999999999999999999", "host*99999999999999999999"), ("*3", "*3"),
    ("bad;name", "bad;name"), ("n[1-", "n[1-"), ("a**2", "a**2"),
])
def test_bad_node_input_is_an_error_naming_it(text, named):
    with pytest.raises(TargetError) as info:
        parse_nodes([text])
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_no_nodes_and_bad_node_files_are_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n")
    with pytest.raises(TargetError, match="no nodes"):
        parse_nodes([], [str(empty)])
    bad = tmp_path / "bad"
    bad.write_text("ok1\nx*0\n")
    with pytest.raises(TargetError, match=r"bad:2: .*x\*0"):
        parse_nodes([], [str(bad)])
    with pytest.raises(TargetError, match="missing"):
        parse_nodes([], [str(tmp_path / "missing")])


def test_the_api_refuses_bad_nodes_before_anything_runs(fleet, remote_dir):
    with pytest.raises(TargetError, match=r"node1\*0"):
        classh.jobs(["node2", "node1*0"], ["touch %s/ran" % remote_dir], options_for(fleet))
    assert os.listdir(remote_dir) == []


def test_job_files_skip_blanks_and_comments_and_pipes_are_streamed(tmp_path):
    job_file = tmp_path / "jobs"
    job_file.write_text("echo one\n\n  # a comment\necho two # not a comment\n")
    read, write = os.pipe()
    try:
        commands, streams = read_jobs(["echo zero"], [str(job_file), "/dev/fd/%d" % read])
        assert commands == ["echo zero", "echo one", "echo two # not a comment"]
        assert list(streams.values()) == ["/dev/fd/%d" % read]
        for fd in streams:
            os.close(fd)
    finally:
        os.close(read)
        os.close(write)


# -- scheduling ---------------------------------------------------------------
def test_every_job_runs_once_over_the_slots_through_one_connection_per_node(fleet):
    lines = []
    options = {"ssh": fleet.ssh_command, "notify": lines.append}
    records = classh.jobs(["node1*4", "node2*4"], ["echo $SSH_CONNECTION"] * 40, options)
    assert sorted(records) == list(range(1, 41))
    assert all(r.attempts == 1 and r.command == "echo $SSH_CONNECTION" and r.host == "job-%d" % i
               for i, r in records.items())
    seen = connections(records)
    assert set(seen) == {"node1", "node2"}
    assert all(len(ports) == 1 for ports in seen.values()), seen  # one master each
    assert lines == []


def test_without_reuse_each_job_logs_in(fleet):
    records = classh.jobs(["node1*2"], ["echo $SSH_CONNECTION"] * 4,
                          {"ssh": fleet.ssh_command, "reuse": False})
    assert len(connections(records)["node1"]) == 4


def test_dead_and_silent_nodes_are_dropped_and_named(fleet):
    lines = []
    # The first job outlasts the silent node's connect timeout (once every job has ended,
    # probes still running are ended unjudged: see test_jobs_small).
    records = classh.jobs(["refused", "silent", "node1*2"],
                          ["sleep 4; echo 0"] + ["echo %d" % i for i in range(1, 6)],
                          {"ssh": fleet.ssh_command, "connect_timeout": 2, "notify": lines.append})
    assert all(r.ok and r.node == "node1" for r in records.values()), records
    assert [r.stdout for r in records.values()] == [b"%d\n" % i for i in range(6)]
    assert len(lines) == 2
    assert any(line.startswith("node refused dropped") and "refused" in line.split(":", 1)[1]
               for line in lines), lines
    assert any(line.startswith("node silent dropped") and "banner" in line for line in lines), lines


def test_retries_are_attempts_and_a_job_failing_once_succeeds_later(fleet, remote_dir):
    counter = os.path.join(remote_dir, "count")
    flaky = "n=$(cat %s 2>/dev/null || echo 0); echo $((n+1)) >%s; test $n -ge 1" % (counter, counter)
    options = {"ssh": fleet.ssh_command, "retries": 3}
    records = classh.jobs(["node1", "node2"], ["exit 3", flaky], options)
    assert (records[1].exitcode, records[1].attempts) == (3, 3)
    assert (records[2].ok, records[2].attempts) == (True, 2)


def test_a_failed_job_drops_its_node_with_fail_node_on_error(fleet):
    lines = []
    records = classh.jobs(["node1", "node2"], ["true", "exit 4"],
                          {"ssh": fleet.ssh_command, "fail_node_on_error": True, "retries": 2,
                           "notify": lines.append})
    assert records[1].ok
    assert records[2].exitcode == 4 and records[2].attempts == 2
    assert len(lines) == 2 and all("dropped: job-2: exit status 4" in line for line in lines), lines


def test_a_remote_failure_does_not_drop_the_node_by_default(fleet):
    lines = []
    records = classh.jobs(["node1"], ["exit 1", "echo after"],
                          {"ssh": fleet.ssh_command, "retries": 2, "notify": lines.append})
    assert records[1].exitcode == 1 and records[2].ok and lines == []


def test_max_node_uses_retires_nodes_and_the_rest_is_undone(fleet):
    run, source, lines = start_run(["node1", "node2"], ["true"] * 10, options_for(fleet),
                                   JobOptions(max_node_uses=3))
    summary = finish(run)
    assert summary.tally.counts["ok"] == 6
    assert summary.undone == ["job-%d: true" % i for i in range(7, 11)]
    assert summary.exit_status == 4
    assert collections.Counter(state for _, state, _, _ in source.node_states()) == {"retired": 2}
    assert lines == ["no node left: 4 jobs not run"]


def test_max_nodes_and_max_running_cap_the_pool(fleet):
    records = classh.jobs(["node[1-4]*2"], ["echo $SSH_CONNECTION; sleep 0.3"] * 8,
                          {"ssh": fleet.ssh_command, "max_nodes": 2, "max_running": 3})
    assert len(set(r.node for r in records.values())) == 2
    spans = sorted((r.started, r.stopped) for r in records.values())
    most = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert most <= 3


def test_on_each_node_runs_once_per_distinct_node(fleet):
    records = classh.jobs(["node1", "node1", "node2*3"], [],
                          {"ssh": fleet.ssh_command, "on_each_node": "echo $CLASSH_TAG"})
    assert sorted(r.node for r in records.values()) == ["node1", "node2"]
    assert all(r.ok and r.stdout.decode().strip().endswith(".%d" % i) for i, r in records.items())


def test_on_each_node_job_of_a_dead_node_is_undone(fleet):
    run, source, lines = start_run(["refused", "node1"], [], options_for(fleet),
                                   on_each_node="true")
    summary = finish(run)
    assert summary.undone == ["job-1: true"] and summary.exit_status == 4


def test_fifteen_slots_on_one_node_above_max_sessions_all_run(extra_fleet):
    small = extra_fleet(hosts=1, extra_sshd_config="MaxSessions 10")
    records = classh.jobs(["node1*15"], ["echo $SSH_CONNECTION; sleep 2"] * 15,
                          {"ssh": small.ssh_command})
    assert len(records) == 15 and all(r.stderr == b"" for r in records.values())
    assert len(connections(records)["node1"]) == 2  # two masters, no login of its own
    assert max(r.started for r in records.values()) < min(r.stopped for r in records.values())


def test_jobs_from_a_pipe_start_before_the_writer_ends(fleet):
    read, write = os.pipe()
    try:
        commands, streams = read_jobs([], ["/dev/fd/%d" % read])
        run, source, _ = start_run(["node1*2"], commands, options_for(fleet), streams=streams)
        os.write(write, b"echo first\n# comment\n\necho sec")
        step_until(run, lambda: run._tally.tally.counts.get("ok") == 1)
        assert len(source.jobs) == 1 and source.pending() is None  # the writer is still there
        os.write(write, b"ond\nbad\0line\necho third\n")
        os.close(write)
        write = None
        summary = finish(run)
    finally:
        os.close(read)
        if write is not None:
            os.close(write)
    assert summary.tally.counts["ok"] == 3
    assert summary.exit_status == 2 and len(source.errors) == 1  # the bad line, named
    assert source.errors[0].startswith("/dev/fd/%d:4: " % read) and "NUL" in source.errors[0]
    assert [j.command for j in source.jobs.values()] == ["echo first", "echo second", "echo third"]


# -- nodes that die, kills, masters --------------------------------------------
def test_a_pool_with_dead_nodes_and_one_dying_mid_run_does_every_job_once(
        fleet, extra_fleet, remote_dir, tmp_path):
    dying = extra_fleet(hosts=1)
    ssh = combined_config(fleet, dying, str(tmp_path / "ssh_config"))
    done = os.path.join(remote_dir, "done")
    commands = ["sleep 0.5; echo %d >>%s" % (i, done) for i in range(1, 61)]
    nodes = ["node[1-6]*2", "refused", "silent", "gone1", "dying*4"]
    run, source, lines = start_run(nodes, commands, options_for(fleet, ssh=ssh, connect_timeout=2))
    step_until(run, lambda: sum(1 for label, _, _ in source.active() if label == "dying") == 4)
    dying.stop()
    summary = finish(run)
    assert summary.exit_status == 0, (summary, lines)
    with open(done) as fh:
        counts = collections.Counter(fh.read().split())
    assert counts == {str(i): 1 for i in range(1, 61)}  # every job, none twice
    for name in ("refused", "silent", "gone1", "dying"):
        assert sum(1 for line in lines if line.startswith("node %s dropped" % name)) == 1, lines
    assert len(lines) == 4
    assert source.counts["dropped"] == 4
    # the 4 jobs running on "dying" went back in line, unless one ended just before its sshd
    assert 1 <= source.counts["retried"] <= 4, source.counts


def test_no_master_is_left_after_the_run(fleet):
    run, source, _ = start_run(["node1*2", "node2*12"], ["sleep 1"] * 20, options_for(fleet))
    directory = source._control_dir.path
    # every probe's master comes up, the first jobs may start before the last one does
    step_until(run, lambda: source.active() and len(masters_in(directory)) >= 3)
    masters = masters_in(directory)
    assert len(masters) == 3  # node1: one, node2: two (12 slots)
    assert finish(run).exit_status == 0
    assert [pid for pid in masters if alive(pid)] == []
    assert not os.path.exists(directory)


def test_run_kill_ends_the_jobs_on_the_target_through_the_masters(fleet, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    run, source, _ = start_run(["node1*3", "node2*3"], [command] * 8, options_for(fleet))
    directory = source._control_dir.path
    step_until(run, lambda: len(pids_of(mark)) == 6)
    masters = masters_in(directory)
    run.kill()
    summary = finish(run)
    assert summary.tally.counts["killed"] == 6 and summary.undone == []
    assert leftovers(mark) == []
    assert masters and [pid for pid in masters if alive(pid)] == []


SCRIPT = """
import sys
sys.path.insert(0, %r)
import classh
try:
    classh.jobs(["node1*2", "node2*2"], [%r] * 6, {"ssh": %r})
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_sigint_to_a_program_running_jobs_leaves_nothing_on_the_target(fleet, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    private = tempfile.mkdtemp(prefix="classh-jobtmp-")
    env = base_env({"TMPDIR": private})
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT % (os.path.join(ROOT, "lib"), command,
                                                             fleet.ssh_command)], env=env)
    try:
        deadline = time.monotonic() + 30
        while len(pids_of(mark)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids_of(mark)) == 4
        assert len(masters_in(private)) == 2  # the masters, under its private temp dir
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        left = processes_mentioning(private)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in processes_mentioning(private):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(private, ignore_errors=True)
    assert leftovers(mark) == []
    assert left == []  # no master, no client


def test_skip_drops_jobs_done_before_by_number_and_text_and_they_never_run(fleet, remote_dir,
                                                                           tmp_path):
    commands = ["touch %s/%d" % (remote_dir, i) for i in range(4)]
    done = [(2, commands[1]), (4, commands[3]), (6, "not a job")]
    (tmp_path / "summary.jsonl").write_text("".join(
        json.dumps(dict(host="job-%d" % n, job=n, command=c, status="ok")) + "\n"
        for n, c in done))
    source = JobSource(parse_nodes(["node1"]), commands * 2, options_for(fleet))
    with pytest.raises(ResultsError, match="job 6 .* was 'not a job'"):
        source.skip(JobsDone(str(tmp_path)))
    source = JobSource(parse_nodes(["node1"]), commands + [commands[0]], options_for(fleet))
    assert source.skip(JobsDone(str(tmp_path))) == 2
    assert [job.id for job in source.jobs.values()] == [1, 3, 5]
    summary = Run(source, source.options, [], fanout=source.fanout(), handle_signals=False).run()
    assert summary.exit_status == 0 and summary.tally.counts["ok"] == 3
    assert sorted(os.listdir(remote_dir)) == ["0", "2"]


def test_the_api_keeps_sighup_ending_the_call_no_drain(fleet):
    script = textwrap.dedent("""
        import signal, sys
        sys.path.insert(0, %r)
        import classh
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        classh.jobs("node1*2", ["sleep 31.7171"] * 4, {"ssh": %r})
        print("the call went on")
    """) % (os.path.join(ROOT, "lib"), fleet.ssh_command)
    proc = subprocess.Popen([sys.executable, "-c", script], env=base_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(pids_of("31.7171")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGHUP, err  # ended, as classh.run would; no drain
    assert "went on" not in out
    assert leftovers("31.7171") == []


def test_the_api_runs_blocks_with_input_task_and_blocksize(fleet, tmp_path):
    data = tmp_path / "in"
    data.write_text("".join("%d\n" % i for i in range(1, 26)))
    records = classh.jobs("node1*2", opts={"ssh": fleet.ssh_command, "input": str(data),
                                           "task": "wc -l", "blocksize": 10})
    assert sorted(records) == [1, 2, 3]
    assert [records[i].stdout for i in (1, 2, 3)] == [b"10\n", b"10\n", b"5\n"]
    assert all(r.block.startswith("block-%d:" % i) for i, r in records.items())
    with pytest.raises(TargetError, match="--task"):
        classh.jobs("node1", ["true"], {"ssh": fleet.ssh_command, "input": str(data),
                                        "task": "wc -l"})


def test_the_api_takes_a_machines_file_and_node_set_up(fleet, tmp_path, remote_dir):
    machines = tmp_path / "machines.json"
    machines.write_text(json.dumps([{"hostname": "default", "connect_cmd": fleet.ssh_command},
                                    {"hostname": "node1", "wd": remote_dir + "/w1"},
                                    {"hostname": "node2", "wd": remote_dir + "/w2",
                                     "download_timeout": 3}]))
    script = tmp_path / "init.sh"
    script.write_text("echo set > mark\n")
    said = []
    records = classh.jobs(None, ["cat mark; basename $PWD"] * 4, {
        "ssh": "ssh -F /nonexistent/ssh_config", "machines": str(machines),
        "init_script": str(script), "notify": said.append})
    assert sorted({r.stdout for r in records.values()}) in (
        [b"set\nw1\n", b"set\nw2\n"], [b"set\nw1\n"], [b"set\nw2\n"])
    assert all(r.ok for r in records.values())
    assert os.path.exists(remote_dir + "/w1/mark") and os.path.exists(remote_dir + "/w2/mark")
    assert any("download_timeout" in line for line in said), said
