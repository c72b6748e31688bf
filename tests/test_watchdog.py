"""Kills reach the target: the remote watchdog (classh.remote), against a real loopback sshd.

Each kill test runs a command carrying a unique marker (``sleep 37.<n>``),
ends classh's ssh in some way, and checks that no process with the marker
is left on the target (this machine) 3 s after classh has exited. Every
leftover found is killed by pid, so a failing test leaves nothing behind.
"""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import STANDIN
from leftovers import (leftovers, marker, pids_of, running_on_target, signal_when, start_classh,
                       wait_for, with_marker)
from fleet import TEST_USER, Fleet

import classh
from classh.remote import NAME, quote_word, remote_command

HOSTS = "node[1-5]"
NHOSTS = 5


# -- helpers (the shared ones live in leftovers.py) ------------------------
def records(hosts, command, **options):
    """``{host: Record}`` of ``command`` run to the end through the API."""
    job = classh.SSHJobMan(hosts, command, **options)
    assert job.wait(60)
    return job.results




# -- the wrapper itself ----------------------------------------------------
@pytest.mark.parametrize("text", ["plain", "it's", "back\\slash\\\\'", "", "a\nb $x `y` \"z\" {host}"])
def test_quote_word_round_trips_through_sh(text):
    out = subprocess.run(["sh", "-c", "printf %s " + quote_word(text)], stdout=subprocess.PIPE).stdout
    assert out == text.encode()


