"""The engine: spawn (children), loop (events, timers, reaping, signals),
supervisor (fanout, capture, timeouts, kills), results, and host mode end to end."""
import errno
import os
import re
import resource
import select
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from classh import supervisor as supervisor_module
from classh.loop import EventLoop
from classh.observers import Observer as BaseObserver
from classh.results import (FAILED, KILLED, OK, SSH_ERROR, TIMEOUT, Capture, Record, Tally,
                            describe_exit, exit_status)
from classh.spawn import SpawnError, live_groups, raise_fd_limit, spawn
from classh.supervisor import ListSource, Supervisor, Task

SH = "/bin/sh"


# -- helpers ---------------------------------------------------------------

def sh(key, script, **kwargs):
    """A task running ``script`` with /bin/sh."""
    return Task(key=key, argv=[SH, "-c", script], **kwargs)


def open_fds():
    """The descriptors open in this process now."""
    return sorted(int(name) for name in os.listdir("/proc/self/fd"))


def proc_state(pid):
    """The /proc state letter of ``pid``, or None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rpartition(b")")[2].split()[0].decode()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid):
    """True while ``pid`` exists and is not a zombie."""
    return proc_state(pid) not in (None, "Z")


def wait_until(predicate, timeout=5.0, step=0.005):
    """Poll ``predicate`` until it is true (or ``timeout``); return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def read_child(spawned, timeout=10.0):
    """Read the child's stdout and stderr to EOF; return (out, err) bytes and close them."""
    fds = {spawned.stdout: [], spawned.stderr: []}
    open_ = set(fds)
    deadline = time.monotonic() + timeout
    while open_:
        left = deadline - time.monotonic()
        assert left > 0, "child output did not end"
        ready, _, _ = select.select(list(open_), [], [], left)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if data:
                fds[fd].append(data)
            else:
                open_.discard(fd)
    for fd in fds:
        os.close(fd)
    return b"".join(fds[spawned.stdout]), b"".join(fds[spawned.stderr])


def close_spawned(spawned):
    for fd in (spawned.stdout, spawned.stderr, spawned.stdin, spawned.pty):
        if fd is not None:
            os.close(fd)


def exit_code(pid):
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


class Observer(BaseObserver):
    """An observer keeping every hook call, and the highest concurrency it saw."""

    def __init__(self):
        self.sup = None
        self.started_keys = []
        self.finished_keys = []
        self.records = {}
        self.output_bytes = {1: 0, 2: 0}
        self.current = 0
        self.peak = 0
        self.peak_running = 0

    def started(self, task):
        self.started_keys.append(task.key)
        self.current += 1
        self.peak = max(self.peak, self.current)
        if self.sup is not None:
            self.peak_running = max(self.peak_running, self.sup.running)

    def output(self, task, fd, data):
        self.output_bytes[fd] += len(data)

    def finished(self, task, record):
        self.finished_keys.append(task.key)
        if task.key in self.started_keys:
            self.current -= 1
        self.records[task.key] = record


class CountingSource(ListSource):
    """A ListSource that remembers every completed() call."""

    def __init__(self, tasks):
        super().__init__(tasks)
        self.completions = []

    def completed(self, task, record):
        self.completions.append((task.key, record))
        return super().completed(task, record)


def run_tasks(tasks, numjobs=10, keep=None, kill_grace=2.0, guard=30.0, before=None):
    """Run ``tasks`` in a fresh loop; return (observer, supervisor, source, elapsed)."""
    obs = Observer()
    source = CountingSource(tasks)
    started = time.monotonic()
    with EventLoop() as loop:
        sup = Supervisor(loop, numjobs=numjobs, observers=[obs], keep=keep,
                         kill_grace=kill_grace)
        obs.sup = sup
        expired = []
        guard_timer = loop.call_later(guard, lambda: expired.append(True))
        if before is not None:
            before(loop, sup)
        sup.start(source)
        loop.run_until(lambda: sup.done() or expired)
        loop.cancel(guard_timer)
        assert not expired, "the run did not end within %s s" % guard
    return obs, sup, source, time.monotonic() - started


