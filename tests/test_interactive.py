"""classh -i: the interactive shell, through a pty (pexpect) and through piped stdin."""
import subprocess
import sys
import time

import pexpect

from conftest import CLASSH, base_env


def test_piped_commands_run_in_order_with_narrowing(fleet):
    script = "\n".join([
        "echo hi",
        ":hosts",
        "[ {host} != node2 ]",
        ":failed",
        ":hosts",
        "echo again",
        ":all",
        ":drop node3",
        ":add node[4-5]",
        ":hosts",
        ":nonsense",
        ":quit",
        "echo never",
    ]) + "\n"
    r = subprocess.run([sys.executable, CLASSH, "-i", "node[1-3]"], input=script.encode(),
                       env=base_env({"CLASSH_SSH": fleet.ssh_command}), capture_output=True, timeout=120)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert out.splitlines()[:3] == ["node[1-3] (3)  0", "  Output:", "    hi"]
    assert "node[1,3] (2)  0" in out and "node2 (1)  1" in out
    assert "node2 (1)  0\n  Output:\n    again\n" in out
    assert "never" not in out
    hosts_lines = [line for line in err.splitlines() if line.endswith(")") and line.startswith("node")]
    assert hosts_lines == ["node[1-3] (3)", "node2 (1)", "node[1-2,4-5] (4)"]
    assert "unknown shell command ':nonsense'" in err
    assert r.returncode == 0


def test_end_of_input_ends_the_shell_with_the_last_status(fleet):
    r = subprocess.run([sys.executable, CLASSH, "-i", "node1"], input=b"exit 3\n",
                       env=base_env({"CLASSH_SSH": fleet.ssh_command}), capture_output=True, timeout=60)
    assert r.returncode == 5
    assert b"node1 (1)  3" in r.stdout


def test_terminal_shell_prompt_and_ctrl_c_cancels_only_the_line(fleet):
    child = pexpect.spawn(sys.executable, [CLASSH, "-i", "node[1-2]"],
                          env=base_env({"CLASSH_SSH": fleet.ssh_command, "NO_COLOR": "1"}), timeout=30)
    child.expect_exact("classh> ")
    child.sendline("echo hello")
    child.expect_exact("node[1-2] (2)  0")
    child.expect_exact("hello")
    child.expect_exact("classh> ")
    child.sendline("sleep 60")
    time.sleep(2)
    child.sendintr()
    child.expect("interrupted")
    child.expect_exact("classh> ")
    child.sendline(":hosts")
    child.expect_exact("node[1-2] (2)")
    child.expect_exact("classh> ")  # the prompt after :hosts, before Ctrl-C is sent
    child.sendintr()  # Ctrl-C at the prompt: a fresh prompt, not the end
    child.expect_exact("^C")
    child.expect_exact("classh> ")
    child.sendline(":quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130  # the last line run was interrupted


def test_options_that_make_no_sense_in_the_shell_are_refused(fleet):
    r = subprocess.run([sys.executable, CLASSH, "-i", "-o", "/tmp/x", "--format", "json", "node1"],
                       input=b"", env=base_env({"CLASSH_SSH": fleet.ssh_command}), capture_output=True,
                       timeout=60)
    assert r.returncode == 2
    assert b"--results, --format" in r.stderr and len(r.stderr.splitlines()) == 1
