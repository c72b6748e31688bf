"""Job-mode input cut into blocks (classh.blocks): the Cutter, files, pipes and backpressure."""
import hashlib
import os
import subprocess
import sys
import time

import pytest

from classh import blocks
from classh.blocks import Block, BlockError, BlockInput, Cutter, check_paths
from classh.loop import EventLoop
from classh.targets import TargetError


def cut_all(size, chunks):
    """Every block the Cutter makes of ``chunks``, the partial last one included."""
    cutter = Cutter(size)
    blocks = []
    for chunk in chunks:
        blocks.extend(cutter.feed(chunk))
    last = cutter.finish()
    if last is not None:
        blocks.append(last)
    return blocks


def chunked(data, size):
    return [data[at:at + size] for at in range(0, len(data), size)]


def take_all(inp, loop=None, limit=30.0):
    """Take blocks until the input is done, running ``loop`` while none is ready."""
    blocks = []
    deadline = time.monotonic() + limit
    while not inp.done:
        assert time.monotonic() < deadline, "the input never ended"
        block = inp.take()
        if block is not None:
            blocks.append(block)
        elif loop is not None:
            loop.run_once(timeout=1)
    return blocks


def rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


THOUSAND = b"".join(b"%d\n" % number for number in range(1, 1001))


# -- the Cutter -------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 7, 4096, len(THOUSAND)])
def test_a_thousand_lines_in_blocks_of_37_make_28_blocks_that_join_back(chunk):
    blocks = cut_all(37, chunked(THOUSAND, chunk))
    assert len(blocks) == 28
    assert b"".join(blocks) == THOUSAND
    assert [block.count(b"\n") for block in blocks] == [37] * 27 + [1000 - 27 * 37]
    assert all(block.endswith(b"\n") for block in blocks)


def test_a_last_line_without_newline_is_kept_as_it_is():
    assert cut_all(2, [b"a\nb\nc\nd"]) == [b"a\nb\n", b"c\nd"]
    assert cut_all(1, [b"a\n", b"b", b"c"]) == [b"a\n", b"bc"]


def test_an_empty_input_is_no_block_and_a_lone_newline_is_one():
    assert cut_all(5, []) == []
    assert cut_all(5, [b""]) == []
    assert cut_all(5, [b"\n"]) == [b"\n"]


def test_a_3_mb_line_fed_in_4_kib_chunks_stays_one_whole_line():
    line = b"y" * (3 * 1024 * 1024) + b"\n"
    data = b"before\n" + line + b"after\n"
    blocks = cut_all(1, chunked(data, 4096))
    assert blocks == [b"before\n", line, b"after\n"]


def test_feeding_64_mib_in_64_kib_chunks_costs_linear_time():
    chunk = (b"z" * 65535) + b"\n"  # a 64 KiB line per chunk, 1024 lines
    long_line = b"q" * 65536  # and one 64 MiB line with no newline till the end
    started = time.monotonic()
    cutter = Cutter(100)
    lengths = [len(block) for _ in range(1024) for block in cutter.feed(chunk)]
    for _ in range(1024):
        assert cutter.feed(long_line) == []
    last = cutter.finish()
    elapsed = time.monotonic() - started
    assert lengths == [100 * 65536] * 10
    assert len(last) == 24 * 65536 + 1024 * 65536 and last.count(b"\n") == 24
    assert elapsed < 10  # linear: well under a second here; re-joining per chunk took 18 s


def test_binary_data_with_nuls_and_invalid_utf8_passes_byte_exact():
    data = bytes(range(256)) * 64 + b"\xff\xfe\x00\n\x00\x00\xc3\x28\n" + b"\x80" * 5
    for size in (1, 3, 1000):
        assert b"".join(cut_all(size, chunked(data, 777))) == data
    assert cut_all(1, [b"\x00\xff\n\xc3\x28"]) == [b"\x00\xff\n", b"\xc3\x28"]


def test_the_cutter_refuses_a_size_below_one():
    for size in (0, -1, True):
        with pytest.raises(ValueError):
            Cutter(size)


