"""Stall detection: a job running far longer than the moving average of completed ones is
killed (on the target too) and runs again on another node (job lists, with --stall-factor);
a block gets a backup copy on another node instead (see test_jobs_backup.py).

Blocks and jobs against the real loopback sshd; the drop of a node that keeps stalling with
the stand-in ssh, where each node's commands can tell which node they run on.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import classh
from conftest import CLASSH, STANDIN, base_env
from leftovers import leftovers, with_marker

from classh.jobs import JobOptions
from classh.options import OptionError
from classh.stalls import StallWatch


def hang_once(remote_dir, command, key="3", pause="0.2"):
    """A task: block ``key`` hangs (``command``) on its first attempt only; every block
    prints itself after a short sleep (``pause`` s)."""
    first = os.path.join(remote_dir, "first")
    return ('read x; if test "$x" = %s && mkdir %s 2>/dev/null; then %s; fi; sleep %s; '
            'echo "$x"' % (key, first, command, pause))


def blocks_file(tmp_path, count):
    path = tmp_path / "in"
    path.write_text("".join("%d\n" % i for i in range(1, count + 1)))
    return str(path)


def test_a_block_hanging_on_its_first_attempt_gets_a_backup_copy_elsewhere(classh, tmp_path,
                                                                          remote_dir, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    results = str(tmp_path / "r")
    started = time.monotonic()
    r = classh("--node", "node[1-2]*2", "--input", blocks_file(tmp_path, 16), "-k", "--task",
               hang_once(remote_dir, command, pause="0.8"), "--stall-factor", "3",
               "--stall-min", "2", "-o", results, "-t", "60")
    took = time.monotonic() - started
    assert r.rc == 0, r
    assert r.out.split() == [str(i) for i in range(1, 17)]
    assert "job-3 stalled on node" in r.err and "a backup copy starts on node" in r.err
    stalled_on = r.err.split("job-3 stalled on ")[1].split()[0]
    with open(os.path.join(results, "summary.jsonl")) as fh:
        record = [json.loads(line) for line in fh if '"job": 3,' in line][0]
    assert record["attempts"] == 2 and record["node"] != stalled_on, r.err.splitlines()
    assert took < 20, took  # not the hard timeout
    assert leftovers(mark) == []


def test_without_the_stall_watch_the_same_run_waits_for_the_hard_timeout(classh, tmp_path,
                                                                         remote_dir, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    r = classh("--node", "node[1-2]*2", "--input", blocks_file(tmp_path, 8), "--task",
               hang_once(remote_dir, command), "--stall-factor", "0", "-t", "4", "--retries", "1")
    assert r.rc == 3, r  # block 3 timed out: nothing caught it before
    assert "stalled" not in r.err


def test_the_stall_min_holds_back_the_kill(classh, tmp_path, remote_dir, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    started = time.monotonic()
    r = classh("--node", "node[1-2]*2", "--input", blocks_file(tmp_path, 16), "--task",
               hang_once(remote_dir, command, pause="1"), "--stall-factor", "2", "--stall-min", "3")
    took = time.monotonic() - started
    assert r.rc == 0, r
    assert took >= 3.0
    assert "job-3 stalled" in r.err


def test_jobs_stall_too_and_a_node_that_keeps_stalling_is_dropped(sweep):
    """Stand-in ssh: the node named 'slow' hangs every job it gets."""
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    lines = []
    job = 'test "$STANDIN_HOST" = slow && %s; sleep 0.1; echo "$STANDIN_HOST"' % command
    records = classh.jobs(["fast", "slow"], [job] * 60, {
        "ssh": STANDIN, "reuse": False, "stall_factor": 3, "stall_min": 0.6, "retries": 5,
        "notify": lines.append})
    assert all(r.exitcode == 0 and r.stdout == b"fast\n" for r in records.values()), records
    assert "node slow dropped: 3 jobs stalled there" in lines
    assert sum("stalled on slow" in line for line in lines) == 3
    assert leftovers(mark) == []


def test_the_average_moves_with_weight_075_on_the_newest():
    watch = StallWatch(4, 0)
    for duration in (1.0, 1.0):
        watch.learn(duration)
    assert watch.limit() is None  # not before the third completion
    watch.learn(3.0)
    assert watch.limit() == pytest.approx(4 * (0.75 * 3.0 + 0.25 * 1.0))
    watch.learn(1.0)
    assert watch.limit() == pytest.approx(4 * (0.75 * 1.0 + 0.25 * 2.5))
    assert StallWatch(0, 0).limit() is None and StallWatch(None, 0).limit() is None


class Clock:
    """A clock the test moves."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def trained(clock, factor=2.0, minimum=1.0, duration=1.0):
    """A watch that has learnt three jobs of ``duration`` s (limit: factor x duration)."""
    watch = StallWatch(factor, minimum, clock)
    for _ in range(3):
        watch.learn(duration)
    return watch


def looks(watch, clock, running, times):
    """``times`` on-time looks (the clock moves by each interval); what the last one kills."""
    for _ in range(times):
        clock.t += watch.schedule()
        stalled = watch.look(running)
    return stalled


