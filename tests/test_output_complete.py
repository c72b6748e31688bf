"""Every record's output is complete or says it is not: job mode through ControlMasters and
host mode, beside CPU hogs, against the real loopback sshd (issue 15, item 1)."""
import json
import os
import signal
import subprocess
import sys

import pytest

JOB = "sleep 1; head -c 100000 /dev/zero | tr '\\0' a; echo; echo J-%d"


@pytest.fixture
def cpu_hogs():
    """Two busy loops beside the test (as many as this machine's cores), stopped by pid."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(max(2, os.cpu_count() or 2))]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.send_signal(signal.SIGKILL)
            hog.wait()


def summary(out):
    """summary.jsonl of results directory ``out``, as dicts."""
    with open(os.path.join(out, "summary.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def complete(text, number):
    """True when ``text`` is the whole output of job ``number`` of JOB."""
    return text == "a" * 100000 + "\nJ-%d\n" % number


def test_job_outputs_are_complete_under_cpu_load(classh, tmp_path, cpu_hogs):
    jobs = tmp_path / "jobs"
    jobs.write_text("".join(JOB % i + "\n" for i in range(1, 301)))
    out = str(tmp_path / "out")
    r = classh("--node", "node[1-5]*60", "-o", out, "--job-file", str(jobs), "-q",
               "--stall-factor", "0", timeout=240)
    records = summary(out)
    assert len(records) == 300, r
    for rec in records:
        with open(os.path.join(out, "job-%d.out" % rec["job"])) as fh:
            text = fh.read()
        if rec["status"] == "ok":
            assert complete(text, rec["job"]), (rec, len(text))
        else:  # never a silent cut: the record names what went wrong
            assert rec.get("error"), rec
    oks = sum(rec["status"] == "ok" for rec in records)
    assert r.rc == (0 if oks == 300 else r.rc) and (r.rc == 0) == (oks == 300), r