# -- regular files ------------------------------------------------------------
def test_one_file_is_cut_lazily_into_blocks_with_index_source_and_identity(tmp_path):
    path = tmp_path / "numbers"
    path.write_bytes(THOUSAND)
    inp = BlockInput([str(path)], size=37)
    first = inp.take()
    assert first == Block(1, b"".join(b"%d\n" % n for n in range(1, 38)), str(path))
    rest = take_all(inp)
    assert [block.index for block in rest] == list(range(2, 29))
    assert first.data + b"".join(block.data for block in rest) == THOUSAND
    assert inp.done and inp.take() is None
    assert first.identity() == "block-1:" + hashlib.sha256(first.data).hexdigest()[:16]
    assert rest[0].identity() != first.identity()


def test_a_big_file_is_not_read_ahead_of_the_blocks_taken(tmp_path):
    path = tmp_path / "big"
    line = b"x" * 99 + b"\n"
    path.write_bytes(line * 200000)  # 20 MB
    inp = BlockInput([str(path)], size=10)
    assert inp.take().data == line * 10
    position = os.lseek(inp._current.fd, 0, os.SEEK_CUR)
    assert position <= 1024 * 1024  # one read, not the 20 MB
    assert len(take_all(inp)) == 19999


def test_four_files_are_four_blocks_in_order_whatever_the_size(tmp_path):
    paths = []
    for number, text in enumerate([b"one\ntwo\n", b"three", b"", b"\x00four\nfive\nsix\n"]):
        path = tmp_path / ("part%d" % number)
        path.write_bytes(text)
        paths.append(str(path))
    blocks = take_all(BlockInput(paths, size=1))
    assert [(block.index, block.data, block.source) for block in blocks] == [
        (1, b"one\ntwo\n", paths[0]), (2, b"three", paths[1]), (3, b"", paths[2]),
        (4, b"\x00four\nfive\nsix\n", paths[3])]


def test_an_empty_file_is_no_block_and_a_newline_file_is_one(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "newline").write_bytes(b"\n")
    assert take_all(BlockInput([str(tmp_path / "empty")], size=3)) == []
    assert take_all(BlockInput([str(tmp_path / "newline")], size=3)) == [
        Block(1, b"\n", str(tmp_path / "newline"))]


def test_attach_on_a_regular_file_calls_on_ready_and_close_ends_the_input(tmp_path):
    path = tmp_path / "numbers"
    path.write_bytes(THOUSAND)
    inp = BlockInput([str(path)], size=100)
    calls = []
    with EventLoop() as loop:
        inp.attach(loop, lambda: calls.append(inp.held()))
        loop.run_once(timeout=1)
        assert calls
        assert inp.take().index == 1
        inp.close()
    assert inp.done and inp.take() is None