@pytest.fixture
def pidfile(tmp_path):
    """A file tasks append their pids to; every group named there is SIGKILLed at the end."""
    path = tmp_path / "pids"
    path.touch()
    yield str(path)
    for word in path.read_text().split():
        for kill in (os.killpg, os.kill):
            try:
                kill(int(word), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def pids_in(path):
    with open(path) as f:
        return [int(word) for word in f.read().split()]


# -- spawn -------------------------------------------------------------------

def test_spawn_stdout_and_stderr_are_separate_nonblocking_pipes():
    child = spawn([SH, "-c", "echo to-out; echo to-err >&2; echo more-out"])
    for fd in (child.stdout, child.stderr):
        assert stat.S_ISFIFO(os.fstat(fd).st_mode)
        assert not os.get_blocking(fd)
    assert child.stdin is None and child.pty is None
    out, err = read_child(child)
    assert out == b"to-out\nmore-out\n"
    assert err == b"to-err\n"
    assert exit_code(child.pid) == 0


def test_spawn_stdin_is_dev_null_so_cat_ends_at_once():
    started = time.monotonic()
    child = spawn([SH, "-c", "readlink /proc/self/fd/0; cat; echo cat-done"])
    out, err = read_child(child, timeout=5)
    assert exit_code(child.pid) == 0
    assert out == b"/dev/null\ncat-done\n", err
    assert time.monotonic() - started < 2


def test_spawn_stdin_pipe_feeds_the_child():
    child = spawn(["/bin/cat"], stdin_pipe=True)
    assert child.stdin is not None
    os.set_blocking(child.stdin, True)
    os.write(child.stdin, b"line one\nline two\n")
    os.close(child.stdin)
    out, err = read_child(child)
    assert out == b"line one\nline two\n" and err == b""
    assert exit_code(child.pid) == 0


def test_spawn_child_leads_its_own_session_and_process_group():
    child = spawn(["/bin/sleep", "30"])
    try:
        assert os.getpgid(child.pid) == child.pid
        assert os.getsid(child.pid) == child.pid
        assert os.getsid(child.pid) != os.getsid(0)
        assert live_groups([child.pid, 2 ** 22 + 7]) == {child.pid}
    finally:
        os.kill(child.pid, signal.SIGKILL)
        os.waitpid(child.pid, 0)
        close_spawned(child)
    assert live_groups([child.pid]) == set()


@pytest.mark.parametrize("kwargs", [{}, {"stdin_pipe": True}, {"use_pty": True},
                                    {"stdin_pipe": True, "use_pty": True}])
def test_spawn_missing_executable_raises_spawn_error_and_leaks_no_fd(kwargs):
    before = open_fds()
    with pytest.raises(SpawnError) as caught:
        spawn(["/nonexistent/classh-no-such-program", "x"], **kwargs)
    assert caught.value.errno == errno.ENOENT
    assert isinstance(caught.value, OSError)
    assert "/nonexistent/classh-no-such-program" in str(caught.value)
    assert open_fds() == before


PTY_PROBE = r"""
import os, stat, sys
fd = os.open("/dev/tty", os.O_RDWR)
os.write(fd, b"via-the-tty\n")
print("stdout-isatty", os.isatty(1), stat.S_ISFIFO(os.fstat(1).st_mode))
print("stderr-isatty", os.isatty(2))
print("sid-is-me", os.getsid(0) == os.getpid())
print("tty-pgrp-is-me", os.tcgetpgrp(fd) == os.getpgrp())
"""


def test_spawn_use_pty_gives_a_controlling_terminal_while_stdout_stays_a_pipe():
    child = spawn([sys.executable, "-c", PTY_PROBE], use_pty=True)
    assert child.pty is not None and os.isatty(child.pty)
    out, err = read_child(child)
    assert exit_code(child.pid) == 0, err
    lines = out.decode().splitlines()
    assert lines == ["stdout-isatty False True", "stderr-isatty False",
                     "sid-is-me True", "tty-pgrp-is-me True"]
    # What the child wrote to /dev/tty arrives on the master side we were given.
    seen = b""
    deadline = time.monotonic() + 5
    while b"via-the-tty" not in seen and time.monotonic() < deadline:
        if select.select([child.pty], [], [], 0.5)[0]:
            try:
                seen += os.read(child.pty, 1024)
            except OSError:  # EIO: slave closed
                break
    os.close(child.pty)
    assert b"via-the-tty" in seen


def test_spawn_without_pty_the_child_has_no_controlling_terminal():
    child = spawn([SH, "-c", "if (exec 3</dev/tty) 2>/dev/null; then echo has-tty; else echo no-tty; fi"])
    out, _ = read_child(child)
    os.waitpid(child.pid, 0)
    assert out == b"no-tty\n"


def inherited_fds():
    """Descriptors above 2 that this process was started with and that are inheritable."""
    return {fd for fd in open_fds() if fd > 2 and _inheritable(fd)}


def _inheritable(fd):
    try:
        return os.get_inheritable(fd)
    except OSError:  # the listing's own descriptor, closed by now
        return False


@pytest.mark.parametrize("kwargs", [{}, {"stdin_pipe": True}, {"use_pty": True},
                                    {"stdin_pipe": True, "use_pty": True}])
def test_spawn_child_gets_none_of_the_descriptors_this_process_opened(tmp_path, kwargs):
    # Some extra descriptors of our own: files, pipes, a pty.
    extra = [os.open(str(tmp_path / ("f%d" % i)), os.O_CREAT | os.O_RDWR) for i in range(3)]
    extra += list(os.pipe()) + list(os.openpty())
    try:
        child = spawn(["/bin/ls", "/proc/self/fd"], **kwargs)
        ours = set(extra) | {child.stdout, child.stderr, child.stdin, child.pty}
        if child.stdin is not None:
            os.close(child.stdin)
        out, err = read_child(child)
        assert exit_code(child.pid) == 0, err
        if child.pty is not None:
            os.close(child.pty)
        listed = {int(word) for word in out.split()}
        # 3 is ls's own handle on the directory it lists; inheritable descriptors
        # this test process was itself started with are a separate matter.
        assert {0, 1, 2} <= listed <= {0, 1, 2, 3} | inherited_fds(), listed
        assert not listed & (ours - {None, 0, 1, 2, 3}), listed
    finally:
        for fd in extra:
            os.close(fd)


# -- loop --------------------------------------------------------------------

def test_loop_timers_run_in_time_order_and_fifo_for_equal_times():
    order = []
    with EventLoop() as loop:
        now = time.monotonic()

        def mark(name, when):
            def fire():
                assert time.monotonic() >= when
                order.append(name)
            return fire

        loop.call_later(0.03, mark("c", now + 0.03))
        loop.call_later(0.01, mark("a", now + 0.01))
        loop.call_at(now + 0.02, mark("b", now + 0.02))
        loop.call_at(now + 0.04, mark("d1", now + 0.04))
        loop.call_at(now + 0.04, mark("d2", now + 0.04))
        loop.call_later(0, mark("first", now))
        assert loop.has_pending_timers
        loop.run_until(lambda: len(order) == 6)
        assert not loop.has_pending_timers
    assert order == ["first", "a", "b", "c", "d1", "d2"]


def test_loop_cancelled_timers_do_not_run():
    ran = []
    with EventLoop() as loop:
        doomed = loop.call_later(0.01, lambda: ran.append("doomed"))
        loop.call_later(0.03, lambda: ran.append("kept"))
        loop.cancel(doomed)
        loop.cancel(doomed)  # twice is harmless
        loop.cancel(None)
        # Cancelling a timer from another timer's callback, before it is due.
        late = loop.call_later(0.05, lambda: ran.append("late"))
        loop.call_later(0.02, lambda: loop.cancel(late))
        loop.call_later(0.07, lambda: ran.append("end"))
        loop.run_until(lambda: "end" in ran)
        assert not loop.has_pending_timers
    assert ran == ["kept", "end"]


def test_a_cancelled_or_fired_timer_lets_go_of_what_its_callback_holds():
    """A finished child's linger timer is cancelled, not run: the child (and its task's
    input, a block of megabytes) must be freed then, not when the timer would have fired."""
    import weakref

    class Held:
        pass

    with EventLoop() as loop:
        cancelled, fired = Held(), Held()
        gone = [weakref.ref(cancelled), weakref.ref(fired)]
        timer = loop.call_later(3600, lambda held=cancelled: held)
        loop.call_later(0, lambda held=fired: held)
        del cancelled, fired
        loop.cancel(timer)
        assert gone[0]() is None  # cancelled: freed at once, not in an hour
        loop.run_once(0.5)
        assert gone[1]() is None  # fired: freed once run


def test_loop_many_cancellations_compact_the_heap_and_keep_the_rest_in_order():
    ran = []
    with EventLoop() as loop:
        base = time.monotonic()
        timers = [loop.call_at(base + 0.001 * (i % 50), lambda i=i: ran.append(i))
                  for i in range(1500)]
        for i, timer in enumerate(timers):
            if i % 3:
                loop.cancel(timer)
        assert loop.has_pending_timers
        loop.run_until(lambda: not loop.has_pending_timers)
    kept = [i for i in range(1500) if i % 3 == 0]
    assert sorted(ran) == kept
    assert ran == sorted(kept, key=lambda i: (i % 50, i))


def _counting_run_until(loop, done):
    rounds = 0

    def finished():
        nonlocal rounds
        rounds += 1
        return done()

    loop.run_until(finished)
    return rounds - 1


def test_loop_waiting_for_a_timer_does_not_busy_loop():
    fired = []
    with EventLoop() as loop:
        started = time.monotonic()
        loop.call_later(0.3, lambda: fired.append(time.monotonic()))
        rounds = _counting_run_until(loop, lambda: fired)
    assert fired[0] - started >= 0.3
    assert rounds <= 4, rounds


def test_loop_waiting_for_a_watched_child_does_not_busy_loop():
    statuses = []
    with EventLoop() as loop:
        child = spawn([SH, "-c", "sleep 0.3; exit 4"])
        close_spawned(child)
        loop.watch_child(child.pid, statuses.append)
        rounds = _counting_run_until(loop, lambda: statuses)
    assert os.waitstatus_to_exitcode(statuses[0]) == 4
    assert rounds <= 4, rounds


def test_loop_reaps_only_watched_children_unwatched_exits_first():
    # An unwatched child is a zombie first in line when the loop reaps.
    other = subprocess.Popen([SH, "-c", "exit 7"])
    assert wait_until(lambda: proc_state(other.pid) == "Z")
    statuses = {}
    with EventLoop() as loop:
        child = spawn([SH, "-c", "sleep 0.05; exit 3"])
        close_spawned(child)
        loop.watch_child(child.pid, lambda status: statuses.setdefault(child.pid, status))
        guard = []
        loop.call_later(5, lambda: guard.append(True))
        loop.run_until(lambda: statuses or guard)
        assert not guard
        assert os.waitstatus_to_exitcode(statuses[child.pid]) == 3
        assert proc_state(other.pid) == "Z"  # still there for its owner
    assert other.wait(timeout=5) == 7
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)  # reaped exactly once, by the loop


