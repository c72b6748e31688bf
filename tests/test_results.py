"""Results you can pipe: -o DIR, --resume, routers, gather/json displays, --json, --status."""
import base64
import json
import os
import subprocess
import sys
import time

import pexpect
import pytest

from conftest import CLASSH, base_env
from classh import results as results_mod
from classh.results import load_results, result_path


def test_results_directory_has_every_file_and_a_summary(classh, tmp_path):
    out = tmp_path / "r"
    r = classh("-q", "-o", str(out), "echo o-{host}; echo e-{host} >&2; [ {host} != node2 ] || exit 9",
               "node[1-3],refused")
    assert r.rc == 4, r
    for host in ("node1", "node2", "node3"):
        assert (out / (host + ".out")).read_text() == "o-%s\n" % host
        assert (out / (host + ".err")).read_text() == "e-%s\n" % host
    assert (out / "node1.ret").read_text() == "0\n"
    assert (out / "node2.ret").read_text() == "9\n"
    assert (out / "refused.ret").read_text() == "255\n"
    assert "Connection refused" in (out / "refused.err").read_text()
    lines = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert sorted(d["host"] for d in lines) == ["node1", "node2", "node3", "refused"]
    by_host = {d["host"]: d for d in lines}
    assert by_host["node2"]["exitcode"] == 9 and by_host["node2"]["status"] == "failed"
    assert by_host["refused"]["ssh_error"] is True
    assert by_host["node1"]["started"] <= by_host["node1"]["stopped"]
    assert "stdout" not in by_host["node1"]


def test_timed_out_host_ret_says_timeout(classh, tmp_path):
    r = classh("-q", "-t", "1", "-o", str(tmp_path / "r"), "echo partial; sleep 30", "node1")
    assert r.rc == 3
    assert (tmp_path / "r" / "node1.ret").read_text() == "timeout\n"
    assert (tmp_path / "r" / "node1.out").read_text() == "partial\n"


def test_binary_output_is_kept_byte_for_byte(classh, tmp_path):
    r = classh("-q", "-o", str(tmp_path / "r"), "printf '\\000\\377\\376abc\\n\\001'", "node1")
    assert r.rc == 0, r
    assert (tmp_path / "r" / "node1.out").read_bytes() == b"\x00\xff\xfeabc\n\x01"
    j = classh("--format", "json", "printf '\\377ok'", "node1")
    record = json.loads(j.out)
    assert "stdout" not in record and record["stdout_size"] == 3
    assert base64.b64decode(record["stdout_base64"]) == b"\xffok"  # lossless


def test_big_output_streams_to_files_not_memory(fleet, tmp_path):
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
               "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, CLASSH, "-o", str(out), "-t", "60",
         "head -c 100000000 /dev/zero", "node1"],
        env=base_env({"CLASSH_SSH": fleet.ssh_command}), stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, timeout=120)
    rc, peak_kb = map(int, proc.stdout.split()[-2:])
    assert rc == 0
    assert (out / "node1.out").stat().st_size == 100_000_000
    assert peak_kb < 80_000, peak_kb  # the classic display keeps only the first MiB


def test_existing_non_empty_directory_is_refused_and_untouched(classh, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "node1.out").write_text("precious\n")
    before = sorted(os.listdir(out))
    r = classh("-q", "-o", str(out), "echo new > /tmp/classh-should-not-run-{host}", "node1")
    assert r.rc == 2, r
    assert str(out) in r.err and "--resume" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert sorted(os.listdir(out)) == before
    assert (out / "node1.out").read_text() == "precious\n"


def test_results_dir_from_environment(classh, tmp_path):
    out = tmp_path / "env-r"
    r = classh("-q", "true", "node1", env={"CLASSH_RESULTS": str(out)})
    assert r.rc == 0 and (out / "node1.ret").read_text() == "0\n"


def test_resume_reruns_only_what_did_not_succeed(classh, tmp_path):
    out = tmp_path / "r"
    flag = "/tmp/classh-resume-ok-%d" % os.getpid()
    cmd = "date +%%s%%N; [ {host} != node2 ] || [ -e %s ]" % flag
    first = classh("-q", "-o", str(out), cmd, "node[1-3]")
    assert first.rc == 5
    kept = (out / "node1.out").read_text()
    assert (out / "node2.ret").read_text() == "1\n"
    open(flag, "w").close()
    try:
        again = classh("-q", "-o", str(out), "--resume", cmd, "node[1-3]")
    finally:
        os.unlink(flag)
    assert again.rc == 0, again
    assert "(2 skipped: done before)" in again.err
    assert "1 host in" in again.err
    assert (out / "node1.out").read_text() == kept
    assert (out / "node2.ret").read_text() == "0\n"
    records = load_results(str(out))
    assert records["node2"].exitcode == 0 and records["node1"].output == kept


