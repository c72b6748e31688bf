"""GPU slots (--gpus): nvidia-smi's CSV read right, jobs pinned to free GPUs only.

The parsing and the rule are unit-tested on the documented CSV formats; the
rest runs against a real loopback sshd whose sessions find the stand-in
``tests/standin-nvidia-smi`` on their PATH (``GpuFleet``), each node with
the GPUs a test gives it. Jobs report the ``CUDA_VISIBLE_DEVICES`` they got.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import CLASSH, base_env
from gpufleet import GpuFleet, gpu
from leftovers import leftovers, signal_when_running, with_marker

import classh
from classh.gpus import Gpu, GpuRule, assess, cuda_env, parse_probe, probe_command
from classh.jobs import JobOptions, JobSource, parse_nodes
from classh.jobviews import gpu_status
from classh.options import OptionError, Options
from classh.run import Run


# -- the CSV and the rule --------------------------------------------------------------
def probe_output(gpus, apps=""):
    return (gpus + "classh:compute-apps\n" + apps).encode()


H100 = "0, GPU-aaa, 81559, 81000, Disabled, NVIDIA H100 80GB HBM3\n"


def test_gpus_and_their_foreign_processes_are_read_from_the_csv():
    report = parse_probe(0, probe_output(
        H100 + "1, GPU-bbb, 81559, 1000, Disabled, NVIDIA H100 80GB HBM3\n",
        "GPU-bbb, 4242, 80000, 0\nGPU-aaa, 77, 100, 1\n"))
    assert report.error is None
    assert [(g.index, g.uuid, g.total_mib, g.free_mib, g.mig) for g in report.gpus] == [
        (0, "GPU-aaa", 81559, 81000, False), (1, "GPU-bbb", 81559, 1000, False)]
    assert report.gpus[0].foreign == []  # pid 77 carries this run's tag: ours
    assert report.gpus[1].foreign == ["4242"]


def test_a_gpu_name_with_a_comma_stays_whole():
    report = parse_probe(0, probe_output("3, GPU-c, 100, 50, [N/A], Tesla, rev B\n"))
    assert report.gpus[0].index == 3 and report.gpus[0].name == "Tesla, rev B"


@pytest.mark.parametrize("line,expect", [
    ("0, GPU-a, [N/A], [N/A], [N/A], X\n", (None, None, False)),
    ("0, GPU-a, [Not Supported], [Not Supported], [Not Supported], X\n", (None, None, False)),
    ("0, GPU-a, 40960, 40000, Enabled, A100\n", (40960, 40000, True)),
])
def test_na_and_not_supported_values_read_as_unknown(line, expect):
    seen = parse_probe(0, probe_output(line)).gpus[0]
    assert (seen.total_mib, seen.free_mib, seen.mig) == expect


@pytest.mark.parametrize("rc,out,why", [
    (6, b"No devices were found\n", "nvidia-smi failed (exit 6): No devices were found"),
    (127, b"nvidia-smi: command not found\n", "nvidia-smi not found on the node's PATH"),
    (9, b"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
     "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it couldn't communicate"),
    (0, b"classh:compute-apps\n", "nvidia-smi lists no GPU"),
    (0, probe_output("garbage\n"), "nvidia-smi lists no GPU: garbage"),
    (0, b"", "unexpected nvidia-smi output"),
])
def test_a_node_without_usable_nvidia_smi_says_why(rc, out, why):
    report = parse_probe(rc, out)
    assert report.gpus == [] and report.error.startswith(why)


def test_no_running_processes_found_is_no_process():
    report = parse_probe(0, probe_output(H100, "No, running, processes found, 0\n"))
    assert report.gpus[0].foreign == []


def test_a_process_on_a_gpu_of_unknown_uuid_makes_every_gpu_busy():
    report = parse_probe(0, probe_output(H100 + "1, GPU-b, 1, 1, Disabled, X\n",
                                         "[N/A], 55, 10, 0\n"))
    assert [g.foreign for g in report.gpus] == [["55"], ["55"]]


def one(**kw):
    values = dict(index=0, uuid="GPU-a", total_mib=81559, free_mib=81000, mig=False, name="H100")
    values.update(kw)
    return Gpu(**values)


@pytest.mark.parametrize("seen,rule,expect", [
    (one(), GpuRule(), (1, None, True)),
    (one(), GpuRule(jobs_per_gpu=3), (3, None, True)),
    (one(free_mib=30000), GpuRule(min_mib=10000, jobs_per_gpu=8), (3, None, True)),
    (one(free_mib=5000), GpuRule(min_mib=10000), (0, "5000 MiB free, --gpu-mem 10000", True)),
    (one(total_mib=16000), GpuRule(min_mib=20000), (0, "16000 MiB in all, --gpu-mem 20000", False)),
    (one(free_mib=None), GpuRule(min_mib=1), (0, "free memory [N/A]", False)),
    (one(free_mib=None), GpuRule(), (1, None, True)),
    (one(mig=True), GpuRule(share=True), (0, "MIG enabled (schedule its MIG devices yourself)", False)),
    (one(foreign=["9"]), GpuRule(), (0, "busy: foreign process 9", True)),
    (one(foreign=["9"]), GpuRule(share=True), (1, None, True)),
    (one(uuid=None), GpuRule(), (0, "uuid [N/A]: its processes cannot be seen", False)),
])
def test_the_rule_gives_each_gpu_its_slots_or_says_why_none(seen, rule, expect):
    assert assess(seen, rule) == expect


def test_cuda_numbering_is_nvidia_smis():
    assert cuda_env(3) == {"CUDA_VISIBLE_DEVICES": "3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_the_probe_refuses_a_run_id_that_could_inject():
    with pytest.raises(ValueError):
        probe_command("abc; rm -rf ~")


@pytest.mark.parametrize("field,value", [("gpu_mem", "abc"), ("gpu_mem", -1), ("gpu_mem", "inf"),
                                         ("gpu_mem", 1 << 40), ("jobs_per_gpu", 0),
                                         ("jobs_per_gpu", "1e3"), ("gpu_check", "inf"),
                                         ("gpu_check", 0), ("gpu_check", "nan")])
def test_bad_gpu_settings_are_refused_naming_them(field, value):
    with pytest.raises(OptionError) as caught:
        JobOptions(gpus=True, **{field: value})
    assert field.replace("_", "-") in str(caught.value)


def test_gpu_status_names_node_and_gpu():
    text = gpu_status([("n1:gpu0", 1, 1, None), ("n1:gpu1", 0, 0, "busy: foreign process 7"),
                       ("n2:gpu0", 0, 1, None)])
    assert text == "GPUs: 1 of 3 running jobs: n1:gpu0; n1:gpu1 busy: foreign process 7."


# -- against the loopback sshd -----------------------------------------------------------
@pytest.fixture(scope="module")
def gpus():
    workdir = tempfile.mkdtemp(prefix="classh-gpus-")
    try:
        with GpuFleet(workdir, hosts=4) as fleet:
            yield fleet
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def cli(fleet, *args, timeout=120):
    proc = subprocess.run([sys.executable, CLASSH] + list(args), capture_output=True,
                          env=base_env({"CLASSH_SSH": fleet.ssh_command}), timeout=timeout)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def summary(results):
    with open(os.path.join(results, "summary.jsonl")) as fh:
        return [json.loads(line) for line in fh]


BUSY = {"gpu_uuid": "GPU-busy", "pid": 999999, "used_memory": 700}


def two_nodes_one_busy_gpu(fleet):
    fleet.set_gpus("gpu1", [gpu(0), gpu(1)])
    fleet.set_gpus("gpu2", [gpu(0), gpu(1, uuid="GPU-busy")], apps=[BUSY])


def test_jobs_run_only_on_free_gpus_each_pinned_to_its_own(gpus, tmp_path):
    two_nodes_one_busy_gpu(gpus)
    results = str(tmp_path / "r")
    job = "echo $CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER; sleep 0.3"
    rc, out, err = cli(gpus, "--node", "gpu[1-2]", "--gpus", "-o", results,
                       *sum([["--job", job + " #%d" % i] for i in range(12)], []))
    assert rc == 0, err
    assert "node gpu2: GPU slots: gpu0; gpu1 busy: foreign process 999999" in err
    assert "node gpu1: GPU slots: gpu0, gpu1" in err
    records = summary(results)
    assert len(records) == 12
    used = {(r["node"], r["gpu"]) for r in records}
    assert used == {("gpu1", 0), ("gpu1", 1), ("gpu2", 0)}  # never gpu2's busy gpu1
    for r in records:
        with open(os.path.join(results, "job-%d.out" % r["job"])) as fh:
            assert fh.read() == "%d PCI_BUS_ID\n" % r["gpu"]
    by_gpu = {}
    for r in records:
        by_gpu.setdefault((r["node"], r["gpu"]), []).append((r["started"], r["stopped"]))
    for spans in by_gpu.values():  # one job at a time per GPU
        spans.sort()
        assert all(a[1] <= b[0] + 0.05 for a, b in zip(spans, spans[1:]))


def test_jobs_per_gpu_and_gpu_mem_give_a_gpu_several_jobs(gpus, tmp_path):
    gpus.set_gpus("gpu1", [gpu(0, free=30000), gpu(1, free=9000)])
    results = str(tmp_path / "r")
    rc, out, err = cli(gpus, "--node", "gpu1", "--gpus", "--gpu-mem", "10000", "--jobs-per-gpu",
                       "4", "-o", results, *sum([["--job", "sleep 0.5 #%d" % i] for i in range(6)], []))
    assert rc == 0, err
    assert "GPU slots: gpu0 (3 jobs); gpu1 9000 MiB free, --gpu-mem 10000" in err
    records = summary(results)
    assert {r["gpu"] for r in records} == {0}
    starts = sorted(r["started"] for r in records)
    assert starts[2] - starts[0] < 0.4 and starts[3] - starts[0] >= 0.4  # three at once, no more


def test_nodes_with_na_mig_failing_or_no_gpu_get_no_slot_and_say_why(gpus, tmp_path):
    gpus.set_gpus("gpu1", [gpu(0, free=None)])                       # free memory [N/A]
    gpus.set_gpus("gpu2", [gpu(0, mig="Enabled"), gpu(1, mig="Enabled")])
    gpus.set_gpus("gpu3", exit=9, message="NVIDIA-SMI has failed because it couldn't "
                  "communicate with the NVIDIA driver.")
    gpus.set_gpus("gpu4", [gpu(0)])
    results = str(tmp_path / "r")
    rc, out, err = cli(gpus, "--node", "gpu[1-4]", "--gpus", "--gpu-mem", "100", "-o", results,
                       "--job", "echo $CUDA_VISIBLE_DEVICES", "--job", "echo again")
    assert rc == 0, err
    assert "node gpu1 dropped: no usable GPU: gpu0 free memory [N/A]" in err
    assert "node gpu2 dropped: no usable GPU: gpu0 MIG enabled" in err
    assert "node gpu3 dropped: no GPU slot: nvidia-smi failed (exit 9): NVIDIA-SMI has failed" in err
    assert {(r["node"], r["gpu"]) for r in summary(results)} == {("gpu4", 0)}


def test_no_gpu_anywhere_leaves_every_job_undone_exit_4(gpus):
    gpus.set_gpus("gpu1", exit=6, message="No devices were found")
    rc, out, err = cli(gpus, "--node", "gpu1", "--gpus", "--job", "echo x")
    assert rc == 4
    assert "node gpu1 dropped: no GPU slot: nvidia-smi failed (exit 6): No devices were found" in err
    assert "undone: job-1: echo x" in err


def test_a_node_without_nvidia_smi_says_so(tmp_path_factory):
    workdir = tempfile.mkdtemp(prefix="classh-nosmi-")
    try:
        with GpuFleet(workdir, hosts=1, smi=False) as fleet:
            rc, out, err = cli(fleet, "--node", "gpu1", "--gpus", "--job", "echo x")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert rc == 4
    assert "node gpu1 dropped: no GPU slot: nvidia-smi not found on the node's PATH" in err


def test_a_gpu_turning_busy_mid_run_gets_no_new_job(gpus):
    gpus.set_gpus("gpu1", [gpu(0), gpu(1)])
    gpus.log_calls("gpu1")
    busy_state = os.path.join(gpus.state, "gpu1-busy.json")
    with open(busy_state, "w") as fh:
        json.dump({"gpus": [gpu(0), gpu(1)], "exit": 0, "apps": [
            {"gpu_uuid": "GPU-00000001", "pid": 999999, "used_memory": 10}]}, fh)
    os.chmod(busy_state, 0o644)
    lines = []
    jobs = ["sleep 0.3"] * 3 + ["cp %s $FAKE_GPU_DIR/gpu1.json.new && mv $FAKE_GPU_DIR/gpu1.json.new "
                                "$FAKE_GPU_DIR/gpu1.json" % busy_state] + ["sleep 0.3"] * 10
    os.chmod(gpus.state, 0o777)
    try:
        records = classh.jobs("gpu1", jobs, {"ssh": gpus.ssh_command, "gpus": True,
                                             "gpu_check": 0.2,
                                             "notify": lambda line: lines.append((time.time(), line))})
    finally:
        os.chmod(gpus.state, 0o755)
    assert all(r.exitcode == 0 for r in records.values()), [
        (r.command, r.stderr) for r in records.values() if r.exitcode]
    turned = [when for when, line in lines if "gpu1 busy: foreign process 999999" in line]
    assert turned, lines
    after = [r for r in records.values() if r.started > turned[0]]
    assert len(after) >= 5 and all(r.gpu == 0 for r in after)
    assert sum(1 for call in gpus.calls("gpu1") if "--query-gpu" in call) >= 3  # looked again


def test_a_busy_gpu_is_looked_at_again_and_used_once_free(gpus, tmp_path):
    gpus.set_gpus("gpu1", [gpu(0, uuid="GPU-busy")], apps=[BUSY])
    lines = []
    (tmp_path / "free.json").write_text(json.dumps({"gpus": [gpu(0, uuid="GPU-busy")]}))
    freer = subprocess.Popen(["sh", "-c", "sleep 1; cp %s/free.json %s/gpu1.json"
                              % (tmp_path, gpus.state)])
    try:
        start = time.time()
        records = classh.jobs("gpu1", ["echo $CUDA_VISIBLE_DEVICES"],
                              {"ssh": gpus.ssh_command, "gpus": True, "gpu_check": 0.5,
                               "notify": lines.append})
    finally:
        freer.wait()
    assert records[1].exitcode == 0 and records[1].stdout == b"0\n"
    assert records[1].started - start >= 1.0
    assert any("no free GPU now" in line for line in lines)
    assert any("gpu0 free again" in line for line in lines)


def test_our_own_processes_on_a_gpu_do_not_make_it_busy(gpus):
    """Jobs register themselves as compute processes (their CLASSH_TAG is in their
    environment); the looks between jobs must not count them as foreign."""
    gpus.set_gpus("gpu1", [gpu(0, uuid="GPU-mine")])
    apps = gpus.apps_dir("gpu1")
    job = ("sh -c 'echo GPU-mine $$ 100 > %s/$CLASSH_TAG; sleep 0.4; rm -f %s/$CLASSH_TAG'"
           % (apps, apps))
    lines = []
    records = classh.jobs("gpu1", [job] * 6, {"ssh": gpus.ssh_command, "gpus": True,
                                              "jobs_per_gpu": 2, "gpu_check": 0.1,
                                              "notify": lines.append})
    assert all(r.exitcode == 0 and r.gpu == 0 for r in records.values()), records
    assert not any("busy" in line for line in lines), lines
    spans = sorted((r.started, r.stopped) for r in records.values())
    assert spans[-1][0] < spans[-2][1]  # the last two ran side by side


def test_active_nodes_and_status_show_node_and_gpu(gpus, tmp_path):
    two_nodes_one_busy_gpu(gpus)
    seen = []

    class Watch:
        def started(self, task):
            seen.append((list(source.active()), source.gpu_states()))

    options = Options(ssh=gpus.ssh_command)
    source = JobSource(parse_nodes(["gpu[1-2]"]), ["sleep 0.3"] * 6, options,
                       JobOptions(gpus=True))
    from classh.observers import Observer

    class Seen(Watch, Observer):
        pass

    Run(source, options, [Seen()], keep=0, fanout=source.fanout()).run()
    source.close()
    names = {name for active, _ in seen for name, job, command in active}
    assert names <= {"gpu1:gpu0", "gpu1:gpu1", "gpu2:gpu0"} and len(names) == 3
    states = seen[-1][1]
    assert ("gpu2:gpu1", 0, 0, "busy: foreign process 999999") in states
    shared = tempfile.mkdtemp(prefix="active-", dir=gpus.workdir)
    os.chmod(shared, 0o755)
    active = os.path.join(shared, "active")
    rc, out, err = cli(gpus, "--node", "gpu1", "--gpus", "--active-nodes", active,
                       "--job", "sleep 0.5; cat " + active)
    assert rc == 0, err
    assert out.startswith("# run ") and "gpu1:gpu0: job-1 sleep 0.5; cat" in out


@pytest.mark.parametrize("args,message", [
    (["--gpu-mem", "100"], "--gpu-mem only goes with --gpus"),
    (["--gpus", "--gpu-mem", "lots"], "gpu-mem must be a whole number, not 'lots'"),
    (["--gpus", "--jobs-per-gpu", "0"], "jobs-per-gpu must be at least 1"),
    (["--gpus", "--gpu-mem", "99999999999999"], "gpu-mem must be at most"),
    (["--share-gpus", "--jobs-per-gpu", "2"], "--jobs-per-gpu, --share-gpus only go with --gpus"),
    (["--gpus"], "--gpus only goes with job mode"),
])
def test_bad_gpu_options_are_one_line_exit_2(gpus, args, message):
    node = [] if args == ["--gpus"] else ["--node", "gpu1"]
    job = ["true", "gpu1"] if args == ["--gpus"] else ["--job", "true"]
    rc, out, err = cli(gpus, *(node + args + job))
    assert rc == 2 and message in err and err.count("\n") == 1, err


def test_sigterm_mid_run_leaves_no_gpu_job_on_the_node(gpus):
    gpus.set_gpus("gpu1", [gpu(0), gpu(1)])
    mark, command = with_marker("sleep {m}")
    rc = signal_when_running(gpus.ssh_command, ["--node", "gpu1", "--gpus", "--job", command,
                                                "--job", command, "--job", command], mark, 2)
    assert rc == 143
    assert leftovers(mark) == []