# -- pipes ----------------------------------------------------------------
def test_a_slow_writer_on_stdin_gives_the_first_block_before_it_ends():
    """A writer prints two lines, then waits for us before the third: the first block
    (2 lines) must be handed over while it is still running."""
    data_read, data_write = os.pipe()
    go_read, go_write = os.pipe()
    writer = subprocess.Popen(["sh", "-c", 'printf "a\\nb\\n"; read go; printf "c\\n"'],
                              stdin=go_read, stdout=data_write)
    os.close(go_read)
    os.close(data_write)
    saved_stdin = os.dup(0)
    os.dup2(data_read, 0)
    os.close(data_read)
    try:
        inp = BlockInput(["-"], size=2, ahead=4)
        ready = []
        with EventLoop() as loop:
            inp.attach(loop, lambda: ready.append(inp.held()))
            deadline = time.monotonic() + 10
            while not ready or not ready[-1]:
                assert time.monotonic() < deadline
                loop.run_once(timeout=1)
            first = inp.take()
            assert first == Block(1, b"a\nb\n", "-")
            assert writer.poll() is None and not inp.ended  # the writer has not ended yet
            os.write(go_write, b"\n")
            rest = take_all(inp, loop)
        assert rest == [Block(2, b"c\n", "-")]
        assert writer.wait(timeout=10) == 0
        assert os.get_blocking(0)  # our non-blocking fd was our own, not fd 0's description
    finally:
        os.dup2(saved_stdin, 0)
        os.close(saved_stdin)
        os.close(go_write)
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_backpressure_holds_200_mb_in_the_pipe_and_every_byte_comes_through():
    """Nobody takes blocks while a writer pours 200 MB into the pipe: reading stops at
    `ahead` blocks (the writer stays blocked), memory stays flat; then all of it arrives."""
    line = b"x" * 99 + b"\n"
    writer_code = ("import sys\nchunk = b'x' * 99 + b'\\n'\nchunk *= 10000\n"
                   "for _ in range(200): sys.stdout.buffer.write(chunk)\n")
    read_end, write_end = os.pipe()
    writer = subprocess.Popen([sys.executable, "-c", writer_code], stdout=write_end)
    os.close(write_end)
    try:
        inp = BlockInput(["/dev/fd/%d" % read_end], size=1000, ahead=8)
        os.close(read_end)  # BlockInput opened its own fd on the pipe
        before = rss_bytes()
        with EventLoop() as loop:
            inp.attach(loop, lambda: None)
            for _ in range(40):  # far more than enough to read 200 MB if nothing stopped it
                loop.run_once(timeout=0.05)
            held_before_taking = inp.held()
            writer_blocked = writer.poll() is None
            grown = rss_bytes() - before
            digest = hashlib.sha256()
            count = total = most_held = 0
            expected = line * 1000
            deadline = time.monotonic() + 60
            while not inp.done:
                assert time.monotonic() < deadline
                block = inp.take()
                if block is None:
                    loop.run_once(timeout=1)
                    continue
                count += 1
                total += len(block.data)
                most_held = max(most_held, inp.held())
                assert block.index == count and block.data == expected
                digest.update(block.data)
            grown = max(grown, rss_bytes() - before)
        assert 8 <= held_before_taking <= 8 + 1  # a 64 KiB read holds < one 100 KB block
        assert writer_blocked
        assert most_held <= 9
        assert grown < 50 * 1024 * 1024
        assert count == 2000 and total == 200 * 1000 * 1000
        assert digest.hexdigest() == hashlib.sha256(line * 2000000).hexdigest()
        assert writer.wait(timeout=10) == 0
        assert inp.errors == []
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_big_blocks_stop_the_reading_at_the_byte_limit_before_ahead_blocks(monkeypatch):
    monkeypatch.setattr(blocks, "MAX_HELD_BYTES", 1000 * 1000)
    writer_code = ("import sys\nline = b'x' * 99999 + b'\\n'\n"
                   "for _ in range(200): sys.stdout.buffer.write(line)\n")
    read_end, write_end = os.pipe()
    writer = subprocess.Popen([sys.executable, "-c", writer_code], stdout=write_end)
    os.close(write_end)
    try:
        inp = BlockInput(["/dev/fd/%d" % read_end], size=1, ahead=64)
        os.close(read_end)
        with EventLoop() as loop:
            inp.attach(loop, lambda: None)
            for _ in range(40):
                loop.run_once(timeout=0.05)
            held = inp.held()
            writer_blocked = writer.poll() is None
            taken = take_all(inp, loop)
        assert 10 <= held <= 11  # 1 MB of 100 KB blocks (plus one read), not 64 blocks
        assert writer_blocked
        assert len(taken) == 200 and all(len(block.data) == 100000 for block in taken)
        assert writer.wait(timeout=10) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_a_pipe_then_a_file_make_one_block_each_in_order(tmp_path):
    read_end, write_end = os.pipe()
    (tmp_path / "second").write_bytes(b"file\n")
    inp = BlockInput(["/dev/fd/%d" % read_end, str(tmp_path / "second")])
    os.close(read_end)
    with EventLoop() as loop:
        inp.attach(loop, lambda: None)
        os.write(write_end, b"piped\nlines")
        loop.run_once(timeout=0.2)
        assert inp.take() is None  # a whole-file block waits for the end of its file
        os.close(write_end)
        blocks = take_all(inp, loop)
    assert [(block.index, block.data) for block in blocks] == [(1, b"piped\nlines"), (2, b"file\n")]


