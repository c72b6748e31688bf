"""Finding what a test left running on the target (this machine), by a unique marker.

A test runs ``sleep MARK`` (a marker no other process uses) on the target,
ends classh some way, and checks that no process with that command line is
left (:func:`leftovers`). The ``sweep`` fixture (conftest) kills, by pid,
whatever is still there at teardown.
"""
import itertools
import os
import signal
import subprocess
import sys
import time

from conftest import CLASSH, base_env

_counter = itertools.count(1)


def marker():
    """A sleep argument no other process on this machine uses: ``37.<pid><n>``."""
    return "37.%d%03d" % (os.getpid() % 100000, next(_counter))


def with_marker(pattern):
    """(marker, command): ``pattern`` with ``{m}`` replaced by a fresh marker."""
    m = marker()
    return m, pattern.replace("{m}", m)


def pids_of(mark):
    """Pids of live processes whose command line is ``sleep MARK``."""
    found = []
    want = b"sleep\0" + mark.encode() + b"\0"
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as fh:
                cmdline = fh.read()
            with open("/proc/%s/stat" % name, "rb") as fh:
                state = fh.read().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if cmdline == want and state != b"Z":
            found.append(int(name))
    return found


def wait_for(predicate, timeout):
    """Poll ``predicate`` every 50 ms until true or ``timeout`` s; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)


def leftovers(mark):
    """The pids of ``sleep MARK`` still alive 3 s from now ([] as soon as none is)."""
    wait_for(lambda: not pids_of(mark), 3.0)
    return pids_of(mark)


def start_classh(fleet, args, env=None):
    """classh running in the background against the fleet (a Popen)."""
    merged = {"CLASSH_SSH": fleet.ssh_command}
    merged.update(env or {})
    return subprocess.Popen([sys.executable, CLASSH] + list(args), env=base_env(merged),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

def running_on_target(mark, count, timeout=20):
    """Wait until ``count`` processes of ``mark`` run; fail the test if they never do."""
    assert wait_for(lambda: len(pids_of(mark)) >= count, timeout), "the command never started"


def signal_when(proc, ready, signum=signal.SIGTERM, timeout=30, why="never ready"):
    """Send ``signum`` to ``proc`` once ``ready()`` holds (within 30 s: else the test fails
    with ``why``); wait for it to end (killed by pid if it outlives ``timeout``); its
    exit status."""
    try:
        assert wait_for(ready, 30), why
        proc.send_signal(signum)
        proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def signal_when_running(ssh_command, args, mark, count, signum=signal.SIGTERM, timeout=30):
    """Start classh ``args`` (ssh: ``ssh_command``), wait until ``count`` processes of
    ``mark`` run on the target, send ``signum``; classh's exit status (killed by pid if it
    outlives ``timeout``)."""
    proc = subprocess.Popen([sys.executable, CLASSH] + list(args),
                            env=base_env({"CLASSH_SSH": ssh_command}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return signal_when(proc, lambda: len(pids_of(mark)) >= count, signum, timeout,
                       "the command never started")


def finish(proc, timeout=60):
    """(rc, stdout, stderr) of ``proc`` as text; it is killed (by pid) if it outlives
    ``timeout``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, (out or b"").decode(errors="replace"), (err or b"").decode(
        errors="replace")
