"""LineStreams: pipes read as lines arrive, through the event loop."""
import os
import time

from classh.loop import EventLoop
from classh.streams import LineStreams, is_pipe_or_device


def run_stream(chunks):
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    lines, batches = [], []
    streams = LineStreams({read_end: "jobs.txt"}, lambda line, where: lines.append((line, where)),
                          lambda: batches.append(len(lines)))
    with EventLoop() as loop:
        streams.attach(loop)
        for chunk in chunks:
            os.write(write_end, chunk)
            while True:  # read what is there now
                before = len(batches)
                loop.run_once(timeout=0)
                if len(batches) == before:
                    break
        os.close(write_end)
        while streams:
            loop.run_once(timeout=1)
    return lines, batches


def test_lines_split_across_reads_come_whole_and_the_last_one_needs_no_newline():
    lines, batches = run_stream([b"one\ntw", b"o\nthr", b"ee"])
    assert lines == [("one", "jobs.txt:1: "), ("two", "jobs.txt:2: "), ("three", "jobs.txt:3: ")]
    assert batches[0] == 1  # the first line was handed over before the rest was written


def test_a_long_line_in_many_pieces_costs_linear_time():
    piece = b"x" * 65536
    started = time.monotonic()
    lines, _ = run_stream([piece] * 512 + [b"\n"])  # 32 MiB on one line
    assert time.monotonic() - started < 20
    assert len(lines) == 1 and len(lines[0][0]) == 512 * 65536


def test_pipes_and_devices_stream_regular_files_do_not(tmp_path):
    read_end, write_end = os.pipe()
    try:
        assert is_pipe_or_device("/dev/fd/%d" % read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    (tmp_path / "hosts").write_text("node1\n")
    assert not is_pipe_or_device(str(tmp_path / "hosts"))
    assert not is_pipe_or_device(str(tmp_path / "missing"))


def test_a_paused_stream_is_not_read_until_resumed():
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    lines = []
    streams = LineStreams({read_end: "jobs"}, lambda line, where: lines.append(line))
    streams.pause()  # before attach: attach does not read
    with EventLoop() as loop:
        streams.attach(loop)
        os.write(write_end, b"a\nb\n")
        loop.run_once(timeout=0.1)
        assert lines == []
        streams.resume()
        loop.run_once(timeout=1)
        assert lines == ["a", "b"]
        streams.pause()
        os.write(write_end, b"c\n")
        loop.run_once(timeout=0.1)
        assert lines == ["a", "b"]
        streams.close()  # closing a paused stream is fine
    os.close(write_end)