def test_a_read_error_ends_the_input_with_one_line_in_errors(tmp_path):
    path = tmp_path / "numbers"
    path.write_bytes(THOUSAND)
    inp = BlockInput([str(path)], size=10)
    assert inp.take().index == 1
    os.close(inp._current.fd)  # the next read fails with EBADF
    inp._current.fd = os.open(str(tmp_path), os.O_RDONLY)  # a directory: EISDIR on read
    blocks = take_all(inp)
    assert inp.ended and inp.errors and len(inp.errors) == 1
    assert repr(str(path)) in inp.errors[0] and "\n" not in inp.errors[0]
    assert all(block.data.count(b"\n") == 10 for block in blocks)  # whole blocks only


# -- bad input ----------------------------------------------------------------
@pytest.mark.parametrize("size", [0, -1, True, "3"])
def test_a_bad_block_size_is_refused_naming_it(tmp_path, size):
    (tmp_path / "in").write_bytes(b"a\n")
    with pytest.raises(BlockError, match="block size %s" % repr(size).replace("(", r"\(")):
        BlockInput([str(tmp_path / "in")], size=size)


def test_stdin_twice_a_missing_file_a_directory_or_no_file_are_refused(tmp_path):
    (tmp_path / "in").write_bytes(b"a\n")
    missing = str(tmp_path / "no such file")
    cases = [(["-", str(tmp_path / "in"), "-"], "'-' can be given only once"),
             ([str(tmp_path / "in"), missing], repr(missing) + ": No such file or directory"),
             ([str(tmp_path)], repr(str(tmp_path)) + ": it is a directory"),
             ([], "no input file")]
    for paths, message in cases:
        for check in (check_paths, BlockInput):
            with pytest.raises(BlockError) as caught:
                check(paths)
            assert message in str(caught.value) and "\n" not in str(caught.value)
            assert isinstance(caught.value, TargetError)


# -- a line or a whole-file block is capped (item 4 of issue 15) -------------------

def test_a_line_longer_than_the_cap_is_refused_not_held(monkeypatch):
    monkeypatch.setattr(blocks, "MAX_LINE", 1000)
    cutter = Cutter(2)
    assert cutter.feed(b"a\n" + b"x" * 600) == []
    with pytest.raises(blocks.LineTooLong):
        cutter.feed(b"y" * 500)  # 1100 bytes and no newline yet
    cutter = Cutter(1)  # lines up to the cap pass, however they arrive
    assert cutter.feed(b"z" * 999) == [] and cutter.feed(b"\n" + b"w" * 999 + b"\n") == [
        b"z" * 999 + b"\n", b"w" * 999 + b"\n"]


def test_an_endless_line_on_a_pipe_ends_the_input_with_one_line_naming_it(monkeypatch):
    monkeypatch.setattr(blocks, "MAX_LINE", 1 << 20)
    read_end, write_end = os.pipe()
    writer = subprocess.Popen(["sh", "-c", "printf 'a\\nb\\n'; exec cat /dev/zero"], stdout=write_end)
    os.close(write_end)
    try:
        inp = BlockInput(["/dev/fd/%d" % read_end], size=1)
        os.close(read_end)
        with EventLoop() as loop:
            inp.attach(loop, lambda: None)
            taken = take_all(inp, loop)
        assert [block.data for block in taken] == [b"a\n", b"b\n"]
        assert len(inp.errors) == 1 and "\n" not in inp.errors[0]
        assert "/dev/fd/%d" % read_end in inp.errors[0] and "block 3" in inp.errors[0]
        assert "longer than 1 MiB (no newline" in inp.errors[0]
    finally:
        writer.kill()
        writer.wait()


def test_a_whole_file_block_over_the_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(blocks, "MAX_LINE", 1 << 20)
    (tmp_path / "small").write_bytes(b"one\n")
    (tmp_path / "big").write_bytes(b"x\n" * (1 << 20))
    inp = BlockInput([str(tmp_path / "small"), str(tmp_path / "big")])
    assert [block.data for block in take_all(inp)] == [b"one\n"]
    assert len(inp.errors) == 1 and repr(str(tmp_path / "big")) in inp.errors[0]
    assert "block 2" in inp.errors[0]