def test_a_job_over_the_limit_at_two_looks_with_work_waiting_is_stalled():
    clock = Clock()
    watch = trained(clock, duration=2.5)  # the limit is 5 s, a look every 0.5 s
    started = watch.now()
    assert looks(watch, clock, [(1, started, True)], 10) == []  # 5.0 s: at the limit
    assert looks(watch, clock, [(1, started, True)], 1) == []   # over it once
    assert looks(watch, clock, [(1, started, True)], 1) == [(1, 6.0)]


def test_nothing_waiting_for_its_slot_keeps_a_job_running():
    clock = Clock()
    watch = trained(clock)
    started = watch.now()
    assert looks(watch, clock, [(1, started, False)], 100) == []
    assert looks(watch, clock, [(1, started, True)], 1) == [(1, pytest.approx(20.2))]


def test_the_time_the_loop_was_late_counts_against_no_job():
    clock = Clock()
    watch = trained(clock, minimum=0)  # the limit is 2 s, a look every 0.2 s
    started = watch.now()
    watch.schedule()
    clock.t += 9.0  # the loop was 8.8 s late (starved of CPU, or starting many jobs)
    assert watch.look([(1, started, True)]) == []
    assert looks(watch, clock, [(1, started, True)], 2) == []
    assert watch.ran(1, started) == pytest.approx(0.2 + 0.4)  # what a job ending now learns


def test_a_job_handed_out_during_the_lag_is_credited_only_its_own_part():
    clock = Clock()
    watch = trained(clock, minimum=0)
    old = watch.now()
    watch.schedule()  # due in 0.2 s
    clock.t += 5.0
    new = watch.now()  # handed out at the end of a 4.8 s lag, before the look saw it
    clock.t += 0.5
    assert watch.look([(1, old, True), (2, new, True)]) == []
    assert watch.ran(1, old) == pytest.approx(5.5 - 5.3)
    assert watch.ran(2, new) == pytest.approx(0.0)  # never below 0: no negative duration
    clock.t += 1.0
    assert watch.ran(2, new) == pytest.approx(1.0)


def test_no_look_kills_before_the_limit_is_known():
    clock = Clock()
    watch = StallWatch(2, 0, clock)
    assert watch.schedule() == 0.5
    watch.learn(1.0)
    watch.learn(1.0)
    assert looks(watch, clock, [(1, watch.now() - 1000, True)], 3) == []
    watch.learn(1.0)
    assert watch.schedule() == pytest.approx(0.2)
    assert StallWatch(2, 0).schedule() == 0.5


def test_a_long_job_is_not_killed_when_nothing_waits_for_its_slot(classh, sweep):
    """Six short jobs and one long one over 2 nodes: once the short ones are done nothing waits,
    so the long job is never killed (it was, 3 times, and ended "killed")."""
    jobs = ["sleep 0.3; echo s%d" % i for i in range(6)] + ["sleep 5; echo long"]
    args = []
    for job in jobs:
        args += ["--job", job]
    r = classh("--node", "node[1-2]", "--stall-factor", "2", "--stall-min", "1", *args)
    assert r.rc == 0, r
    assert "long" in r.out.split() and "stalled" not in r.err, r.err


def test_a_stall_on_the_last_attempt_does_not_promise_another(classh, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    args = ["--job", command]
    for i in range(30):
        args += ["--job", "sleep 0.3; echo s%d" % i]
    r = classh("--node", "node[1-2]", "--retries", "1", "--stall-factor", "2", "--stall-min", "1",
               *args)
    assert r.rc == 3, r  # the hung job was killed
    line = [line for line in r.err.splitlines() if "job-1 stalled" in line]
    assert len(line) == 1 and "runs again" not in line[0], r.err
    assert "its last attempt (1 of 1)" in line[0], line
    assert leftovers(mark) == []


def test_a_starved_classh_kills_no_job_that_ended_meanwhile(fleet):
    """classh stopped for 5 s (SIGSTOP: a loop starved of CPU or busy starting hundreds of
    jobs): the jobs that ended meanwhile were read late, not stalled."""
    jobs = ["sleep 1; echo J-%d" % i for i in range(16)]
    args = [CLASSH, "--node", "node[1-2]*2", "--stall-factor", "2", "--stall-min", "0"]
    for job in jobs:
        args += ["--job", job]
    proc = subprocess.Popen([sys.executable] + args, env=base_env({"CLASSH_SSH": fleet.ssh_command}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(5):  # the limit is known; the second wave runs
            assert proc.stdout.readline().startswith(b"J-")
        time.sleep(0.3)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(5)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err.decode()
    assert proc.returncode == 0, err
    assert "stalled" not in err and "retried" not in err and "dropped" not in err, err


@pytest.mark.parametrize("field,value,message", [
    ("stall_factor", "inf", "stall-factor must be a number"),
    ("stall_factor", "x", "stall-factor must be a number"),
    ("stall_min", "nan", "stall-min must be a number of seconds"),
    ("stall_min", "1e400", "stall-min must be at most"),
])
def test_bad_stall_settings_are_refused(field, value, message):
    with pytest.raises(OptionError) as caught:
        JobOptions(**{field: value})
    assert message in str(caught.value)


def test_bad_stall_options_on_the_command_line_are_exit_2(classh):
    r = classh("--node", "node1", "--job", "true", "--stall-factor", "-")
    assert r.rc == 2 and r.err.count("\n") == 1, r
