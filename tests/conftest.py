"""Shared fixtures: the package on sys.path, a loopback sshd fleet, a classh runner."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, os.path.join(ROOT, "lib"))
sys.path.insert(0, TESTS)

from fleet import Fleet  # noqa: E402

CLASSH = os.path.join(ROOT, "classh")
STANDIN = os.path.join(TESTS, "standin-ssh")


@pytest.fixture(scope="session")
def fleet():
    """One real OpenSSH server on 127.0.0.1 standing in for node1..node20 (+ refused, silent).

    Its files are not under pytest's tmp_path: pytest resets that tree to
    0700 whenever another pytest session starts, and sshd (logging in as the
    test account) must be able to read the authorized keys file.
    """
    workdir = tempfile.mkdtemp(prefix="classh-fleet-")
    try:
        with Fleet(workdir, hosts=20) as running:
            yield running
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class Result:
    """A finished classh process: status, stdout, stderr (text) and wall time."""

    def __init__(self, proc, out, err, elapsed):
        self.proc = proc
        self.rc = proc.returncode
        self.out = out
        self.err = err
        self.elapsed = elapsed

    def __repr__(self):
        return "Result(rc=%r, out=%r, err=%r)" % (self.rc, self.out[-2000:], self.err[-2000:])


def base_env(extra=None):
    """os.environ without any CLASSH_* settings of the developer's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSH_")}
    env.pop("NO_COLOR", None)
    env.update(extra or {})
    return env


def run_classh(args, env=None, timeout=120, input=None):
    """Run the classh executable with ``args``; return a Result."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, CLASSH] + list(args), env=base_env(env),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(input, timeout=timeout)
    return Result(proc, out.decode(errors="replace"), err.decode(errors="replace"),
                  time.monotonic() - started)


@pytest.fixture
def classh(fleet):
    """Run classh against the fleet: ``classh(args...)`` -> Result."""
    def run(*args, env=None, **kwargs):
        merged = {"CLASSH_SSH": fleet.ssh_command}
        merged.update(env or {})
        return run_classh(args, env=merged, **kwargs)
    return run


@pytest.fixture
def standin():
    """Run classh with the stand-in ssh (commands run locally): ``standin(args...)``."""
    def run(*args, env=None, **kwargs):
        merged = {"CLASSH_SSH": STANDIN}
        merged.update(env or {})
        return run_classh(args, env=merged, **kwargs)
    return run


@pytest.fixture
def remote_dir():
    """A fresh directory the fleet's login account may write: the 'remote' side is this machine."""
    path = tempfile.mkdtemp(prefix="classh-remote-")
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def full_fs():
    """A 1 MiB tmpfs (root only), mounted and unmounted here; tests fill it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path = tempfile.mkdtemp(prefix="classh-fullfs-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", path]).returncode != 0:
            subprocess.run(["umount", "-l", path], check=True)  # a leaked fd held it
        os.rmdir(path)


@pytest.fixture
def sweep():
    """Marks to check; every process still carrying one at teardown is killed by pid."""
    from leftovers import pids_of  # it imports this module's names
    marks = []
    yield marks
    for mark in marks:
        for pid in pids_of(mark):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def marking_ssh(tmp_path):
    """A stand-in ssh that leaves a mark when it is started: (ssh command, mark path)."""
    mark = tmp_path / "started"
    script = tmp_path / "marking-ssh"
    script.write_text("#!/bin/sh\necho x >> %s\nexec %s \"$@\"\n" % (mark, STANDIN))
    script.chmod(0o755)
    return str(script), mark


class Sink:
    """A SafeStream over an in-memory file (``data``: what was written)."""

    def __init__(self):
        import io

        from classh.display import SafeStream
        self.raw = io.BytesIO()
        self.stream = SafeStream(self.raw, "sink")

    @property
    def data(self):
        return self.raw.getvalue()
