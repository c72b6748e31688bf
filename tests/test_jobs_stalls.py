"""Stall detection: a job running far longer than the moving average of completed ones is
killed (on the target too) and runs again on another node.

Blocks and jobs against the real loopback sshd; the drop of a node that keeps stalling with
the stand-in ssh, where each node's commands can tell which node they run on.
"""
import json
import os
import time

import pytest

import classh
from conftest import STANDIN
from leftovers import leftovers, with_marker

from classh.jobs import JobOptions, JobSource
from classh.options import OptionError


def hang_once(remote_dir, command, key="3"):
    """A task: block ``key`` hangs (``command``) on its first attempt only; every block
    prints itself after a short sleep."""
    first = os.path.join(remote_dir, "first")
    return ('read x; if test "$x" = %s && mkdir %s 2>/dev/null; then %s; fi; sleep 0.2; '
            'echo "$x"' % (key, first, command))


def blocks_file(tmp_path, count):
    path = tmp_path / "in"
    path.write_text("".join("%d\n" % i for i in range(1, count + 1)))
    return str(path)


def test_a_block_hanging_on_its_first_attempt_runs_again_elsewhere(classh, tmp_path, remote_dir,
                                                                   sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    results = str(tmp_path / "r")
    started = time.monotonic()
    r = classh("--node", "node[1-2]*2", "--input", blocks_file(tmp_path, 16), "-k", "--task",
               hang_once(remote_dir, command), "--stall-factor", "3", "--stall-min", "2",
               "-o", results, "-t", "60")
    took = time.monotonic() - started
    assert r.rc == 0, r
    assert r.out.split() == [str(i) for i in range(1, 17)]
    assert "job-3 stalled on node" in r.err and "it runs again elsewhere" in r.err
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
    r = classh("--node", "node[1-2]*2", "--input", blocks_file(tmp_path, 8), "--task",
               hang_once(remote_dir, command), "--stall-factor", "2", "--stall-min", "3")
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
    from classh.options import Options
    source = JobSource([], ["true"], Options(), JobOptions(stall_factor=4, stall_min=0))
    for duration in (1.0, 1.0):
        source._learn(duration)
    assert source.stall_limit() is None  # not before the third completion
    source._learn(3.0)
    assert source.stall_limit() == pytest.approx(4 * (0.75 * 3.0 + 0.25 * 1.0))
    source._learn(1.0)
    assert source.stall_limit() == pytest.approx(4 * (0.75 * 1.0 + 0.25 * 2.5))


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
