"""The test infrastructure itself: the loopback sshd fleet and standin-ssh."""

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from fleet import SSHD, Fleet  # noqa: E402

STANDIN = os.path.join(TESTS, "standin-ssh")
FLEET_PY = os.path.join(TESTS, "fleet.py")

needs_sshd = pytest.mark.skipif(
    not os.access(SSHD, os.X_OK) or shutil.which("ssh") is None
    or shutil.which("ssh-keygen") is None,
    reason="needs OpenSSH client and server (%s)" % SSHD)


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def ssh(fleet, *args, timeout=30):
    return subprocess.run(fleet.ssh_argv + list(args), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = Fleet(str(tmp_path_factory.mktemp("fleet")), hosts=5)
    f.start()
    yield f
    f.stop()


# -- the fleet -----------------------------------------------------------------

@needs_sshd
def test_command_output_and_status(fleet):
    p = ssh(fleet, "node3", "echo hi; echo err >&2; exit 7")
    assert (p.stdout, p.stderr, p.returncode) == ("hi\n", "err\n", 7)


@needs_sshd
def test_properties(fleet):
    assert fleet.hosts == ["node1", "node2", "node3", "node4", "node5"]
    assert fleet.ssh_command == "ssh -F " + shlex.quote(fleet.ssh_config)
    assert shlex.split(fleet.ssh_command) == fleet.ssh_argv
    assert os.path.isfile(fleet.ssh_config)
    assert isinstance(fleet.port, int) and accepts(fleet.port)
    env = fleet.env()
    assert env["CLASSH_SSH"] == fleet.ssh_command
    assert env["PATH"] == os.environ["PATH"]
    assert "CLASSH_SSH" not in os.environ or \
        os.environ["CLASSH_SSH"] != fleet.ssh_command
    if os.geteuid() == 0:
        assert fleet.user == "classhtest"


@needs_sshd
@pytest.mark.parametrize("host", ["node1", "node5", "web3", "a-b.example"])
def test_any_name_reaches_the_fleet(fleet, host):
    p = ssh(fleet, host, "id -un; echo $0")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [fleet.user, "sh"]
    assert p.stderr == ""


@needs_sshd
def test_refused_fails_fast(fleet):
    t = time.monotonic()
    p = ssh(fleet, "refused", "true", timeout=10)
    assert p.returncode == 255
    assert "refused" in p.stderr.lower()
    assert time.monotonic() - t < 3


@needs_sshd
def test_silent_times_out_on_banner(fleet):
    t = time.monotonic()
    p = ssh(fleet, "-o", "ConnectTimeout=2", "silent", "true", timeout=15)
    took = time.monotonic() - t
    assert p.returncode == 255
    assert "timed out" in p.stderr.lower()
    assert 1.5 <= took < 5


@needs_sshd
def test_parallel_logins(fleet):
    # MaxStartups is raised: concurrent handshakes must not be dropped.
    def one(i):
        h = fleet.hosts[i % len(fleet.hosts)]
        return h, ssh(fleet, h, "echo %s" % h, timeout=60)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    for h, p in results:
        assert (p.returncode, p.stdout, p.stderr) == (0, h + "\n", "")


@needs_sshd
def test_stop(tmp_path):
    f = Fleet(str(tmp_path), hosts=2)
    f.start()
    pid, port, silent = f.pid, f.port, f.silent_port
    assert accepts(port) and accepts(silent)
    assert ssh(f, "node1", "true").returncode == 0
    f.stop()
    assert not accepts(port)
    assert not accepts(silent)
    assert not os.path.exists("/proc/%d" % pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    f.stop()  # idempotent


@needs_sshd
def test_stop_ends_running_sessions(tmp_path):
    with Fleet(str(tmp_path), hosts=1) as f:
        p = subprocess.Popen(f.ssh_argv + ["node1", "echo up; exec sleep 300"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, universal_newlines=True)
        try:
            assert p.stdout.readline() == "up\n"
            t = time.monotonic()
        except BaseException:
            p.kill()
            raise
    try:
        assert p.wait(10) == 255
        assert time.monotonic() - t < 8
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@needs_sshd
def test_context_manager_and_fifty_hosts_start_fast(tmp_path):
    t = time.monotonic()
    with Fleet(str(tmp_path), hosts=50) as f:
        took = time.monotonic() - t
        assert len(f.hosts) == 50 and f.hosts[-1] == "node50"
        assert ssh(f, "node50", "echo ok").stdout == "ok\n"
        port = f.port
    assert not accepts(port)
    assert took < 5, "50-host fleet took %.2f s to start" % took


@needs_sshd
def test_prefix(tmp_path):
    with Fleet(str(tmp_path), hosts=3, prefix="web") as f:
        assert f.hosts == ["web1", "web2", "web3"]
        assert ssh(f, "web2", "echo ok").stdout == "ok\n"


@needs_sshd
def test_cli(tmp_path):
    script = ('echo "$FLEET_HOSTS"; test -d "$FLEET_DIR" && echo dir; '
              '$CLASSH_SSH node2 echo remote; exit 4')
    p = subprocess.run([sys.executable, FLEET_PY, "--hosts", "3", "--dir",
                        str(tmp_path / "d"), "--", "sh", "-c", script],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True,
                       timeout=60)
    assert p.returncode == 4, p.stderr
    assert p.stdout == "node[1-3]\ndir\nremote\n"
    assert (tmp_path / "d" / "ssh_config").exists()  # --dir is kept


@needs_sshd
def test_cli_tempdir_removed():
    p = subprocess.run([sys.executable, FLEET_PY, "--hosts", "2", "--",
                        "sh", "-c", 'echo "$FLEET_DIR"'],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    d = p.stdout.strip()
    assert d and not os.path.exists(d)


def test_cli_usage():
    p = subprocess.run([sys.executable, FLEET_PY, "--hosts", "2"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=30)
    assert p.returncode != 0 and "usage" in p.stderr


# -- standin-ssh ---------------------------------------------------------------

def standin(*args, **kw):
    return subprocess.run([STANDIN] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=10, **kw)


def test_standin_is_executable_posix_sh():
    assert os.access(STANDIN, os.X_OK)
    with open(STANDIN) as fh:
        assert fh.readline().strip() == "#!/bin/sh"


def test_standin_skips_options():
    p = standin("-o", "X", "-oY", "-p", "22", "-l", "u", "-T", "--",
                "host", "echo", "a", "b")
    assert (p.returncode, p.stdout, p.stderr) == (0, "a b\n", "")


@pytest.mark.parametrize("args", [
    ["-Tx", "-oBatchMode=yes", "-p22", "h", "echo a b"],
    ["-Tp", "2222", "-i", "key", "-F", "/dev/null", "h", "echo", "a", "b"],
    ["-46CnqvaxAkKNtgsX", "h", "echo a", "b"],
    ["h", "-o", "X=y", "-l", "u", "echo", "a b"],   # options after the host
    ["-J", "jump", "-E", "log", "-S", "none", "-W", "x", "h", "--", "echo a b"],
])
def test_standin_option_forms(args):
    p = standin(*args)
    assert (p.returncode, p.stdout) == (0, "a b\n"), p.stderr


def test_standin_runs_shell_command_and_status():
    p = standin("-T", "h", "echo out; echo err >&2; exit 9")
    assert (p.returncode, p.stdout, p.stderr) == (9, "out\n", "err\n")


def test_standin_joins_words_like_ssh():
    # ssh joins words with single spaces; the remote shell re-splits them.
    p = standin("h", "printf '%s|' ", "'a  b'", "c   d")
    assert p.stdout == "a  b|c|d|"


def test_standin_host_env():
    p = standin("-l", "x", "user@node7", "echo $STANDIN_HOST")
    assert p.stdout == "node7\n"
    p = standin("web3", "echo $STANDIN_HOST")
    assert p.stdout == "web3\n"


def test_standin_down_host():
    p = standin("-T", "down1", "echo should-not-run")
    assert p.returncode == 255
    assert p.stdout == ""
    assert p.stderr == "ssh: connect to host down1 port 22: Connection refused\n"


def test_standin_stdin_and_dash_n():
    p = standin("h", "cat", input="data\n")
    assert p.stdout == "data\n"
    p = standin("-n", "h", "cat", input="data\n")
    assert (p.returncode, p.stdout) == (0, "")


@pytest.mark.parametrize("args", [[], ["h"], ["-p"], ["-Z", "h", "true"],
                                  ["--"]])
def test_standin_usage_errors(args):
    p = standin(*args)
    assert p.returncode == 255
    assert p.stdout == ""
    assert "usage" in p.stderr