def test_loop_reaps_only_watched_children_unwatched_exits_while_looping():
    statuses = {}
    with EventLoop() as loop:
        other = subprocess.Popen([SH, "-c", "sleep 0.05; exit 9"])
        children = [spawn([SH, "-c", "sleep %s; exit %d" % (delay, code)])
                    for delay, code in ((0, 1), (0.15, 2))]
        for child in children:
            close_spawned(child)
            loop.watch_child(child.pid,
                             lambda status, pid=child.pid: statuses.setdefault(pid, status))
        expired = []
        guard = loop.call_later(5, lambda: expired.append(True))
        loop.run_until(lambda: len(statuses) == 2 or expired)
        loop.cancel(guard)
        assert not expired
        assert [os.waitstatus_to_exitcode(statuses[c.pid]) for c in children] == [1, 2]
        assert wait_until(lambda: proc_state(other.pid) == "Z")
        # Its SIGCHLD woke the loop, which must have left it alone.
        ticks = []
        loop.call_later(0.02, lambda: ticks.append(True))
        loop.run_until(lambda: ticks)
        assert proc_state(other.pid) == "Z"
    assert other.wait(timeout=5) == 9


def test_loop_dispatches_signals_from_the_loop_and_restores_handlers():
    previous_usr1 = signal.getsignal(signal.SIGUSR1)
    previous_chld = signal.getsignal(signal.SIGCHLD)
    got = []
    with EventLoop() as loop:
        assert loop.on_signal(signal.SIGUSR1, got.append) is True
        os.kill(os.getpid(), signal.SIGUSR1)
        assert got == []  # the handler only records it; the loop dispatches
        loop.run_once()  # the wakeup fd makes this return at once
        assert got == [signal.SIGUSR1]
        # Sent from a timer while the loop waits.
        loop.call_later(0.01, lambda: os.kill(os.getpid(), signal.SIGUSR1))
        guard = []
        loop.call_later(5, lambda: guard.append(True))
        loop.run_until(lambda: len(got) == 2 or guard)
        assert got == [signal.SIGUSR1, signal.SIGUSR1]
    assert signal.getsignal(signal.SIGUSR1) == previous_usr1
    assert signal.getsignal(signal.SIGCHLD) == previous_chld