def test_tag_is_exported_and_checked():
    line = remote_command('printf %s "$CLASSH_TAG"', watch_stdin=True, tag="job-7.a")
    # stdin held open (an end of file would make the watchdog kill its group), a group of its own.
    proc = subprocess.Popen(["sh", "-c", line], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout.read() == b"job-7.a"
        assert proc.wait(10) == 0
    finally:
        proc.stdin.close()
        proc.stdout.close()
    with pytest.raises(ValueError, match="CLASSH_TAG"):
        remote_command("true", watch_stdin=True, tag="x'; rm -rf ~")


# -- kills reach the target ------------------------------------------------
def test_timeout_kills_the_remote_command(classh, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    r = classh("-t", "2", "-q", command, HOSTS, timeout=60)
    assert r.rc == 3, r
    assert leftovers(mark) == []


@pytest.mark.parametrize("case,pattern", [
    ("plain", "sleep {m}"),
    ("ignores SIGTERM", "trap '' TERM; sleep {m}"),
    ("background child", "sleep {m} & sleep {m}; wait"),
])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_classh_kills_the_remote_command(fleet, sweep, signum, case, pattern):
    mark, command = with_marker(pattern)
    sweep.append(mark)
    count = NHOSTS * (2 if "&" in pattern else 1)
    rc = signal_when(start_classh(fleet, ["-q", command, HOSTS]),
                     lambda: len(pids_of(mark)) >= count, signum)
    assert rc == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    assert leftovers(mark) == []


def test_a_term_ignoring_command_is_killed_after_a_timeout(classh, sweep):
    mark, command = with_marker("trap '' TERM; sleep {m} & sleep {m}")
    sweep.append(mark)
    r = classh("-t", "2", "-q", command, HOSTS, timeout=60)
    assert r.rc == 3, r
    assert leftovers(mark) == []


def test_sshjobman_kill_kills_the_remote_command(fleet, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    job = classh.SSHJobMan(HOSTS, command, ssh=fleet.ssh_command).start()
    try:
        running_on_target(mark, NHOSTS)
        job.kill("node2")
        assert wait_for(lambda: len(pids_of(mark)) == NHOSTS - 1, 3.0), pids_of(mark)
        job.kill()
        assert job.wait(30)
    finally:
        job.kill()
    assert all(r.interrupted for r in job.results.values())
    assert leftovers(mark) == []


def test_with_input_the_remote_command_is_killed_too(fleet, sweep):
    mark, command = with_marker("read line; echo got $line; sleep {m}")
    sweep.append(mark)
    options = classh.Options(ssh=fleet.ssh_command, timeout=2, input=b"data\n")
    results = classh.run(HOSTS, command, options)
    assert all(isinstance(r, classh.Error) and "timed out" in str(r).lower() for r in results.values()), results
    assert leftovers(mark) == []


@pytest.fixture
def persist_env():
    """A private XDG_RUNTIME_DIR for --persist masters; every master there is killed at the end."""
    runtime = tempfile.mkdtemp(prefix="classh-wd-run-")
    yield {"XDG_RUNTIME_DIR": runtime}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as fh:
                    if runtime.encode() in fh.read():
                        os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
    shutil.rmtree(runtime, ignore_errors=True)


def test_through_a_persist_master_the_remote_command_is_killed(classh, sweep, persist_env):
    first = classh("--persist=60", "-q", "true", HOSTS, env=persist_env, timeout=60)
    assert first.rc == 0, first
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    r = classh("--persist=60", "-t", "2", "-q", command, HOSTS, env=persist_env, timeout=60)
    assert r.rc == 3, r
    assert leftovers(mark) == []
    again = classh("--persist=60", "echo still up", "node1", env=persist_env, timeout=60)
    assert again.rc == 0 and "still up" in again.out, again


# -- what the command sees ---------------------------------------------------
def show_shell():
    """Shell text printing, on stderr, the command line of the shell running it (the watchdog)."""
    return "tr '\\0' ' ' </proc/$$/cmdline >&2"


def test_output_is_byte_exact_and_separate(fleet):
    command = ("printf '\\000\\377\\nno newline'; printf 'err\\000\\001' >&2; "
               + show_shell())
    job = classh.SSHJobMan("node1", command, ssh=fleet.ssh_command)
    job.wait(60)
    record = job.results["node1"]
    assert record.exitcode == 0
    assert record.stdout == b"\x00\xff\nno newline"
    assert record.stderr.startswith(b"err\x00\x01")
    assert NAME in record.stderr[len(b"err\x00\x01"):].decode()


def test_exit_status_host_and_signals_pass_through(fleet):
    job = classh.SSHJobMan("node[1-2]", "echo {host}; exit 7", ssh=fleet.ssh_command)
    job.wait(60)
    assert {h: (r.exitcode, r.stdout) for h, r in job.results.items()} == {
        "node1": (7, b"node1\n"), "node2": (7, b"node2\n")}
    killed = classh.SSHJobMan("node1", "sh -c 'kill -USR1 $$'", ssh=fleet.ssh_command)
    killed.wait(60)
    # A shell's convention, not ssh's: 128 + the signal (ssh alone says 255).
    assert killed.results["node1"].exitcode == 128 + signal.SIGUSR1


def test_input_still_reaches_the_command(fleet):
    record = records("node1", "cat; " + show_shell(), ssh=fleet.ssh_command,
                     input=b"line one\nrest")["node1"]
    assert record.stdout == b"line one\nrest"
    assert NAME in record.errors


def test_wait_in_the_command_does_not_wait_for_the_watcher(fleet):
    # The watcher is no child of the shell running the command: ``wait`` returns.
    record = records("node1", "sleep 0.2 & sleep 0.1 & wait; echo waited", ssh=fleet.ssh_command,
                     timeout=20)["node1"]
    assert (record.exitcode, record.stdout) == (0, b"waited\n"), record


def test_raw_sends_the_command_untouched(tmp_path):
    recorder = tmp_path / "ssh"
    recorder.write_text('#!/bin/sh\nfor last; do :; done\nprintf %s "$last"\n')
    recorder.chmod(0o755)
    command = "echo 'it''s' \\ {host}"
    raw = records("h1", command, ssh=str(recorder), raw=True)["h1"]
    assert raw.stdout == b"echo 'it''s' \\ h1"
    wrapped = records("h1", command, ssh=str(recorder))["h1"]
    assert wrapped.stdout != raw.stdout and NAME.encode() in wrapped.stdout


def test_a_normal_command_does_not_wait_for_the_watcher(standin):
    # No fixed sleep: 20 quick hosts through the stand-in take well under the 1 s poll.
    r = standin("--format", "lines", "echo {host}", "h[1-20]")
    assert r.rc == 0 and r.elapsed < 5, r
    assert sorted(r.out.splitlines()) == sorted("h%d: h%d" % (i, i) for i in range(1, 21))


# -- login shells ----------------------------------------------------------
#: Login shells to try, with a command only that shell understands and what it prints.
SHELL_PROBES = {
    "/bin/bash": ("[[ -n $BASH_VERSION ]] && echo bash", b"bash\n"),
    "/usr/bin/zsh": ("echo ${ZSH_VERSION:+zsh}", b"zsh\n"),
    "/usr/bin/fish": ("set -q FISH_VERSION; and echo fish", b"fish\n"),
    "/bin/csh": ("if ($?prompt == 0) echo csh", b"csh\n"),
}
SHELLS = [s for s in SHELL_PROBES if os.path.exists(s)]


SUDO_USER = "classhwsudo"
SUDOERS = "/etc/sudoers.d/classh-watchdog-test"


def _account(user, shell):
    """Create or repair a login account (key logins only: password field ``*``)."""
    try:
        pwd.getpwnam(user)
        subprocess.run(["usermod", "-s", shell, "-p", "*", user], check=True)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", shell, "-p", "*", user], check=True)


@pytest.fixture(scope="module")
def shell_fleet():
    """A fleet with one extra login account per shell found here, and one with
    password-less sudo (root only; the sudoers rule is removed at the end)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: accounts with other login shells, a sudoers rule")
    users = {}
    for shell in SHELLS:
        users[shell] = "classhw" + os.path.basename(shell)
        _account(users[shell], shell)
    _account(SUDO_USER, "/bin/sh")
    with open(SUDOERS, "w") as rule:
        rule.write("%s ALL=(ALL) NOPASSWD: ALL\n" % SUDO_USER)
    os.chmod(SUDOERS, 0o440)
    workdir = tempfile.mkdtemp(prefix="classh-wdfleet-")
    allow = "AllowUsers %s %s %s\n" % (TEST_USER, SUDO_USER, " ".join(users.values()))
    try:
        with Fleet(workdir, hosts=5, extra_sshd_config=allow) as fleet:
            fleet.shell_users = users
            yield fleet
    finally:
        os.unlink(SUDOERS)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("shell", SHELLS)
def test_any_login_shell_runs_the_watchdog(shell_fleet, shell, sweep):
    user = shell_fleet.shell_users[shell]
    options = classh.Options(ssh=shell_fleet.ssh_command, user=user)
    ok = records("node1", "echo it\\'s\necho {host}", ssh=shell_fleet.ssh_command, user=user)
    assert ok["node1"].stdout == b"it's\nnode1\n"
    probe, expected = SHELL_PROBES[shell]
    own = records("node1", probe, ssh=shell_fleet.ssh_command, user=user)["node1"]
    assert (own.exitcode, own.stdout) == (0, expected), own
    mark = marker()
    sweep.append(mark)
    results = classh.run("node[1-3]", "sleep " + mark, options.replace(timeout=2))
    assert all(isinstance(r, classh.Error) for r in results.values()), results
    assert leftovers(mark) == []


@pytest.mark.skipif(not shutil.which("sudo"), reason="sudo is not installed")
def test_sudo_runs_under_the_watchdog_and_is_killed(shell_fleet, sweep):
    options = dict(ssh=shell_fleet.ssh_command, user=SUDO_USER, sudo=True)
    ok = records("node1", "id -u; echo {host}; echo err >&2", **options)["node1"]
    assert (ok.exitcode, ok.stdout, ok.stderr) == (0, b"0\nnode1\n", b"err\n"), ok
    mark = marker()
    sweep.append(mark)
    results = classh.run("node[1-3]", "sleep " + mark, classh.Options(timeout=2, **options))
    assert all(isinstance(r, classh.Error) for r in results.values()), results
    assert leftovers(mark) == []


@pytest.mark.skipif(not shutil.which("sudo"), reason="sudo is not installed")
def test_sudo_with_input_is_killed_too(shell_fleet, sweep):
    mark = marker()
    sweep.append(mark)
    options = classh.Options(ssh=shell_fleet.ssh_command, user=SUDO_USER, sudo=True, timeout=2,
                             input=b"line\n")
    results = classh.run("node[1-3]", "read x; echo $x; sleep " + mark, options)
    assert all(isinstance(r, classh.Error) for r in results.values()), results
    assert leftovers(mark) == []


@pytest.mark.parametrize("ssh,options,closed", [
    ("ssh -n", [], True),
    ("ssh -Tn -F cfg", [], True),
    ("ssh -f", [], True),
    ("ssh -F cfg -l nobody", [], False),
    ("ssh -oBatchMode=yes -p 2222", [], False),
    ("ssh -o StdinNull=yes", [], True),
    ("ssh", ["StdinNull=yes"], True),
    ("ssh", ["ServerAliveInterval=15"], False),
])
def test_an_ssh_without_stdin_is_recognised(ssh, options, closed):
    from classh.hostmode import ssh_reads_no_stdin
    assert ssh_reads_no_stdin(classh.Options(ssh=ssh, ssh_options=options)) is closed


def test_with_ssh_n_the_command_is_not_killed_at_once(standin):
    # ssh -n gives the command no stdin: its end of file must not read as a dead session.
    r = standin("--ssh", STANDIN + " -n", "--format", "lines", "sleep 0.3; echo ok", "h[1-3]")
    assert r.rc == 0 and sorted(r.out.splitlines()) == ["h1: ok", "h2: ok", "h3: ok"], r


ERRORS = "datex; echo x > /nonexistent-classh/a; echo done"


@pytest.mark.parametrize("shell", ["/bin/sh"] + SHELLS)
def test_a_commands_own_errors_read_as_with_plain_ssh(shell_fleet, shell):
    user = TEST_USER if shell == "/bin/sh" else shell_fleet.shell_users[shell]
    plain = subprocess.run(shell_fleet.ssh_argv + ["-l", user, "node1", ERRORS],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    got = records("node1", ERRORS, ssh=shell_fleet.ssh_command, user=user)["node1"]
    assert got.stdout == plain.stdout and got.exitcode == plain.returncode
    assert got.stderr == plain.stderr and b"eval" not in got.stderr, (got.stderr, plain.stderr)
    # With input (the watcher then watches sshd, not stdin) and over several lines.
    lines = "echo a\n" + ERRORS
    plain = subprocess.run(shell_fleet.ssh_argv + ["-l", user, "node1", lines],
                           input=b"in\n", capture_output=True, timeout=30)
    got = records("node1", lines, ssh=shell_fleet.ssh_command, user=user, input=b"in\n")["node1"]
    assert (got.stdout, got.stderr) == (plain.stdout, plain.stderr)
