"""The run driver under stress: several runs in one process, stolen children, signals,
failing sinks, callers that stop polling."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import classh
from classh.hostmode import TargetSource, task_maker
from classh.run import Run
from classh.supervisor import ListSource, Task, TaskSource
from classh.observers import Observer, SinkError
from classh.options import Options
from classh.targets import resolve
from conftest import ROOT, STANDIN, base_env


@pytest.fixture
def standin_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith("CLASSH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CLASSH_SSH", STANDIN)


def poll_all(*jobs, limit=30.0):
    deadline = time.monotonic() + limit
    while not all(job.done() for job in jobs) and time.monotonic() < deadline:
        for job in jobs:
            job.poll()
        time.sleep(0.005)


def test_two_sshjobman_polled_in_one_process_both_finish(standin_env):
    first = classh.SSHJobMan("a[1-5]", "sleep 0.2; echo {host}")
    second = classh.SSHJobMan("b[1-5]", "sleep 0.4; echo {host}")
    first.start()
    second.start()
    poll_all(first, second)
    assert first.done() and second.done()
    assert sorted(r.output for r in first.results.values()) == ["a%d\n" % i for i in range(1, 6)]
    assert sorted(r.output for r in second.results.values()) == ["b%d\n" % i for i in range(1, 6)]


def test_nested_runs_restore_the_signal_state_in_any_order(standin_env):
    before = (signal.getsignal(signal.SIGCHLD), signal.set_wakeup_fd(-1))
    signal.set_wakeup_fd(before[1])
    first = classh.SSHJobMan("a1", "true").start()
    second = classh.SSHJobMan("b1", "sleep 0.2").start()
    poll_all(first)
    assert first.done() and not second.done()
    poll_all(second)
    assert second.done()
    assert signal.getsignal(signal.SIGCHLD) == before[0]
    assert signal.set_wakeup_fd(-1) == before[1]
    signal.set_wakeup_fd(before[1])


def test_a_child_reaped_by_someone_else_is_not_counted_as_exit_0(standin_env):
    bystander = subprocess.Popen(["sleep", "30"])  # another child of the program, still alive
    try:
        with classh.SSHJobMan("h1", "exit 3") as job:
            pid = next(iter(job._run.supervisor._running)).pid
            os.waitpid(pid, 0)  # the calling program reaps classh's child behind its back
            assert job.wait(10)
    finally:
        bystander.kill()
        bystander.wait()
    record = job.results["h1"]
    assert record.exitcode is None and not record.ok
    assert "reaped" in record.error


def host_run(hosts, command, observers, **options):
    opts = Options(ssh=STANDIN, **options)
    source = TargetSource(resolve([hosts]), task_maker(command, opts))
    return Run(source, opts, observers)


class FailingSink(Observer):
    """Raises SinkError when a given host produces output or finishes."""

    def __init__(self, host, when, run_wide=False):
        self.host, self.when, self.run_wide = host, when, run_wide
        self.records = {}
        self.closed = False

    def _maybe_fail(self, task, moment):
        if task.key == self.host and moment == self.when:
            raise SinkError("/results/%s.out" % task.key, OSError(28, "No space left on device"),
                            host=None if self.run_wide else task.key)

    def output(self, task, fd, data):
        self._maybe_fail(task, "output")

    def finished(self, task, record):
        self.records[record.host] = record
        self._maybe_fail(task, "finished")

    def close(self):
        self.closed = True


def signal_state():
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    return (wakeup, signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
            signal.getsignal(signal.SIGCHLD))


def my_children():
    """Pids whose parent is this process, zombies included (a session fleet's sshd too)."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as stat:
                    fields = stat.read().rpartition(b")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                found.add(int(name))
    return found


@pytest.fixture
def assert_no_children_left():
    """Call it after a run: no child of this process started since the test began is left."""
    before = my_children()
    return lambda: (lambda left: not left or pytest.fail("children left: %s" % sorted(left)))(
        my_children() - before)


def test_a_host_whose_file_fails_is_failed_and_the_others_run_to_the_end(assert_no_children_left):
    before = signal_state()
    sink = FailingSink("h2", "output")
    summary = host_run("h[1-4]", "echo out-{host}; sleep 0.3; echo more", [sink]).run()
    assert signal_state() == before
    assert sorted(sink.records) == ["h1", "h2", "h3", "h4"]
    assert all(sink.records[h].ok for h in ("h1", "h3", "h4"))
    failed = sink.records["h2"]
    assert not failed.ok and "No space left on device" in failed.error
    assert summary.sink_errors == ["cannot write /results/h2.out: No space left on device"]
    assert summary.exit_status == 1
    assert_no_children_left()


def test_a_failure_of_what_every_host_needs_ends_the_run_cleanly(assert_no_children_left):
    before = signal_state()
    sink = FailingSink("h1", "finished", run_wide=True)
    other = FailingSink(None, None)  # records what the rest of the run delivers
    started = time.monotonic()
    summary = host_run("h1,h[2-6]", "[ {host} = h1 ] || sleep 30", [sink, other], numjobs=6).run()
    assert time.monotonic() - started < 10
    assert signal_state() == before
    assert summary.fatal == "cannot write /results/h1.out: No space left on device"
    assert summary.exit_status == 1
    assert other.records["h1"].ok  # what finished before is kept
    assert all(not other.records[h].ok for h in other.records if h != "h1")
    assert sink.closed and other.closed
    assert_no_children_left()


def test_a_bug_in_an_observer_still_restores_signals_and_leaves_no_child(assert_no_children_left):
    class Broken(Observer):
        def output(self, task, fd, data):
            raise RuntimeError("bug")

    before = signal_state()
    with pytest.raises(RuntimeError):
        host_run("h[1-3]", "echo x; sleep 30", [Broken()]).run()
    assert signal_state() == before
    assert_no_children_left()


def test_one_input_buffer_is_shared_by_every_host():
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        import classh
        data = b"x" * (20 << 20)
        results = classh.run("h[1-10]", "sleep 1; cat >/dev/null; echo done",
                             classh.Options(ssh=%r, input=data, numjobs=10))
        assert all(r == (0, "done\\n", "") for r in results.values()), results
        # VmHWM, not ru_maxrss: that one keeps the forking parent's peak across exec.
        with open("/proc/self/status") as status:
            print([int(l.split()[1]) // 1024 for l in status if l.startswith("VmHWM:")][0])
    """) % (os.path.join(ROOT, "lib"), STANDIN)
    proc = subprocess.run([sys.executable, "-c", script], env=base_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stdout.split()[-1])
    assert peak_mb < 120, "peak RSS %d MB: the 20 MB input was copied per host" % peak_mb


def python_script(body):
    """Run ``body`` in a fresh interpreter with classh importable and the stand-in ssh."""
    code = "import sys, os, signal, time\nsys.path.insert(0, %r)\nimport classh\n" % os.path.join(ROOT, "lib")
    return subprocess.Popen([sys.executable, "-c", code + textwrap.dedent(body)],
                            env=base_env({"CLASSH_SSH": STANDIN}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def marker_processes(marker):
    found = subprocess.run(["pgrep", "-f", "^" + marker], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def wait_for_markers(marker, count, limit=10.0):
    deadline = time.monotonic() + limit
    while len(marker_processes(marker)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(marker_processes(marker))


def test_sigterm_during_run_ends_the_api_call_and_leaves_no_child():
    proc = python_script("""
        classh.run("h[1-3]", "sleep 31.4159", classh.Options(ssh=os.environ["CLASSH_SSH"], timeout=60))
        print("the caller's loop went on")
    """)
    assert wait_for_markers("sleep 31.4159", 3) == 3
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGTERM, err  # the program's own (default) handler ran
    assert "went on" not in out
    time.sleep(0.5)
    assert marker_processes("sleep 31.4159") == []


def test_sigterm_with_the_callers_own_handler_runs_it_then_ends_the_call_with_exit_143():
    proc = python_script("""
        signal.signal(signal.SIGTERM, lambda s, f: print("caller's handler"))
        try:
            classh.run("h[1-3]", "sleep 31.4160", classh.Options(ssh=os.environ["CLASSH_SSH"], timeout=60))
        except SystemExit as exc:
            print("SystemExit", exc.code)
            raise
        print("the caller's loop went on")
    """)
    assert wait_for_markers("sleep 31.4160", 3) == 3
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert out.splitlines() == ["caller's handler", "SystemExit 143"], err
    assert proc.returncode == 143


def test_sshjobman_as_a_context_manager_leaves_no_child_after_an_exception(standin_env,
                                                                           assert_no_children_left):
    with pytest.raises(ValueError):
        with classh.SSHJobMan("h[1-3]", "sleep 31.4161") as job:
            job.poll()
            assert wait_for_markers("sleep 31.4161", 3) == 3
            raise ValueError("the caller's own bug")
    assert job.done()
    assert marker_processes("sleep 31.4161") == []
    assert_no_children_left()


def test_no_sshjobman_child_outlives_the_interpreter():
    proc = python_script("""
        job = classh.SSHJobMan("h[1-3]", "sleep 31.4162")
        job.poll()
        time.sleep(1)
        print("leaving")
    """)
    out, err = proc.communicate(timeout=30)
    assert out == "leaving\n", err
    time.sleep(0.3)
    assert marker_processes("sleep 31.4162") == []


def test_sighup_ends_the_cli_like_sigterm_with_results_kept(tmp_path):
    results = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "classh"), "-o", str(results),
                             "-q", "[ {host} = h1 ] || sleep 31.4163", "h[1-4]"],
                            env=base_env({"CLASSH_SSH": STANDIN}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert wait_for_markers("sleep 31.4163", 3) == 3
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 129, err
    assert (results / "h1.ret").read_text() == "0\n"
    assert all((results / ("h%d.ret" % i)).read_text() == "interrupted\n" for i in (2, 3, 4))
    assert len((results / "summary.jsonl").read_text().splitlines()) == 4
    assert marker_processes("sleep 31.4163") == []


def test_an_ignored_sighup_stays_ignored_as_under_nohup(tmp_path):
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "classh"), "-q",
                             "sleep 1.4164; echo {host} > %s/{host}" % tmp_path, "h[1-2]"],
                            env=base_env({"CLASSH_SSH": STANDIN}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert wait_for_markers("sleep 1.4164", 2) == 2
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert sorted(os.listdir(tmp_path)) == ["h1", "h2"]


def test_api_slurp_with_a_results_directory_records_failed_hosts_as_failed(fleet, tmp_path):
    results_dir = tmp_path / "results"
    dest = tmp_path / "dest"
    dest.mkdir()
    for host in ("node1", "node2"):
        (dest / host).write_text("in the way\n")  # the remote side succeeds, unpacking fails
    got = classh.slurp("node[1-2]", "/etc/hostname", str(dest),
                       classh.Options(ssh=fleet.ssh_command, results=str(results_dir)))
    assert all(isinstance(r, classh.Error) for r in got.values())
    for host in ("node1", "node2"):
        assert (results_dir / (host + ".ret")).read_text().strip() != "0"
        assert (results_dir / (host + ".out")).read_bytes() == b""  # stdout was the tar stream


def test_a_timer_weeks_away_does_not_overflow_the_selector():
    from classh.loop import EventLoop
    read_end, write_end = os.pipe()
    os.write(write_end, b"x")
    seen = []
    try:
        with EventLoop() as loop:
            loop.call_later(40 * 86400, lambda: None)
            loop.add_reader(read_end, lambda: seen.append(os.read(read_end, 1)))
            loop.run_once()  # epoll raised OverflowError for waits of 2**31 ms and more
            loop.remove_reader(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert seen == [b"x"]


# -- end to end: sinks that fail, routers that fail or must be stopped (real sshd) --------

def test_disk_full_on_one_hosts_output_fails_that_host_and_the_others_finish(classh, full_fs):
    results = os.path.join(full_fs, "r")
    r = classh("-o", results, "-q",
               # node1 fills the disk once the others are done (else their files fail too)
               "if [ {host} = node1 ]; then sleep 1; head -c 3000000 /dev/zero; else echo hi; fi",
               "node[1-3]")
    assert r.rc == 1, r
    assert "internal error" not in r.err
    assert "node1.out" in r.err and "No space left on device" in r.err
    for host in ("node2", "node3"):
        with open(os.path.join(results, host + ".ret")) as ret:
            assert ret.read() == "0\n"
    with open(os.path.join(results, "node1.ret")) as ret:
        assert ret.read() != "0\n"  # --resume will run it again


def test_a_display_that_cannot_be_written_ends_the_run_with_one_line(fleet):
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "classh"), "echo hi; sleep 1.4165",
                               "node[1-3]"], env=base_env({"CLASSH_SSH": fleet.ssh_command}),
                              stdout=full, stderr=subprocess.PIPE, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "internal error" not in err
    assert "No space left on device" in err and "stdout" in err
    assert marker_processes("sleep 1.4165") == []


def test_a_failed_later_stage_makes_the_exit_status_fail_like_pipefail(classh):
    stage = "%s %s -q 'exit 7' /dev/stdin" % (sys.executable, os.path.join(ROOT, "classh"))
    r = classh("-q", "-S", stage, "true", "node1")
    assert r.rc == 1, r
    assert "exited with status 5" in r.err and "-S" in r.err


def test_a_signal_while_waiting_for_a_router_reaches_it(fleet):
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "classh"), "-q", "-S", "sleep 72.4166",
                             "true", "node1"], env=base_env({"CLASSH_SSH": fleet.ssh_command}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_for_markers("sleep 72.4166", 1, limit=30) == 1
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert time.monotonic() - started < 3
    assert proc.returncode == 143
    assert marker_processes("sleep 72.4166") == []


def test_a_streamed_host_never_overwrites_a_file_in_a_router_directory(classh, tmp_path):
    routed = tmp_path / "ok"
    routed.mkdir()
    (routed / "node1.out").write_text("precious\n")
    r = classh("-o", str(tmp_path / "r"), "-q", "-S", str(routed), "echo new", "/dev/stdin",
               input=b"node1\nnode2\n")
    assert (routed / "node1.out").read_text() == "precious\n"
    assert (routed / "node2.out").read_text() == "new\n"
    assert r.rc == 1, r
    assert "node1.out" in r.err


@pytest.mark.parametrize("existing", [False, True])
def test_a_read_only_results_filesystem_is_a_clear_usage_error(standin, full_fs, existing):
    results = os.path.join(full_fs, "r")
    if existing:
        os.mkdir(results)
    subprocess.run(["mount", "-o", "remount,ro", full_fs], check=True)
    r = standin("-q", "-o", results, "true", "h[1-2]")
    assert r.rc == 2, r
    assert "internal error" not in r.err
    assert "Read-only file system" in r.err and results in r.err
    assert len(r.err.splitlines()) == 1


# -- the seams job mode plugs into ------------------------------------------------------

class RetryingSource(TaskSource):
    """Runs one internal probe, then a task that fails once and is run again."""

    def __init__(self):
        self.queue = [Task(key="probe", argv=["/bin/sh", "-c", "echo probe"], internal=True),
                      Task(key="job-1", argv=["/bin/sh", "-c", "echo try; exit 3"])]
        self.undone = ["job-2: no node left"]
        self.seen = []

    def next_task(self):
        return self.queue.pop(0) if self.queue else None

    def pending(self):
        return None

    def exhausted(self):
        return not self.queue

    def completed(self, task, record):
        self.seen.append((task.key, task.attempt))
        if task.key == "job-1" and task.attempt == 1:
            self.queue.append(Task(key="job-1", argv=["/bin/sh", "-c", "echo again"], attempt=2))
            return False
        return not task.internal


class Recorder(Observer):
    def __init__(self):
        self.calls = []

    def started(self, task):
        self.calls.append(("started", task.key))

    def output(self, task, fd, data):
        self.calls.append(("output", task.key, data))

    def finished(self, task, record):
        self.calls.append(("finished", task.key, record.stdout))

    def retried(self, task, record):
        self.calls.append(("retried", task.key, record.exitcode))


def test_internal_tasks_stay_hidden_and_a_retried_attempt_is_no_result():
    source, recorder = RetryingSource(), Recorder()
    summary = Run(source, Options(), [recorder], fanout=1).run()
    assert source.seen == [("probe", 1), ("job-1", 1), ("job-1", 2)]
    assert [c for c in recorder.calls if c[0] != "output"] == [
        ("started", "job-1"), ("retried", "job-1", 3), ("started", "job-1"),
        ("finished", "job-1", b"again\n")]
    assert summary.tally.total == 1 and summary.tally.counts["ok"] == 1
    assert summary.undone == ["job-2: no node left"]
    assert summary.exit_status == 4


def test_a_source_that_raises_is_still_closed_and_no_child_is_left(assert_no_children_left):
    class Raising(ListSource):
        closed = False

        def completed(self, task, record):
            raise RuntimeError("a bug in the source, again for every task")

        def close(self):
            self.closed = True

    source = Raising([Task(key="first", argv=["/bin/true"]),
                      Task(key="slow", argv=["/bin/sh", "-c", "sleep 30"])])
    with pytest.raises(RuntimeError):
        Run(source, Options(), [], fanout=2).run()
    assert source.closed
    assert_no_children_left()


def test_streamed_lines_keep_bytes_that_are_not_utf8(classh):
    # a job through a pipe runs with its bytes; a host name with them is refused, named as given
    jobs = classh("--node", "node1", "--job-file", "-", input=b"printf %s \xff\xfe | od -An -tx1\n")
    assert jobs.rc == 0, jobs
    assert jobs.out.split() == ["ff", "fe"]
    hosts = classh("-q", "true", "/dev/stdin", input=b"node1\nnode\xff2\n")
    assert hosts.rc == 2, hosts
    assert "internal error" not in hosts.err
    assert "bad host pattern 'node\\udcff2'" in hosts.err  # named as Python writes the byte


def test_an_empty_slurp_path_is_refused_not_run_as_a_login(standin, tmp_path):
    r = standin("--slurp", "", "--dest", str(tmp_path / "d"), "h1")
    assert r.rc == 2, r
    assert r.err.strip() == "classh: the remote path is empty"


def test_a_dropped_node_is_named_with_sshs_reason_even_with_nothing_displayed(classh):
    r = classh("-q", "--node", "refused", "--node", "node1", "--connect-timeout", "3", "--job", "true")
    assert r.rc == 0, r
    dropped = [line for line in r.err.splitlines() if line.startswith("classh: node refused dropped")]
    assert len(dropped) == 1 and "Connection refused" in dropped[0], r.err
