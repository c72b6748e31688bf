"""Habits of pdsh, pssh, clush and ssh users (-w, -I, -k in host mode, the options that mean
something else in classh), streamed host lists that bring no host, ``--persist 60``.

The stand-in ssh (``standin``: commands run locally) where ssh does not matter, the real
loopback sshd (``classh``) for what goes through it; a stand-in that leaves a mark proves
that refused input starts nothing.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import CLASSH, STANDIN, base_env

from classh.cli import UsageError, parse

#: Hosts finishing in reverse order: n1 last, n3 first.
SLOW_FIRST = "case {host} in n1) sleep 0.6;; n2) sleep 0.3;; esac; echo out-{host}"


def run_in(directory, args, ssh=STANDIN, input=None):
    """classh run in ``directory`` (relative host files), stdin ``input`` or /dev/null."""
    return subprocess.run([sys.executable, CLASSH] + list(args), cwd=str(directory),
                          env=base_env({"CLASSH_SSH": ssh}), input=input,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True)


# -- -w HOSTS (pdsh, clush) ------------------------------------------------------------

def test_w_gives_targets_repeatable_with_and_without_target(standin):
    r = standin("-w", "n[1-2]", "--format", "lines", "-w", "u@n3", "echo {host}", "n4,n1")
    assert r.rc == 0, r
    assert sorted(r.out.splitlines()) == ["n1: n1", "n2: n2", "n4: n4", "u@n3: n3"]
    r = standin("--list", "-w", "n[1-3]", "-x", "n2")
    assert (r.rc, r.out) == (0, "n1\nn3\n"), r


def test_w_caret_file_is_pdsh_host_file(tmp_path):
    (tmp_path / "hosts.txt").write_text("n[1-2]\n# comment\nn5\n")
    r = run_in(tmp_path, ["--list", "-w", "^hosts.txt"])
    assert (r.returncode, r.stdout) == (0, b"n1\nn2\nn5\n"), r


def test_w_in_job_mode_points_to_node(marking_ssh):
    ssh, mark = marking_ssh
    r = subprocess.run([sys.executable, CLASSH, "-w", "n1", "--node", "n2", "--job", "true"],
                       env=base_env({"CLASSH_SSH": ssh}), capture_output=True, text=True)
    assert r.returncode == 2 and "--node n1" in r.stderr, r
    assert not mark.exists()


# -- -I / --send-input (pssh -I) --------------------------------------------------------

def test_send_input_reaches_every_host_through_sshd(classh):
    r = classh("-I", "-w", "node[1-3]", "--format", "json", "cat; echo {host}",
               input=b"line one\nline two\n")
    assert r.rc == 0, r
    records = {rec["host"]: rec for rec in map(json.loads, r.out.splitlines())}
    assert sorted(records) == ["node1", "node2", "node3"]
    for host, rec in records.items():
        assert rec["stdout"] == "line one\nline two\n%s\n" % host


def test_send_input_is_read_once_for_many_hosts(standin):
    data = os.urandom(300000)
    r = standin("-I", "--format", "lines", "cksum", "n[1-8]", input=data)
    assert r.rc == 0, r
    sums = {line.split(": ", 1)[1] for line in r.out.splitlines()}
    expected = subprocess.run(["cksum"], input=data, capture_output=True).stdout.decode().strip()
    assert sums == {expected} and len(r.out.splitlines()) == 8


def test_without_send_input_the_command_reads_no_stdin_of_classh(standin):
    r = standin("--format", "lines", "cat; echo end", "n1", input=b"secret\n")
    assert r.rc == 0 and "secret" not in r.out and "n1: end" in r.out, r


@pytest.mark.parametrize("args,text", [
    (["-I", "true", "/dev/stdin"], "'/dev/stdin'"),
    (["-I", "--copy", "f", "--dest", "/tmp", "n1"], "--copy"),
    (["-I", "--slurp", "/etc/hostname", "--dest", "/tmp/nowhere", "n1"], "--slurp"),
    (["-I", "-i", "n1"], "-i"),
    (["-I", "--node", "n1", "--job", "true"], "--init-file"),
    (["-I", "--list", "n1"], "--list"),
])
def test_send_input_refused_where_it_means_nothing(marking_ssh, args, text):
    ssh, mark = marking_ssh
    r = subprocess.run([sys.executable, CLASSH] + args, env=base_env({"CLASSH_SSH": ssh}),
                       input="n2\n", capture_output=True, text=True)
    assert r.returncode == 2, r
    assert len(r.stderr.strip().splitlines()) == 1 and text in r.stderr and "-I" in r.stderr, r
    assert not mark.exists()


# -- -k / --keep-order in host mode -----------------------------------------------------

def test_without_keep_order_hosts_show_as_they_finish(standin):
    """The control for the tests below: the slow hosts really finish last."""
    r = standin("--format", "lines", SLOW_FIRST, "n[1-3]")
    assert r.out.splitlines() == ["n3: out-n3", "n2: out-n2", "n1: out-n1"], r


@pytest.mark.parametrize("fmt", ["lines", "json", "classic"])
def test_keep_order_shows_hosts_in_target_order(standin, fmt):
    r = standin("-k", "--format", fmt, SLOW_FIRST, "n[1-3]")
    assert r.rc == 0, r
    assert re.findall(r"out-(n\d)", r.out) == ["n1", "n2", "n3"], r


def test_keep_order_follows_a_streamed_host_list(standin):
    r = standin("--keep-order", "--format", "lines", SLOW_FIRST, "/dev/stdin",
                input=b"n2\nn1\nn3\n")
    assert r.rc == 0 and r.out.splitlines() == ["n2: out-n2", "n1: out-n1", "n3: out-n3"], r


def test_keep_order_skips_hosts_done_before(standin, tmp_path):
    results = str(tmp_path / "out")
    r = standin("-q", "-o", results, "test {host} != n2", "n[1-3]")
    assert r.rc == 5, r
    r = standin("-k", "--resume", "-o", results, "--format", "lines", SLOW_FIRST, "n[1-3]")
    assert r.rc == 0 and r.out.splitlines() == ["n2: out-n2"], r


def test_keep_order_refused_with_interactive(standin):
    r = standin("-k", "-i", "n1")
    assert r.rc == 2 and "--keep-order" in r.err, r


# -- options that mean something else in classh --------------------------------------------

@pytest.mark.parametrize("args,texts", [
    (["-h", "hosts.txt", "uptime"], ["--help", "./hosts.txt", "-w ^hosts.txt"]),
    (["-w", "n1", "df", "-h"], ["--help", "'df -h'"]),
    (["-o", "StrictHostKeyChecking=no", "uptime", "n1"],
     ["-O StrictHostKeyChecking=no", "results directory", "--accept-new-hostkeys"]),
    (["-o", "ConnectTimeout 5", "uptime", "n1"], ["-O 'ConnectTimeout 5'"]),
    (["-x", "-o StrictHostKeyChecking=no", "uptime", "n1"], ["-O OPTION", "pssh's -x"]),
    (["-i", "df -h", "n1"], ["takes no COMMAND", "default display"]),
    (["uptime", "hosts.txt"], ["'hosts.txt' is a file here", "./hosts.txt"]),
])
def test_habits_from_other_tools_fail_with_a_pointed_message(marking_ssh, tmp_path, args, texts):
    ssh, mark = marking_ssh
    (tmp_path / "hosts.txt").write_text("n1\n")
    r = run_in(tmp_path, args, ssh=ssh)
    err = r.stderr.decode()
    assert r.returncode == 2 and len(err.strip().splitlines()) == 1, (r, err)
    assert "bad arguments" not in err and all(text in err for text in texts), err
    assert not mark.exists()
    assert sorted(os.listdir(str(tmp_path))) == ["hosts.txt", "marking-ssh"]  # no -o DIR made


def test_a_results_directory_that_only_looks_like_an_ssh_option_is_written_as_a_path(standin,
                                                                                    tmp_path):
    results = str(tmp_path / "Key=value")
    r = standin("-q", "-o", results, "true", "n1")
    assert r.rc == 0 and os.path.exists(os.path.join(results, "n1.ret")), r


def test_help_alone_still_prints_the_usage(standin):
    r = standin("-h")
    assert r.rc == 0 and "-w HOSTS, --hosts HOSTS" in r.out and "--send-input" in r.out, r


# -- pipelines: a streamed host list that ends with no host ---------------------------------

@pytest.mark.parametrize("stdin", [b"", b"# nothing here\n\n"])
def test_a_streamed_host_list_with_no_host_is_nothing_to_do(marking_ssh, stdin):
    ssh, mark = marking_ssh
    r = subprocess.run([sys.executable, CLASSH, "true", "/dev/stdin"], input=stdin,
                       env=base_env({"CLASSH_SSH": ssh}), capture_output=True)
    err = r.stderr.decode()
    assert r.returncode == 0 and r.stdout == b"", r
    assert err.count("\n") == 1 and "nothing to do" in err and "/dev/stdin" in err, err
    assert not mark.exists()


def test_a_next_stage_fed_no_host_is_no_failing_stage(standin):
    stage = "%s %s -q true /dev/stdin" % (sys.executable, CLASSH)
    r = standin("-q", "-E", stage, "true", "n[1-2]")
    assert r.rc == 0 and "exit" not in r.err, r


def test_a_host_list_on_the_command_line_that_names_no_host_stays_an_error(standin, tmp_path):
    empty = tmp_path / "hosts"
    empty.write_text("# none\n")
    for target in (str(empty), " , "):
        r = standin("true", target)
        assert r.rc == 2 and "no host" in r.err, r


# -- --persist 60 CMD ------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--persist", "60", "uptime", "n1"],
    ["-q", "--pers", "60", "n1"],
    ["--persist", "60"],
])
def test_persist_followed_by_a_number_asks_for_the_equals_sign(argv):
    with pytest.raises(UsageError, match=r"did you mean --persist=60\?"):
        parse(argv)


def test_persist_followed_by_a_number_runs_nothing(marking_ssh):
    ssh, mark = marking_ssh
    r = subprocess.run([sys.executable, CLASSH, "--persist", "60", "uptime", "n1"],
                       env=base_env({"CLASSH_SSH": ssh}), capture_output=True, text=True)
    assert r.returncode == 2 and "did you mean --persist=60?" in r.stderr, r
    assert not mark.exists()


@pytest.mark.parametrize("argv,command,targets", [
    (["--persist=60", "60", "h"], "60", ["h"]),       # the value given: 60 is the COMMAND
    (["uptime", "--persist", "60"], "uptime", ["60"]),  # after the COMMAND: a TARGET
    (["--persist", "uptime", "n1"], "uptime", ["n1"]),
])
def test_persist_spellings_that_stay_as_they_were(argv, command, targets):
    args = parse(argv)
    assert args["COMMAND"] == command and args["TARGET"] == targets
