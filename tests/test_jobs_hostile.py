"""Job mode under hostile input and rude endings, against the real loopback sshd: the defects an
adversarial pass found, each pinned by a test (non-UTF-8 job text, probes cut short by a
signal, a user's notify callback that raises)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import classh
from conftest import CLASSH, base_env
from leftovers import leftovers, running_on_target, with_marker
from classh.results import Record, record_from_dict, record_to_dict, json_line
from classh.resume import JobsDone

BAD = "printf %s \udcff\udcfe | od -An -tx1"  # the bytes ff fe, as a command line carries them


def test_a_command_that_is_not_utf8_goes_to_json_and_back_unchanged():
    record = Record(host="job-1", exitcode=0, job=1, node="node1", command=BAD)
    line = json_line(record)
    data = json.loads(line)
    assert "\udcff" not in line.decode("utf-8")  # valid UTF-8 JSON, not raw bytes
    assert record_from_dict(data).command == BAD
    assert record_from_dict(record_to_dict(Record(host="job-2", job=2, command="ok"))).command == "ok"


def test_a_non_utf8_job_runs_with_its_bytes_and_is_saved_shown_and_resumed(classh, tmp_path):
    out = str(tmp_path / "out")
    first = classh("--node", "node1", "--job", BAD, "--format", "json", "-o", out)
    assert first.rc == 0, first
    shown = json.loads(first.out)
    assert record_from_dict(shown).stdout.split() == [b"ff", b"fe"]
    with open(os.path.join(out, "summary.jsonl"), "rb") as fh:
        assert record_from_dict(json.loads(fh.readline())).command == BAD
    assert JobsDone(out).done(1, BAD)
    again = classh("--node", "node1", "--job", BAD, "-o", out, "--resume")
    assert again.rc == 0 and "1 skipped: done before" in again.err, again


def test_a_job_file_keeps_bytes_that_are_not_utf8(classh, tmp_path):
    jobs = tmp_path / "jobs"
    jobs.write_bytes(b"printf %s \xff\xfe | od -An -tx1\r\n")
    result = classh("--node", "node1", "--job-file", str(jobs))
    assert result.rc == 0, result
    assert result.out.split() == ["ff", "fe"]


def test_probes_cut_short_by_sigterm_are_not_dropped_nodes(fleet, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    proc = subprocess.Popen([sys.executable, CLASSH, "--node", "node1", "--node", "silent",
                             "--job", command, "--connect-timeout", "30"],
                            env=base_env({"CLASSH_SSH": fleet.ssh_command}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        running_on_target(mark, 1)  # node1 runs the job, silent's probe still waits
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert b"dropped" not in err, err
    assert leftovers(mark) == []


def test_a_notify_that_raises_leaves_no_control_directory_behind(fleet):
    private = tempfile.mkdtemp(prefix="classh-hostile-")
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = private
    tempfile.tempdir = None  # mkdtemp reads TMPDIR again

    def notify(line):
        raise RuntimeError("the caller's callback broke on: " + line)

    try:
        try:
            classh.jobs(["node1", "refused"], ["sleep 3"], {"ssh": fleet.ssh_command,
                                                          "notify": notify})
        except RuntimeError as exc:
            assert "refused" in str(exc)
        else:
            raise AssertionError("notify's error was swallowed")
        left = os.listdir(private)
    finally:
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old
        tempfile.tempdir = None
        shutil.rmtree(private, ignore_errors=True)
    assert left == []
