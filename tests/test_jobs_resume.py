"""Job mode's --resume is exact (issue 15, item 2), against the real loopback sshd: a job is
its number and its text, "done" and "files kept" follow one rule (the last summary line of
the number), and a run killed at any point resumes to every job's output exactly once."""
import json
import os
import signal

import pytest

from leftovers import signal_when, start_classh
from test_jobs_machines import machines_file


def summary(results):
    """The parsable lines of ``results``/summary.jsonl, as dicts."""
    path = os.path.join(results, "summary.jsonl")
    if not os.path.exists(path):
        return []
    lines = []
    with open(path, "rb") as fh:
        for line in fh:
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    return lines


def oks(results):
    """The job numbers whose last summary line is ok."""
    last = {}
    for data in summary(results):
        last[data["job"]] = data["status"] == "ok"
    return {job for job, ok in last.items() if ok}


def identical_jobs(tmp_path, remote_dir, count=10):
    """A job file of ``count`` identical lines, each appending to a log on the target."""
    log = os.path.join(remote_dir, "ran")
    jobs = tmp_path / "jobs"
    jobs.write_text(("sleep 0.4; echo ran >> %s; echo same\n" % log) * count)
    return str(jobs), log


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_identical_lines_killed_midway_resume_to_each_output_exactly_once(
        classh, fleet, tmp_path, remote_dir, signum):
    jobs, log = identical_jobs(tmp_path, remote_dir)
    results = str(tmp_path / "r")
    args = ["-q", "-o", results, "--node", "node1*2", "--job-file", jobs]
    signal_when(start_classh(fleet, args), lambda: len(oks(results)) >= 4, signum,
                why="4 jobs never finished")
    done = oks(results)
    assert 4 <= len(done) < 10, done
    again = classh("-o", results, "--resume", "--node", "node1*2", "--job-file", jobs, "-q")
    assert again.rc == 0, again
    assert "File exists" not in again.err
    assert "%d done before" % len(done) in again.err, again
    assert oks(results) == set(range(1, 11))
    for number in range(1, 11):
        assert (tmp_path / "r" / ("job-%d.out" % number)).read_text() == "same\n"
        assert (tmp_path / "r" / ("job-%d.ret" % number)).read_text() == "0\n"
    ran = open(log).read().split()
    # The ones done before never ran again; at most those killed midway ran twice.
    assert 10 <= len(ran) <= 10 + (10 - len(done)), ran


def test_a_ret_written_without_its_summary_line_runs_again_with_fresh_files(
        classh, tmp_path, remote_dir):
    jobs, log = identical_jobs(tmp_path, remote_dir, count=3)
    results = tmp_path / "r"
    first = classh("-q", "-o", str(results), "--node", "node1", "--job-file", jobs)
    assert first.rc == 0, first
    # As if killed between job 3's .ret and its summary line.
    lines = (results / "summary.jsonl").read_bytes().splitlines(keepends=True)
    cut = [line for line in lines if json.loads(line)["job"] != 3]
    (results / "summary.jsonl").write_bytes(b"".join(cut))
    (results / "job-3.out").write_text("stale\n")
    again = classh("-o", str(results), "--resume", "--node", "node1", "--job-file", jobs, "-q")
    assert again.rc == 0, again
    assert "File exists" not in again.err and "2 done before" in again.err, again
    assert (results / "job-3.out").read_text() == "same\n"
    assert oks(str(results)) == {1, 2, 3}
    assert len(open(log).read().split()) == 4  # job 3 only ran again
    # Resumed once more: all done, nothing runs, nothing is replaced.
    third = classh("-o", str(results), "--resume", "--node", "node1", "--job-file", jobs, "-q")
    assert third.rc == 0 and "3 done before" in third.err, third
    assert len(open(log).read().split()) == 4


def test_on_each_node_resume_runs_the_node_whose_set_up_failed(classh, fleet, tmp_path,
                                                               remote_dir):
    script = tmp_path / "init.sh"
    script.write_text('test ! -e %s/broken-$(basename "$PWD") || exit 3\n' % remote_dir)
    path = machines_file(tmp_path, [{"hostname": "default", "connect_cmd": fleet.ssh_command}] + [
        {"hostname": "node%d" % n, "wd": "%s/n%d" % (remote_dir, n)} for n in (1, 2, 3)])
    open(os.path.join(remote_dir, "broken-n2"), "w").close()
    log = os.path.join(remote_dir, "ran")
    results = str(tmp_path / "r")
    args = ["-q", "-o", results, "--machines", path, "--init-script", str(script),
            "--on-each-node", 'basename "$PWD" >> %s' % log]
    first = classh(*args)
    assert "node node2 dropped" in first.err, first
    assert sorted(open(log).read().split()) == ["n1", "n3"]
    os.unlink(os.path.join(remote_dir, "broken-n2"))
    again = classh("--resume", *args)
    assert again.rc == 0, again
    assert "2 done before" in again.err, again
    assert sorted(open(log).read().split()) == ["n1", "n2", "n3"]  # node2 only, once


def test_an_edited_block_on_resume_is_named_and_the_others_run(classh, tmp_path):
    data = tmp_path / "in"
    data.write_text("".join("%d\n" % i for i in range(1, 31)))
    results = tmp_path / "r"
    args = ["-q", "-o", str(results), "--node", "node1", "--input", str(data),
            "--task", "wc -l", "--blocksize", "10"]
    first = classh(*args)
    assert first.rc == 0, first
    (results / "job-3.out").unlink()
    lines = [line for line in (results / "summary.jsonl").read_text().splitlines()
             if json.loads(line)["job"] != 3]
    (results / "summary.jsonl").write_text("".join(line + "\n" for line in lines))
    data.write_text("".join("%d\n" % i for i in range(1, 20)) + "edited\n"
                    + "".join("%d\n" % i for i in range(21, 31)))
    again = classh("--resume", *args)
    assert again.rc == 2, again
    assert "job 2 in" in again.err and "block-2:" in again.err, again
    assert (results / "job-3.out").read_text() == "10\n"  # block 3 was not done: it ran
    assert (results / "job-2.out").read_text() == "10\n"  # the old result of block 2 is kept