def test_loop_in_a_thread_polls_for_children_without_busy_looping():
    result = {}

    def worker():
        with EventLoop() as loop:
            result["on_signal"] = loop.on_signal(signal.SIGUSR1, lambda s: None)
            child = spawn([SH, "-c", "sleep 0.3; exit 6"])
            close_spawned(child)
            statuses = []
            loop.watch_child(child.pid, statuses.append)
            result["rounds"] = _counting_run_until(loop, lambda: statuses)
            result["status"] = statuses[0]

    handler = signal.getsignal(signal.SIGCHLD)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert result["on_signal"] is False
    assert os.waitstatus_to_exitcode(result["status"]) == 6
    assert result["rounds"] <= 0.3 / 0.05 + 5, result["rounds"]
    assert signal.getsignal(signal.SIGCHLD) == handler


def test_supervisor_runs_in_a_non_main_thread():
    result = {}
    tasks = [
        sh("out", "echo hello; echo oops >&2; exit 2"),
        sh("slow", "sleep 0.2; echo late"),
        sh("timeout", "sleep 30", timeout=0.3),
        sh("input", "cat", input=b"fed\n"),
        Task(key="missing", argv=["/nonexistent/classh-x"]),
    ]

    def worker():
        try:
            result["run"] = run_tasks(tasks, numjobs=2, kill_grace=0.5)
        except BaseException as exc:  # report it to the main thread
            result["error"] = exc

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    obs, sup, source, elapsed = result["run"]
    records = obs.records
    assert sorted(records) == sorted(t.key for t in tasks)
    assert (records["out"].exitcode, records["out"].stdout, records["out"].stderr) == \
        (2, b"hello\n", b"oops\n")
    assert records["slow"].stdout == b"late\n" and records["slow"].ok
    assert records["timeout"].status == TIMEOUT
    assert records["input"].stdout == b"fed\n"
    assert records["missing"].status == SSH_ERROR
    assert elapsed < 3


# -- supervisor ----------------------------------------------------------------

def test_supervisor_never_exceeds_numjobs(tmp_path):
    log = tmp_path / "log"
    script = 'echo + >> "%s"; sleep 0.05; echo - >> "%s"' % (log, log)
    tasks = [sh("t%02d" % i, script) for i in range(24)]
    obs, sup, _, _ = run_tasks(tasks, numjobs=4)
    assert len(obs.records) == 24
    assert obs.peak == 4  # the fanout is used...
    assert obs.peak_running <= 4  # ...and never exceeded
    # What the children themselves saw: never more than 4 between start and end.
    running = peak = 0
    for line in log.read_text().split():
        running += 1 if line == "+" else -1
        peak = max(peak, running)
    assert running == 0
    assert 1 <= peak <= 4


def test_supervisor_numjobs_one_runs_tasks_one_after_another(tmp_path):
    log = tmp_path / "log"
    tasks = [sh("t%d" % i, 'echo "start %d" >> "%s"; sleep 0.02; echo "end %d" >> "%s"'
                % (i, log, i, log)) for i in range(5)]
    obs, _, _, _ = run_tasks(tasks, numjobs=1)
    expected = []
    for i in range(5):
        expected += ["start %d" % i, "end %d" % i]
    assert log.read_text().splitlines() == expected
    assert obs.started_keys == ["t%d" % i for i in range(5)]
    with EventLoop() as loop, pytest.raises(ValueError):
        Supervisor(loop, numjobs=0)


