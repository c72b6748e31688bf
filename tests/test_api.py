"""The Python API against a real sshd: run, call, copy, slurp, SSHJobMan, Options, Error."""
import os
import subprocess
import sys
import textwrap

import pytest

import classh
from conftest import ROOT, base_env


@pytest.fixture
def opts(fleet):
    return classh.Options(ssh=fleet.ssh_command, timeout=30)




def test_run_returns_rc_out_err_and_errors_only_for_ssh_trouble(opts):
    results = classh.run("node[1-3],refused", "echo {host}; echo e >&2; [ {host} != node2 ]", opts)
    assert set(results) == {"node1", "node2", "node3", "refused"}
    assert results["node1"] == (0, "node1\n", "e\n")
    assert results["node2"] == (1, "node2\n", "e\n")
    error = results["refused"]
    assert isinstance(error, classh.Error) and isinstance(error, Exception)
    assert error.host == "refused" and error.rc == 255 and "ssh error" in error.reason
    assert "Connection refused" in error.stderr


def test_call_makes_any_failure_an_error(opts):
    results = classh.call(["node1", "node2"], "[ {host} = node1 ]", opts)
    assert results["node1"] == (0, "", "")
    assert isinstance(results["node2"], classh.Error) and results["node2"].rc == 1
    assert "exit status 1" in results["node2"].reason


def test_timeout_is_an_error(fleet):
    results = classh.run("node1", "sleep 30", {"ssh": fleet.ssh_command, "timeout": 1})
    assert isinstance(results["node1"], classh.Error) and results["node1"].reason.startswith("timed out")


def test_host_forms_patterns_user_port_and_tuples(fleet, opts):
    results = classh.run(["node1", "%s@node2:%d" % (fleet.user, fleet.port), ("node3", fleet.port, fleet.user),
                          ("node4", None, None)], "echo ok", opts)
    assert sorted(results) == sorted(["node1", "%s@node2:%d" % (fleet.user, fleet.port),
                                      "%s@node3:%d" % (fleet.user, fleet.port), "node4"])
    assert all(r == (0, "ok\n", "") for r in results.values())


def test_bad_hosts_raise_value_errors_naming_them(opts):
    with pytest.raises(ValueError, match="n\\[5-\\]"):
        classh.run("n[5-]", "true", opts)
    with pytest.raises(ValueError, match="-oProxy"):
        classh.run(("-oProxyCommand=x", None, None), "true", opts)


def test_input_is_fed_to_every_stdin(fleet):
    results = classh.run("node[1-2]", "wc -c", {"ssh": fleet.ssh_command, "input": b"12345"})
    assert [r[1].strip() for r in results.values()] == ["5", "5"]


def test_results_option_writes_a_results_directory(fleet, tmp_path):
    classh.run("node1", "echo saved", {"ssh": fleet.ssh_command, "results": str(tmp_path / "r")})
    assert (tmp_path / "r" / "node1.out").read_text() == "saved\n"
    assert classh.load_results(str(tmp_path / "r"))["node1"].output == "saved\n"


def test_sshjobman_start_poll_wait_done_results(fleet):
    job = classh.SSHJobMan(["node1", "node2"], "sleep 1; date +%s", ssh=fleet.ssh_command)
    assert not job.done()
    job.start()
    assert job.poll() is False
    assert job.wait() is True and job.done()
    for host, res in job.results.items():
        assert res.exitcode == 0
        assert res.started - 1 <= int(res.output) <= res.stopped + 1
        assert res.errors == ""


def test_sshjobman_wait_with_timeout_and_kill(fleet):
    job = classh.SSHJobMan("node[1-2]", "sleep 30", ssh=fleet.ssh_command)
    assert job.wait(timeout=0.5) is False
    job.kill()
    assert job.wait(timeout=10) is True
    assert {r.status for r in job.results.values()} == {"killed"}


def test_seed_time_check_example_runs_unchanged(fleet, tmp_path):
    script = tmp_path / "timecheck.py"
    script.write_text(textwrap.dedent('''\
        #!/usr/bin/env python
        import sys
        from classh import SSHJobMan
        from time import time

        if __name__ == "__main__":
            job = SSHJobMan(sys.argv[1:], 'date +%s')
            job.wait()

            for host, res in job.results.items():
                if res.exitcode:
                    print("Error getting date from %s" % host)
                    print(res.errors)
                    print()
                    continue
                else:
                    try:
                        rtime = int(res.output.strip())
                    except ValueError as e:
                        print("Couldn't parse output for %s" % host)
                        print(res.output)
                        print()
                        continue
                    if (rtime - res.stopped) < 1 or res.started < rtime < res.stopped:
                        gap = res.stopped - res.started
                        print("Time on %s is nominal (+/- %g)" % (host, gap))
                    else:
                        print("Time error on %s" % host)
        '''))
    env = base_env({"CLASSH_SSH": fleet.ssh_command, "PYTHONPATH": os.path.join(ROOT, "lib")})
    proc = subprocess.run([sys.executable, str(script), "node1", "node2", "refused"], env=env,
                          capture_output=True, timeout=60)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert "Time on node1 is nominal" in out and "Time on node2 is nominal" in out
    assert "Error getting date from refused" in out


def test_copy_file_and_tree_and_slurp_back(opts, remote_dir, tmp_path):
    local = tmp_path / "tree"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "f.txt").write_text("inner\n")
    single = tmp_path / "one.conf"
    single.write_text("setting=1\n")
    dest = os.path.join(remote_dir, "{host}")
    results = classh.copy("node[1-2]", [str(single), str(local)], dest, opts)
    assert all(r[0] == 0 for r in results.values()), results
    for host in ("node1", "node2"):
        assert open(os.path.join(remote_dir, host, "one.conf")).read() == "setting=1\n"
        assert open(os.path.join(remote_dir, host, "tree", "sub", "f.txt")).read() == "inner\n"
    got = tmp_path / "got"
    pulled = classh.slurp("node[1-2],refused", os.path.join(remote_dir, "{host}", "one.conf"), str(got), opts)
    assert pulled["node1"][0] == 0 and isinstance(pulled["refused"], classh.Error)
    assert (got / "node1" / "one.conf").read_text() == "setting=1\n"
    assert (got / "node2" / "one.conf").read_text() == "setting=1\n"


def test_slurp_missing_file_on_some_hosts(opts, remote_dir, tmp_path):
    open(os.path.join(remote_dir, "node1.txt"), "w").write("here\n")
    pulled = classh.slurp("node[1-2]", os.path.join(remote_dir, "{host}.txt"), str(tmp_path / "got"), opts)
    assert pulled["node1"][0] == 0
    assert isinstance(pulled["node2"], classh.Error) and pulled["node2"].rc != 0
    assert "node2.txt" in pulled["node2"].stderr
    assert (tmp_path / "got" / "node1" / "node1.txt").read_text() == "here\n"
    assert not (tmp_path / "got" / "node2").exists()


def test_nothing_in_the_api_prints(fleet, capfd, tmp_path):
    classh.run("node1,refused", "echo out; echo err >&2", {"ssh": fleet.ssh_command})
    classh.SSHJobMan("node1", "true", ssh=fleet.ssh_command).wait()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_api_from_a_worker_thread(fleet):
    import threading
    box = {}
    worker = threading.Thread(target=lambda: box.update(classh.run("node[1-2]", "echo t", {"ssh": fleet.ssh_command})))
    worker.start()
    worker.join(60)
    assert box == {"node1": (0, "t\n", ""), "node2": (0, "t\n", "")}


def test_password_is_not_in_the_repr():
    assert "hunter2" not in repr(classh.Options(password="hunter2"))
