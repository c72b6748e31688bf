"""Passwords, passphrases, host keys and sudo, answered through pexpect, against a real sshd.

These need root: a test account with a real password, a sudoers rule.
"""
import os
import re
import subprocess
import sys
import tempfile
import shutil
import time

import pexpect
import pytest

from conftest import CLASSH, base_env
from fleet import Fleet, TEST_USER

PASSWORD = "Corr3ct horse $tapl'e"
PASSPHRASE = "s3cret phrase"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a password and sudo for a test account")


@pytest.fixture(scope="module")
def pwfleet():
    """A fleet whose sshd also takes passwords; the test account gets a password and sudo."""
    workdir = tempfile.mkdtemp(prefix="classh-pwfleet-")
    sudoers = "/etc/sudoers.d/classh-test"
    with Fleet(workdir, hosts=120, extra_sshd_config="PasswordAuthentication yes\n") as fleet:
        subprocess.run(["chpasswd", "-c", "SHA512"], input=("%s:%s\n" % (TEST_USER, PASSWORD)).encode(),
                       check=True)
        with open(sudoers, "w") as rule:
            rule.write("%s ALL=(ALL) ALL\nDefaults:%s !lecture\n" % (TEST_USER, TEST_USER))
        os.chmod(sudoers, 0o440)
        fleet.configs = _client_configs(fleet, workdir)
        try:
            yield fleet
        finally:
            os.unlink(sudoers)
            subprocess.run(["usermod", "-p", "*", TEST_USER], check=True)
    shutil.rmtree(workdir, ignore_errors=True)


def _client_configs(fleet, workdir):
    """ssh configs for: password only, a passphrase-protected key, an unknown host key."""
    base = open(fleet.ssh_config).read()
    no_key = re.sub(r"(?m)^\s*IdentityFile .*\n", "", base)
    password = no_key.replace("PasswordAuthentication no", "PasswordAuthentication yes\n    PubkeyAuthentication no")
    protected = os.path.join(workdir, "protected_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", protected], check=True)
    with open(os.path.join(workdir, "authorized_keys"), "a") as keys:
        keys.write(open(protected + ".pub").read())
    phrase = base.replace(fleet.client_key, protected)
    unknown_known = os.path.join(workdir, "empty_known_hosts")
    open(unknown_known, "w").close()
    hostkey = re.sub(r"UserKnownHostsFile .*", "UserKnownHostsFile %s" % unknown_known, password)
    hostkey = hostkey.replace("StrictHostKeyChecking yes", "StrictHostKeyChecking ask")
    configs = {}
    for name, text in (("password", password), ("passphrase", phrase), ("hostkey", hostkey)):
        path = os.path.join(workdir, "ssh_config_" + name)
        with open(path, "w") as f:
            f.write(text)
        configs[name] = "ssh -F %s" % path
    configs["key"] = fleet.ssh_command
    configs["known_hosts"] = unknown_known
    return configs


@pytest.fixture
def secret_file(tmp_path):
    def make(text):
        path = tmp_path / "secret"
        path.write_text(text + "\n")
        path.chmod(0o600)  # as a real password file is (else classh warns on stderr)
        return str(path)
    return make


def run(fleet, config, args, timeout=120):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, CLASSH] + args, env=base_env({"CLASSH_SSH": fleet.configs[config]}),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    proc.elapsed = time.monotonic() - started
    proc.out, proc.err = proc.stdout.decode(), proc.stderr.decode()
    return proc


def test_key_login_still_works_and_password_login_needs_a_password(pwfleet):
    assert run(pwfleet, "key", ["-q", "true", "node1"]).returncode == 0
    r = run(pwfleet, "password", ["--format", "json", "true", "node1"])
    assert r.returncode == 4 and r.elapsed < 10  # BatchMode: no prompt, no wait


def test_right_password_from_a_file(pwfleet, secret_file):
    r = run(pwfleet, "password", ["--password-file", secret_file(PASSWORD), "--format", "lines",
                                  "echo hi from {host}", "node[1-5]"])
    assert r.returncode == 0, r.err
    assert sorted(r.out.splitlines()) == ["node%d: hi from node%d" % (i, i) for i in range(1, 6)]
    assert "assword" not in r.out + r.err


