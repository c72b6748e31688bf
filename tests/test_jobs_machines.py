"""kssh's machines file (--machines) and node set-up (--init-file, --init-script), end to end
against the real loopback sshd. The 'remote' side is this machine: working directories and
set-up marks are read back here.
"""
import json
import os

import pytest

from leftovers import leftovers, with_marker


def machines_file(tmp_path, entries, name="machines.json"):
    path = tmp_path / name
    path.write_text(json.dumps(entries))
    return str(path)


BROKEN_SSH = {"CLASSH_SSH": "ssh -F /nonexistent/ssh_config"}


def test_machines_file_defaults_wd_slots_and_connect_cmd(classh, fleet, tmp_path, remote_dir):
    wd1, wd2 = os.path.join(remote_dir, "w1"), os.path.join(remote_dir, "w 2")
    path = machines_file(tmp_path, [
        {"hostname": "default", "connect_cmd": fleet.ssh_command, "poll_interval": 10,
         "download_timeout": 2},
        {"hostname": "node1", "wd": wd1, "slots": 2},
        {"hostname": "node2", "wd": wd2, "init_timeout": 30}])
    # The run's own ssh command is broken: only the machines' connect_cmd can log in.
    r = classh("--machines", path, "--format", "lines",
               *sum([["--job", "pwd; sleep 0.3 #%d" % i] for i in range(6)], []), env=BROKEN_SSH)
    assert r.rc == 0, r
    assert "'poll_interval' ignored" in r.err and "'download_timeout' ignored" in r.err
    for line in r.out.splitlines():
        job, node, where = line.split(" ", 2)
        assert where == {"node1:": wd1, "node2:": wd2}[node]
    assert os.path.isdir(wd1) and os.path.isdir(wd2)
    assert "nodes: 2 with 3 slots asked for" in r.err


def test_init_file_and_script_run_once_per_node_before_its_jobs(classh, fleet, tmp_path,
                                                                remote_dir):
    data = tmp_path / "data.txt"
    data.write_text("payload\n")
    script = tmp_path / "init.sh"
    script.write_text("#!/bin/sh\necho ran >> %s/init-$(basename \"$PWD\")\n" % remote_dir)
    path = machines_file(tmp_path, [{"hostname": "default", "connect_cmd": fleet.ssh_command},
                                    {"hostname": "node1", "wd": remote_dir + "/n1", "slots": 3},
                                    {"hostname": "node2", "wd": remote_dir + "/n2", "slots": 3}])
    r = classh("--machines", path, "--init-file", str(data), "--init-script", str(script),
               *sum([["--job", "cat data.txt; test -x init.sh"] for _ in range(12)], []),
               env=BROKEN_SSH)
    assert r.rc == 0, r
    assert r.out == "payload\n" * 12
    for node in ("n1", "n2"):
        with open(os.path.join(remote_dir, "init-" + node)) as fh:
            assert fh.read() == "ran\n"  # once per node, not per slot


def test_a_failing_init_script_drops_only_its_node(classh, fleet, tmp_path, remote_dir):
    script = tmp_path / "init.sh"
    script.write_text('test "$(basename "$PWD")" != bad || { echo "no GPU here" >&2; exit 3; }\n')
    path = machines_file(tmp_path, [{"hostname": "default", "connect_cmd": fleet.ssh_command},
                                    {"hostname": "node1", "wd": remote_dir + "/good"},
                                    {"hostname": "node2", "wd": remote_dir + "/bad"}])
    r = classh("--machines", path, "--init-script", str(script), "--format", "lines",
               *sum([["--job", "echo x"] for _ in range(4)], []), env=BROKEN_SSH)
    assert r.rc == 0, r
    assert "node node2 dropped: set-up failed: exit status 3: no GPU here" in r.err
    assert {line.split()[1] for line in r.out.splitlines()} == {"node1:"}


def test_an_init_script_past_its_init_timeout_drops_the_node_and_is_ended(classh, fleet,
                                                                          tmp_path, sweep):
    mark, command = with_marker("sleep {m}")
    sweep.append(mark)
    script = tmp_path / "init.sh"
    script.write_text(command + "\n")
    path = machines_file(tmp_path, [{"hostname": "node1", "connect_cmd": fleet.ssh_command,
                                     "init_timeout": 1}])
    r = classh("--machines", path, "--init-script", str(script), "--job", "echo x")
    assert r.rc == 4, r
    assert "node node1 dropped: set-up failed: timed out" in r.err
    assert leftovers(mark) == []


def test_machines_combine_with_node_and_a_node_given_twice_is_refused(classh, fleet, tmp_path):
    path = machines_file(tmp_path, [{"hostname": "node1", "connect_cmd": fleet.ssh_command}])
    r = classh("--machines", path, "--node", "node3", "--format", "lines",
               *sum([["--job", "sleep 0.3"] for _ in range(4)], []))
    assert r.rc == 0, r
    assert {line.split()[1] for line in r.err.splitlines() if line.startswith("job-")} <= {
        "node1:", "node3:"}
    twice = classh("--machines", path, "--node", "node1", "--job", "true")
    assert twice.rc == 2 and "'node1' is in --machines" in twice.err, twice


@pytest.mark.parametrize("entries,message", [
    ('[{"hostname": "node1", "slot": 2}]', "unknown key 'slot'"),
    ('[{"hostname": "node1",}]', "line 1"),
    ('[{"hostname": "-oProxyCommand=x"}]', "-oProxyCommand=x"),
    ('[{"hostname": "default", "username": "u"}]', "machines file"),
    ('[{"hostname": "node1", "port": true}]', "'port'"),
])
def test_a_bad_machines_file_is_one_line_exit_2_nothing_run(classh, tmp_path, entries, message):
    path = tmp_path / "m.json"
    path.write_text(entries)
    r = classh("--machines", str(path), "--job", "true")
    assert r.rc == 2 and message in r.err and r.err.count("\n") == 1, r


def test_a_missing_init_file_is_exit_2(classh):
    r = classh("--node", "node1", "--init-file", "/nonexistent/file", "--job", "true")
    assert r.rc == 2 and "/nonexistent/file" in r.err and r.err.count("\n") == 1, r


def test_a_connect_cmd_with_ssh_n_keeps_its_jobs_alive(classh, fleet, tmp_path):
    """ssh -n gives the remote side no stdin: the watchdog of that machine's jobs must watch
    sshd, not the end of its stdin (which comes at once), whatever the run's own ssh."""
    path = machines_file(tmp_path, [{"hostname": "node1",
                                     "connect_cmd": "ssh -n -F %s" % fleet.ssh_config}])
    r = classh("--machines", path, "--job", "sleep 1.5; echo alive", "--retries", "1")
    assert r.rc == 0, r
    assert r.out == "alive\n"
