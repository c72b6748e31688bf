"""-S/-E destinations: no write through a link, never an overwrite (streamed hosts too),
a predictable rule for what is a command, failed pipelines reported, signals forwarded."""
import os
import signal
import sys
import time

import pytest

from classh.loop import EventLoop
from classh.observers import SinkError
from classh.results import Record
from classh.routers import _descendants
from classh.routers import (DirectoryRouter, FileRouter, PipeRouter, Routing,
                            make_router)


class FakeTask:
    def __init__(self, key):
        self.key = key


def test_directory_router_never_copies_through_a_link_planted_after_the_check(tmp_path):
    results, routed = tmp_path / "r", tmp_path / "ok"
    results.mkdir()
    routed.mkdir()
    (results / "h.out").write_bytes(b"new\n")
    (results / "h.err").write_bytes(b"")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    router = DirectoryRouter(str(routed), with_ret=False, source=str(results))
    router.check(["h"])
    os.symlink(str(victim), str(routed / "h.out"))
    with pytest.raises(SinkError) as caught:
        router.route(Record(host="h", exitcode=0))
    router.close()
    assert caught.value.host == "h" and caught.value.path.endswith("h.out")
    assert victim.read_bytes() == b"precious\n"


def test_streamed_host_never_overwrites_a_directory_router_file(tmp_path):
    routed = tmp_path / "ok"
    routed.mkdir()
    (routed / "late.out").write_bytes(b"earlier run\n")
    routing = Routing([DirectoryRouter(str(routed), with_ret=False)], [])
    routing.check(["early"])  # hosts known at start are fine
    with pytest.raises(SinkError) as caught:
        routing.started(FakeTask("late"))  # a host read later from /dev/stdin
    assert caught.value.host == "late" and "late.out" in str(caught.value)
    with pytest.raises(SinkError):
        routing.finished(FakeTask("late"), Record(host="late", exitcode=0, stdout=b"x"))
    routing.close()
    assert (routed / "late.out").read_bytes() == b"earlier run\n"


def test_file_router_refuses_a_symlink(classh, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    link = tmp_path / "failed.txt"
    os.symlink(str(victim), str(link))
    r = classh("-q", "-E", str(link), "false", "node1")
    assert r.rc == 2 and "failed.txt" in r.err and "symlink" in r.err, r
    assert victim.read_bytes() == b"precious\n"


def test_a_typo_in_a_command_destination_is_refused(classh, tmp_path):
    r = classh("-q", "-S", "mial -s done root", "true", "node1")
    assert r.rc == 2, r
    assert "'mial'" in r.err and "not a command" in r.err
    assert not os.path.exists("mial -s done root")


def test_a_bare_word_is_a_file_even_when_a_command_has_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    router = make_router("test", False, None)
    assert isinstance(router, FileRouter)
    router.route(Record(host="node1", exitcode=0))
    router.close()
    assert (tmp_path / "test").read_text() == "node1\n"
    assert isinstance(make_router("|test -t 0", False, None), PipeRouter)
    assert isinstance(make_router("sort -u", True, None), PipeRouter)
    assert isinstance(make_router(sys.executable, True, None), PipeRouter)  # a path: a program


def test_results_directory_as_its_own_router_is_a_clear_error(classh, tmp_path):
    results = tmp_path / "r"
    r = classh("-q", "-o", str(results), "-S", str(results), "true", "node1")
    assert r.rc == 2 and "results directory" in r.err, r
    assert "internal error" not in r.err
    results.mkdir(exist_ok=True)
    r = classh("-q", "--overwrite", "-o", str(results), "-E", str(results) + "/", "true", "node1")
    assert r.rc == 2 and "results directory" in r.err, r


def _run_router(router, names=(), until=10.0):
    routing = Routing([router], [])
    with EventLoop() as loop:
        routing.attach(loop)
        for name in names:
            routing.finished(FakeTask(name), Record(host=name, exitcode=0))
        routing.close()
        deadline = time.monotonic() + until
        while routing.busy and time.monotonic() < deadline:
            loop.run_once(0.1)
    return routing


def test_a_failed_pipeline_is_reported_like_pipefail(tmp_path):
    routing = _run_router(PipeRouter("cat > /dev/null; exit 7"), ["node1"])
    assert routing.failures() == ["-S 'cat > /dev/null; exit 7' exited with status 7"]
    assert _run_router(PipeRouter("cat > /dev/null"), ["node1"]).failures() == []


def test_signal_reaches_every_process_of_a_pipeline(tmp_path):
    pids = tmp_path / "pids"
    router = PipeRouter("sleep 72 | (echo $$ > %s; sleep 73)" % pids, "-E")
    routing = Routing([], [router])
    with EventLoop() as loop:
        routing.attach(loop)
        routing.close()
        deadline = time.monotonic() + 5
        while not (pids.exists() and pids.read_text().strip()) and time.monotonic() < deadline:
            loop.run_once(0.1)
        started = time.monotonic()
        family = [router.pid] + _descendants(router.pid)
        assert len(family) >= 3, family  # sh, sleep 72, the subshell, sleep 73
        routing.signal(signal.SIGTERM)
        while routing.busy and time.monotonic() < started + 5:
            loop.run_once(0.1)
    assert not routing.busy
    assert time.monotonic() - started < 3
    assert routing.failures()[0].startswith("-E 'sleep 72 | ")
    assert "SIGTERM" in routing.failures()[0] or "status 143" in routing.failures()[0]
    deadline = time.monotonic() + 3
    alive = family
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in family if os.path.exists("/proc/%d" % pid) and not _zombie(pid)]
        time.sleep(0.05)
    for pid in alive:  # stopped by the test whatever happens
        os.kill(pid, signal.SIGKILL)
    assert alive == []


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