def test_password_file_from_the_environment(pwfleet, secret_file):
    env = base_env({"CLASSH_SSH": pwfleet.configs["password"], "CLASSH_PASSWORD_FILE": secret_file(PASSWORD)})
    r = subprocess.run([sys.executable, CLASSH, "-q", "true", "node1"], env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_password_asked_once_on_the_terminal(pwfleet):
    env = base_env({"CLASSH_SSH": pwfleet.configs["password"]})
    child = pexpect.spawn(sys.executable, [CLASSH, "-P", "--format", "lines", "echo ok", "node[1-3]"],
                          env=env, timeout=60)
    child.expect("Password: ")
    child.sendline(PASSWORD)
    child.expect(pexpect.EOF)
    child.close()
    text = child.before.decode()
    assert child.exitstatus == 0, text
    assert text.count(": ok") == 3
    assert PASSWORD not in text  # not echoed


def test_wrong_password_fails_fast_with_exit_4(pwfleet, secret_file):
    r = run(pwfleet, "password", ["--password-file", secret_file("wrong"), "-n", "100", "true", "node[1-100]"])
    assert r.returncode == 4, r.err
    assert r.elapsed < 15, r.elapsed
    assert "100 ssh error" in r.err
    assert "the password was not accepted" in r.out


def test_password_at_fanout_100(pwfleet, secret_file):
    r = run(pwfleet, "password", ["--password-file", secret_file(PASSWORD), "-n", "100", "--progress",
                                  "true", "node[1-110]"])
    assert r.returncode == 0, r.err
    assert "110 ok" in r.err


def test_passphrase_protected_key(pwfleet, secret_file):
    ok = run(pwfleet, "passphrase", ["--password-file", secret_file(PASSPHRASE), "--format", "lines",
                                     "echo in", "node1,node2"])
    assert ok.returncode == 0, ok.err
    assert sorted(ok.out.splitlines()) == ["node1: in", "node2: in"]
    bad = run(pwfleet, "passphrase", ["--password-file", secret_file("nope"), "true", "node1"])
    assert bad.returncode == 4 and bad.elapsed < 15
    assert "passphrase was not accepted" in bad.out


def test_unknown_host_key_fails_at_once_unless_accepted(pwfleet, secret_file):
    r = run(pwfleet, "hostkey", ["--password-file", secret_file(PASSWORD), "true", "node1"])
    assert r.returncode == 4 and r.elapsed < 10, r.out
    assert "unknown host key" in r.out
    assert os.path.getsize(pwfleet.configs["known_hosts"]) == 0
    r = run(pwfleet, "hostkey", ["--password-file", secret_file(PASSWORD), "--accept-new-hostkeys",
                                 "--format", "lines", "echo in", "node1"])
    assert r.returncode == 0, r.out + r.err
    assert os.path.getsize(pwfleet.configs["known_hosts"]) > 0
    open(pwfleet.configs["known_hosts"], "w").close()


def test_sudo_answers_the_prompt_and_hides_it(pwfleet, secret_file, tmp_path):
    out = tmp_path / "r"
    r = run(pwfleet, "key", ["--password-file", secret_file(PASSWORD), "--sudo", "-o", str(out),
                             "--format", "lines", "id -u; echo err >&2", "node[1-3]"])
    assert r.returncode == 0, r.out + r.err
    assert sorted(line for line in r.out.splitlines()) == ["node1: 0", "node2: 0", "node3: 0"]
    assert sorted(r.err.splitlines()[:3]) == ["node1: err", "node2: err", "node3: err"]
    for name in os.listdir(out):
        text = (out / name).read_bytes()
        assert b"classh-sudo" not in text and b"classh-ready" not in text and PASSWORD.encode() not in text


def test_sudo_as_another_user(pwfleet, secret_file):
    r = run(pwfleet, "key", ["--password-file", secret_file(PASSWORD), "--sudo=nobody", "--format", "lines",
                             "id -un", "node1"])
    assert r.returncode == 0, r.err
    assert r.out == "node1: nobody\n"


def test_sudo_with_a_wrong_or_missing_password_is_an_ssh_error(pwfleet, secret_file):
    wrong = run(pwfleet, "key", ["--password-file", secret_file("wrong"), "--sudo", "true", "node1"])
    assert wrong.returncode == 4 and wrong.elapsed < 15, wrong.out
    assert "sudo did not accept the password" in wrong.out
    missing = run(pwfleet, "key", ["--sudo", "true", "node1"])
    assert missing.returncode == 4 and missing.elapsed < 15
    assert "none was given" in missing.out


def test_password_never_on_argv_in_environment_or_files(pwfleet, secret_file, tmp_path):
    out = tmp_path / "r"
    saved = tmp_path / "all.json"
    env = base_env({"CLASSH_SSH": pwfleet.configs["password"]})
    proc = subprocess.Popen([sys.executable, CLASSH, "--password-file", secret_file(PASSWORD), "--sudo",
                             "-o", str(out), "--json", str(saved), "sleep 2; echo done", "node[1-4]"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    secret = PASSWORD.encode()
    seen_children = 0
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        for pid in _tree(proc.pid):
            seen_children += 1
            for part in ("cmdline", "environ"):
                try:
                    with open("/proc/%d/%s" % (pid, part), "rb") as f:
                        assert secret not in f.read(), (pid, part)
                except OSError:
                    pass
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert seen_children > 4
    for path in list(out.iterdir()) + [saved]:
        assert secret not in path.read_bytes(), path
    assert secret not in stdout + stderr


def _tree(root):
    """pid of ``root`` and all its descendants."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    parents[int(name)] = int(f.read().rpartition(")")[2].split()[1])
            except OSError:
                continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += [child for child, parent in parents.items() if parent == pid]
    return found


def test_sudo_copy_into_a_root_only_directory(pwfleet, secret_file, tmp_path):
    root_only = tempfile.mkdtemp(prefix="classh-rootonly-")  # 0700, owned by root
    src = tmp_path / "motd"
    src.write_text("welcome\n")
    try:
        r = run(pwfleet, "key", ["--password-file", secret_file(PASSWORD), "--sudo", "--copy", str(src),
                                 "--dest", root_only + "/{host}/", "node1,node2"])
        assert r.returncode == 0, r.out + r.err
        for host in ("node1", "node2"):
            path = os.path.join(root_only, host, "motd")
            assert open(path).read() == "welcome\n"
            assert os.stat(path).st_uid == 0
    finally:
        shutil.rmtree(root_only, ignore_errors=True)