def test_resume_after_an_interrupted_run(fleet, tmp_path):
    out = tmp_path / "r"
    env = base_env({"CLASSH_SSH": fleet.ssh_command})
    cmd = "case {host} in node1) echo fast;; *) sleep 60;; esac"
    proc = subprocess.Popen([sys.executable, CLASSH, "-q", "-o", str(out), cmd, "node[1-3]"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (out / "node1.ret").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(2)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert (out / "node1.ret").read_text() == "0\n"
    assert (out / "node2.ret").read_text() == "interrupted\n"
    r = subprocess.run([sys.executable, CLASSH, "-q", "-o", str(out), "--resume", "echo done", "node[1-3]"],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0
    assert (out / "node1.out").read_text() == "fast\n"
    assert (out / "node3.out").read_text() == "done\n"


def test_overwrite_replaces_the_hosts_run(classh, tmp_path):
    out = tmp_path / "r"
    classh("-q", "-o", str(out), "echo one", "node1")
    r = classh("-q", "-o", str(out), "--overwrite", "echo two; exit 3", "node1")
    assert r.rc == 5
    assert (out / "node1.out").read_text() == "two\n"
    assert (out / "node1.ret").read_text() == "3\n"


def test_resume_needs_a_results_directory(classh):
    r = classh("--resume", "true", "node1")
    assert r.rc == 2 and "--resume" in r.err


def test_result_files_never_escape_the_directory(tmp_path):
    for bad in ("../x", "a/b", "..", ".", ""):
        with pytest.raises(results_mod.ResultsError):
            result_path(str(tmp_path), bad, ".out")
    assert result_path(str(tmp_path), "n1", ".out") == str(tmp_path / "n1.out")


def test_success_to_stdout_and_failures_to_a_file(classh, tmp_path):
    failed = tmp_path / "failed.txt"
    failed.write_text("from-before\n")
    r = classh("-q", "-S", "-", "-E", str(failed), "[ {host} != node2 ]", "node[1-3],refused")
    assert sorted(r.out.split()) == ["node1", "node3"]
    assert failed.read_text().splitlines()[0] == "from-before"
    assert sorted(failed.read_text().split()[1:]) == ["node2", "refused"]


def test_directory_routers_get_files(classh, tmp_path):
    ok, bad = tmp_path / "ok", tmp_path / "bad"
    ok.mkdir()
    bad.mkdir()
    r = classh("-q", "-S", str(ok), "-E", str(bad), "echo {host}; [ {host} != node2 ]", "node[1-2]")
    assert r.rc == 5
    assert sorted(os.listdir(ok)) == ["node1.err", "node1.out"]
    assert sorted(os.listdir(bad)) == ["node2.err", "node2.out", "node2.ret"]
    assert (bad / "node2.ret").read_text() == "1\n"
    assert (ok / "node1.out").read_text() == "node1\n"
    # Existing router files are never overwritten: refused before anything runs.
    again = classh("-q", "-S", str(ok), "echo new", "node1")
    assert again.rc == 2 and "node1.out" in again.err
    assert (ok / "node1.out").read_text() == "node1\n"


def test_directory_router_with_results_dir_copies_whole_output(classh, tmp_path):
    ok = tmp_path / "ok"
    ok.mkdir()
    r = classh("-q", "-o", str(tmp_path / "r"), "-S", str(ok), "head -c 3000000 /dev/zero", "node1")
    assert r.rc == 0
    assert (ok / "node1.out").stat().st_size == 3_000_000


def test_pipeline_router_receives_names(classh, tmp_path):
    got = tmp_path / "got"
    r = classh("-q", "-E", "sort > %s" % got, "[ {host} = node1 ]", "node[1-4]")
    assert r.rc == 5
    assert got.read_text() == "node2\nnode3\nnode4\n"


def test_router_that_exits_early_loses_nothing_else(classh, tmp_path):
    first = tmp_path / "first"
    out = tmp_path / "r"
    r = classh("-q", "-o", str(out), "-S", "head -1 > %s" % first, "-S", str(tmp_path / "all.txt"),
               "sleep 0.$(echo {host} | tr -dc 0-9)", "node[1-8]")
    assert r.rc == 0, r
    assert "Traceback" not in r.err
    assert len(first.read_text().splitlines()) == 1
    assert len((tmp_path / "all.txt").read_text().splitlines()) == 8
    assert len([n for n in os.listdir(out) if n.endswith(".ret")]) == 8


def test_three_stage_chain(classh, fleet, tmp_path):
    final = tmp_path / "final.txt"
    stage3 = "%s %s -q -S %s true /dev/stdin" % (sys.executable, CLASSH, final)
    stage2 = "%s %s -q -S '%s' 'test {host} != node3' /dev/stdin" % (sys.executable, CLASSH, stage3)
    r = classh("-q", "-S", stage2, "test {host} != node1", "node[1-5]")
    assert r.rc == 5, r
    assert sorted(final.read_text().split()) == ["node2", "node4", "node5"]


def test_next_stage_starts_before_this_stage_ends(classh, tmp_path):
    stage2_json = tmp_path / "stage2.json"
    stage1_json = tmp_path / "stage1.json"
    stage2 = "%s %s --format json 'echo two' /dev/stdin > %s" % (sys.executable, CLASSH, stage2_json)
    r = classh("-q", "--json", str(stage1_json), "-S", stage2,
               "case {host} in node1) true;; *) sleep 6;; esac", "node[1-2]")
    assert r.rc == 0, r
    stage1 = load_results(str(stage1_json))
    stage2_records = [json.loads(line) for line in stage2_json.read_text().splitlines()]
    assert [d["host"] for d in stage2_records] == ["node1", "node2"]
    # Stage 2 ran node1 while stage 1 was still running node2.
    assert stage2_records[0]["started"] < stage1["node2"].stopped - 1


def test_gather_groups_identical_results_with_folded_names(classh):
    cmd = "case {host} in node4) echo other;; node6) exit 2;; *) echo same;; esac"
    r = classh("--format", "gather", cmd, "node[1-7],node10")
    assert r.rc == 5
    lines = r.out.splitlines()
    assert lines[0] == "node[1-3,5,7,10] (6)  0"
    assert lines[1:3] == ["  Output:", "    same"]
    assert "node4 (1)  0" in lines
    assert "node6 (1)  2" in lines


def test_json_format_one_object_per_host(classh):
    r = classh("--format", "json", "echo hi; echo e >&2; [ {host} = node1 ]", "node[1-2]")
    records = {d["host"]: d for d in map(json.loads, r.out.splitlines())}
    assert set(records) == {"node1", "node2"}
    assert records["node1"]["stdout"] == "hi\n" and records["node1"]["stderr"] == "e\n"
    assert records["node2"]["exitcode"] == 1
    for key in ("signal", "timed_out", "ssh_error", "started", "stopped"):
        assert key in records["node1"]


def test_json_file_and_load_results(classh, tmp_path):
    saved = tmp_path / "all.json"
    r = classh("-q", "--json", str(saved), "echo {host}; exit 4", "node[1-2]")
    assert r.rc == 5
    records = load_results(str(saved))
    assert records["node1"].exitcode == 4
    assert records["node1"].output == "node1\n"
    assert records["node1"].errors == ""
    assert 0 < records["node1"].started <= records["node1"].stopped
    again = classh("-q", "--json", str(saved), "true", "node1")
    assert again.rc == 2 and str(saved) in again.err
    assert load_results(str(saved))["node1"].exitcode == 4


def _pty_run(fleet, args, env_extra=None):
    env = base_env({"CLASSH_SSH": fleet.ssh_command})
    env.update(env_extra or {})
    child = pexpect.spawn(sys.executable, [CLASSH] + args, env=env, timeout=60)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before.decode(errors="replace")


def test_status_line_on_a_terminal(fleet):
    rc, text = _pty_run(fleet, ["--status", "-q", "sleep 1.2", "node[1-3]"])
    assert rc == 0
    assert "done," in text and "running" in text and "ETA" in text
    assert "\r\x1b[K" in text


def test_no_status_line_without_a_terminal(classh):
    r = classh("--status", "-q", "sleep 1.2", "node1")
    assert r.err.startswith("classh: 1 host"), r.err


def test_colour_only_on_a_terminal_and_never_with_no_color(fleet, classh):
    rc, text = _pty_run(fleet, ["echo hi", "node1"])
    assert "\x1b[32m" in text
    rc, text = _pty_run(fleet, ["echo hi", "node1"], {"NO_COLOR": "1"})
    assert "\x1b[" not in text
    assert "\x1b[" not in classh("echo hi", "node1").out


def test_json_file_keeps_whole_output_even_with_a_results_dir(classh, tmp_path):
    saved = tmp_path / "all.json"
    r = classh("-q", "-o", str(tmp_path / "r"), "--json", str(saved), "head -c 1500000 /dev/zero | tr '\\0' y",
               "node1")
    assert r.rc == 0, r
    assert len(load_results(str(saved))["node1"].stdout) == 1_500_000
