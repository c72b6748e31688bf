"""Host mode against a real OpenSSH server on loopback."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import CLASSH, base_env


def blocks(out):
    """Classic output -> {host: (exit, block text)}."""
    result = {}
    host = None
    for line in out.splitlines():
        match = re.match(r"^(\S+)\s+(\S+)\s+\((\d+\.\d+)\)$", line)
        if match:
            host = match.group(1)
            result[host] = [match.group(2), ""]
        elif host:
            result[host][1] += line + "\n"
    return {h: tuple(v) for h, v in result.items()}


def test_runs_on_every_host_with_classic_display(classh):
    r = classh("echo out-{host}; echo err-{host} >&2", "node[1-5]")
    assert r.rc == 0, r
    shown = blocks(r.out)
    assert sorted(shown) == ["node%d" % i for i in range(1, 6)]
    for host, (code, text) in shown.items():
        assert code == "0"
        assert "  Output:\n    out-%s\n" % host in text
        assert "  Error:\n    err-%s\n" % host in text
    assert re.search(r"classh: 5 hosts in [\d.]+ s: 5 ok", r.err), r.err


def test_remote_failure_is_exit_5_and_shows_the_code(classh):
    r = classh("if [ {host} = node2 ]; then echo bad >&2; exit 7; fi; echo fine", "node[1-3]")
    assert r.rc == 5, r
    shown = blocks(r.out)
    assert shown["node2"][0] == "7"
    assert "bad" in shown["node2"][1]
    assert shown["node1"][0] == "0"
    assert "1 failed" in r.err


def test_refused_host_is_an_ssh_error_exit_4(classh):
    r = classh("--progress", "true", "node1,refused")
    assert r.rc == 4, r
    assert sorted(r.err.splitlines()[0]) == [".", "~"]
    assert "1 ssh error" in r.err


def test_silent_host_fails_after_the_connect_timeout(classh):
    r = classh("--connect-timeout", "2", "-q", "true", "silent")
    assert r.rc == 4, r
    assert r.elapsed < 8, r.elapsed


def test_slow_host_times_out_exit_3(classh):
    r = classh("-t", "1", "sleep 30; echo never", "node1,node2")
    assert r.rc == 3, r
    shown = blocks(r.out)
    assert [v[0] for v in shown.values()] == ["timeout", "timeout"]
    assert "never" not in r.out
    assert r.elapsed < 10


def test_timeout_from_the_environment(classh):
    r = classh("-q", "sleep 30", "node1", env={"CLASSH_TIMEOUT": "1"})
    assert r.rc == 3 and r.elapsed < 10, r


def test_remote_command_ignoring_sigterm_still_ends_at_timeout(classh):
    r = classh("-t", "1", "--progress", "trap '' TERM; sleep 30", "node1")
    assert r.rc == 3, r
    assert r.err.startswith("!")
    assert r.elapsed < 10


def test_exit_status_prefers_ssh_error_then_timeout_then_failure(classh):
    assert classh("-q", "-t", "2", "case {host} in node1) sleep 9;; *) exit 3;; esac",
                  "node1,node2").rc == 3
    assert classh("-q", "-t", "2", "sleep 9", "node1,refused").rc == 4


def test_flooding_host_does_not_stall_and_output_arrives_whole(classh, tmp_path):
    # 30 MB on stdout, interleaved with stderr: neither pipe may block the other.
    cmd = "head -c 30000000 /dev/zero | tr '\\0' x; echo; echo done >&2"
    r = classh("--format", "lines", "-t", "60", cmd, "node1")
    assert r.rc == 0, r.err
    assert len(r.out) > 30_000_000
    assert "node1: done" in r.err


def test_flood_without_a_display_keeps_classh_small(fleet):
    # classh is the only child of this wrapper, so its peak RSS is the wrapper's children's.
    wrapper = (
        "import resource, subprocess, sys; "
        "p = subprocess.run(sys.argv[1:]); "
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    cmd = "head -c 200000000 /dev/zero; echo end >&2"
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, CLASSH, "--progress", "-t", "60", cmd, "node1"],
        env=base_env({"CLASSH_SSH": fleet.ssh_command}), stdout=subprocess.PIPE, timeout=120)
    rc, peak_kb = map(int, proc.stdout.split())
    assert rc == 0
    assert peak_kb < 60_000, peak_kb  # 200 MB went through classh


def test_lines_format_prefixes_each_line(classh):
    r = classh("--format", "lines", "printf 'a\\nb\\n'; printf 'partial'; echo e >&2", "node1,node2")
    assert r.rc == 0, r
    for host in ("node1", "node2"):
        assert "%s: a\n%s: b\n" % (host, host) in r.out
        assert "%s: partial\n" % host in r.out
        assert "%s: e\n" % host in r.err


def test_progress_alone_hides_the_per_host_display(classh):
    r = classh("--progress", "echo hello", "node[1-3]")
    assert r.rc == 0
    assert r.out == ""
    assert r.err.startswith("...\n")


def test_progress_with_format_shows_both(classh):
    r = classh("--progress", "--format", "lines", "echo hello", "node1")
    assert r.out == "node1: hello\n"
    assert r.err.startswith(".\n")


def test_quiet_shows_nothing_but_the_summary(classh):
    r = classh("-q", "echo hello", "node[1-2]")
    assert r.rc == 0 and r.out == ""
    assert r.err.startswith("classh: 2 hosts")


def test_stdin_is_dev_null(classh):
    r = classh("--format", "lines", "cat; echo end", "node1", input=b"must not be read\n")
    assert r.out == "node1: end\n", r


def test_fanout_limits_concurrency(classh):
    cmd = "date +%s.%N; sleep 1; date +%s.%N"
    r = classh("-n", "2", "--format", "lines", cmd, "node[1-6]")
    assert r.rc == 0, r
    times = {}
    for line in r.out.splitlines():
        host, value = line.split(": ")
        times.setdefault(host, []).append(float(value))
    events = sorted([(s, 1) for s, e in times.values()] + [(e, -1) for s, e in times.values()])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak == 2, times


def test_numjobs_from_the_environment(classh):
    cmd = "date +%s.%N; sleep 1"
    r = classh("--format", "lines", cmd, "node[1-3]", env={"CLASSH_NUMJOBS": "1"})
    starts = sorted(float(line.split(": ")[1]) for line in r.out.splitlines())
    assert starts[2] - starts[0] > 1.8, starts


def test_port_option_and_host_port_are_passed_to_ssh(classh, fleet):
    assert classh("-q", "-p", str(fleet.port), "true", "node1").rc == 0
    assert classh("-q", "-p", str(fleet.refused_port), "true", "node1").rc == 4
    assert classh("-q", "true", "node1:%d" % fleet.refused_port).rc == 4
    assert classh("-q", "true", "node1:%d" % fleet.port).rc == 0


def test_user_option_and_user_at_host(classh, fleet):
    assert classh("-q", "-l", fleet.user, "true", "node1").rc == 0
    assert classh("-q", "-l", "nosuchuser", "true", "node1").rc == 4
    assert classh("-q", "true", "nosuchuser@node1").rc == 4
    assert classh("-q", "-l", "nosuchuser", "true", "%s@node1" % fleet.user).rc == 0
    assert classh("-q", "true", "node1", env={"CLASSH_USER": "nosuchuser"}).rc == 4


def test_ssh_option_reaches_ssh_and_overrides_classh_defaults(classh, fleet):
    assert classh("-q", "-O", "Port=%d" % fleet.refused_port, "true", "node1").rc == 4
    opts = "Port=%d" % fleet.refused_port
    assert classh("-q", "true", "node1", env={"CLASSH_SSH_OPTIONS": opts}).rc == 4
    # The user's ConnectTimeout replaces classh's default, so 'silent' gives up after 1 s.
    r = classh("-q", "--connect-timeout", "30", "-O", "ConnectTimeout=1", "true", "silent")
    assert r.rc == 4 and r.elapsed < 6, r


def test_ssh_command_option(fleet):
    from conftest import run_classh
    r = run_classh(["--ssh", fleet.ssh_command, "--format", "lines", "hostname >/dev/null && echo ok", "node1"])
    assert r.out == "node1: ok\n", r


def test_targets_from_classh_hosts_and_host_files(classh, tmp_path):
    r = classh("--format", "lines", "echo x", env={"CLASSH_HOSTS": "node1 node2"})
    assert sorted(r.out.splitlines()) == ["node1: x", "node2: x"]
    hosts = tmp_path / "hosts"
    hosts.write_text("# rack one\nnode[1-2]\n\nnode3  # last\nnode1\n")
    r = classh("--format", "lines", "echo x", str(hosts), "-x", "node2")
    assert sorted(r.out.splitlines()) == ["node1: x", "node3: x"]


def test_duplicates_run_once(classh):
    r = classh("--format", "lines", "echo x", "node1,node1", "node[1-1]")
    assert r.out == "node1: x\n"


@pytest.mark.parametrize("pattern", ["n[5-]", "n[a-c]", "n[1-3", "-oProxyCommand=x", "a;b", "a b",
                                     "a$b", "a|b", "a`b`", "a'b", "x:0", "x:65536", "a&b"])
def test_bad_targets_are_refused_before_anything_runs(standin, tmp_path, pattern):
    marker = tmp_path / "ran"
    fake_ssh = tmp_path / "ssh"
    fake_ssh.write_text("#!/bin/sh\ntouch %s\n" % marker)
    fake_ssh.chmod(0o755)
    r = standin("--ssh", str(fake_ssh), "--", "true", "good1", pattern)
    assert r.rc == 2, r
    assert len(r.err.strip().splitlines()) == 1
    assert pattern.split(":")[0][:3] in r.err or pattern in r.err
    assert not marker.exists()


def test_max_hosts_is_enforced(standin):
    r = standin("--max-hosts", "10", "true", "n[1-11]")
    assert r.rc == 2 and "n[1-11]" in r.err, r


def test_noexpand_takes_names_literally(standin):
    r = standin("--noexpand", "true", "n[1-2]")
    assert r.rc == 2 and "n[1-2]" in r.err


@pytest.mark.parametrize("args,text", [
    (["-n", "0", "true", "h"], "'0'"),
    (["-n", "lots", "true", "h"], "'lots'"),
    (["-t", "soon", "true", "h"], "'soon'"),
    (["-p", "70000", "true", "h"], "70000"),
    (["--format", "fancy", "true", "h"], "'fancy'"),
    (["-l", "-oProxyCommand=x", "true", "h"], "-oProxyCommand=x"),
    (["-l", "a;b", "true", "h"], "a;b"),
    (["--sudo=a b", "true", "h"], "a b"),
    (["--persist=soon", "true", "h"], "soon"),
    (["-o", "/proc/no/such/dir", "true", "h"], "/proc/no/such/dir"),
    (["--no-such-option", "true", "h"], "--no-such-option"),
    (["true", "h", "-XProxyCommand=x"], "-XProxyCommand=x"),
    ([], "no COMMAND"),
    (["--ssh", "/no/such/ssh", "true", "h"], "/no/such/ssh"),
    (["true"], "CLASSH_HOSTS"),
])
def test_bad_options_exit_2_with_one_line(standin, args, text):
    r = standin(*args)
    assert r.rc == 2, r
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert text in r.err


def test_help_is_the_usage(standin):
    r = standin("--help")
    assert r.rc == 0 and "Usage:" in r.out and "--numjobs" in r.out


def test_broken_stdout_pipe_is_quiet(fleet):
    proc = subprocess.run(
        "%s %s --format lines 'seq 1 20000' node[1-3] | head -1" % (sys.executable, CLASSH),
        shell=True, env=base_env({"CLASSH_SSH": fleet.ssh_command}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert proc.stdout.decode().startswith("node")
    assert b"Traceback" not in proc.stderr and b"Error" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_kills_children_and_keeps_finished_results(fleet, tmp_path, sig, code):
    env = base_env({"CLASSH_SSH": fleet.ssh_command})
    cmd = "case {host} in node1) echo quick;; *) echo $$ > /tmp/classh-int-{host}; sleep 60;; esac"
    proc = subprocess.Popen([sys.executable, CLASSH, "--format", "lines", cmd, "node[1-3]"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    ssh_children = []
    while time.monotonic() < deadline:
        ssh_children = _children_of(proc.pid)
        if len(ssh_children) == 2:
            break
        time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    assert b"node1: quick" in out
    assert b"interrupted" in err and b"2 killed" in err, err
    for pid in ssh_children:
        assert not os.path.exists("/proc/%d" % pid) or _is_zombie(pid)


def _children_of(pid):
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(name))
    return found


def _is_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_repeated_options_keep_each_value_once(standin, tmp_path):
    ok1, ok2 = tmp_path / "ok1.txt", tmp_path / "ok2.txt"
    r = standin("-q", "-x", "h2", "-x", "h3", "-S", str(ok1), "-S", str(ok2), "true", "h[1-4]")
    assert r.rc == 0, r
    assert ok1.read_text() == ok2.read_text() == "h1\nh4\n" or sorted(ok1.read_text().split()) == ["h1", "h4"]
    assert sorted(ok2.read_text().split()) == ["h1", "h4"]


def test_step_ranges_on_the_command_line_are_not_host_files(standin):
    r = standin("--format", "lines", "echo x", "n[1-7/3]", "-x", "n[4-4/1]")
    assert r.rc == 0, r
    assert sorted(r.out.splitlines()) == ["n1: x", "n7: x"]


def test_double_dash_ends_options_and_is_no_target(standin):
    r = standin("--format", "lines", "--", "echo x", "h1")
    assert r.rc == 0 and r.out == "h1: x\n", r


def test_no_color_empty_means_colour_allowed():
    from classh.display import use_colour
    import io
    assert use_colour(io.BytesIO(), {"NO_COLOR": ""}) is False  # not a terminal anyway
    import os as _os, pty
    master, slave = pty.openpty()
    try:
        tty = _os.fdopen(slave, "wb", closefd=False)
        assert use_colour(tty, {"NO_COLOR": ""}) is True
        assert use_colour(tty, {"NO_COLOR": "1"}) is False
    finally:
        _os.close(master)
        _os.close(slave)


def test_missing_password_file_is_a_usage_error(standin, tmp_path):
    r = standin("--password-file", str(tmp_path / "nope"), "true", "h1")
    assert r.rc == 2 and "nope" in r.err and len(r.err.strip().splitlines()) == 1


def test_ask_for_a_password_without_a_terminal_is_refused(standin):
    # run_classh starts classh without a controlling terminal only under setsid
    import subprocess as sp
    from conftest import STANDIN
    proc = sp.run([sys.executable, CLASSH, "-P", "true", "h1"], env=base_env({"CLASSH_SSH": STANDIN}),
                  stdin=sp.DEVNULL, capture_output=True, start_new_session=True, timeout=30)
    assert proc.returncode == 2
    assert b"-P needs a terminal" in proc.stderr


def test_bad_line_in_a_streamed_host_file_is_reported_and_the_rest_runs(standin):
    r = standin("--format", "lines", "echo ran", "/dev/stdin", input=b"h1\nbad;host\nh2\n")
    assert r.rc == 2, r
    assert sorted(r.out.splitlines()) == ["h1: ran", "h2: ran"]
    assert "/dev/stdin:2:" in r.err and "bad;host" in r.err


def test_control_directory_open_to_others_is_refused(tmp_path):
    from classh.persist import PersistError, control_dir
    (tmp_path / "classh").mkdir(mode=0o755)
    os.chmod(tmp_path / "classh", 0o755)
    with pytest.raises(PersistError, match="0700"):
        control_dir({"XDG_RUNTIME_DIR": str(tmp_path)})
    os.chmod(tmp_path / "classh", 0o700)
    assert control_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == str(tmp_path / "classh")
