"""The command line end to end: listing hosts, bad input, closed standard streams, -i and
SIGTERM, password hygiene.

Against the real loopback sshd (``classh`` fixture) where ssh matters, with the
stand-in ssh (``standin``) elsewhere. A stand-in that leaves a mark proves that
refused input starts nothing.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import CLASSH, STANDIN, base_env

from classh import cli
from classh.hostmode import TargetSource, task_maker
from classh.options import Options
from classh.display import SafeStream, StatusLine
from classh.targets import resolve


# item 9: listing hosts

def test_list_prints_the_hosts_a_run_would_reach_and_runs_nothing(marking_ssh, tmp_path):
    ssh, mark = marking_ssh
    hosts = tmp_path / "hosts"
    hosts.write_text("n[1-4]\n# a comment\nn2\nu@m1:2222\n")
    r = subprocess.run([sys.executable, CLASSH, "--list", "-x", "n3", str(hosts), "n5,n1"],
                       env=base_env({"CLASSH_SSH": ssh}), capture_output=True, text=True)
    assert r.returncode == 0, r
    assert r.stdout == "n1\nn2\nn4\nu@m1:2222\nn5\n"
    assert r.stderr == "" and not mark.exists()


def test_list_count_and_fold(standin):
    r = standin("--list", "--count", "n[1-40],n45", "-x", "n[2-3]")
    assert (r.rc, r.out) == (0, "39\n"), r
    r = standin("--fold", input=b"n3 n1\nn2,n45 # comment\n\nn[4-40]\nn2\n")
    assert (r.rc, r.out) == (0, "n[1-40,45]\n"), r
    r = standin("--fold", "--count", input=b"n1 n2\nn2\n")
    assert (r.rc, r.out) == (0, "2\n"), r
    r = standin("--fold", "--count", input=b"")
    assert (r.rc, r.out) == (0, "0\n"), r


@pytest.mark.parametrize("args,stdin,text", [
    (["--fold"], b"n1\nn;2\n", "stdin:2"),
    (["--fold", "n1"], b"", "n1"),
    (["--list", "-t", "5", "n1"], None, "--timeout"),
    (["--list", "-o", "/tmp/x", "n1"], None, "--results"),
    (["--count", "true", "n1"], None, "--count"),
    (["--list", "n[2-1]"], None, "n[2-1]"),
    (["--list", "-x", "n[1-2]", "n[1-2]"], None, "n[1-2]"),
])
def test_listing_refuses_bad_input_in_one_line(standin, args, stdin, text):
    r = standin(*args, input=stdin)
    assert r.rc == 2 and r.out == "", r
    assert len(r.err.strip().splitlines()) == 1 and text in r.err, r


# item 6: no target, bad numbers, long names, closed streams, -i and SIGTERM

@pytest.mark.parametrize("content,arg", [("", None), ("# only\n\n  # comments\n", None),
                                         (None, ""), (None, " , ")])
def test_no_target_is_an_error_and_starts_nothing(marking_ssh, tmp_path, content, arg):
    ssh, mark = marking_ssh
    if content is not None:
        arg = str(tmp_path / "hosts")
        (tmp_path / "hosts").write_text(content)
    r = subprocess.run([sys.executable, CLASSH, "true", arg], env=base_env({"CLASSH_SSH": ssh}),
                       capture_output=True, text=True)
    assert r.returncode == 2, r
    assert len(r.stderr.strip().splitlines()) == 1 and repr(arg) in r.stderr
    assert not mark.exists()


def test_everything_excluded_is_an_error(standin):
    r = standin("-x", "n[1-3]", "true", "n[1-3]")
    assert r.rc == 2 and "no host" in r.err and "n[1-3]" in r.err, r


def test_an_empty_streamed_host_file_is_nothing_to_do(standin):
    r = standin("true", "/dev/stdin", input=b"# nothing here\n")
    assert r.rc == 0 and "nothing to do" in r.err and "/dev/stdin" in r.err, r


@pytest.mark.parametrize("args,env,text", [
    (["-t", "inf"], {}, "'inf'"),
    (["-t", "1e400"], {}, "'1e400'"),
    (["-t", "1e9"], {}, "'1e9'"),
    (["-t", "nan"], {}, "'nan'"),
    (["-t", "0x10"], {}, "'0x10'"),
    (["-t", ""], {}, "''"),
    (["--connect-timeout", "inf"], {}, "'inf'"),
    (["--connect-timeout", "-inf"], {}, "'-inf'"),
    ([], {"CLASSH_TIMEOUT": "inf"}, "'inf'"),
    ([], {"CLASSH_NUMJOBS": "1e400"}, "'1e400'"),
    (["-n", "0x10"], {}, "'0x10'"),
    (["-n", "1_0"], {}, "'1_0'"),
    (["-n", "-3"], {}, "'-3'"),
    (["-n", ""], {}, "''"),
    (["--max-hosts", "nan"], {}, "'nan'"),
    (["--persist=inf"], {}, "'inf'"),
    (["--persist=99999999999999"], {}, "99999999999999"),
    (["--persist="], {}, "''"),
    (["-p", "1e3"], {}, "'1e3'"),
    (["-p", "0x16"], {}, "'0x16'"),
    ([], {"CLASSH_SSH_OPTIONS": '"x'}, '"x'),
])
def test_bad_numbers_and_options_exit_2_before_anything_starts(marking_ssh, args, env, text):
    ssh, mark = marking_ssh
    merged = {"CLASSH_SSH": ssh}
    merged.update(env)
    r = subprocess.run([sys.executable, CLASSH] + args + ["true", "h1"], env=base_env(merged),
                       capture_output=True, text=True)
    assert r.returncode == 2, r
    assert len(r.stderr.strip().splitlines()) == 1 and text in r.stderr, r
    assert "internal error" not in r.stderr and not mark.exists()


def test_a_huge_timeout_that_is_allowed_still_runs(standin):
    r = standin("-q", "-t", "2e6", "--connect-timeout", "99999", "true", "h1")
    assert r.rc == 0, r
    r = standin("-q", "-t", "2000001", "true", "h1")
    assert r.rc == 2 and "'2000001'" in r.err, r


LONG = "h" * 260


def test_a_host_name_too_long_for_a_result_file_is_refused_before_anything_runs(
        classh, tmp_path, fleet):
    results = tmp_path / "r"
    r = classh("-q", "-o", str(results), "true", "node1," + LONG)
    assert r.rc == 2, r
    assert LONG in r.err and len(r.err.strip().splitlines()) == 1
    assert not results.exists() or not os.listdir(results)


def test_a_long_name_for_a_router_directory_is_refused(standin, tmp_path):
    r = standin("-q", "-S", str(tmp_path), "true", "h1," + LONG)
    assert r.rc == 2 and LONG in r.err, r
    assert os.listdir(tmp_path) == []


def test_a_streamed_long_name_is_skipped_and_the_others_run(standin, tmp_path):
    results = tmp_path / "r"
    r = standin("-q", "-o", str(results), "true", "/dev/stdin", input=("h1\n%s\nh2\n" % LONG).encode())
    assert r.rc == 2, r
    assert "/dev/stdin:2:" in r.err and LONG in r.err
    assert sorted(n for n in os.listdir(results) if n.endswith(".ret")) == ["h1.ret", "h2.ret"]


def run_with_fds(args, closed, env=None):
    """Run classh with some of fds 1 and 2 closed (as ``>&-`` does); return (rc, stderr)."""
    err_r, err_w = os.pipe()

    def close_them():
        for fd in closed:
            os.close(fd)

    proc = subprocess.Popen([sys.executable, CLASSH] + args, env=base_env(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=err_w, preexec_fn=close_them)
    os.close(err_w)
    with os.fdopen(err_r, "rb") as reader:
        err = reader.read().decode()
    return proc.wait(timeout=120), err


def test_closed_stdout_with_quiet_and_results_simply_runs(tmp_path):
    rc, err = run_with_fds(["-q", "-o", str(tmp_path / "r"), "echo hi", "h1,h2"], [1],
                           {"CLASSH_SSH": STANDIN})
    assert rc == 0, err
    assert (tmp_path / "r" / "h1.out").read_text() == "hi\n"


def test_closed_stdout_with_a_display_is_one_clear_line(tmp_path):
    rc, err = run_with_fds(["echo hi", "h1"], [1], {"CLASSH_SSH": STANDIN})
    assert rc == 2 and "stdout is closed" in err and len(err.strip().splitlines()) == 1, err


def test_closed_stdout_and_stderr_keep_the_exit_status(tmp_path):
    rc, err = run_with_fds(["-q", "exit 3", "h1"], [1, 2], {"CLASSH_SSH": STANDIN})
    assert rc == 5 and err == ""
    rc, err = run_with_fds(["-q", "-t", "inf", "true", "h1"], [2], {"CLASSH_SSH": STANDIN})
    assert rc == 2 and err == ""


def test_sigterm_ends_the_interactive_shell_with_143(tmp_path):
    mark = tmp_path / "running"
    after = tmp_path / "after"
    script = "touch %s; sleep 30\ntouch %s\n" % (mark, after)
    proc = subprocess.Popen([sys.executable, CLASSH, "-i", "h1"], env=base_env({"CLASSH_SSH": STANDIN}),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(script.encode())
        proc.stdin.close()
        deadline = time.monotonic() + 30
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 143
    assert not after.exists()


# item 7: password hygiene, --status total

def test_a_readable_password_file_gets_a_warning_and_core_dumps_are_off(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    command = "ulimit -c 1000; exec %s %s --password-file %s --format lines 'ulimit -c' h1" % (
        sys.executable, CLASSH, secret)
    r = subprocess.run(["sh", "-c", command], env=base_env({"CLASSH_SSH": STANDIN}),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    assert r.stdout == "h1: 0\n"
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(secret) in warnings[0] and "s3cret" not in r.stderr
    secret.chmod(0o600)
    r = subprocess.run(["sh", "-c", command], env=base_env({"CLASSH_SSH": STANDIN}),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "warning" not in r.stderr, r


def test_status_total_leaves_out_the_hosts_resume_skips(tmp_path):
    args = cli.parse(["--status", "-q", "true", "h[1-3]"])
    targets = resolve(["h[1-3]"])
    source = TargetSource(targets, task_maker("true", Options()), skip={"h2"})
    null = SafeStream(open(os.devnull, "wb"))
    lines = [o for o in cli.displays(args, null, null, source) if isinstance(o, StatusLine)]
    assert [line.total for line in lines] == [2]