def test_supervisor_gives_every_task_exactly_one_correct_record():
    tasks = [
        sh("ok", "echo out; echo err >&2"),
        sh("fail", "echo partial; exit 3"),
        sh("sigkill", "echo before; kill -KILL $$"),
        sh("sigterm", "kill -TERM $$"),
        sh("ssh255", "echo 'ssh: connect to host x port 22: Connection refused' >&2; exit 255"),
        sh("silent", "exit 0"),
    ] + [sh("n%03d" % i, "echo %d; exit %d" % (i, i % 4)) for i in range(60)]
    obs, sup, source, _ = run_tasks(tasks, numjobs=7)
    keys = [t.key for t in tasks]
    assert sorted(obs.finished_keys) == sorted(keys)  # exactly once each
    assert sorted(obs.started_keys) == sorted(keys)
    assert sorted(k for k, _ in source.completions) == sorted(keys)
    assert all(obs.records[k] is r for k, r in source.completions)
    r = obs.records
    assert (r["ok"].exitcode, r["ok"].signal, r["ok"].stdout, r["ok"].stderr) == \
        (0, None, b"out\n", b"err\n")
    assert (r["ok"].stdout_size, r["ok"].stderr_size) == (4, 4)
    assert r["ok"].status == OK and r["ok"].ok
    assert (r["fail"].exitcode, r["fail"].stdout, r["fail"].status) == (3, b"partial\n", FAILED)
    assert (r["sigkill"].exitcode, r["sigkill"].signal) == (None, signal.SIGKILL)
    assert r["sigkill"].stdout == b"before\n" and r["sigkill"].status == KILLED
    assert (r["sigterm"].signal, r["sigterm"].status) == (signal.SIGTERM, KILLED)
    assert (r["ssh255"].exitcode, r["ssh255"].status) == (255, SSH_ERROR)
    assert b"Connection refused" in r["ssh255"].stderr
    assert (r["silent"].stdout, r["silent"].stderr, r["silent"].status) == (b"", b"", OK)
    for i in range(60):
        rec = r["n%03d" % i]
        assert rec.host == "n%03d" % i
        assert (rec.exitcode, rec.stdout) == (i % 4, b"%d\n" % i)
        assert not (rec.timed_out or rec.interrupted or rec.ssh_error)
        assert rec.started <= rec.stopped and rec.duration < 5
    assert sup.running == 0 and sup.done()


BIG_OUTPUT = r"""
import os
out = b"o" * (1 << 20)
err = b"e" * (1 << 20)
for _ in range(50):
    os.write(1, out)
    os.write(2, err)
"""


def test_supervisor_drains_50mb_on_each_stream_and_keeps_only_keep_bytes():
    task = Task(key="big", argv=[sys.executable, "-c", BIG_OUTPUT], timeout=20)
    obs, _, _, elapsed = run_tasks([task], keep=1000)
    rec = obs.records["big"]
    assert not rec.timed_out, "the child stalled"
    assert rec.exitcode == 0, rec.stderr
    assert rec.stdout == b"o" * 1000 and rec.stderr == b"e" * 1000
    assert rec.stdout_size == rec.stderr_size == 50 << 20
    assert rec.stdout_truncated and rec.stderr_truncated
    # Observers saw every byte, even those not kept.
    assert obs.output_bytes == {1: 50 << 20, 2: 50 << 20}


def test_supervisor_timeout_kills_the_whole_process_group(tmp_path, pidfile):
    script = 'echo $$ >> "%s"; sleep 100 & echo $! > "%s/bg"; echo $! >> "%s"; wait' % (
        pidfile, tmp_path, pidfile)
    obs, sup, _, elapsed = run_tasks([sh("slow", script, timeout=0.5)], kill_grace=1)
    rec = obs.records["slow"]
    assert rec.timed_out and rec.status == TIMEOUT
    assert rec.signal == signal.SIGTERM
    background = int((tmp_path / "bg").read_text())
    assert wait_until(lambda: not alive(background), timeout=2), proc_state(background)
    # Everybody died of the SIGTERM. (The run may still wait out the 1 s grace: the
    # supervisor checks for survivors once, and can catch the sleep mid-exit.)
    assert 0.5 <= elapsed < 2.8, elapsed
    assert describe_exit(rec) == "timeout"


def test_supervisor_timeout_sigkills_a_child_ignoring_sigterm_after_the_grace(pidfile):
    script = "echo $$ >> '%s'; trap '' TERM; sleep 100; echo survived" % pidfile
    obs, _, _, elapsed = run_tasks([sh("stubborn", script, timeout=0.3)], kill_grace=0.4)
    rec = obs.records["stubborn"]
    assert rec.timed_out and rec.status == TIMEOUT
    assert rec.signal == signal.SIGKILL
    assert b"survived" not in rec.stdout
    assert 0.7 <= elapsed < 2.5, elapsed
    group = pids_in(pidfile)[0]
    assert wait_until(lambda: not live_groups([group]), timeout=2)


