"""Small ones of issue 15 (item 9): the status line cleared before other stderr lines, ssh's
mux notes kept out of a job's stderr, exit 4 only with work undone, joblog Send and Signal,
a silent node that does not hold a finished run, absurd numbers refused, a block's -t,
'1 line each'."""
import io
import signal

import pytest

from conftest import run_classh
from classh.display import SafeStream, StatusLine
from classh.gpus import GpuRule, assess, parse_probe
from classh.jobs import JobOptions
from classh.jobviews import job_plan, joblog_row
from classh.muxnotes import MuxNotes
from classh.options import OptionError
from classh.results import Record


def _one_line_error(r, *words):
    assert r.rc == 2, r
    lines = r.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("classh: "), r
    for word in words:
        assert word in lines[0], (word, r)


# -- (h) the plan's grammar ---------------------------------------------------------------

class _Blocks:
    def __init__(self, size):
        self.size, self.paths = size, ["in"]


@pytest.mark.parametrize("size,words", [(1, "blocks: 1 line each from in"),
                                        (2, "blocks: 2 lines each from in")])
def test_the_plan_says_1_line_each(size, words):
    assert words in job_plan("abcd", 0, True, 1, 1, blocks=_Blocks(size))


# -- (f) absurd numbers ----------------------------------------------------------------------

@pytest.mark.parametrize("argv,words", [
    (["--job", "true", "--stall-factor", "-1"], ["stall-factor", "'-1'"]),
    (["--job", "true", "--stall-min", "-1"], ["stall-min", "'-1'"]),
    (["--input", "/dev/null", "--task", "cat", "--blocksize", "99999999999999999999"],
     ["--blocksize", "99999999999999999999"]),
])
def test_absurd_numbers_are_one_line_exit_2(standin, argv, words):
    r = standin("--node", "node1", *argv)
    _one_line_error(r, *words)


def test_negative_stall_settings_are_refused_by_the_api():
    for name in ("stall_factor", "stall_min"):
        with pytest.raises(OptionError, match="0 or more"):
            JobOptions(**{name: -0.5})
    assert JobOptions(stall_factor=0, stall_min=0).stall_factor == 0  # 0: no watch, blocks too


def _probe(lines):
    return (lines + "classh:compute-apps\n").encode()


def test_an_absurd_gpu_index_is_no_gpu():
    report = parse_probe(0, _probe("99999999999999999999, GPU-a, 100, 50, Disabled, X\n"))
    assert report.gpus == [] and "99999999999999999999" in report.error


def test_negative_free_memory_gets_no_slot_for_good():
    gpu = parse_probe(0, _probe("0, GPU-a, 81559, -5, Disabled, X\n")).gpus[0]
    assert assess(gpu, GpuRule(min_mib=100)) == (0, "free memory -5 MiB: not a real figure", False)


# -- (d) joblog Send and Signal ---------------------------------------------------------------

def _joblog_rows(path):
    return [line.split("\t") for line in open(path).read().splitlines()[1:]]


def test_joblog_send_is_the_blocks_bytes_and_signal_a_timed_out_jobs(classh, tmp_path):
    (tmp_path / "in").write_bytes(b"a\nbb\nccc\n")
    log = str(tmp_path / "blocks.log")
    r = classh("-q", "--node", "node1", "--input", str(tmp_path / "in"), "--blocksize", "2",
               "--task", "cat", "--joblog", log)
    assert r.rc == 0, r
    assert sorted((row[0], row[4], row[5]) for row in _joblog_rows(log)) == [
        ("1", "5", "5"), ("2", "4", "4")]
    log = str(tmp_path / "timeout.log")
    r = classh("-q", "--retries", "1", "-t", "1", "--node", "node1", "--job", "sleep 30",
               "--joblog", log)
    assert r.rc == 3, r
    [row] = _joblog_rows(log)
    assert (row[4], row[6], row[7]) == ("0", "-1", str(int(signal.SIGTERM))), row


def test_joblog_signal_of_a_killed_job_without_one_known():
    record = Record(host="job-1", job=1, node="n1", command="x", interrupted=True,
                    exitcode=255, started=1.0, stopped=2.0)
    assert joblog_row(record).split(b"\t")[7] == b"15"
    record.extra["sent"] = 7
    assert joblog_row(record).split(b"\t")[4] == b"7"


# -- (a) the status line ------------------------------------------------------------------------

