"""The run driver under stress: several runs in one process, stolen children, signals,
failing sinks, callers that stop polling."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import classh
from classh.hostmode import HostRun, TargetSource, task_maker
from classh.observers import Observer, SinkError
from classh.options import Options
from classh.targets import resolve
from conftest import ROOT, STANDIN, base_env, run_classh


@pytest.fixture
def standin_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith("CLASSH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CLASSH_SSH", STANDIN)


def poll_all(*jobs, limit=30.0):
    deadline = time.monotonic() + limit
    while not all(job.done() for job in jobs) and time.monotonic() < deadline:
        for job in jobs:
            job.poll()
        time.sleep(0.005)


def test_two_sshjobman_polled_in_one_process_both_finish(standin_env):
    first = classh.SSHJobMan("a[1-5]", "sleep 0.2; echo {host}")
    second = classh.SSHJobMan("b[1-5]", "sleep 0.4; echo {host}")
    first.start()
    second.start()
    poll_all(first, second)
    assert first.done() and second.done()
    assert sorted(r.output for r in first.results.values()) == ["a%d\n" % i for i in range(1, 6)]
    assert sorted(r.output for r in second.results.values()) == ["b%d\n" % i for i in range(1, 6)]


def test_nested_runs_restore_the_signal_state_in_any_order(standin_env):
    before = (signal.getsignal(signal.SIGCHLD), signal.set_wakeup_fd(-1))
    signal.set_wakeup_fd(before[1])
    first = classh.SSHJobMan("a1", "true").start()
    second = classh.SSHJobMan("b1", "sleep 0.2").start()
    poll_all(first)
    assert first.done() and not second.done()
    poll_all(second)
    assert second.done()
    assert signal.getsignal(signal.SIGCHLD) == before[0]
    assert signal.set_wakeup_fd(-1) == before[1]
    signal.set_wakeup_fd(before[1])


def test_a_child_reaped_by_someone_else_is_not_counted_as_exit_0(standin_env):
    job = classh.SSHJobMan("h1", "exit 3").start()
    pid = next(iter(job._run.supervisor._running))
    os.waitpid(pid, 0)  # the calling program reaps classh's child behind its back
    assert job.wait(10)
    record = job.results["h1"]
    assert record.exitcode is None and not record.ok
    assert "reaped" in record.error
