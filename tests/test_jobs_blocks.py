"""Blocks (--input FILE... --task CMD): input cut into blocks, each the stdin of one task.

End to end against the real loopback sshd (``fleet``); the 'remote' side is
this machine, so tasks can leave marks the test reads.
"""
import json
import signal
import os
import subprocess
import sys
import time

import pytest

from conftest import CLASSH, base_env
from leftovers import leftovers, running_on_target, signal_when_running, with_marker

SUM = "awk '{s+=$1} END {print s+0}'"


def sums(lines, size):
    return [sum(lines[i:i + size]) for i in range(0, len(lines), size)]


def test_a_thousand_lines_in_blocks_of_37_come_back_in_order_with_k(classh):
    seq = "".join("%d\n" % i for i in range(1, 1001)).encode()
    r = classh("--node", "node[1-3]*2", "--input", "-", "--blocksize", "37", "-k", "--task", SUM,
               input=seq)
    assert r.rc == 0, r
    assert [int(x) for x in r.out.split()] == sums(list(range(1, 1001)), 37)
    assert "28 jobs in" in r.err and "28 ok" in r.err


def test_without_k_every_block_comes_back_once_whole(classh, tmp_path):
    path = tmp_path / "in"
    path.write_bytes(b"".join(b"%d\n" % i for i in range(200)))
    r = classh("--node", "node[1-4]*3", "--input", str(path), "--blocksize", "10", "--task", "cat")
    assert r.rc == 0, r
    assert sorted(r.out.splitlines(), key=int) == [str(i) for i in range(200)]


def test_several_files_are_one_block_each(classh, tmp_path):
    paths = []
    for name, text in (("a", "x\ny\n"), ("b", ""), ("c", "one line no newline"), ("d", "z\n" * 50)):
        path = tmp_path / name
        path.write_text(text)
        paths += ["--input", str(path)]
    r = classh("--node", "node[1-2]*2", "-k", "--blocksize", "1", "--task", "wc -l", *paths)
    assert r.rc == 0, r
    assert [int(x) for x in r.out.split()] == [2, 0, 0, 50]


def test_stdin_blocks_start_before_the_producer_ends(fleet):
    producer = subprocess.Popen(["sh", "-c", "echo 1; echo 2; sleep 4; echo 3"],
                                stdout=subprocess.PIPE)
    proc = subprocess.Popen([sys.executable, CLASSH, "--node", "node1*2", "--input", "-",
                             "--task", "cat"], stdin=producer.stdout, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env=base_env({"CLASSH_SSH": fleet.ssh_command}))
    producer.stdout.close()
    try:
        started = time.monotonic()
        first = proc.stdout.readline()
        first_at = time.monotonic() - started
        out, err = proc.communicate(timeout=60)
    finally:
        for p in (proc, producer):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert first in (b"1\n", b"2\n")
    assert first_at < 3.0 and producer.returncode == 0
    assert sorted((first + out).split()) == [b"1", b"2", b"3"]
    assert proc.returncode == 0, err


def test_a_line_over_a_megabyte_stays_whole(classh, tmp_path):
    big = b"x" * (3 << 20)
    path = tmp_path / "in"
    path.write_bytes(b"short\n" + big + b"\nlast")
    r = classh("--node", "node[1-2]", "--input", str(path), "-k", "--task", "wc -c")
    assert r.rc == 0, r
    assert [int(x) for x in r.out.split()] == [6, len(big) + 1, 4]


