"""Long job texts: a line too long for one argument (Linux's 128 KiB) is sent over stdin;
one that cannot start is the job's failure, never its node's; messages cut long texts.

Against the real loopback sshd, except the checks of the remote line itself.
"""
import subprocess

BIG = 200_000


def job_file(tmp_path, lines):
    path = tmp_path / "jobs"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_a_200_kb_job_runs_and_no_node_is_dropped(classh, tmp_path):
    big = "echo " + "x" * BIG
    r = classh("--node", "node[1-5]", "--job-file",
               job_file(tmp_path, [big] + ["echo small-%d" % i for i in range(1, 7)]), "-k")
    assert r.rc == 0, r.err[:2000]
    assert r.out.splitlines() == ["x" * BIG] + ["small-%d" % i for i in range(1, 7)]
    assert "dropped" not in r.err and len(r.err) < 2000, r.err[:2000]


def test_a_long_task_still_gets_its_block_on_stdin(classh, tmp_path):
    blocks = tmp_path / "in"
    blocks.write_text("a\nb\nc\n")
    task = 'read x; echo "got $x" # ' + "y" * 100_000
    r = classh("--node", "node[1-2]", "--input", str(blocks), "--task", task, "-k")
    assert r.rc == 0, r.err[:2000]
    assert r.out.splitlines() == ["got a", "got b", "got c"]


def test_a_job_that_cannot_start_fails_alone_and_keeps_its_node(classh, fleet, tmp_path):
    """ssh -n gives the target no stdin: the long line is tried as an argument (E2BIG)."""
    big = "echo " + "x" * BIG
    r = classh("--node", "node[1-3]", "--job-file",
               job_file(tmp_path, ["echo a", big, "echo b", "echo c"]), "-k",
               env={"CLASSH_SSH": fleet.ssh_command + " -n"})
    assert r.rc == 4, r.err[:2000]
    assert r.out.split() == ["a", "b", "c"]
    assert "dropped" not in r.err and len(r.err) < 2000, r.err[:2000]
    assert "job-2 on node" in r.err and "Argument list too long" in r.err
    assert "echo xxxx" in r.err and "... (%d bytes)" % (BIG + 5) in r.err
    assert "1 ssh error" in r.err and "retried" not in r.err


def test_host_mode_sends_a_long_command_over_stdin(classh):
    r = classh("echo " + "z" * 100_000 + "; cat", "node[1-3]", "--format", "lines")
    assert r.rc == 0, r.err[:2000]
    assert sorted(r.out.splitlines()) == ["node%d: %s" % (i, "z" * 100_000) for i in (1, 2, 3)]


def test_host_mode_refuses_a_long_command_it_cannot_send_in_one_line(classh):
    r = classh("--sudo", "echo " + "z" * 100_000, "node1")
    assert r.rc == 2 and r.err.count("\n") == 1, r.err[:2000]
    assert "COMMAND too long" in r.err and "echo zzz" in r.err and "(100005 bytes)" in r.err
    assert len(r.err) < 500


def test_a_short_command_stays_on_the_line_and_a_long_one_is_read_from_stdin():
    from classh.remote import MAX_LINE, remote_task
    line, first = remote_task("echo hi", True)
    assert first is None and "echo hi" in line
    command = "printf '%s\\n' 'it''s'\n" + "#" * MAX_LINE
    line, first = remote_task(command, False, tag="r.1")
    assert len(line) < 4000 and first == command.replace("\n", "\001").encode() + b"\n"
    done = subprocess.run(["sh", "-c", line], input=first + b"rest\n", capture_output=True)
    assert (done.returncode, done.stdout) == (0, b"its\n"), done
    cut_short = subprocess.run(["sh", "-c", line], input=first[:100], capture_output=True)
    assert cut_short.returncode == 1 and cut_short.stdout == b""  # nothing half-read runs
    assert b"did not arrive" in cut_short.stderr