def test_supervisor_gives_up_silent_pipes_after_linger_and_says_the_output_may_be_cut(
        tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor_module, "LINGER", 1.0)
    script = 'echo before; sleep 10 & echo $! > "%s/bg"; echo after' % tmp_path
    obs, _, _, elapsed = run_tasks([sh("linger", script)])
    background = int((tmp_path / "bg").read_text())
    try:
        rec = obs.records["linger"]
        assert rec.exitcode == 0 and rec.output_cut
        assert rec.status == FAILED and describe_exit(rec) == "incomplete"
        assert "output may be incomplete" in rec.error
        assert rec.stdout == b"before\nafter\n"
        assert rec.duration < 1  # stopped when the child exited, not when pipes closed
        assert 0.9 <= elapsed < 2.5, elapsed
    finally:
        os.kill(background, signal.SIGKILL)


def test_supervisor_reads_a_slow_writer_to_the_end_after_the_child_exited(monkeypatch):
    # What an ssh ControlMaster does under load: its client has exited with the
    # status while the master is still writing the job's output into the pipe.
    monkeypatch.setattr(supervisor_module, "LINGER", 0.6)
    script = ("(for i in 1 2 3 4 5; do sleep 0.4; head -c 70000 /dev/zero | tr '\\0' a; done;"
              " echo tail) & exit 0")
    obs, _, _, elapsed = run_tasks([sh("slow", script)])
    rec = obs.records["slow"]
    assert rec.stdout == b"a" * 350000 + b"tail\n"
    assert rec.status == OK and not rec.output_cut and rec.error is None
    assert elapsed >= 2.0


def test_supervisor_never_records_ok_with_output_cut_when_linger_comes_with_a_read(
        monkeypatch):
    # The timer comes due in the same round as a read of one full chunk, with more
    # waiting behind it (what a loaded machine does): the pipe is drained first.
    monkeypatch.setattr(supervisor_module, "LINGER", 0.0)
    obs, _, _, _ = run_tasks([sh("cut", "(head -c 300000 /dev/zero) & exit 0")])
    rec = obs.records["cut"]
    if rec.status == OK:
        assert rec.stdout == b"\0" * 300000 and not rec.output_cut
    else:
        assert rec.output_cut and "output may be incomplete" in rec.error


def test_supervisor_finishes_at_once_when_the_grandchild_leaves_the_pipes(tmp_path):
    script = 'sleep 10 >/dev/null 2>&1 & echo $! > "%s/bg"; echo done' % tmp_path
    obs, _, _, elapsed = run_tasks([sh("detached", script)])
    os.kill(int((tmp_path / "bg").read_text()), signal.SIGKILL)
    assert obs.records["detached"].stdout == b"done\n"
    assert elapsed < 1


def test_supervisor_interrupt_kills_running_children_and_starts_nothing_more(pidfile):
    tasks = [sh("t%d" % i, "echo $$ >> '%s'; sleep 100" % pidfile) for i in range(7)]
    running_then = []

    def before(loop, sup):
        def interrupt():
            running_then.append(sup.running)
            sup.interrupt()
        loop.call_later(0.3, interrupt)

    obs, sup, source, elapsed = run_tasks(tasks, numjobs=3, kill_grace=0.5, before=before)
    assert obs.started_keys == ["t0", "t1", "t2"]
    assert sorted(obs.records) == ["t0", "t1", "t2"]
    for rec in obs.records.values():
        assert rec.interrupted and rec.status == KILLED
        assert rec.signal == signal.SIGTERM
        assert describe_exit(rec) == "interrupted"
    assert sup.interrupted_by == signal.SIGINT
    assert running_then == [3]
    assert not source.exhausted()  # the other four were never even taken
    assert elapsed < 2
    groups = pids_in(pidfile)
    assert len(groups) == 3
    assert wait_until(lambda: not live_groups(groups), timeout=2)


def test_supervisor_second_interrupt_sigkills_at_once(pidfile):
    tasks = [sh("t%d" % i, "echo $$ >> '%s'; trap '' TERM; sleep 100" % pidfile)
             for i in range(2)]

    def before(loop, sup):
        loop.call_later(0.3, lambda: sup.interrupt(signal.SIGTERM))
        loop.call_later(0.5, lambda: sup.interrupt(signal.SIGTERM))

    obs, sup, _, elapsed = run_tasks(tasks, numjobs=5, kill_grace=30, before=before)
    assert sorted(obs.records) == ["t0", "t1"]
    for rec in obs.records.values():
        assert rec.interrupted and rec.signal == signal.SIGKILL
    assert sup.interrupted_by == signal.SIGTERM
    assert elapsed < 2.5


def test_supervisor_kill_one_task_by_key(pidfile):
    tasks = [sh("victim", "echo $$ >> '%s'; sleep 100" % pidfile), sh("bystander", "sleep 0.4")]
    answers = []

    def before(loop, sup):
        loop.call_later(0.2, lambda: answers.extend([sup.kill("victim"), sup.kill("nobody")]))

    obs, sup, _, elapsed = run_tasks(tasks, numjobs=2, kill_grace=0.5, before=before)
    assert answers == [True, False]
    assert obs.records["victim"].status == KILLED and obs.records["victim"].interrupted
    assert obs.records["bystander"].status == OK
    assert sup.interrupted_by is None
    assert elapsed < 2


