"""Held output in bounded memory (classh.spool): small spools stay in memory, the rest goes
to one temporary file and comes back byte-exact, in pieces."""
import os

import pytest

from classh.observers import SinkError
from classh.spool import Spill


def test_small_output_stays_in_memory_and_comes_back_whole():
    spill = Spill(budget=1 << 20)
    spool = spill.spool()
    for chunk in (b"a\n", b"", b"\x00\xff", b"end"):
        spool.write(chunk)
    assert spool.value() == b"a\n\x00\xffend" and spool.size == 7 and spool.last == b"d"
    assert spill.on_disk == 0 and spill._fd < 0
    spool.release()
    assert spill.in_memory == 0 and spool.size == 0 and spool.value() == b""


def test_past_the_budget_bytes_go_to_one_file_and_come_back_in_pieces(tmp_path):
    spill = Spill(budget=1000, directory=str(tmp_path))
    first, second = spill.spool(), spill.spool()
    expected = {id(first): [], id(second): []}
    for number in range(200):
        for spool in (first, second):
            data = os.urandom(97) + b"%d\n" % number
            spool.write(data)
            expected[id(spool)].append(data)
    assert spill.in_memory <= 1000 and spill.on_disk > 30000
    pieces = list(first.pieces(size=4096))
    assert b"".join(pieces) == b"".join(expected[id(first)])
    assert max(len(piece) for piece in pieces) <= 4096
    assert second.value() == b"".join(expected[id(second)])
    assert os.listdir(str(tmp_path)) == []  # the file has no name
    first.release()
    assert os.fstat(spill._fd).st_size > 0  # second still holds bytes there
    second.release()
    assert spill.on_disk == 0 and os.fstat(spill._fd).st_size == 0  # emptied
    spill.close()


def test_a_file_that_cannot_be_written_is_a_sink_error(tmp_path):
    spill = Spill(budget=0, directory=str(tmp_path / "missing"))
    with pytest.raises(SinkError, match="temporary file in .*missing"):
        spill.spool().write(b"x")


# -- a JSON line made in pieces ------------------------------------------------------
from classh.results import Record, json_line, json_line_pieces  # noqa: E402

OUTPUTS = [b"", b"hi\n", "caf\u00e9 \u20ac \U0001f600 \"q\" \\ \t\x00\x1f\n".encode() * 50,
           b"\xff\xfe not utf-8", bytes(range(256)) * 10, b"ab", b"abcd"]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 4096])
def test_json_made_in_pieces_is_json_line_byte_for_byte(size):
    def pieces_of(data):
        return lambda: (data[at:at + size] for at in range(0, len(data), size))
    for out in OUTPUTS:
        for err in (b"", b"\xc3", "\u00e9rr\n".encode()):
            record = Record(host="job-3", exitcode=0, job=3, node="n1", command="c \udcff",
                            stdout=out, stderr=err, stdout_size=len(out), stderr_size=len(err),
                            started=1.5, stopped=2.25)
            made = b"".join(json_line_pieces(record, pieces_of(out), pieces_of(err)))
            assert made == json_line(record)


# -- the displays that hold output -----------------------------------------------------
from conftest import Sink  # noqa: E402

from classh.display import LinesDisplay  # noqa: E402
from classh.jobviews import JobOutput  # noqa: E402



class Task:
    def __init__(self, key, node="n1"):
        self.key = key
        self.context = (None, node)


def job(number, **kw):
    values = dict(host="job-%d" % number, job=number, node="n1", command="c", exitcode=0)
    values.update(kw)
    return Record(**values)


def test_job_lines_are_written_as_they_arrive_each_line_whole():
    out, err = Sink(), Sink()
    display = JobOutput(out.stream, err.stream, fmt="lines", spill=Spill(budget=100))
    a, b = Task("job-1", "n1"), Task("job-2", "n2")
    display.started(a)
    display.started(b)
    display.output(a, 1, b"one\ntw")
    assert out.data == b"job-1 n1: one\n"  # live: before the job ends
    display.output(b, 1, b"x" * 500)  # a long unfinished line: past the budget, on disk
    display.output(a, 1, b"o\n")
    display.output(b, 1, b"y\nz")
    display.output(a, 2, b"warn\n")
    assert out.data == b"job-1 n1: one\njob-1 n1: two\njob-2 n2: " + b"x" * 500 + b"y\n"
    display.finished(b, job(2, node="n2", exitcode=3))
    display.finished(a, job(1))
    display.close()
    assert out.data.endswith(b"job-2 n2: z\n")
    assert err.data == b"job-1 n1: warn\nclassh: job-2 on n2: exit 3: c\n"


def test_held_jobs_spilled_to_disk_come_back_exact_in_order_and_json():
    out, err = Sink(), Sink()
    display = JobOutput(out.stream, err.stream, keep_order=True, spill=Spill(budget=1000))
    big = bytes(range(256)) * 40  # 10 KB, not UTF-8
    for number in (3, 2):
        task = Task("job-%d" % number)
        for at in range(0, len(big), 999):
            display.output(task, 1, big[at:at + 999])
        display.output(task, 1, b"end %d" % number)  # no newline: one is added
        display.finished(task, job(number))
    assert out.data == b"" and display.spill.on_disk > 0
    task = Task("job-1")
    display.output(task, 1, b"first\n")
    display.finished(task, job(1))
    assert out.data == b"first\n" + big + b"end 2\n" + big + b"end 3\n"
    assert display.spill.on_disk == 0
    display.close()
    out = Sink()
    display = JobOutput(out.stream, Sink().stream, fmt="json", spill=Spill(budget=1000))
    task = Task("job-4")
    for at in range(0, len(big), 999):
        display.output(task, 1, big[at:at + 999])
    display.finished(task, job(4))
    display.close()
    assert out.data == json_line(job(4, stdout=big, stdout_size=len(big)))


def test_host_lines_hold_a_long_line_on_disk_and_write_it_whole():
    out, err = Sink(), Sink()
    display = LinesDisplay(out.stream, err.stream, spill=Spill(budget=64))
    task = Task("h1")
    for _ in range(100):
        display.output(task, 1, b"a" * 100)
    display.output(Task("h2"), 1, b"other\n")
    display.output(task, 1, b"\nnext\nlast")
    display.finished(task, Record(host="h1", exitcode=0))
    display.close()
    assert out.data == b"h2: other\nh1: " + b"a" * 10000 + b"\nh1: next\nh1: last\n"


def test_job_lines_in_job_order_come_from_the_spool_prefixed_like_live_ones():
    from classh.display import _indent
    out, err = Sink(), Sink()
    display = JobOutput(out.stream, err.stream, fmt="lines", keep_order=True,
                        spill=Spill(budget=200))
    data = b"a\n\nb" + b"c" * 300 + b"\nd\n" + b"e"
    for number in (2, 1):
        task = Task("job-%d" % number, "n%d" % number)
        for at in range(0, len(data), 7):
            display.output(task, 1, data[at:at + 7])
        display.finished(task, job(number, node="n%d" % number))
    display.close()
    assert out.data == _indent(data, b"job-1 n1: ") + _indent(data, b"job-2 n2: ")