def test_binary_input_passes_byte_exact(fleet, tmp_path):
    data = bytes(range(256)) * 40 + b"\xff\xfe\x00tail"
    proc = subprocess.run([sys.executable, CLASSH, "--node", "node[1-3]*2", "--input", "-",
                           "--blocksize", "3", "-k", "--task", "cat"], input=data,
                          capture_output=True, env=base_env({"CLASSH_SSH": fleet.ssh_command}),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data


def test_task_success_code_says_which_exit_is_success(classh, tmp_path):
    path = tmp_path / "in"
    path.write_text("1\n2\n")
    ok = classh("--node", "node1", "--input", str(path), "--task", "cat; exit 3",
                "--task-success-code", "3")
    assert ok.rc == 0 and "2 ok" in ok.err, ok
    bad = classh("--node", "node1", "--input", str(path), "--task", "cat",
                 "--task-success-code", "3", "--retries", "1")
    assert bad.rc == 5 and "2 failed" in bad.err, bad


def test_resume_reruns_only_the_blocks_that_failed(classh, tmp_path, remote_dir):
    path = tmp_path / "in"
    path.write_text("1\n2\n3\n4\n")
    results = str(tmp_path / "r")
    ok = os.path.join(remote_dir, "ok")
    task = 'read x; test "$x" != 3 || test -e %s || exit 1; echo "$x"' % ok
    first = classh("--node", "node[1-2]", "--input", str(path), "--task", task, "-o", results,
                   "--retries", "1")
    assert first.rc == 5, first
    open(ok, "w").close()
    again = classh("--node", "node[1-2]", "--input", str(path), "--task", task, "-o", results,
                   "--resume")
    assert again.rc == 0, again
    assert "those done before in" in again.err and "3 skipped: done before" in again.err
    with open(os.path.join(results, "summary.jsonl")) as fh:
        records = [json.loads(line) for line in fh]
    assert [r["job"] for r in records[4:]] == [3]
    assert records[4]["block"].startswith("block-3:")
    with open(os.path.join(results, "job-3.out")) as fh:
        assert fh.read() == "3\n"


def test_a_killed_run_leaves_no_block_task_on_the_target(fleet, tmp_path, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    path = tmp_path / "in"
    path.write_text("a\nb\nc\nd\n")
    rc = signal_when_running(fleet.ssh_command, ["--node", "node[1-2]*2", "--input", str(path),
                                                 "--task", "cat >/dev/null; " + command], mark, 4)
    assert rc == 143
    assert leftovers(mark) == []


def test_a_timed_out_block_task_is_ended_on_the_target_while_the_run_goes_on(fleet, tmp_path,
                                                                           sweep):
    """Through the node's shared connection the watchdog sees no end of its input: the
    task is ended by its tag, at once, not when the run closes the connection."""
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    path = tmp_path / "in"
    path.write_text("slow\n" + "fast\n" * 12)
    task = 'read x; test "$x" = fast && sleep 0.8 || %s; echo "$x"' % command
    proc = subprocess.Popen([sys.executable, CLASSH, "--node", "node1*2", "--input", str(path),
                             "--task", task, "-t", "2", "--retries", "1"],
                            env=base_env({"CLASSH_SSH": fleet.ssh_command}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        running_on_target(mark, 1)
        time.sleep(2.2)  # the timeout fired
        left = leftovers(mark)
        still_running = proc.poll() is None
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert still_running, "the run ended too soon to tell"
    assert left == []
    assert proc.returncode == 3, err
    assert out.count(b"fast") == 12


@pytest.mark.parametrize("args,message", [
    (["--input", "/nonexistent/in", "--task", "cat"], "/nonexistent/in"),
    (["--task", "cat", "--job", "true"], "--task goes with --input FILE"),
    (["--input", "-"], "--input needs --task CMD"),
    (["--input", "-", "--task", "cat", "--job", "true"], "cannot be used with --job"),
    (["--input", "-", "--task", "cat", "--blocksize", "0"], "--blocksize must be at least 1"),
    (["--input", "-", "--task", "cat", "--blocksize", "inf"], "--blocksize must be a whole number"),
    (["--input", "-", "--task", "cat", "--task-success-code", "256"],
     "--task-success-code must be at most 255"),
    (["--input", "-", "--input", "-", "--task", "cat"], "'-'"),
])
def test_bad_block_input_is_one_line_exit_2(classh, args, message):
    r = classh("--node", "node1", *args, input=b"")
    assert r.rc == 2 and message in r.err and r.err.count("\n") == 1, r


def test_an_empty_input_is_no_job_exit_2(classh):
    r = classh("--node", "node1", "--input", "-", "--task", "cat", input=b"")
    assert r.rc == 2, r
    assert "no job to run (the input holds no block)" in r.err


def test_blocks_held_at_once_are_bounded_in_bytes_whatever_the_slots(tmp_path, monkeypatch):
    """Stand-in ssh, 8 slots, blocks of 100 kB, the bound lowered to 250 kB: no more than
    three blocks are ever taken and not done with (so at most three run at once)."""
    import classh.jobs  # noqa: F401 - the module, not the classh.jobs() function
    from classh.blocks import BlockInput
    from classh.options import Options
    from classh.run import Run
    from conftest import STANDIN

    jobs_module = sys.modules["classh.jobs"]
    monkeypatch.setattr(jobs_module, "MAX_BLOCK_BYTES", 250_000)
    path = tmp_path / "in"
    path.write_bytes((b"x" * 999 + b"\n") * 1000)  # 10 blocks of 100 lines = 100 kB
    options = Options(ssh=STANDIN)
    source = jobs_module.JobSource(jobs_module.parse_nodes(["a*8"]), [], options,
                                   jobs_module.JobOptions(reuse=False),
                                   blocks=BlockInput([str(path)], size=100),
                                   task="cat >/dev/null; sleep 0.3")
    most = []

    class Watch:
        def started(self, task):
            most.append(source._block_bytes)

    from classh.observers import Observer

    class Seen(Watch, Observer):
        pass

    summary = Run(source, options, [Seen()], keep=0, fanout=source.fanout()).run()
    source.close()
    assert summary.tally.total == 10 and not summary.undone
    assert max(most) <= 300_000 and len(most) == 10


def test_sighup_drains_a_block_run_and_says_where_the_input_stopped(fleet):
    """A drain stops reading the input: running blocks finish, the unread rest is named
    (exit 4), nothing hangs on the producer."""
    from test_jobs_control import default_signals

    producer = subprocess.Popen(["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; "
                                 "done"], stdout=subprocess.PIPE)
    proc = subprocess.Popen([sys.executable, CLASSH, "--node", "node1*2", "--input", "-",
                             "--task", "cat; sleep 0.2"], stdin=producer.stdout,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=base_env({"CLASSH_SSH": fleet.ssh_command}),
                            preexec_fn=default_signals)
    producer.stdout.close()
    try:
        first = proc.stdout.readline()
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
    finally:
        for p in (proc, producer):
            if p.poll() is None:
                p.kill()
                p.wait()
    err = err.decode()
    assert first and proc.returncode == 4, err
    assert "draining" in err and "undone: the input past block" in err
    done = [int(x) for x in (first + out).split()]
    assert done and sorted(done) == list(range(1, len(done) + 1))  # no block lost in between


def test_kssh_input_with_several_files_after_one_input_is_one_block_each(classh, tmp_path):
    files = []
    for name, lines in (("f1", 3), ("f2", 5), ("f3", 7)):
        (tmp_path / name).write_text("x\n" * lines)
        files.append(str(tmp_path / name))
    r = classh("--node", "node1", "--task", "wc -l", "-k", "--input", *files)
    assert r.rc == 0, r
    assert r.out.split() == ["3", "5", "7"]
    bad = classh("--node", "node1", "--task", "wc -l", "--input", files[0], "/nonexistent/f")
    assert bad.rc == 2 and "/nonexistent/f" in bad.err, bad
