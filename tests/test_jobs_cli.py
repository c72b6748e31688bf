"""Job mode's command line and outputs: option spellings, bad input, the job output display
(whole, -k, lines, json), -o/--resume, --joblog, --active-nodes, --status, exit codes.

The observers are tested alone with records made by hand; the command line end to end
against the real loopback sshd fleet (``classh`` fixture)."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import CLASSH, Sink, base_env, run_classh

from classh.cli import UsageError, check_mode_options, mode_of, parse
from classh.display import SafeStream
from classh.jobviews import (JOBLOG_HEADER, ActiveNodes, JobLog, JobOutput, JobStatusLine,
                             job_summary_line, status_text)
from classh.results import Record, ResultsDir, ResultsError, Tally, record_from_dict
from classh.resume import JobsDone
from classh.supervisor import Task


class FakeTask:
    def __init__(self, key, node=None):
        self.key = key
        self.context = (None, node)


def job_record(job, node="node1", command="echo hi", exitcode=0, **kw):
    return Record(host="job-%d" % job, job=job, node=node, command=command, exitcode=exitcode,
                  started=1000.0 + job, stopped=1000.5 + job, **kw)



def feed(display, record, out=b"", err=b"", chunks=1):
    """Feed a job's output in ``chunks`` pieces, then its final record."""
    task = FakeTask(record.host, record.node)
    display.started(task)
    for fd, data in ((1, out), (2, err)):
        step = max(1, len(data) // chunks)
        for at in range(0, len(data), step):
            display.output(task, fd, data[at:at + step])
    display.finished(task, record)


# -- the command line ----------------------------------------------------------------

@pytest.mark.parametrize("argv,key,value", [
    (["--node", "n1", "--job", "x"], "--node", ["n1"]),
    (["--node=n1", "--node", "n2", "--job=x"], "--node", ["n1", "n2"]),
    (["--node-file", "f", "--job", "x"], "--node-file", ["f"]),
    (["--node-f=f", "--node-file", "g", "--job", "x"], "--node-file", ["f", "g"]),
    (["--node", "n1", "--job", "a", "--job=b", "--job", "c"], "--job", ["a", "b", "c"]),
    (["--node", "n1", "--job-file", "-", "--job-f=j2"], "--job-file", ["-", "j2"]),
    (["--node", "n1", "--on-each-node", "uname"], "--on-each-node", "uname"),
    (["--node", "n1", "--on=uname"], "--on-each-node", "uname"),
    (["--node", "n1", "--job", "x", "--retries", "5"], "--retries", "5"),
    (["--node", "n1", "--job", "x", "--retr=5"], "--retries", "5"),
    (["--node", "n1", "--job", "x", "--fail-node-on-error"], "--fail-node-on-error", True),
    (["--node", "n1", "--job", "x", "--fail-n"], "--fail-node-on-error", True),
    (["--node", "n1", "--job", "x", "--max-node-uses", "2"], "--max-node-uses", "2"),
    (["--node", "n1", "--job", "x", "--max-nodes=2"], "--max-nodes", "2"),
    (["--node", "n1", "--job", "x", "--no-reuse"], "--no-reuse", True),
    (["--node", "n1", "--job", "x", "--no-r"], "--no-reuse", True),
    (["--node", "n1", "--job", "x", "-k"], "--keep-order", True),
    (["--node", "n1", "--job", "x", "--keep-order"], "--keep-order", True),
    (["--node", "n1", "--job", "x", "-qk"], "--keep-order", True),
    (["--node", "n1", "--job", "x", "--joblog", "L"], "--joblog", "L"),
    (["--node", "n1", "--job", "x", "--jobl=L"], "--joblog", "L"),
    (["--node", "n1", "--job", "x", "--active-nodes", "A"], "--active-nodes", "A"),
    (["--node", "n1", "--job", "x", "--act=A"], "--active-nodes", "A"),
    (["--node", "n1", "--job", "x", "-n", "4"], "--numjobs", "4"),
    (["--node", "n1", "--job", "x", "-n4"], "--numjobs", "4"),
])
def test_every_job_option_spelling_means_its_option(argv, key, value):
    args = parse(argv)
    assert args[key] == value
    assert mode_of(args) == "jobs"
    assert args["COMMAND"] is None and args["TARGET"] == []


def test_prefix_no_is_ambiguous_and_refused():
    with pytest.raises(UsageError, match="--no"):
        parse(["--no", "--node", "n1", "--job", "x"])


def test_without_node_it_is_host_mode():
    args = parse(["echo hi", "n1"])
    assert mode_of(args) == "run" and args["COMMAND"] == "echo hi"


@pytest.mark.parametrize("extra", [["-i"], ["--list"], ["--close"], ["--fold"],
                                   ["--copy", "f", "--dest", "d"]])
def test_job_mode_with_another_mode_is_refused_naming_both(extra):
    with pytest.raises(UsageError, match="--node") as caught:
        parse(["--node", "n1", "--job", "x"] + extra)
    assert "cannot be used together" in str(caught.value)


@pytest.mark.parametrize("option", [["--job", "x"], ["--job-file", "f"], ["--on-each-node", "x"],
                                    ["--retries", "2"], ["--fail-node-on-error"],
                                    ["--max-node-uses", "2"], ["--max-nodes", "2"],
                                    ["--no-reuse"], ["--joblog", "L"],
                                    ["--active-nodes", "A"]])
def test_job_options_are_refused_in_host_mode(option):
    args = parse(option + ["true", "n1"])
    with pytest.raises(UsageError, match="only go.* with job mode"):
        check_mode_options(args, mode_of(args))


@pytest.mark.parametrize("option", [["-x", "n2"], ["--sudo"], ["--raw"], ["-S", "ok"],
                                    ["-E", "bad"], ["--count"]])
def test_host_only_options_are_refused_in_job_mode(option):
    args = parse(["--node", "n1", "--job", "x"] + option)
    with pytest.raises(UsageError, match="cannot be used with job mode"):
        check_mode_options(args, mode_of(args))


# -- bad input: one line naming it, exit 2, nothing run ---------------------------------

def _one_line_error(r, *words):
    assert r.rc == 2, r
    assert r.out == ""
    lines = r.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("classh: "), r
    for word in words:
        assert word in lines[0], (word, r)
    assert "internal error" not in r.err


@pytest.mark.parametrize("argv,words", [
    (["--node", "node1"], ["no job"]),
    (["--node", "node1", "--job-file", "EMPTY"], ["no job", "EMPTY"]),
    (["--node", "node1*0", "--job", "touch MARK"], ["node1*0"]),
    (["--node", "no;de", "--job", "touch MARK"], ["no;de"]),
    (["--node-file", "NOFILE", "--job", "touch MARK"], ["NOFILE"]),
    (["--node", "node1", "--job", "touch MARK", "--retries", "0"], ["--retries", "0"]),
    (["--node", "node1", "--job", "touch MARK", "--retries", "x"], ["--retries", "x"]),
    (["--node", "node1", "--job", "touch MARK", "--max-node-uses", "-1"], ["--max-node-uses"]),
    (["--node", "node1", "--job", "touch MARK", "--max-nodes", "1.5"], ["--max-nodes", "1.5"]),
    (["--node", "node1", "--job", "touch MARK", "-n", "0"], ["-n", "0"]),
    (["--node", "node1", "--job", "touch MARK", "-t", "soon"], ["soon"]),
    (["--node", "node1", "--job", "touch MARK", "--format", "gather"], ["gather"]),
    (["--node", "node1", "--job", "touch MARK", "extra"], ["extra", "TARGET"]),
    (["--node", "node1", "--job", "touch MARK", "--resume"], ["--resume"]),
    (["--node", "node1", "--job", "touch MARK", "-x", "node2"], ["--exclude"]),
    (["--job", "touch MARK", "true", "node1"], ["--job"]),
])
def test_bad_job_input_is_one_line_exit_2_and_nothing_runs(classh, tmp_path, argv, words):
    (tmp_path / "EMPTY").write_text("# nothing\n\n")
    argv = [word.replace("MARK", str(tmp_path / "ran")).replace("EMPTY", str(tmp_path / "EMPTY"))
            for word in argv]
    r = classh(*argv)
    _one_line_error(r, *words)
    assert not (tmp_path / "ran").exists()


def test_existing_joblog_is_refused_and_kept(classh, tmp_path):
    log = tmp_path / "log"
    log.write_text("precious\n")
    r = classh("--node", "node1", "--job", "touch %s" % (tmp_path / "ran"), "--joblog", str(log))
    _one_line_error(r, str(log))
    assert log.read_text() == "precious\n" and not (tmp_path / "ran").exists()


# -- the job output display ------------------------------------------------------------

def test_default_display_writes_each_job_whole_at_its_end():
    out, err = Sink(), Sink()
    display = JobOutput(out.stream, err.stream)
    a, b = FakeTask("job-1"), FakeTask("job-2")
    display.output(a, 1, b"a1 start ")
    display.output(b, 1, b"b1\nb2")
    display.output(a, 1, b"end\n")
    assert out.data == b""  # nothing before a job ends
    display.finished(b, job_record(2))
    display.output(a, 2, b"warn")
    display.finished(a, job_record(1))
    assert out.data == b"b1\nb2\na1 start end\n"  # an unterminated last line gets its newline
    assert err.data == b"warn\n"


def test_default_display_adds_one_line_for_a_failed_job():
    out, err = Sink(), Sink()
    display = JobOutput(out.stream, err.stream)
    feed(display, job_record(3, node="node2", command="make test", exitcode=2), b"x\n", b"boom\n")
    assert out.data == b"x\n"
    assert err.data == b"boom\nclassh: job-3 on node2: exit 2: make test\n"


def test_retried_attempt_output_is_dropped():
    out, err = Sink(), Sink()
    display = JobOutput(out.stream, err.stream)
    task = FakeTask("job-1")
    display.output(task, 1, b"first attempt\n")
    display.retried(task, job_record(1, exitcode=255))
    display.output(task, 1, b"second\n")
    display.finished(task, job_record(1, node="node2"))
    assert out.data == b"second\n" and err.data == b""


def test_keep_order_holds_jobs_until_their_predecessors_are_written():
    out, err = Sink(), Sink()
    display = JobOutput(out.stream, err.stream, keep_order=True, skipped={2}.__contains__)
    feed(display, job_record(3), b"three\n")
    feed(display, job_record(4), b"four\n")
    assert out.data == b""
    feed(display, job_record(1), b"one\n")  # 2 was done before (--resume): never comes
    assert out.data == b"one\nthree\nfour\n"
    feed(display, job_record(6), b"six\n")
    display.close()  # job 5 never came (undone): what waits is written at the end
    assert out.data == b"one\nthree\nfour\nsix\n"


def test_without_keep_order_jobs_come_in_completion_order():
    out, err = Sink(), Sink()
    display = JobOutput(out.stream, err.stream)
    feed(display, job_record(3), b"three\n")
    feed(display, job_record(1), b"one\n")
    assert out.data == b"three\none\n"


def test_lines_format_prefixes_job_and_node():
    out, err = Sink(), Sink()
    display = JobOutput(out.stream, err.stream, fmt="lines")
    feed(display, job_record(7, node="node4"), b"a\nb", b"e\n", chunks=3)
    assert out.data == b"job-7 node4: a\njob-7 node4: b\n"
    assert err.data == b"job-7 node4: e\n"


def test_json_format_has_the_job_fields_and_whole_output():
    out, err = Sink(), Sink()
    display = JobOutput(out.stream, err.stream, fmt="json")
    record = job_record(5, node="node3", command="echo hi", exitcode=0, attempts=2,
                        stdout_size=3)
    feed(display, record, b"hi\n", b"", chunks=2)
    data = json.loads(out.data)
    assert (data["job"], data["node"], data["command"], data["attempts"]) == (5, "node3", "echo hi", 2)
    assert (data["exitcode"], data["signal"], data["stdout"], data["stderr"]) == (0, None, "hi\n", "")
    assert data["started"] == 1005.0 and data["stopped"] == 1005.5
    assert record_from_dict(data).stdout == b"hi\n"


# -- results directory --------------------------------------------------------------

def test_results_dir_retried_attempt_files_go_away(tmp_path):
    results = ResultsDir(str(tmp_path))
    task = FakeTask("job-1")
    results.started(task)
    results.output(task, 1, b"partial")
    results.retried(task, job_record(1, exitcode=255))
    assert not (tmp_path / "job-1.out").exists() and not (tmp_path / "job-1.err").exists()
    results.started(task)
    results.output(task, 1, b"final\n")
    results.finished(task, job_record(1))
    results.close()
    assert (tmp_path / "job-1.out").read_bytes() == b"final\n"
    assert (tmp_path / "job-1.ret").read_bytes() == b"0\n"


def test_resume_reads_each_job_number_by_its_last_record(tmp_path):
    lines = [dict(host="job-1", job=1, command="a", status="ok"),
             dict(host="job-2", job=2, command="b", status="failed"),
             dict(host="job-3", job=3, command="c", status="failed"),
             dict(host="job-3", job=3, command="c", status="ok"),
             dict(host="job-4", job=4, command="a", status="ok"),
             dict(host="job-4", job=4, command="a", status="killed"),
             dict(host="node1", status="ok")]
    (tmp_path / "summary.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines) + "{cut")
    done = JobsDone(str(tmp_path))
    assert done.labels() == {"job-1", "job-3"}
    assert [done.done(n, text) for n, text in ((1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "a"))] \
        == [True, False, True, False, False]  # "a" done as job 1 is not job 4 or 5 done


def test_resume_refuses_a_number_whose_success_was_another_job(tmp_path):
    lines = [dict(host="job-1", job=1, command="echo old", status="ok", node="node1"),
             dict(host="job-2", job=2, command="x" * 500, status="ok", node="node1"),
             dict(host="job-3", job=3, command="same", status="ok", node="node1")]
    (tmp_path / "summary.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    done = JobsDone(str(tmp_path))
    with pytest.raises(ResultsError, match=r"job 1 in .* was 'echo old' \(done\), it is now 'echo new'"):
        done.done(1, "echo new")
    with pytest.raises(ResultsError) as cut:
        done.done(2, "y" * 100000)
    assert len(str(cut.value)) < 400 and "... (100000 bytes)" in str(cut.value)
    with pytest.raises(ResultsError, match="job 3 .* ran on node1 .* now for node2"):
        done.done(3, "same", pin="node2")
    assert done.done(3, "same", pin="node1")


def test_a_summary_cut_mid_line_is_continued_on_a_new_line(tmp_path):
    (tmp_path / "summary.jsonl").write_bytes(b'{"host": "job-1", "job": 1, "comm')
    results = ResultsDir(str(tmp_path), replace=True)
    results.finished(Task(key="job-2", argv=["true"]),
                     Record(host="job-2", exitcode=0, job=2, command="b", node="node1"))
    results.close()
    lines = (tmp_path / "summary.jsonl").read_bytes().split(b"\n")
    assert lines[0] == b'{"host": "job-1", "job": 1, "comm'
    assert json.loads(lines[1])["job"] == 2 and lines[2] == b""
    assert JobsDone(str(tmp_path)).labels() == {"job-2"}


def test_protected_job_files_are_never_replaced(tmp_path):
    (tmp_path / "job-1.out").write_bytes(b"kept\n")
    results = ResultsDir(str(tmp_path), replace=True, protect={"job-1"})
    from classh.observers import SinkError
    with pytest.raises(SinkError):
        results.started(FakeTask("job-1"))
    results.close()
    assert (tmp_path / "job-1.out").read_bytes() == b"kept\n"


# -- joblog -------------------------------------------------------------------------

def test_joblog_rows_in_parallels_format(tmp_path):
    path = tmp_path / "log"
    log = JobLog(str(path))
    log.finished(None, job_record(1, node="node1", command="echo a\tb", stdout_size=4))
    log.finished(None, job_record(2, node="node2", command="false", exitcode=1))
    log.finished(None, job_record(3, command="sleep 9", exitcode=None, signal=15, timed_out=True))
    log.finished(None, job_record(4, command="x", exitcode=255))
    log.close()
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert path.read_bytes().startswith(JOBLOG_HEADER)
    assert rows[1] == ["1", "node1", "1001.000", "0.500", "0", "4", "0", "0", "echo a b"]
    assert rows[2][6:] == ["1", "0", "false"]
    assert rows[3][6:] == ["-1", "15", "sleep 9"]
    assert rows[4][6:] == ["255", "0", "x"]


def test_joblog_is_never_written_through_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(str(victim), str(tmp_path / "log"))
    for overwrite in (False, True):
        with pytest.raises(ResultsError):
            JobLog(str(tmp_path / "log"), overwrite=overwrite)
    assert victim.read_text() == "precious\n"
    assert os.path.islink(str(tmp_path / "log"))  # refused, never unlinked


# -- active nodes ---------------------------------------------------------------------

def test_active_nodes_file_is_replaced_whole_on_every_change(tmp_path):
    path = tmp_path / "active"
    busy = []
    active = ActiveNodes(str(path), lambda: list(busy))
    assert path.read_text() == ""
    inode = os.stat(str(path)).st_ino
    busy[:] = [("node1", 1, "sleep 1"), ("node2", 2, "echo x")]
    active.started(FakeTask("job-2"))
    assert path.read_text() == "node1: job-1 sleep 1\nnode2: job-2 echo x\n"
    assert os.stat(str(path)).st_ino != inode  # a new file renamed over it, never rewritten in place
    busy[:] = [("node2", 2, "echo x")]
    active.finished(FakeTask("job-1"), job_record(1))
    assert path.read_text() == "node2: job-2 echo x\n"
    busy[:] = []
    active.close()
    assert path.read_text() == "" and os.listdir(str(tmp_path)) == ["active"]


class FakeLoop:
    def __init__(self):
        self.timers = []

    def call_later(self, delay, callback):
        self.timers.append(callback)
        return callback

    def cancel(self, timer):
        self.timers.remove(timer)


def test_active_nodes_coalesces_a_burst_of_changes_into_one_rewrite(tmp_path):
    path = tmp_path / "active"
    busy = []
    active = ActiveNodes(str(path), lambda: list(busy))
    loop = FakeLoop()
    active.attach(loop)
    for job in (1, 2, 3):
        busy.append(("node1", job, "sleep 1"))
        active.started(FakeTask("job-%d" % job))
    assert len(loop.timers) == 1 and path.read_text() == ""
    loop.timers.pop()()
    assert path.read_text() == "".join("node1: job-%d sleep 1\n" % job for job in (1, 2, 3))
    busy.clear()
    active.finished(FakeTask("job-1"), job_record(1))
    active.close()  # the last state is written at once, the timer cancelled
    assert loop.timers == [] and path.read_text() == ""


# -- status line and summary ----------------------------------------------------------

class FakeSource:
    def __init__(self):
        self.jobs = {i: None for i in range(1, 557)}
        self.counts = {"retried": 5, "dropped": 1}

    def node_states(self):
        return [("n%d" % i, "ready", 4, 1) for i in range(176)] + [("dead", "dropped", 4, 0)]

    def pending(self):
        return 1


def test_status_text_counts_jobs_nodes_failures_retries_and_eta():
    assert status_text(110, 556, 176, 176, 0, 0, 0, 10.0) == \
        "110 of 556 jobs complete, 176 of 176 nodes running jobs, 11.0/s, ETA 40s."
    assert status_text(3, None, 1, 2, 1, 2, 1, 1.0) == \
        "3 of ? jobs complete, 1 of 2 nodes running jobs, 1 failed, 2 retried, 1 node dropped, 3.0/s, ETA ?."


def test_job_status_line_reads_the_scheduler():
    line = JobStatusLine(SafeStream(open(os.devnull, "wb")), FakeSource(), enabled=False)
    line.finished(None, job_record(1))
    line.finished(None, job_record(2, exitcode=1))
    text = line.text()
    assert text.startswith("2 of 556 jobs complete, 176 of 176 nodes running jobs, 1 failed, "
                           "5 retried, 1 node dropped, ")


def test_job_summary_line():
    tally = Tally([job_record(1), job_record(2, exitcode=1)])
    assert job_summary_line(tally, 1.25, retried=3, dropped=1, undone=2) == \
        "classh: 2 jobs in 1.2 s: 1 ok, 1 failed; 3 retried, 1 node dropped, 2 undone"


# -- end to end, against the real loopback sshd ---------------------------------------

from leftovers import leftovers, pids_of, start_classh, wait_for, with_marker  # noqa: E402


def test_long_lines_of_jobs_running_at_once_are_never_interleaved(classh):
    # 8 jobs at once, each printing 300 lines of 3000 bytes in many writes.
    letters = "ABCDEFGH"
    jobs = []
    for letter in letters:
        jobs += ["--job", "i=0; while [ $i -lt 300 ]; do printf '%%03000d\\n' 0 | tr 0 %s; "
                          "i=$((i+1)); done" % letter]
    r = classh("--node", "node1*4", "--node", "node2*4", *jobs)
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert len(lines) == 8 * 300
    for line in lines:
        assert len(line) == 3000 and line == line[0] * 3000, line[:80]
    runs = [lines[0][0]] + [b[0] for a, b in zip(lines, lines[1:]) if a[0] != b[0]]
    assert sorted(runs) == sorted(letters)  # each job's output in one piece


def test_keep_order_prints_in_job_order(classh):
    r = classh("--node", "node1*3", "-k", "--job", "sleep 1.2; echo one",
               "--job", "sleep 0.6; echo two", "--job", "echo three")
    assert r.rc == 0, r
    assert r.out == "one\ntwo\nthree\n"


def test_lines_and_json_formats(classh):
    r = classh("--node", "node3", "--format", "lines", "--job", "echo a; echo b >&2; echo c")
    assert r.rc == 0, r
    assert r.out == "job-1 node3: a\njob-1 node3: c\n"
    assert "job-1 node3: b\n" in r.err
    r = classh("--node", "node3", "--format", "json", "--job", "echo hi; exit 4", "--retries", "1")
    assert r.rc == 5, r
    data = json.loads(r.out)
    assert (data["job"], data["node"], data["command"], data["exitcode"], data["attempts"],
            data["stdout"]) == (1, "node3", "echo hi; exit 4", 4, 1, "hi\n")


def test_run_id_and_summary_on_stderr(classh):
    r = classh("--node", "node1", "--job", "true", "--job", "false", "--retries", "2")
    assert r.rc == 5, r
    lines = r.err.splitlines()
    assert lines[0].startswith("classh: run ") and lines[0][len("classh: run "):].isalnum()
    assert lines[-1].startswith("classh: 2 jobs in ") and "1 ok, 1 failed; 1 retried" in lines[-1]


def test_results_dir_and_resume_runs_only_the_failed_jobs(classh, remote_dir, tmp_path):
    results = str(tmp_path / "r")
    count = os.path.join(remote_dir, "ran")
    flag = os.path.join(remote_dir, "ok")
    jobs = ["--job", "echo a >> %s; echo A" % count,
            "--job", "echo b >> %s; test -f %s" % (count, flag),
            "--job", "echo c >> %s; echo C" % count]
    r = classh("-q", "-o", results, "--retries", "1", "--node", "node1*2", *jobs)
    assert r.rc == 5, r
    assert sorted(os.listdir(results)) == sorted(
        ["job-%d%s" % (i, s) for i in (1, 2, 3) for s in (".out", ".err", ".ret")] + ["run-id", "summary.jsonl"])
    assert open(os.path.join(results, "job-3.out")).read() == "C\n"
    assert open(os.path.join(results, "job-2.ret")).read() == "1\n"
    open(flag, "w").close()
    r = classh("-q", "-o", results, "--resume", "--retries", "1", "--node", "node1*2", *jobs)
    assert r.rc == 0, r
    assert sorted(open(count).read().split()) == ["a", "b", "b", "c"]  # only b ran again
    assert "2 skipped: done before" in r.err
    assert open(os.path.join(results, "job-2.ret")).read() == "0\n"
    assert open(os.path.join(results, "job-1.out")).read() == "A\n"  # kept


def test_resume_refuses_an_edited_job_whose_number_succeeded_and_touches_nothing(classh,
                                                                                tmp_path):
    results = str(tmp_path / "r")
    r = classh("-q", "-o", results, "--node", "node1", "--job", "echo first")
    assert r.rc == 0, r
    before = sorted(os.listdir(results))
    # Another job list: job 1 is now another command; the old job-1 results stay.
    r = classh("-q", "-o", results, "--resume", "--retries", "1", "--node", "node1",
               "--job", "echo second")
    assert r.rc == 2, r
    assert r.err.strip().splitlines() == [
        "classh: --resume: job 1 in %r was 'echo first' (done), it is now 'echo second': give"
        " another results directory, or --overwrite" % results]
    assert open(os.path.join(results, "job-1.out")).read() == "first\n"
    assert sorted(os.listdir(results)) == before


def test_retried_attempt_leaves_only_the_final_files(classh, remote_dir, tmp_path):
    results = str(tmp_path / "r")
    once = os.path.join(remote_dir, "once")
    r = classh("-q", "-o", results, "--node", "node2",
               "--job", "if [ -f %s ]; then echo second; else touch %s; echo first; exit 1; fi"
               % (once, once))
    assert r.rc == 0, r
    assert open(os.path.join(results, "job-1.out")).read() == "second\n"
    lines = [json.loads(line) for line in open(os.path.join(results, "summary.jsonl"))]
    assert [(d["job"], d["status"], d["attempts"]) for d in lines] == [(1, "ok", 2)]


def test_joblog_is_read_by_gnu_parallel_resume(classh, remote_dir, tmp_path):
    if shutil.which("parallel") is None:
        pytest.fail("GNU parallel is not installed (apt-get install parallel)")
    log = str(tmp_path / "joblog")
    count = os.path.join(remote_dir, "ran")
    commands = ["echo 1 >> %s" % count, "echo 2 >> %s; exit 3" % count, "echo 3 >> %s" % count]
    jobfile = tmp_path / "jobs"
    jobfile.write_text("".join(c + "\n" for c in commands))
    r = classh("-q", "--retries", "1", "--node", "node1*2", "--job-file", str(jobfile),
               "--joblog", log)
    assert r.rc == 5, r
    rows = [line.split("\t") for line in open(log).read().splitlines()]
    assert rows[0] == JOBLOG_HEADER.decode().rstrip("\n").split("\t")
    assert sorted((row[0], row[1], row[6], row[8]) for row in rows[1:]) == [
        ("1", "node1", "0", commands[0]), ("2", "node1", "3", commands[1]),
        ("3", "node1", "0", commands[2])]
    os.remove(count)
    subprocess.run(["parallel", "--will-cite", "--joblog", log, "--resume", "-a", str(jobfile)],
                   check=True, timeout=60)
    assert not os.path.exists(count)  # every job is in the log: parallel runs none
    subprocess.run(["parallel", "--will-cite", "--joblog", log, "--resume-failed", "-a",
                    str(jobfile)], timeout=60)
    assert open(count).read() == "2\n"  # parallel reran only the failed job


def test_active_nodes_lists_busy_slots_while_running(fleet, sweep, tmp_path):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    active = str(tmp_path / "active")
    proc = start_classh(fleet, ["-q", "--node", "node1*2", "--node", "node2", "--active-nodes",
                                active, "--job", command, "--job", command, "--job", command,
                                "--job", "true"])
    try:
        assert wait_for(lambda: len(pids_of(mark)) >= 3, 20)
        text = wait_for(lambda: open(active).read().count("\n") == 4 and open(active).read(), 5)
        head, *lines = text.splitlines()
        assert head.startswith("# run ")  # the run id first (classh --kill RUN-ID)
        lines = sorted(lines)
        assert [line.split(":")[0] for line in lines] == ["node1", "node1", "node2"]
        assert sorted(line.split(": ", 1)[1] for line in lines) == [
            "job-%d %s" % (i, command) for i in (1, 2, 3)]
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert open(active).read() == head + "\n"
    assert os.listdir(str(tmp_path)) == ["active"]


def test_ctrl_c_kills_every_job_on_the_target_and_keeps_finished_results(fleet, sweep, tmp_path):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    results = str(tmp_path / "r")
    proc = start_classh(fleet, ["-q", "-o", results, "--node", "node[1-3]*2", "--job", "echo done"]
                        + ["--job", command] * 6)
    try:
        assert wait_for(lambda: len(pids_of(mark)) >= 6, 20)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert leftovers(mark) == []
    assert open(os.path.join(results, "job-1.ret")).read() == "0\n"
    assert b"(interrupted)" in err


def test_no_node_left_lists_undone_jobs_and_exits_4(classh):
    r = classh("--connect-timeout", "2", "--node", "refused", "--node", "silent",
               "--job", "echo 1", "--job", "echo 2")
    assert r.rc == 4, r
    assert "classh: undone: job-1: echo 1\n" in r.err and "classh: undone: job-2: echo 2\n" in r.err
    assert "2 undone" in r.err.splitlines()[-1]


def test_timed_out_job_exits_3(classh):
    r = classh("-q", "-t", "1", "--retries", "1", "--node", "node1", "--job", "sleep 30",
               "--job", "false")
    assert r.rc == 3, r


def test_job_file_through_a_pipe_starts_jobs_as_lines_arrive(fleet, tmp_path):
    stamp = str(tmp_path / "stamp")
    producer = subprocess.Popen(
        ["sh", "-c", "echo 'echo one'; sleep 2; date +%%s.%%N > %s; echo 'echo two'" % stamp],
        stdout=subprocess.PIPE)
    try:
        proc = subprocess.run([sys.executable, CLASSH, "--format", "json", "--node", "node1",
                               "--job-file", "-"], stdin=producer.stdout, capture_output=True,
                              env=base_env({"CLASSH_SSH": fleet.ssh_command}), timeout=60)
    finally:
        producer.stdout.close()
        producer.wait()
    assert proc.returncode == 0, proc
    records = {d["job"]: d for d in map(json.loads, proc.stdout.decode().splitlines())}
    assert records[1]["stdout"] == "one\n" and records[2]["stdout"] == "two\n"
    assert records[1]["stopped"] < float(open(stamp).read())  # ran before the pipe's 2nd line


def test_closed_stdout_refuses_the_job_display(fleet):
    proc = subprocess.run([sys.executable, CLASSH, "--node", "node1", "--job", "true"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=base_env({"CLASSH_SSH": fleet.ssh_command}), timeout=60,
                          preexec_fn=lambda: os.close(1))
    assert proc.returncode == 2 and b"stdout is closed" in proc.stderr


def test_status_line_shows_on_a_terminal(fleet):
    import pty
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, CLASSH, "-q", "--status", "--node", "node1*2",
                                 "--job", "sleep 1.5", "--job", "sleep 1.5", "--job", "true"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                                env=base_env({"CLASSH_SSH": fleet.ssh_command}))
        os.close(slave)
        slave = -1
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer closed it
                break
            if not chunk:
                break
            seen += chunk
        proc.wait(timeout=60)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert "\r\x1b[K" in text and " of 3 jobs complete, " in text, text
    assert "nodes running jobs" in text and "ETA" in text


def test_a_job_pipe_that_brings_no_job_is_an_error(classh):
    r = classh("--node", "node1", "--job-file", "-", input=b"# only a comment\n\n")
    assert r.rc == 2, r
    assert "no job to run" in r.err and r.out == ""


def test_everything_done_before_runs_nothing_and_exits_0(classh, tmp_path):
    results = str(tmp_path / "r")
    assert classh("-q", "-o", results, "--node", "node1", "--job", "echo a").rc == 0
    r = classh("-q", "-o", results, "--resume", "--node", "node1", "--job", "echo a")
    assert r.rc == 0, r
    assert "0 jobs in" in r.err and "1 skipped: done before" in r.err


def test_resume_with_streamed_jobs_never_gives_two_jobs_one_number(classh, tmp_path):
    results = tmp_path / "r"
    first = classh("-o", str(results), "-q", "--node", "node1", "--job", "echo A")
    assert first.rc == 0, first
    second = classh("-o", str(results), "--resume", "-q", "--node", "node1", "--job", "echo A",
                    "--job", "echo B", "--job-file", "-", input=b"echo C\necho A\necho D\n")
    assert second.rc == 0, second
    # Numbers follow the input order, skipped jobs included: A 1, B 2, C 3, A 4, D 5; only
    # job 1 was done before (a job is its number and its text: the A of job 4 runs).
    assert (results / "job-1.out").read_text() == "A\n"
    assert (results / "job-2.out").read_text() == "B\n"
    assert (results / "job-3.out").read_text() == "C\n"
    assert (results / "job-4.out").read_text() == "A\n"
    assert (results / "job-5.out").read_text() == "D\n"
    assert "1 skipped" in second.err



@pytest.mark.parametrize("argv,word", [
    (["--input", "f", "--task", "wc -l"], "--input"),
    (["--on-each-node", "true"], "--on-each-node"),
    (["--job", "true"], "--job"),
    (["--job-file", "jobs.txt"], "--job-file"),
])
def test_job_work_without_nodes_says_nodes_are_needed(argv, word):
    r = run_classh(argv)
    assert r.rc == 2, r
    assert r.err == "classh: %s: job mode needs nodes: give --node, --node-file or --machines" \
        " (see classh --help)\n" % word


def test_blocks_with_no_node_left_say_what_was_not_run_in_one_account(classh, tmp_path):
    data = tmp_path / "in"
    data.write_text("1\n2\n3\n")
    r = classh("--node", "refused", "--input", str(data), "--task", "wc -l")
    assert r.rc == 4, r
    assert "0 jobs not run" not in r.err
    lines = [line for line in r.err.splitlines() if "no node left" in line]
    assert len(lines) == 1 and lines[0].endswith(" not run"), r.err


def test_the_plan_of_a_streamed_job_file_says_jobs_are_read_as_they_arrive(classh):
    r = classh("--node", "node1", "--job-file", "-", input=b"echo a\n")
    assert r.rc == 0, r
    assert "classh: jobs: streamed (read as they arrive)" in r.err.splitlines()


def test_a_retried_job_goes_to_a_node_it_has_not_failed_on(classh, tmp_path):
    # clstr's promise: a failed job is retried on other nodes.
    results = str(tmp_path / "r")
    r = classh("-q", "-o", results, "--node", "node1", "--node", "node2", "--retries", "3",
               "--job", 'echo "{host}"; [ "{host}" != node1 ]',
               "--job", 'echo "{host}"; [ "{host}" != node2 ]')
    assert r.rc == 0, r
    lines = [json.loads(line) for line in open(os.path.join(results, "summary.jsonl"))]
    for data in lines:
        assert data["status"] == "ok" and data["attempts"] <= 2, data
        assert data["attempt_nodes"][-1] == data["node"]
        assert len(set(data["attempt_nodes"])) == len(data["attempt_nodes"]), data  # no node twice


def test_a_retried_job_runs_again_where_it_failed_when_no_other_node_is_left(classh, tmp_path):
    results = str(tmp_path / "r")
    r = classh("-q", "-o", results, "--node", "node1", "--retries", "3", "--job", "exit 3")
    assert r.rc == 5, r
    data = json.loads(open(os.path.join(results, "summary.jsonl")).read())
    assert data["attempt_nodes"] == ["node1"] * 3
