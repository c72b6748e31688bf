"""No default kills a legitimately long job (issue 16, item 11).

Job lists: the stall watch is opt-in (``--stall-factor F``). Blocks: it is on
by default, as MapReduce's backup tasks: a straggling block gets a second copy
on another node, the first to finish wins, the other is ended (on its node
too), and the block's result appears once everywhere.
"""
import json
import os

from leftovers import leftovers, with_marker


def job_args(jobs):
    """``--job`` for each of ``jobs``."""
    args = []
    for job in jobs:
        args += ["--job", job]
    return args


def long_among_short():
    """One 5 s job first, then 20 short ones over 2 one-slot nodes: the short ones keep
    a slot busy (work waits) well past the limit a default factor of 5 would give."""
    return ["sleep 5; echo long-done"] + ["sleep 0.2; echo s%d" % i for i in range(20)]


def test_a_long_job_among_short_ones_is_no_stall_by_default(classh, sweep):
    r = classh("--node", "node[1-2]", "--stall-min", "1", *job_args(long_among_short()))
    assert r.rc == 0, r
    assert "long-done" in r.out.split() and "stalled" not in r.err, r.err


def test_an_explicit_stall_factor_on_a_job_list_still_kills_and_reruns(classh, sweep):
    r = classh("--node", "node[1-2]", "--stall-min", "1", "--stall-factor", "5",
               *job_args(long_among_short()))
    lines = [line for line in r.err.splitlines() if "job-1 stalled on node" in line]
    assert lines and "killed, it runs again elsewhere" in lines[0], r.err
