"""Result sinks: never written through a symlink, lossless JSON, .ret of ssh errors,
write errors raised as SinkError (a real full filesystem, /dev/full, RLIMIT_FSIZE)."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, run_classh

from classh.observers import SinkError
from classh.results import (JsonFile, Record, ResultsDir, json_line,
                            load_results, record_from_dict, record_to_dict, ret_text)


class FakeTask:
    def __init__(self, key):
        self.key = key


def _victim(tmp_path, name="victim", text=b"precious\n"):
    path = tmp_path / name
    path.write_bytes(text)
    return path


# -- symlinks -----------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_results_never_written_through_a_planted_symlink(classh, tmp_path, flag):
    results = tmp_path / "r"
    results.mkdir()
    victims = {suffix: _victim(tmp_path, "victim" + suffix, b"1\n") for suffix in (".out", ".err", ".ret")}
    for suffix, victim in victims.items():
        os.symlink(str(victim), str(results / ("node1" + suffix)))
    r = classh(flag, "-q", "-o", str(results), "echo hi; echo oops >&2", "node1")
    assert r.rc == 0, r
    for victim in victims.values():
        assert victim.read_bytes() == b"1\n"
    for suffix, text in ((".out", b"hi\n"), (".err", b"oops\n"), (".ret", b"0\n")):
        path = results / ("node1" + suffix)
        assert not path.is_symlink() and path.read_bytes() == text


def test_summary_symlink_is_refused(classh, tmp_path):
    results = tmp_path / "r"
    results.mkdir()
    victim = _victim(tmp_path)
    os.symlink(str(victim), str(results / "summary.jsonl"))
    r = classh("--overwrite", "-q", "-o", str(results), "true", "node1")
    assert r.rc == 2, r
    assert "summary.jsonl" in r.err and "internal error" not in r.err
    assert victim.read_bytes() == b"precious\n"
    assert not (results / "node1.ret").exists()


def test_json_overwrite_refuses_a_symlink_and_keeps_it(classh, tmp_path):
    victim = _victim(tmp_path)
    link = tmp_path / "all.json"
    os.symlink(str(victim), str(link))
    r = classh("--overwrite", "-q", "--json", str(link), "echo hi", "node1")
    assert r.rc == 2 and "symbolic link" in r.err, r
    assert victim.read_bytes() == b"precious\n"
    assert link.is_symlink()


def test_json_without_overwrite_refuses_a_dangling_symlink(classh, tmp_path):
    link = tmp_path / "all.json"
    os.symlink(str(tmp_path / "elsewhere"), str(link))
    r = classh("-q", "--json", str(link), "true", "node1")
    assert r.rc == 2 and "symbolic link" in r.err, r
    assert not (tmp_path / "elsewhere").exists()


def test_results_dir_replaces_a_link_swapped_in_after_the_start(tmp_path):
    """A link planted between started() and finished() (the .ret) is replaced, not followed."""
    victim = _victim(tmp_path)
    sink = ResultsDir(str(tmp_path), replace=True)
    try:
        sink.started(FakeTask("h"))
        os.symlink(str(victim), str(tmp_path / "h.ret"))
        sink.finished(FakeTask("h"), Record(host="h", exitcode=0))
    finally:
        sink.close()
    assert victim.read_bytes() == b"precious\n"
    assert (tmp_path / "h.ret").read_bytes() == b"0\n"


# -- JSON is lossless; .ret of an ssh error --------------------------------------------

def test_json_keeps_undecodable_bytes_and_sizes_agree(classh, tmp_path):
    path = tmp_path / "all.json"
    r = classh("-q", "--json", str(path), r"printf '\377\376ok'; printf 'caf\303\251' >&2", "node1")
    assert r.rc == 0, r
    line = json.loads(path.read_bytes())
    assert "stdout" not in line and line["stderr"] == "caf\u00e9"
    record = load_results(str(path))["node1"]
    assert record.stdout == b"\xff\xfeok" and record.stdout_size == len(record.stdout) == 4
    assert record.stderr == "caf\u00e9".encode() and record.stderr_size == 5
    assert not record.stdout_truncated


def test_json_round_trip_of_every_byte():
    data = bytes(range(256))
    record = Record(host="h", exitcode=0, stdout=data, stdout_size=256, stderr=b"plain")
    back = record_from_dict(json.loads(json_line(record)))
    assert back.stdout == data and back.stdout_size == 256 and back.stderr == b"plain"
    assert record_to_dict(record)["stderr"] == "plain"


def test_ret_of_a_login_killed_by_classh_says_255():
    record = Record(host="h", ssh_error=True, signal=signal.SIGTERM, error="unknown host key")
    assert ret_text(record) == b"255\n"
    record = Record(host="h", ssh_error=True, signal=signal.SIGHUP)
    assert ret_text(record) == b"255\n"
    assert ret_text(Record(host="h", error="could not start ssh", ssh_error=True)) == b"255\n"


def test_refused_login_with_results_dir_reads_back_as_ssh_error(fleet, tmp_path):
    """A host-key prompt classh cannot answer: classh ends ssh itself; .ret must say 255."""
    known = tmp_path / "known_hosts"
    known.write_text("")
    config = tmp_path / "ssh_config"
    text = open(fleet.ssh_config).read()
    text = text.replace("StrictHostKeyChecking yes", "StrictHostKeyChecking ask")
    text = "\n".join("    UserKnownHostsFile %s" % known if "UserKnownHostsFile" in line else line
                     for line in text.splitlines())
    config.write_text(text + "\n")
    secret = tmp_path / "secret"
    secret.write_text("unused\n")
    results = tmp_path / "r"
    r = run_classh(["--password-file", str(secret), "-o", str(results), "true", "node1"],
                   env={"CLASSH_SSH": "ssh -F %s" % config})
    assert r.rc == 4, r
    assert (results / "node1.ret").read_bytes() == b"255\n"
    assert "node1  255" in r.out
    assert load_results(str(results))["node1"].status == "ssh_error"


# -- write errors ---------------------------------------------------------------------




def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def test_results_dir_disk_full_fails_the_host_then_carries_on(full_fs):
    fds = _open_fds()
    sink = ResultsDir(full_fs)
    task = FakeTask("big")
    sink.started(task)
    sink.started(FakeTask("small"))
    chunk = b"x" * 65536
    with pytest.raises(SinkError) as caught:
        for _ in range(64):  # 4 MiB into 1 MiB
            sink.output(task, 1, chunk)
    assert caught.value.host == "big" and caught.value.error.errno == errno.ENOSPC
    assert caught.value.path == os.path.join(full_fs, "big.out")
    sink.output(task, 1, chunk)  # that stream is dropped now: no second error
    os.unlink(os.path.join(full_fs, "big.out"))  # room again: the rest is written
    sink.finished(task, Record(host="big", exitcode=0))
    sink.finished(FakeTask("small"), Record(host="small", exitcode=0))
    sink.close()
    sink.close()
    assert _open_fds() == fds
    assert open(os.path.join(full_fs, "big.ret"), "rb").read() == b"0\n"
    assert sorted(load_results(full_fs)) == ["big", "small"]


def test_results_dir_full_summary_is_everyones_error_and_close_is_clean(full_fs):
    fds = _open_fds()
    sink = ResultsDir(full_fs)
    task = FakeTask("h")
    sink.started(task)
    with pytest.raises(SinkError):
        for _ in range(64):
            sink.output(task, 1, b"x" * 65536)
    with pytest.raises(SinkError) as caught:
        sink.finished(task, Record(host="h", exitcode=0))
    assert caught.value.host is None and caught.value.path.endswith("summary.jsonl")
    sink.close()
    assert _open_fds() == fds


def test_json_file_disk_full_is_a_sink_error_for_everyone(full_fs):
    fds = _open_fds()
    sink = JsonFile(os.path.join(full_fs, "all.json"))
    record = Record(host="h", exitcode=0, stdout=b"y" * (2 << 20), stdout_size=2 << 20)
    with pytest.raises(SinkError) as caught:
        sink.finished(FakeTask("h"), record)
    assert caught.value.host is None and caught.value.error.errno == errno.ENOSPC
    sink.close()
    assert _open_fds() == fds


def test_file_too_big_is_a_sink_error_naming_the_host(tmp_path):
    """RLIMIT_FSIZE in a child: Python ignores SIGXFSZ, so write() fails with EFBIG."""
    script = textwrap.dedent("""
        import resource, sys
        sys.path.insert(0, %r)
        from classh.results import ResultsDir
        from classh.observers import SinkError
        class T: key = "h"
        sink = ResultsDir(%r)
        sink.started(T)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            sink.output(T, 2, b"e" * 10000)
        except SinkError as exc:
            print(exc.host, exc.error.errno, exc)
        sink.close()
    """) % (os.path.join(ROOT, "lib"), str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, check=True).stdout
    assert out.decode().split()[:2] == ["h", str(errno.EFBIG)], out
    assert b"h.err" in out


def test_display_on_a_full_device_is_a_sink_error():
    from classh.display import SafeStream
    with open("/dev/full", "wb") as raw:
        stream = SafeStream(raw)
        with pytest.raises(SinkError) as caught:
            stream.write(b"hello\n")
        assert caught.value.host is None and caught.value.error.errno == errno.ENOSPC
        assert "/dev/full" in str(caught.value)
        stream.write(b"more\n")  # stopped: no second error


def test_display_reader_gone_is_quiet():
    from classh.display import SafeStream
    r, w = os.pipe()
    os.close(r)
    with os.fdopen(w, "wb") as raw:
        stream = SafeStream(raw)
        stream.write(b"hello\n")
        assert stream.broken


# -- the display ------------------------------------------------------------------------

def test_lines_display_is_linear_in_a_long_unfinished_line():
    import time
    from classh.display import LinesDisplay

    class Sink:
        def __init__(self):
            self.data = []

        def write(self, data, flush=True):
            self.data.append(data)

    out, err = Sink(), Sink()
    display = LinesDisplay(out, err)
    task = FakeTask("h")
    chunk = b"x" * 65536
    started = time.monotonic()
    for _ in range(1024):  # 64 MiB on one line
        display.output(task, 1, chunk)
    display.output(task, 1, b"end\nnext")
    elapsed = time.monotonic() - started
    display.finished(task, Record(host="h"))
    assert elapsed < 2.0, elapsed
    assert b"".join(out.data) == b"h: " + chunk * 1024 + b"end\nh: next\n"


def test_slow_reader_of_stdout_delays_no_timeout(classh, fleet, tmp_path):
    """classh's stdout is not read for 5 s; node2's -t 1 must still fire after about 1 s."""
    import time
    from conftest import CLASSH, base_env
    results = tmp_path / "all.json"
    command = "if [ {host} = node1 ]; then head -c 3000000 /dev/zero | tr '\\0' x; else sleep 30; fi"
    with open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, CLASSH, "-t", "1", "--json", str(results), command, "node1", "node2"],
            env=base_env({"CLASSH_SSH": fleet.ssh_command}), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=err)
        try:
            time.sleep(5)
            out = proc.stdout.read()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 3, (tmp_path / "err").read_text()
    assert out.count(b"x") == 3000000
    records = load_results(str(results))
    assert records["node2"].status == "timeout"
    assert records["node2"].duration < 2.5, records["node2"].duration
