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


def copies_task(remote_dir, first, second, key="3", pause="0.5"):
    """A block task: block ``key`` runs ``first`` on its first run and ``second`` on its next
    one (its backup copy); every block then prints itself after ``pause`` s."""
    flag = os.path.join(remote_dir, "first")
    return ('read x; if test "$x" = %s; then if mkdir %s 2>/dev/null; then %s; else %s; fi; fi; '
            'sleep %s; echo "$x"' % (key, flag, first, second, pause))


def blocks_file(tmp_path, count):
    path = tmp_path / "in"
    path.write_text("".join("%d\n" % i for i in range(1, count + 1)))
    return str(path)


def summary_of(results, job):
    """The summary.jsonl lines of ``job``."""
    with open(os.path.join(results, "summary.jsonl")) as fh:
        return [record for record in map(json.loads, fh) if record.get("job") == job]


def node_after(text, before):
    """The node named right after ``before`` in ``text``."""
    return text.split(before, 1)[1].split()[0].rstrip(",:")


def test_a_hanging_block_gets_a_backup_copy_that_wins_and_shows_once(classh, tmp_path,
                                                                    remote_dir, sweep):
    mark, hang = with_marker("sleep {m}")
    sweep.append(mark)
    results, joblog = str(tmp_path / "r"), str(tmp_path / "joblog")
    r = classh("--node", "node[1-2]*2", "--input", blocks_file(tmp_path, 8), "-k", "--task",
               copies_task(remote_dir, hang, "true"), "--stall-min", "1", "-o", results,
               "--joblog", joblog)
    assert r.rc == 0, r
    assert r.out.split() == [str(i) for i in range(1, 9)], r  # block 3 once, in its place
    hung = node_after(r.err, "job-3 stalled on ")
    backup = node_after(r.err, "a backup copy starts on ")
    assert hung != backup, r.err
    assert "job-3: its backup copy on %s finished first: the copy on %s is ended" % (
        backup, hung) in r.err, r.err
    [record] = summary_of(results, 3)
    assert record["node"] == backup and record["attempts"] == 2, record
    assert record["attempt_nodes"] == [hung, backup], record
    with open(os.path.join(results, "job-3.out")) as fh:
        assert fh.read() == "3\n"
    assert not [name for name in os.listdir(results) if "backup" in name]
    with open(joblog) as fh:
        assert [row.split("\t")[0] for row in fh].count("3") == 1
    assert leftovers(mark) == []  # the hung copy was ended on the target


def test_the_first_copy_winning_over_a_slower_backup_ends_the_backup(classh, tmp_path,
                                                                      remote_dir, sweep):
    """--retries 1: the watch never fails a slow block (it killed its last attempt). An
    explicit factor of 2 keeps the limit well under the slow copy's 6 s on a loaded machine;
    blocks are backed up whatever the factor."""
    mark, hang = with_marker("sleep {m}")
    sweep.append(mark)
    results = str(tmp_path / "r")
    r = classh("--node", "node[1-2]*2", "--input", blocks_file(tmp_path, 8), "-k", "--task",
               copies_task(remote_dir, "sleep 6", hang), "--stall-min", "1", "--stall-factor", "2",
               "--retries", "1",
               "-o", results)
    assert r.rc == 0, r
    assert r.out.split() == [str(i) for i in range(1, 9)], r
    slow = node_after(r.err, "job-3 stalled on ")
    backup = node_after(r.err, "a backup copy starts on ")
    assert "job-3 finished on %s first: its backup copy on %s is ended" % (slow, backup) in r.err
    [record] = summary_of(results, 3)
    assert record["node"] == slow and record["status"] == "ok", record
    assert leftovers(mark) == []  # the backup copy was ended on the target


def test_a_failed_backup_leaves_the_first_copy_to_win(classh, tmp_path, remote_dir, sweep):
    r = classh("--node", "node[1-2]*2", "--input", blocks_file(tmp_path, 8), "-k", "--task",
               copies_task(remote_dir, "sleep 5", "exit 1"), "--stall-min", "1", "--stall-factor", "2",
               "--retries", "1")
    assert r.rc == 0, r
    assert r.out.split() == [str(i) for i in range(1, 9)], r
    slow = node_after(r.err, "job-3 stalled on ")
    backup = node_after(r.err, "a backup copy starts on ")
    assert ("job-3: its backup copy on %s failed (exit status 1): the copy on %s goes on"
            % (backup, slow)) in r.err, r.err


def test_a_backup_writing_more_than_it_may_keep_is_given_up(classh, tmp_path, remote_dir, sweep):
    """Memory stays bounded: a backup copy keeps 4 MiB of each stream; one that writes more
    cannot win, and the first copy goes on."""
    r = classh("--node", "node[1-2]*2", "--input", blocks_file(tmp_path, 8), "-k", "--task",
               copies_task(remote_dir, "sleep 5", "head -c 5000000 /dev/zero"),
               "--stall-min", "1", "--stall-factor", "2", "--retries", "1")
    assert r.rc == 0, r
    assert r.out.split() == [str(i) for i in range(1, 9)], r.err
    assert "its output passed 4 MiB, what a backup copy keeps): the copy on" in r.err, r.err


def test_when_both_copies_fail_the_retry_rules_apply(classh, tmp_path, remote_dir, sweep):
    """Block 3 fails slowly on its first copy and at once on its backup: it runs a third
    time (--retries 3) and succeeds; the summary counts the three attempts."""
    first, second = os.path.join(remote_dir, "a"), os.path.join(remote_dir, "b")
    task = ('read x; if test "$x" = 3; then if mkdir %s 2>/dev/null; then sleep 5; exit 1; '
            'elif mkdir %s 2>/dev/null; then exit 1; fi; fi; sleep 0.5; echo "$x"'
            % (first, second))
    results = str(tmp_path / "r")
    r = classh("--node", "node[1-2]*2", "--input", blocks_file(tmp_path, 8), "-k", "--task", task,
               "--stall-min", "1", "--stall-factor", "2", "-o", results)
    assert r.rc == 0, r
    assert r.out.split() == [str(i) for i in range(1, 9)], r
    assert "job-3: its backup copy on node" in r.err and "failed (exit status 1)" in r.err, r.err
    [record] = summary_of(results, 3)
    assert record["attempts"] == 3 and record["status"] == "ok", (record, r.err)