def test_the_status_line_is_erased_before_any_other_stderr_line():
    raw = io.BytesIO()
    err = SafeStream(raw, "err")
    line = StatusLine(err, 10, enabled=True)
    line.show()
    err.write(b"classh: paused\n")
    err.write(b"classh: resumed\n")
    line.show()
    line.close()
    shown = b"\r\033[K" + line.text().encode()
    assert raw.getvalue() == (shown + b"\r\033[Kclassh: paused\nclassh: resumed\n" + shown
                              + b"\r\033[K")


# -- (c) exit 4 only with work undone ----------------------------------------------------------

def test_a_node_retired_after_the_last_block_leaves_nothing_undone(classh, tmp_path):
    (tmp_path / "in").write_text("a\nb\n")
    r = classh("--node", "node1", "--input", str(tmp_path / "in"), "--task", "cat",
               "--max-node-uses", "2")
    assert r.rc == 0, r
    assert "undone" not in r.err and "no node left" not in r.err, r
    assert sorted(r.out.split()) == ["a", "b"]


def test_a_block_no_node_could_take_is_still_undone(classh, tmp_path):
    (tmp_path / "in").write_text("a\nb\nc\n")
    r = classh("--node", "node1", "--input", str(tmp_path / "in"), "--task", "cat",
               "--max-node-uses", "2")
    assert r.rc == 4, r
    assert "undone: job-3" in r.err, r


# -- (e) a silent node does not hold a finished run ---------------------------------------------

def test_a_silent_node_does_not_hold_a_finished_run(classh):
    r = classh("--connect-timeout", "20", "--node", "node1", "--node", "silent",
               "--job", "echo done")
    assert r.rc == 0, r
    assert r.out == "done\n"
    assert "silent" not in r.err, r  # its probe was ended unjudged
    assert r.elapsed < 12, r.elapsed  # not the 20 s of the connect timeout


def test_a_job_pinned_to_a_silent_node_still_waits_for_its_probe(classh):
    r = classh("--connect-timeout", "2", "--node", "node1", "--node", "silent",
               "--on-each-node", "echo done")
    assert r.rc == 4, r
    assert r.out == "done\n" and "node silent dropped: probe failed" in r.err, r


# -- (g) -t on a block through a shared connection ------------------------------------------------

def test_a_timed_out_block_ends_near_its_timeout(classh, tmp_path):
    (tmp_path / "in").write_text("a\n")
    r = classh("-q", "--retries", "1", "-t", "2", "--node", "node1",
               "--input", str(tmp_path / "in"), "--task", "sleep 30")
    assert r.rc == 3, r
    seconds = float(r.err.splitlines()[-1].split(" in ")[1].split(" s")[0])
    assert seconds < 4, r  # 5.4 s before: the pipes' linger, then the kill by tag


# -- (b) ssh's notes on its master are not the job's stderr ----------------------------------------

REFUSED = b"mux_client_request_session: session request failed: Session open refused by peer\n"
HELLO = b"muxclient: master hello exchange failed\n"
EXISTS = b"ControlSocket /tmp/x/u@n:22 already exists, disabling multiplexing\n"


def test_mux_notes_are_taken_off_the_start_of_stderr_only():
    notes = MuxNotes()
    assert notes.feed(REFUSED + HELLO) == b""
    assert notes.feed(EXISTS + b"job says\n" + HELLO) == b"job says\n" + HELLO
    assert notes.feed(REFUSED) == REFUSED  # the job's output began: nothing more is looked at
    assert notes.notes == REFUSED + HELLO + EXISTS
    assert MuxNotes().feed(b"mux_client_req") == b"mux_client_req"  # nothing is held back
    assert MuxNotes().feed(b"oops\n" + HELLO) == b"oops\n" + HELLO


def test_mux_notes_reach_no_display_nor_file(fleet, tmp_path):
    wrapper = tmp_path / "ssh"
    wrapper.write_text("#!/bin/sh\nprintf '%%s' '%s' >&2\nexec %s \"$@\"\n"
                       % ((REFUSED + HELLO).decode(), fleet.ssh_command))
    wrapper.chmod(0o755)
    results = tmp_path / "r"
    r = run_classh(["--ssh", str(wrapper), "--node", "node1", "-o", str(results),
                    "--job", "echo out; echo err >&2"])
    assert r.rc == 0, r
    assert r.out == "out\n" and "mux" not in r.err and "err\n" in r.err, r
    assert (results / "job-1.err").read_bytes() == b"err\n"
    r = run_classh(["--ssh", str(wrapper), "--node", "node1", "--format", "lines",
                    "--job", "echo err >&2"])
    assert r.rc == 0 and "mux" not in r.err and "job-1 node1: err\n" in r.err, r