def test_supervisor_feeds_task_input_on_stdin():
    data = os.urandom(10 << 20)
    tasks = [
        sh("small", "cat", input=b"hello\nworld\n"),
        sh("empty", "cat; echo eof", input=b""),
        sh("big", "cat", input=data, timeout=20),
        sh("count", "wc -c", input=data, timeout=20),
        # A child that never reads: the write fails with EPIPE and nothing breaks.
        sh("deaf", "exec 0<&-; echo no-reader", input=data, timeout=20),
        sh("none", "cat; echo eof"),  # no input: /dev/null
    ]
    obs, _, _, _ = run_tasks(tasks, numjobs=6)
    r = obs.records
    assert r["small"].stdout == b"hello\nworld\n"
    assert r["empty"].stdout == b"eof\n"
    assert not r["big"].timed_out and r["big"].stdout_size == len(data)
    assert r["big"].stdout == data
    assert r["count"].stdout.strip() == str(len(data)).encode()
    assert r["deaf"].stdout == b"no-reader\n" and r["deaf"].exitcode == 0
    assert r["none"].stdout == b"eof\n"


def test_supervisor_spawn_failure_is_an_ssh_error_record_and_the_run_goes_on():
    tasks = [sh("before", "echo 1"),
             Task(key="missing", argv=["/nonexistent/classh-no-such-ssh", "host", "true"]),
             sh("after", "echo 2")]
    obs, _, source, _ = run_tasks(tasks, numjobs=1)
    assert sorted(obs.records) == ["after", "before", "missing"]
    rec = obs.records["missing"]
    assert rec.ssh_error and rec.status == SSH_ERROR
    assert rec.error and "No such file" in rec.error
    assert rec.exitcode is None and rec.signal is None
    assert rec.stopped >= rec.started > 0
    assert obs.records["before"].stdout == b"1\n" and obs.records["after"].stdout == b"2\n"
    assert "missing" not in obs.started_keys  # never started, but recorded
    assert len(source.completions) == 3


def test_supervisor_defers_tasks_when_out_of_descriptors():
    tasks = [sh("t%d" % i, "sleep 0.1; echo %d" % i) for i in range(8)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    obs = Observer()
    source = CountingSource(tasks)
    with EventLoop() as loop:
        sup = Supervisor(loop, numjobs=8, observers=[obs])
        obs.sup = sup
        # Leave room for about three children: fd numbers are handed out lowest first.
        used = set(open_fds())
        limit, free = 0, 0
        while free < 10:
            if limit not in used:
                free += 1
            limit += 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        try:
            sup.start(source)
            loop.run_until(sup.done)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert sorted(obs.records) == sorted(t.key for t in tasks)
    for i in range(8):
        assert obs.records["t%d" % i].stdout == b"%d\n" % i, obs.records["t%d" % i]
    assert 1 <= obs.peak < 8


def test_supervisor_leaks_no_descriptors(tmp_path):
    before = open_fds()
    tasks = [sh("a", "echo a"), sh("b", "cat", input=b"x" * 100000),
             Task(key="c", argv=["/nonexistent/x"]), sh("d", "sleep 30", timeout=0.2),
             sh("e", "kill -KILL $$")]
    obs, _, _, _ = run_tasks(tasks, numjobs=2, kill_grace=0.5)
    assert len(obs.records) == 5
    assert open_fds() == before


# -- results -------------------------------------------------------------------

@pytest.mark.parametrize("fields, status", [
    (dict(exitcode=0), OK),
    (dict(exitcode=1), FAILED),
    (dict(exitcode=254), FAILED),
    (dict(exitcode=255), SSH_ERROR),
    (dict(), SSH_ERROR),  # no exit code at all
    (dict(ssh_error=True, error="cannot start ssh"), SSH_ERROR),
    (dict(ssh_error=True, exitcode=0), SSH_ERROR),
    (dict(signal=signal.SIGKILL), KILLED),
    (dict(interrupted=True, signal=signal.SIGTERM), KILLED),
    (dict(interrupted=True, exitcode=0), KILLED),
    (dict(timed_out=True, signal=signal.SIGTERM), TIMEOUT),
    (dict(timed_out=True, exitcode=0), TIMEOUT),
    (dict(timed_out=True, interrupted=True, signal=signal.SIGKILL), TIMEOUT),
])
def test_record_status(fields, status):
    rec = Record(host="h", **fields)
    assert rec.status == status
    assert rec.ok == (status == OK)


@pytest.mark.parametrize("statuses, expected", [
    ([], 0),
    ([OK, OK], 0),
    ([OK, FAILED], 5),
    ([FAILED, KILLED], 3),
    ([FAILED, TIMEOUT, OK], 3),
    ([KILLED], 3),
    ([TIMEOUT, SSH_ERROR, FAILED], 4),
    ([SSH_ERROR], 4),
    ([OK, FAILED, SSH_ERROR, TIMEOUT, KILLED], 4),
])
def test_exit_status_priorities(statuses, expected):
    counts = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    assert exit_status(counts) == expected
    examples = {OK: Record("h", exitcode=0), FAILED: Record("h", exitcode=2),
                SSH_ERROR: Record("h", exitcode=255), TIMEOUT: Record("h", timed_out=True),
                KILLED: Record("h", signal=9)}
    tally = Tally(examples[s] for s in statuses)
    assert tally.total == len(statuses)
    assert tally.exit_status() == expected


def test_capture_keeps_the_first_bytes_and_counts_all():
    capture = Capture(5)
    for chunk in (b"abc", b"defg", b"hij"):
        capture.write(chunk)
    assert (capture.value(), capture.size) == (b"abcde", 10)
    unlimited = Capture()
    unlimited.write(b"x" * 7)
    unlimited.write(b"y")
    assert (unlimited.value(), unlimited.size) == (b"xxxxxxxy", 8)


def test_raise_fd_limit_returns_a_sensible_number():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert raise_fd_limit(1) == 1
        assert raise_fd_limit(5) == 5
        # A low soft limit is raised to what the children need.
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert raise_fd_limit(100) == 100
        new_soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert new_soft >= 100 * 6 + 64
        # Far more than the hard limit allows: as many as fit, at least one.
        huge = 10 ** 9
        fit = raise_fd_limit(huge)
        now_soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert 1 <= fit < huge
        if now_soft != resource.RLIM_INFINITY:
            assert fit * 6 + 64 <= now_soft
            assert fit >= (now_soft - 64) // 6
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- host mode through the command line ------------------------------------------

def test_cli_2000_hosts_at_200_at_a_time_are_all_recorded(standin):
    r = standin("-n", "200", "--progress", "echo {host}", "h[1-2000]", timeout=60)
    assert r.rc == 0, r
    progress = r.err.splitlines()[0]
    assert progress == "." * 2000
    assert re.search(r"classh: 2000 hosts in [\d.]+ s: 2000 ok$", r.err.strip()), r.err


def test_cli_unreachable_host_is_exit_4_with_a_tilde(standin):
    r = standin("--progress", "true", "h1,down1,h2")
    assert r.rc == 4, r
    assert sorted(r.err.splitlines()[0]) == [".", ".", "~"]
    assert "2 ok" in r.err and "1 ssh error" in r.err


# Regression tests for bugs found while writing the tests above.

def test_timer_cancel_method_keeps_has_pending_timers_right():
    ran = []
    with EventLoop() as loop:
        t = loop.call_later(0.01, lambda: ran.append("cancelled"))
        t.cancel()
        loop.call_later(0.02, lambda: ran.append("kept"))
        loop.run_until(lambda: ran)
        assert ran == ["kept"]
        assert not loop.has_pending_timers

def test_timeout_does_not_fire_after_the_command_exited_while_lingering(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor_module, "LINGER", 1.5)
    script = 'sleep 10 & echo $! > "%s/bg"; echo done' % tmp_path
    obs, _, _, elapsed = run_tasks([sh("x", script, timeout=1.0)])
    os.kill(int((tmp_path / "bg").read_text()), signal.SIGKILL)
    rec = obs.records["x"]
    assert rec.exitcode == 0 and rec.stdout == b"done\n"
    assert not rec.timed_out and rec.output_cut, (rec.status, rec.timed_out, elapsed)
    assert rec.status == FAILED  # the pipes were given up: not ok, yet no timeout

def test_spawn_bad_argument_leaks_no_fd():
    before = open_fds()
    with pytest.raises((SpawnError, ValueError)):
        spawn(["/bin/echo", "a\0b"])
    assert open_fds() == before

def test_supervisor_bad_argv_is_recorded_not_raised():
    obs, _, _, _ = run_tasks([Task("bad", ["/bin/echo", "a\0b"]), sh("ok", "true")])
    assert sorted(obs.records) == ["bad", "ok"]

def test_sealed_process_passes_no_inheritable_fd_to_children():
    from classh.spawn import seal_inherited_fds
    r, w = os.pipe()
    os.set_inheritable(w, True)  # as if classh had been started with it open
    try:
        seal_inherited_fds()  # what every Supervisor does when it is made
        assert not os.get_inheritable(w)
        child = spawn(["/bin/ls", "/proc/self/fd"])
        out, err = read_child(child)
        assert exit_code(child.pid) == 0
        listed = {int(x) for x in out.split()}
        assert listed <= {0, 1, 2, 3}, listed
    finally:
        os.close(r); os.close(w)


def test_run_ends_once_the_timed_out_group_is_gone_not_after_kill_grace():
    # The grandchild takes 0.3 s to die of SIGTERM, without holding the pipes.
    script = ("sh -c \"trap 'sleep 0.3; exit 0' TERM; sleep 100 & wait\" >/dev/null 2>&1 & "
              "sleep 100")
    obs, _, _, elapsed = run_tasks([sh("t", script, timeout=0.3)], kill_grace=5)
    assert obs.records["t"].timed_out
    assert elapsed < 2, elapsed


def test_stderr_held_back_as_a_possible_sudo_marker_is_kept_at_the_end():
    from classh.prompts import HostAuth, SudoWrapper
    auth = HostAuth(None, tty=False, sudo=SudoWrapper())
    task = Task("s", ["/bin/sh", "-c", "printf 'plain [' >&2"], auth=auth)
    obs, _, _, _ = run_tasks([task])
    assert obs.records["s"].stderr == b"plain ["
