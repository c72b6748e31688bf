#!/usr/bin/env python3
"""classh benchmark: classh against xargs, pssh, clush, pdsh and GNU parallel.

    .venv/bin/python bench/bench.py [--quick] [--all] [--only NAME] [--cap X] [--timeout SECS]

Scenarios (one run of each tool, command ``true``, same hosts, same fanout);
``make bench`` runs all but standin-500 and standin-50k (``--all`` adds them,
and gpu-40's local floor, and blocks-1g's 16 MiB blocks; ``--only NAME`` runs any
one), to stay under eight minutes on two cores:

  standin-100   stand-in ssh, 10,000 hosts, fanout 100, every tool
  standin-500   stand-in ssh, 10,000 hosts, fanout 500, every tool
  standin-50k   stand-in ssh, 50,000 hosts, fanout 500: classh, every
                host's result recorded
  results-dir   stand-in ssh, 10,000 hosts, fanout 100: classh -o DIR vs
                classh without it (skipped while classh has no --results)
  real-sshd     a real loopback sshd (tests/fleet.py), 200 hosts, fanout
                100, every tool through the same ssh config
  auth          real sshd, 200 hosts: classh with key logins vs classh -P
                answering password prompts (root only: a test account gets a
                password for the run); a wrong password on 100 hosts
  persist       real sshd, 200 hosts: classh --persist, first run vs second
                run over the same hosts (connections reused), then --close
  api           stand-in ssh, 1,000 hosts: classh.run() vs the classh command
  remote-kill   real sshd, 50 hosts: how many of the command's processes
                are left on the target 3 s after the tool exits, when it is
                ended by its timeout (-t 4: 50 logins must be done first),
                SIGINT, SIGTERM, for a command ignoring SIGTERM and one
                leaving a background child: classh, pssh, clush ("exit
                s": seconds from the signal, or the start, to the exit)

Job mode (a queue of jobs over node slots; a node listed k times = k slots):

  jobs-400      real sshd, 400 ``echo job N`` jobs over 10 nodes x 4 slots:
                classh, clstr 0.1.0 (from PyPI into a throwaway venv under
                bench/out/peers; run on a pseudo-terminal since it writes to
                /dev/tty, with a ``ping`` that answers and an ``ssh`` adding
                -F CONFIG first on its PATH), GNU parallel -S 4/node1,...
                and -S -M; every tool must print each job's line once.
                classh runs first; a peer is stopped at 6x classh's time
                (at least 15 s, 8 s with --quick; ``--cap 0``: never), a
                lower bound that still decides the 5x bars; -S -M, whose bar
                is only "faster than", at 3x classh's time (at least 5 s)
  jobs-20k      stand-in ssh, 20,000 ``true`` jobs over 50 nodes x 8 slots:
                classh --format json, every job's record (exit 0) counted;
                classh's own CPU (RUSAGE_SELF of the process running it,
                children excluded) per job
  jobs-dying    real sshd, 300 jobs (sleep 0.3) over 10 nodes x 4 slots: 3
                dead (a closed port), one on a second sshd stopped while it
                runs jobs; classh --format json: every job recorded once
                with exit 0, exit status 0, each job's completions counted
                on the target (a job that finished on the dying node as it
                stopped, its exit status lost, is rightly run again: shown
                apart), every dead or dying node dropped with a line
  gpu-40        real sshd with a stand-in nvidia-smi (tests/gpufleet.py), 40
                jobs ``sleep 1; echo $CUDA_VISIBLE_DEVICES`` over 2 nodes x 2
                GPUs, gpu2's gpu1 taken by a foreign process: classh --gpus -o
                DIR; from summary.jsonl and each job's .out: the most jobs
                running at once, jobs on the busy GPU; GNU parallel -j 3
                locally as a floor with ``--all`` only (no peer has GPU
                slots)
  kill-run      real sshd, 20 hosts: two classh job runs (20 ``sleep MARK_A``
                jobs, 20 ``sleep MARK_B``, default --retries), then classh
                --kill RUN_A over the 20 hosts: seconds until no MARK_A process
                is left (and none back 1 s later), MARK_B's all alive (the
                same pids); run B then ended by SIGTERM and nothing of either
                run may be left (no peer has a run-tagged kill)
  blocks-1m     real sshd, ``seq 1 1000000`` in blocks of 10,000 lines over
                10 nodes x 2 slots, task ``wc -l``: classh --input FILE -k,
                classh --input - (the file on stdin), GNU parallel --pipe -N
                10000 -S 2/node1,... and with -M (--tmpdir in the bench's
                tmp; stopped at 6x classh like jobs-400, -M at 3x, at least
                5 s: it starts a ControlMaster per block, 78-81 s when let
                finish); every tool's 100
                counts must add up to 1,000,000, classh's -k output must equal
                ``wc -l`` run locally on each block
  blocks-1g     real sshd, 2^30 bytes of 128-byte lines from ``yes | head
                -c`` through a FIFO into classh --input -, blocks of 2^17
                lines (64 blocks; --all adds blocks of 2^13 lines, 1,024
                blocks), 10 nodes x 2 slots, ``wc -l``: every block's count
                back, the sum 8,388,608; classh's peak RSS
  blocks-stall  real sshd, 40 one-line blocks (``sleep 0.5; echo N``) over 4
                nodes x 2 slots, -k, -t 120, --stall-min 1: once with no hang,
                once with block 3 sleeping 300 s on its first attempt only (a
                mkdir marker in a world-writable directory); every block once
                in order, the total against the normal run, no ``sleep
                300.1010`` left (skipped while classh has no --stall-factor)

``--quick`` uses 1,000 / 5,000 / 50 hosts instead of 10,000 / 50,000 / 200
(and 100 / 2,000 / 100 jobs).

To keep a full run near five minutes on two cores, a peer in the stand-in
scenarios is stopped once it has run ``--cap`` (default 1.4) times as long as
xargs did (never before 10 s): its row shows a lower bound (">"), status
CAPPED.  Such a peer loses every bar whatever its exact time.  ``--cap 0``
lets every peer finish (about 8-10 minutes here).  classh and xargs are
never capped; every run has a hard limit of ``--timeout`` seconds.

The stand-in (tests/standin-ssh, copied as ``ssh`` into a temporary bin
directory) runs the command locally, so those rows measure each tool's own
cost: spawning, polling, bookkeeping.  With a real sshd every tool is bound
by ssh's crypto on the same cores.

Measures per run: wall time; CPU time = user+sys of the tool and of every
descendant it reaped (os.wait4's rusage, what ``/usr/bin/time`` reports);
the peak RSS of the tool's main process = its VmHWM, read from
/proc/PID/status every 50 ms (a high-water mark, so only growth in the last
50 ms can be missed).  wait4's ru_maxrss (``/usr/bin/time -f %M``) is kept
in the JSON only: it is the largest process of the reaped tree *and* the
high-water mark of the memory image each process replaced at exec -- for a
child forked (or vforked) from this Python script that is the script's own
~15 MB, which swamps xargs' 2 MB or pdsh's 5 MB.

Writes bench/out/latest.json and bench/out/latest.md.  Stdlib only.  Every
process it starts is ended by pid (time limit per run, leftovers of a
tool's process group, the sshd fleet).
"""

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "bench", "out")
STANDIN = os.path.join(ROOT, "tests", "standin-ssh")
CLASSH = os.path.join(ROOT, "classh")
sys.path.insert(0, os.path.join(ROOT, "tests"))

PEER_PACKAGES = ["pssh", "clustershell", "pdsh", "parallel"]
TOOLS = ["xargs", "classh", "pssh", "clush", "pdsh", "parallel"]
JOB_SCENARIOS = ["jobs-400", "jobs-20k", "jobs-dying", "gpu-40", "kill-run",
                 "blocks-1m", "blocks-1g", "blocks-stall"]
SCENARIOS = ["standin-100", "standin-500", "standin-50k", "results-dir", "real-sshd",
             "auth", "persist", "api", "remote-kill"] + JOB_SCENARIOS
#: Left out of a plain run (``--all`` adds them): more of standin-100 at larger scales.
EXTRA_SCENARIOS = ["standin-500", "standin-50k"]


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# -- environment ---------------------------------------------------------------

def classh_python():
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    return venv if os.access(venv, os.X_OK) else sys.executable


def _out(argv, stderr=True):
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT if stderr else subprocess.DEVNULL,
                           universal_newlines=True, timeout=30)
        return p.stdout
    except (OSError, subprocess.SubprocessError) as e:
        return "(%s)" % e


def find_peers():
    """{tool: path or None} for the peers (pssh is parallel-ssh on Debian)."""
    paths = {
        "pssh": shutil.which("parallel-ssh") or shutil.which("pssh"),
        "clush": shutil.which("clush"),
        "pdsh": shutil.which("pdsh"),
        "parallel": shutil.which("parallel"),
    }
    # moreutils ships a different "parallel": only GNU parallel counts.
    if paths["parallel"] and "GNU parallel" not in _out([paths["parallel"], "--version"]):
        paths["parallel"] = None
    return paths


def ensure_peers():
    """Install missing peers with apt-get when root; return (paths, notes)."""
    paths = find_peers()
    missing = [t for t, p in paths.items() if p is None]
    notes = {}
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        log("bench: installing missing peers (%s) with apt-get" % ", ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-qq"] + PEER_PACKAGES
        for attempt in range(2):
            try:
                p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   universal_newlines=True, timeout=600)
                if p.returncode == 0:
                    break
                log("bench: apt-get install failed (rc %d)%s" % (
                    p.returncode, ", running apt-get update" if attempt == 0 else ""))
                if attempt == 0:
                    subprocess.run(["apt-get", "update", "-qq"], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=600)
            except (OSError, subprocess.SubprocessError) as e:
                log("bench: apt-get failed: %s" % e)
                break
        paths = find_peers()
    for tool, path in paths.items():
        if path is None:
            notes[tool] = "not installed%s" % (
                "" if os.geteuid() == 0 else " (not root: cannot apt-get install)")
    return paths, notes


def raise_nofile():
    """Same, raised open-file limit for every tool (fanout 500 needs >1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    want = min(want, 65536)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    except (ValueError, OSError):
        return soft


def first_line(text):
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def machine_info(paths):
    py = classh_python()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    versions = {
        "classh": first_line(_out([py, CLASSH, "--version"])),
        "python": first_line(_out([py, "--version"])),
        "xargs": first_line(_out(["xargs", "--version"])),
        "ssh": first_line(_out(["ssh", "-V"])),
    }
    if paths.get("pssh"):
        versions["pssh"] = "%s %s" % (os.path.basename(paths["pssh"]),
                                      first_line(_out([paths["pssh"], "--version"])))
    if paths.get("clush"):
        versions["clush"] = first_line(_out([paths["clush"], "--version"]))
    if paths.get("pdsh"):
        versions["pdsh"] = first_line(_out([paths["pdsh"], "-V"]))
    if paths.get("parallel"):
        versions["parallel"] = first_line(_out([paths["parallel"], "--version"]))
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / 1048576.0)
    except OSError:
        pass
    return {
        "host": platform.node(),
        "system": "%s %s" % (platform.system(), platform.release()),
        "os": _os_release(),
        "nproc": os.cpu_count(),
        "cpus_usable": affinity,
        "memory": mem,
        "loadavg_start": _loadavg(),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "bench_python": platform.python_version(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "classh_source": _git_state(),
    }


def _git_state():
    """The commit measured, and whether classh's sources differ from it."""
    head = first_line(_out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], stderr=False))
    if not head:
        return "not a git checkout"
    dirty = _out(["git", "-C", ROOT, "status", "--porcelain", "--", "classh", "lib"],
                 stderr=False).strip()
    return "git %s%s" % (head, " + uncommitted changes in classh/lib" if dirty else "")


def _os_release():
    try:
        with open("/etc/os-release") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- running one tool ------------------------------------------------------------

def _hwm_kb(pid):
    """VmHWM of pid in KiB (None when gone or a zombie)."""
    try:
        with open("/proc/%d/status" % pid) as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _group_members(pgid):
    """Pids whose process group or session is pgid (Linux /proc): a tool started
    in a session of its own keeps what it forked into new groups in it (GNU
    parallel -M's control masters)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as fh:
                stat = fh.read()
            fields = stat[stat.rindex(")") + 2:].split()
            if pgid in (int(fields[2]), int(fields[3])) and fields[0] != "Z":
                out.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def sweep_group(pgid, rounds=50):
    """SIGKILL what is left of pgid's group and session until nothing is (GNU
    parallel -M's forked control-master keepers fork anew while being
    killed); how many pids were killed."""
    killed = set()
    for _ in range(rounds):
        pids = _group_members(pgid)
        if not pids:
            break
        _kill_pids(pids, signal.SIGKILL)
        killed.update(pids)
        time.sleep(0.05)
    return len(killed)


def _kill_pids(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def measure(argv, env, workdir, name, timeout, stdin_path=None):
    """Run argv once; return a dict of measurements.

    stdout goes to workdir/name.out, stderr to workdir/name.err.  The tool
    runs in its own process group; on timeout the group is sent SIGTERM,
    then SIGKILL; leftovers of the group are killed by pid afterwards.
    """
    out_path = os.path.join(workdir, name + ".out")
    err_path = os.path.join(workdir, name + ".err")
    stdin = open(stdin_path or os.devnull, "rb")
    out = open(out_path, "wb")
    err = open(err_path, "wb")
    state = {"timed_out": False, "hwm": 0}
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err, env=env,
                                cwd=workdir, start_new_session=True, close_fds=True)
    except OSError as e:
        for f in (stdin, out, err):
            f.close()
        return {"status": "ERROR", "note": "cannot start: %s" % e, "rc": None}
    pid = proc.pid
    done = threading.Event()

    def sampler():
        while not done.is_set():
            kb = _hwm_kb(pid)
            if kb and kb > state["hwm"]:
                state["hwm"] = kb
            done.wait(0.05)

    def killer():
        # killpg, not a /proc scan: GNU parallel --pipe -M forks thousands of
        # processes and a scan under that load took 50 s to stop it.  What the
        # tool put in other groups of its session is swept once it is reaped.
        if done.wait(timeout):
            return
        state["timed_out"] = True
        state["stopped_at"] = time.monotonic() - t0
        _killpg(pid, signal.SIGTERM)
        if done.wait(3):
            return
        _killpg(pid, signal.SIGKILL)

    threads = [threading.Thread(target=sampler, daemon=True),
               threading.Thread(target=killer, daemon=True)]
    for t in threads:
        t.start()
    try:
        while True:
            try:
                _, status, ru = os.wait4(pid, 0)
                break
            except InterruptedError:
                continue
        wall = time.monotonic() - t0
    finally:
        done.set()
        proc.returncode = 0  # reaped here: keep Popen from waiting again
        for f in (stdin, out, err):
            f.close()
    for t in threads:
        t.join(5)
    leftovers = sweep_group(pid)  # e.g. children a killed tool left behind
    rc = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") \
        else (os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status))
    return {
        "rc": rc,
        "wall": wall,
        "user": ru.ru_utime,
        "sys": ru.ru_stime,
        "cpu": ru.ru_utime + ru.ru_stime,
        "rss_main_mb": state["hwm"] / 1024.0 if state["hwm"] else None,
        # Not shown in the tables: see the module docstring.
        "rusage_maxrss_mb": ru.ru_maxrss / 1024.0,
        "timed_out": state["timed_out"],
        # when the time limit stopped it (a capped peer's lower bound), None if it did not
        "stopped_at": state.get("stopped_at"),
        "leftovers_killed": leftovers,
        "stdout": out_path,
        "stderr": err_path,
    }


def _read(path, limit=None):
    try:
        with open(path, "r", errors="replace") as fh:
            return fh.read() if limit is None else fh.read(limit)
    except OSError:
        return ""


def _tail(path, n=3):
    lines = [l for l in _read(path).splitlines() if l.strip()]
    return " | ".join(lines[-n:])[:300]


def _count_lines(path, pattern):
    rx = re.compile(pattern)
    n = 0
    try:
        with open(path, "r", errors="replace") as fh:
            for line in fh:
                if rx.search(line):
                    n += 1
    except OSError:
        pass
    return n


# -- success checks: never report a fast failure as a win ------------------------

def check_exit_only(m, nhosts, err_pattern=None):
    """Tools whose exit status is 0 only when every host succeeded."""
    if m["rc"] == 0:
        return nhosts
    if err_pattern:
        return max(0, nhosts - _count_lines(m["stderr"], err_pattern))
    return None


def check_parallel(m, nhosts):
    # GNU parallel's exit status is the number of failed jobs (101 = more).
    rc = m["rc"]
    if rc is not None and 0 <= rc <= 100:
        return nhosts - rc
    return None


def check_pssh(m, nhosts):
    return _count_lines(m["stdout"], r"\[SUCCESS\]")


SUMMARY_RX = re.compile(r"classh: (\d+) hosts? in [0-9.]+ s: (\d+) ok")


def classh_summary(m):
    match = None
    for line in _read(m["stderr"]).splitlines():
        mm = SUMMARY_RX.search(line)
        if mm:
            match = mm
    if not match:
        return None, None
    return int(match.group(1)), int(match.group(2))


def check_classh(m, nhosts):
    total, ok = classh_summary(m)
    m["summary_hosts"], m["summary_ok"] = total, ok
    return ok if total == nhosts else None


CHECKS = {
    "xargs": lambda m, n: check_exit_only(m, n),
    "classh": check_classh,
    "pssh": check_pssh,
    "clush": lambda m, n: check_exit_only(m, n, r"exited with exit code|timeout"),
    "pdsh": lambda m, n: check_exit_only(m, n, r"exited with exit code|timed out"),
    "parallel": check_parallel,
}


# -- command lines ---------------------------------------------------------------

class Setup:
    """Where the hosts, the stand-in and the tools are for one bench run."""

    def __init__(self, tmp, paths, peer_notes):
        self.tmp = tmp
        self.paths = paths
        self.peer_notes = peer_notes
        self.bindir = os.path.join(tmp, "bin")
        os.makedirs(self.bindir)
        # A stand-in copy named "ssh": tools that look ssh up on PATH
        # (pssh, pdsh) find it first; the others get its absolute path.
        self.standin = os.path.join(self.bindir, "ssh")
        shutil.copyfile(STANDIN, self.standin)
        os.chmod(self.standin, 0o755)
        self.python = classh_python()
        self._hostfiles = {}
        self.cap = 0.0      # peers in stand-in scenarios stop at cap x xargs' wall
        self.cap_min = 10.0  # ... but never before this many seconds

    def hostfile(self, hosts, prefix="h"):
        key = (prefix, len(hosts))
        if key not in self._hostfiles:
            path = os.path.join(self.tmp, "hosts-%s%d" % (prefix, len(hosts)))
            with open(path, "w") as fh:
                fh.write("\n".join(hosts) + "\n")
            self._hostfiles[key] = path
        return self._hostfiles[key]

    def env(self, standin):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith(("CLASSH_", "PDSH_")):
                del env[k]
        if standin:
            env["PATH"] = self.bindir + os.pathsep + env.get("PATH", "")
        env["NO_COLOR"] = "1"
        return env

    def command(self, tool, hostfile, fanout, ssh_cfg=None, user=None, results=None):
        """(argv, env, stdin_path, note) for tool; ssh_cfg=None: the stand-in."""
        standin = ssh_cfg is None
        env = self.env(standin)
        f = str(fanout)
        ssh_argv = [self.standin] if standin else ["ssh", "-F", ssh_cfg]
        ssh_cmd = " ".join(shlex.quote(a) for a in ssh_argv)
        if tool == "xargs":
            # one ssh per host, at most `fanout` at a time; children get /dev/null
            return (["xargs", "-P", f, "-I{}"] + ssh_argv + ["{}", "true"],
                    env, hostfile)
        if tool == "classh":
            argv = [self.python, CLASSH, "-q", "-n", f, "--ssh", ssh_cmd]
            if results:
                argv += ["-o", results]
            return argv + ["true", hostfile], env, None
        path = self.paths.get(tool)
        if tool == "pssh":
            # parallel-ssh runs "ssh HOST -o ... [-x args] -T? CMD" from PATH;
            # -t 0: no 60 s per-host timeout.
            argv = [path, "-p", f, "-t", "0", "-h", hostfile]
            if not standin:
                argv += ["-x", "-F %s" % ssh_cfg]
            return argv + ["true"], env, None
        if tool == "clush":
            # plain mode ("host: line"), -S: exit with the largest rc,
            # ssh_path from the command line (clush.conf's ssh_path option).
            argv = [path, "-n", "-S", "-f", f, "--hostfile", hostfile]
            if standin:
                argv += ["-O", "ssh_path=%s" % self.standin]
            else:
                argv += ["-o", "-F %s" % ssh_cfg]
            return argv + ["true"], env, None
        if tool == "pdsh":
            # pdsh's ssh module runs "ssh" from PATH with PDSH_SSH_ARGS
            # (default "-2 -a -x -l%u %h"); -S: exit with the largest rc.
            argv = [path, "-S", "-R", "ssh", "-f", f, "-w", "^" + hostfile]
            if not standin:
                env["PDSH_SSH_ARGS_APPEND"] = "-F %s" % ssh_cfg
                if user:  # else pdsh's -l%u (the local user) overrides the config's User
                    argv += ["-l", user]
            return argv + ["true"], env, None
        if tool == "parallel":
            # The usual "GNU parallel over ssh": one "ssh HOST true" job per
            # host, -j jobs at a time (the same work as the xargs row).
            # --nonall/-S would nest a parallel per host, which no one uses
            # for thousands of hosts.
            return ([path, "--will-cite", "-j", f] + ssh_argv + ["{}", "true", "::::", hostfile],
                    env, None)
        raise ValueError(tool)


def run_tool(setup, tool, nhosts, hostfile, fanout, timeout, tag, ssh_cfg=None,
             user=None, results=None, cap=None):
    """One run of tool; cap (seconds, or None): stop it there and report a
    lower bound (status CAPPED) instead of waiting for a slow peer."""
    row = {"tool": tool, "hosts": nhosts, "fanout": fanout}
    capped = cap is not None and cap < timeout
    limit = cap if capped else timeout
    if tool not in ("xargs", "classh") and not setup.paths.get(tool):
        row.update(status="SKIPPED", note=setup.peer_notes.get(tool, "not installed"))
        log("  %-8s skipped: %s" % (tool, row["note"]))
        return row
    argv, env, stdin_path = setup.command(tool, hostfile, fanout, ssh_cfg, user, results)
    row["argv"] = " ".join(shlex.quote(a) for a in argv) + (
        " < " + stdin_path if stdin_path else "")
    row["loadavg_before"] = _loadavg()
    log("  %-8s running: %s" % (tool, row["argv"]))
    m = measure(argv, env, setup.tmp, "%s-%s" % (tag, tool), limit, stdin_path)
    row.update(m)
    if m.get("status") == "ERROR":
        row["ok"] = 0
        return row
    ok = CHECKS[tool](m, nhosts)
    row["ok"] = ok
    for k in ("summary_hosts", "summary_ok"):
        if k in m:
            row[k] = m[k]
    if m["timed_out"] and tool not in ("pssh", "classh"):
        ok = row["ok"] = None  # killed: its exit status says nothing per host
    if m["timed_out"] and capped:
        row["status"] = "CAPPED"
        row["capped"] = True
        row["note"] = "stopped at %.1f s = %.1fx xargs%s" % (
            limit, setup.cap, "" if ok is None else "; %d hosts done" % ok)
    elif m["timed_out"]:
        row["status"] = "TIMEOUT"
        row["note"] = "killed after %d s" % limit
    elif ok == nhosts and m["rc"] == 0:
        row["status"] = "ok"
    else:
        row["status"] = "FAILED"
        row["note"] = "rc %s, %s/%d ok: %s" % (m["rc"], "?" if ok is None else ok,
                                              nhosts, _tail(m["stderr"]))
    log("  %-8s %s wall %.2f s cpu %.2f s rss %s MB%s" % (
        tool, row["status"], m["wall"], m["cpu"],
        "%.1f" % m["rss_main_mb"] if m["rss_main_mb"] else "?",
        "  (%s)" % row["note"] if row.get("note") else ""))
    return row


def add_ratios(rows):
    ref = next((r for r in rows if r["tool"] == "xargs" and r.get("status") == "ok"), None)
    for r in rows:
        if ref and r.get("wall") and r.get("status") in ("ok", "CAPPED"):
            r["x_xargs"] = r["wall"] / ref["wall"]
            r["cpu_x_xargs"] = r["cpu"] / ref["cpu"] if ref["cpu"] else None


# -- scenarios --------------------------------------------------------------------

def hosts_list(n, prefix="h"):
    return ["%s%d" % (prefix, i) for i in range(1, n + 1)]


def sc_standin(setup, args, nhosts, fanout, name, tools):
    hosts = hosts_list(nhosts)
    hf = setup.hostfile(hosts)
    sc = {"name": name, "title": "stand-in ssh, %d hosts, fanout %d" % (nhosts, fanout),
          "hosts": nhosts, "fanout": fanout, "rows": []}
    log("bench: %s" % sc["title"])
    cap = None
    for tool in tools:
        row = run_tool(setup, tool, nhosts, hf, fanout, args.timeout, name,
                       cap=cap if tool not in ("xargs", "classh") else None)
        sc["rows"].append(row)
        if tool == "xargs" and row.get("status") == "ok" and setup.cap:
            # A peer slower than CAPx xargs loses every bar whatever its exact
            # time: stop it there (a lower bound) to keep the run short.
            cap = max(setup.cap_min, setup.cap * row["wall"])
    add_ratios(sc["rows"])
    return sc


def classh_has_results(setup):
    text = _out([setup.python, CLASSH, "--help"])
    return "--results" in text


def sc_results_dir(setup, args, nhosts, fanout, plain=None):
    name = "results-dir"
    hosts = hosts_list(nhosts)
    hf = setup.hostfile(hosts)
    sc = {"name": name, "hosts": nhosts, "fanout": fanout, "rows": [],
          "title": "stand-in ssh, %d hosts, fanout %d: classh -o DIR vs without"
                   % (nhosts, fanout)}
    log("bench: %s" % sc["title"])
    if not classh_has_results(setup):
        sc["skipped"] = "classh --help has no --results: -o DIR not implemented yet"
        log("  skipped: " + sc["skipped"])
        return sc
    if not plain or plain.get("status") != "ok":  # else the stand-in-100 run serves
        plain = run_tool(setup, "classh", nhosts, hf, fanout, args.timeout, name + "-plain")
    plain = dict(plain, tool="classh")
    rdir = os.path.join(setup.tmp, "results-%d" % nhosts)
    withdir = run_tool(setup, "classh", nhosts, hf, fanout, args.timeout, name + "-o",
                       results=rdir)
    withdir["tool"] = "classh -o DIR"
    try:
        names = os.listdir(rdir)
    except OSError:
        names = []
    rets = sum(1 for n in names if n.endswith(".ret"))
    withdir["ret_files"] = rets
    if withdir.get("status") == "ok" and rets != nhosts:
        withdir["status"] = "FAILED"
        withdir["note"] = "%d .ret files, expected %d" % (rets, nhosts)
    else:
        withdir["note"] = "%d .ret files" % rets
    if plain.get("wall") and withdir.get("wall"):
        withdir["x_plain"] = withdir["wall"] / plain["wall"]
        sc["ratio"] = withdir["x_plain"]
        if plain.get("cpu"):
            sc["cpu_ratio"] = withdir["cpu"] / plain["cpu"]
    sc["rows"] = [plain, withdir]
    shutil.rmtree(rdir, ignore_errors=True)
    return sc


def sc_real(setup, args, nhosts, fanout):
    from fleet import Fleet, FleetError
    name = "real-sshd"
    sc = {"name": name, "hosts": nhosts, "fanout": fanout, "rows": [],
          "title": "real loopback sshd, %d hosts, fanout %d" % (nhosts, fanout)}
    log("bench: %s" % sc["title"])
    if not os.access("/usr/sbin/sshd", os.X_OK) or not shutil.which("ssh"):
        sc["skipped"] = "no /usr/sbin/sshd or ssh (make sshd installs them)"
        log("  skipped: " + sc["skipped"])
        return sc
    fleet = Fleet(tempfile.mkdtemp(prefix="classh-bench-fleet-"), hosts=nhosts)
    try:
        try:
            fleet.start()
        except FleetError as e:
            sc["skipped"] = "fleet did not start: %s" % str(e)[:300]
            log("  skipped: " + sc["skipped"])
            return sc
        hf = setup.hostfile(fleet.hosts, prefix=fleet.prefix)
        # One login first, so a broken fleet shows up as such.
        probe = subprocess.run(fleet.ssh_argv + [fleet.hosts[0], "true"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True,
                               timeout=60)
        if probe.returncode != 0:
            sc["skipped"] = "ssh to the fleet failed: %s" % probe.stdout.strip()[:300]
            log("  skipped: " + sc["skipped"])
            return sc
        # Untimed warm-up: one batch of logins, so that the first tool measured
        # does not pay for cold caches (sshd, ssh, keys) alone.
        warm = setup.hostfile(fleet.hosts[:fanout], prefix="warm-" + fleet.prefix)
        run_tool(setup, "xargs", min(fanout, nhosts), warm, fanout, args.timeout,
                 name + "-warmup", ssh_cfg=fleet.ssh_config, user=fleet.user)
        for tool in TOOLS:
            sc["rows"].append(run_tool(setup, tool, nhosts, hf, fanout, args.timeout, name,
                                       ssh_cfg=fleet.ssh_config, user=fleet.user))
    finally:
        fleet.stop()
        shutil.rmtree(fleet.workdir, ignore_errors=True)
    add_ratios(sc["rows"])
    return sc


def run_classh_row(setup, label, extra, hostfile, nhosts, timeout, tag, env=None, expect_rc=0):
    """One timed classh run with ``extra`` arguments; a row like run_tool's."""
    argv = [setup.python, CLASSH, "-q"] + extra + ["true", hostfile]
    row = {"tool": label, "hosts": nhosts, "argv": " ".join(shlex.quote(a) for a in argv)}
    log("  %-22s running: %s" % (label, row["argv"]))
    m = measure(argv, env or setup.env(False), setup.tmp, tag, timeout)
    row.update(m)
    if m.get("status") == "ERROR":
        return row
    total, ok = classh_summary(m)
    row.update(summary_hosts=total, summary_ok=ok, ok=ok)
    good = m["rc"] == expect_rc and total == nhosts and (expect_rc != 0 or ok == nhosts)
    row["status"] = "ok" if good and not m["timed_out"] else "FAILED"
    if row["status"] != "ok":
        row["note"] = "rc %s, summary %s/%s: %s" % (m["rc"], ok, total, _tail(m["stderr"]))
    log("  %-22s %s wall %.2f s cpu %.2f s" % (label, row["status"], m["wall"], m["cpu"]))
    return row


def _bench_fleet(nhosts, extra=""):
    from fleet import Fleet
    fleet = Fleet(tempfile.mkdtemp(prefix="classh-bench-fleet-"), hosts=nhosts,
                  extra_sshd_config=extra)
    fleet.start()
    return fleet


def _drop_fleet(fleet):
    fleet.stop()
    shutil.rmtree(fleet.workdir, ignore_errors=True)


def sc_auth(setup, args, nhosts, fanout):
    """Key logins vs password logins answered by classh; a wrong password."""
    name = "auth"
    sc = {"name": name, "hosts": nhosts, "fanout": fanout, "rows": [],
          "title": "real loopback sshd, %d hosts, fanout %d: key vs password (-P)" % (nhosts, fanout)}
    log("bench: %s" % sc["title"])
    if os.geteuid() != 0:
        sc["skipped"] = "needs root (a password for the test account)"
        log("  skipped: " + sc["skipped"])
        return sc
    from fleet import TEST_USER
    password = "bench-%d" % os.getpid()
    fleet = _bench_fleet(nhosts, "PasswordAuthentication yes\n")
    try:
        subprocess.run(["chpasswd", "-c", "SHA512"], check=True,
                       input=("%s:%s\n" % (TEST_USER, password)).encode())
        text = open(fleet.ssh_config).read()
        text = re.sub(r"(?m)^\s*IdentityFile .*\n", "", text).replace(
            "PasswordAuthentication no", "PasswordAuthentication yes\n    PubkeyAuthentication no")
        pw_config = os.path.join(fleet.workdir, "ssh_config_password")
        with open(pw_config, "w") as f:
            f.write(text)
        secret, wrong = (os.path.join(setup.tmp, n) for n in ("password", "wrong"))
        for path, word in ((secret, password), (wrong, "not-" + password)):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(word + "\n")
        hf = setup.hostfile(fleet.hosts, prefix=fleet.prefix)
        key = "--ssh=ssh -F %s" % fleet.ssh_config
        pw = "--ssh=ssh -F %s" % pw_config
        sc["rows"].append(run_classh_row(setup, "classh (keys)", ["-n", str(fanout), key], hf,
                                         nhosts, args.timeout, name + "-key"))
        sc["rows"].append(run_classh_row(setup, "classh -P (password)",
                                         ["-n", str(fanout), pw, "--password-file", secret],
                                         hf, nhosts, args.timeout, name + "-pw"))
        few = fleet.hosts[:100]
        sc["rows"].append(run_classh_row(setup, "wrong password, %d hosts" % len(few),
                                         ["-n", "100", pw, "--password-file", wrong],
                                         setup.hostfile(few, prefix="wrong-" + fleet.prefix),
                                         len(few), args.timeout, name + "-wrong", expect_rc=4))
    finally:
        subprocess.run(["usermod", "-p", "*", TEST_USER], check=False)
        _drop_fleet(fleet)
    key_row, pw_row = sc["rows"][0], sc["rows"][1]
    if key_row.get("wall") and pw_row.get("wall"):
        sc["ratio_label"] = "password / keys"
        sc["ratio_value"] = pw_row["wall"] / key_row["wall"]
    return sc


def sc_persist(setup, args, nhosts, fanout):
    """classh --persist: the first run makes masters, the second reuses them."""
    name = "persist"
    sc = {"name": name, "hosts": nhosts, "fanout": fanout, "rows": [],
          "title": "real loopback sshd, %d hosts, fanout %d: --persist, first vs second run"
                   % (nhosts, fanout)}
    log("bench: %s" % sc["title"])
    fleet = _bench_fleet(nhosts)
    try:
        hf = setup.hostfile(fleet.hosts, prefix=fleet.prefix)
        ssh = "--ssh=ssh -F %s" % fleet.ssh_config
        for label in ("first run (new masters)", "second run (reused)"):
            sc["rows"].append(run_classh_row(setup, label, ["-n", str(fanout), ssh, "--persist=120"],
                                             hf, nhosts, args.timeout, name + "-" + label[:5]))
    finally:
        subprocess.run([setup.python, CLASSH, "--ssh", "ssh -F %s" % fleet.ssh_config, "--close",
                        hf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        _drop_fleet(fleet)
    first, second = sc["rows"]
    if first.get("wall") and second.get("wall"):
        sc["ratio_label"] = "first / second"
        sc["ratio_value"] = first["wall"] / second["wall"]
    return sc


API_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import classh
hosts = [line.strip() for line in open(sys.argv[3]) if line.strip()]
results = classh.run(hosts, "true", classh.Options(ssh=sys.argv[2], numjobs=int(sys.argv[4])))
ok = sum(1 for r in results.values() if not isinstance(r, classh.Error) and r[0] == 0)
sys.stderr.write("classh: %d hosts in 0.0 s: %d ok\\n" % (len(results), ok))
"""


def sc_api(setup, args, nhosts, fanout):
    """classh.run() from Python vs the classh command, same hosts and fanout."""
    name = "api"
    sc = {"name": name, "hosts": nhosts, "fanout": fanout, "rows": [],
          "title": "stand-in ssh, %d hosts, fanout %d: classh.run() vs the CLI" % (nhosts, fanout)}
    log("bench: %s" % sc["title"])
    hf = setup.hostfile(hosts_list(nhosts))
    sc["rows"].append(run_classh_row(setup, "classh (CLI)", ["-n", str(fanout), "--ssh", setup.standin],
                                     hf, nhosts, args.timeout, name + "-cli"))
    argv = [setup.python, "-c", API_SCRIPT, os.path.join(ROOT, "lib"), setup.standin, hf, str(fanout)]
    row = {"tool": "classh.run() (API)", "hosts": nhosts, "argv": "python -c <classh.run script>"}
    m = measure(argv, setup.env(False), setup.tmp, name + "-api", args.timeout)
    row.update(m)
    total, ok = classh_summary(m)
    row["ok"] = ok
    row["status"] = "ok" if m.get("rc") == 0 and total == ok == nhosts else "FAILED"
    if row["status"] != "ok":
        row["note"] = "rc %s: %s" % (m.get("rc"), _tail(m["stderr"]))
    log("  %-22s %s wall %.2f s" % (row["tool"], row["status"], m["wall"]))
    sc["rows"].append(row)
    cli, api = sc["rows"]
    if cli.get("wall") and api.get("wall"):
        sc["ratio_label"] = "API / CLI"
        sc["ratio_value"] = api["wall"] / cli["wall"]
    return sc


KILL_TOOLS = ["classh", "pssh", "clush"]
#: Seconds of the timeout cases: long enough for 50 logins on two cores to
#: start every command first (a host timed out during its login proves nothing).
KILL_TIMEOUT = 4
#: (label, how the tool is ended, remote command with {m} for the marker, processes per host)
KILL_CASES = [
    ("timeout -t %d" % KILL_TIMEOUT, "timeout", "sleep {m}", 1),
    ("SIGINT to the tool", signal.SIGINT, "sleep {m}", 1),
    ("SIGTERM to the tool", signal.SIGTERM, "sleep {m}", 1),
    ("ignores SIGTERM, -t %d" % KILL_TIMEOUT, "timeout", "trap '' TERM; sleep {m}", 1),
    ("background child, -t %d" % KILL_TIMEOUT, "timeout", "sleep {m} & sleep {m}", 2),
]
_TIMEOUT_FLAGS = {"classh": "-t", "pssh": "-t", "clush": "-u"}
#: How long after the tool exits the leftovers are counted.
KILL_CHECK_AFTER = 3.0


def _live_pids(matches):
    """Live (non-zombie) pids, not this one, whose command line ``matches(cmdline)``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as fh:
                    if not matches(fh.read()):
                        continue
                with open("/proc/%s/stat" % name, "rb") as fh:
                    if fh.read().rpartition(b")")[2].split()[0] != b"Z":
                        found.append(int(name))
            except (OSError, IndexError):
                pass
    return found


def marked_pids(mark):
    """Live (non-zombie) pids whose command line is exactly ``sleep MARK``."""
    want = b"sleep\0" + mark.encode() + b"\0"
    return _live_pids(lambda cmdline: cmdline == want)


def _kill_argv(setup, tool, hostfile, fleet, command, ended_by):
    """The tool's argv running ``command`` (with its timeout flag when ``ended_by`` is one)."""
    argv, env, _stdin = setup.command(tool, hostfile, len(fleet.hosts), fleet.ssh_config, fleet.user)
    at = len(argv) - (2 if tool == "classh" else 1)  # where "true" is
    assert argv[at] == "true", argv
    flags = [_TIMEOUT_FLAGS[tool], str(KILL_TIMEOUT)] if ended_by == "timeout" else []
    return argv[:at] + flags + [command] + argv[at + 1:], env


def kill_case(setup, tool, fleet, hostfile, case, mark):
    """Run one tool, end it one way; the row's "left" is filled in KILL_CHECK_AFTER s
    after it exited, by the returned timer (the next case runs meanwhile)."""
    label, ended_by, pattern, per_host = case
    expected = per_host * len(fleet.hosts)
    argv, env = _kill_argv(setup, tool, hostfile, fleet, pattern.replace("{m}", mark), ended_by)
    row = {"tool": tool, "case": label, "hosts": len(fleet.hosts), "expected": expected,
           "argv": " ".join(shlex.quote(a) for a in argv), "started": 0}
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    began = sent = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - began < 60:
            row["started"] = max(row["started"], len(marked_pids(mark)))
            if ended_by != "timeout" and row["started"] >= expected and sent == began:
                proc.send_signal(ended_by)
                sent = time.monotonic()
            time.sleep(0.05)
        row["rc"] = proc.poll()
        row["exit_s"] = time.monotonic() - sent
    finally:
        _kill_pids(_group_members(proc.pid), signal.SIGKILL)  # the tool's local leftovers
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def count():
        row["left"] = len(marked_pids(mark))
        log("  %-7s %-24s started %d, left %.0f s after exit: %d/%d (rc %s)" % (
            tool, label, row["started"], KILL_CHECK_AFTER, row["left"], expected, row["rc"]))

    timer = threading.Timer(KILL_CHECK_AFTER, count)
    timer.start()
    row["status"] = "ok" if row["started"] >= expected and row["rc"] is not None else "FAILED"
    return row, timer


def sc_remote_kill(setup, args, nhosts):
    """Kills reach the target: processes left behind by classh, pssh and clush."""
    name = "remote-kill"
    sc = {"name": name, "hosts": nhosts, "rows": [],
          "title": "real loopback sshd, %d hosts: the command's processes left on the target "
                   "%.0f s after the tool exits" % (nhosts, KILL_CHECK_AFTER)}
    log("bench: %s" % sc["title"])
    fleet = _bench_fleet(nhosts)
    marks, timers = [], []
    try:
        hf = setup.hostfile(fleet.hosts, prefix="kill-" + fleet.prefix)
        for case in KILL_CASES:
            for tool in KILL_TOOLS:
                if tool != "classh" and not setup.paths.get(tool):
                    continue
                marks.append("300.%d%03d" % (os.getpid() % 10000, len(marks) + 1))
                row, timer = kill_case(setup, tool, fleet, hf, case, marks[-1])
                sc["rows"].append(row)
                timers.append(timer)
    finally:
        for timer in timers:
            timer.join()
        for mark in marks:  # every leftover, by pid
            _kill_pids(marked_pids(mark), signal.SIGKILL)
        _drop_fleet(fleet)
    # exit s: from the signal to the tool's exit (timeout cases: from its start)
    head = ["case", "tool", "left / started", "exit s", "rc", "status"]
    sc["table"] = (head, [[r["case"], r["tool"], "%s / %d" % (r.get("left", "?"), r["started"]),
                           _fmt(r.get("exit_s"), "%.2f"), str(r["rc"]), r["status"]]
                          for r in sc["rows"]])
    return sc


# -- job mode: a queue of jobs over node slots ----------------------------------------

CLSTR_VERSION = "0.1.0"
#: (nodes, slots per node, jobs) of each job scenario, full and --quick.
JOB_SIZES = {
    False: {"jobs-400": (10, 4, 400), "jobs-20k": (50, 8, 20000), "jobs-dying": (10, 4, 300)},
    True: {"jobs-400": (10, 4, 100), "jobs-20k": (50, 8, 2000), "jobs-dying": (10, 4, 100)},
}
#: Seconds each jobs-dying job sleeps: long enough for the dying node to be
#: killed with jobs running on it.
DYING_SLEEP = 0.3
#: In jobs-400 a peer is stopped once it has run this many times as long as
#: classh (never before JOB_CAP_MIN s; --cap 0: never): its row is then a
#: lower bound (">", CAPPED) that still decides the bars (5x at most).
JOB_CAP = 6
JOB_CAP_MIN = 15.0
JOB_CAP_MIN_QUICK = 8.0  # --quick: a smoke run
#: A peer whose only bar is "classh faster than it" (GNU parallel -S -M: 15x and
#: 50x classh's time here when let finish) is stopped sooner: at FAR_CAP x
#: classh's time, never before FAR_CAP_MIN s, a lower bound that still decides it.
FAR_CAP = 3
FAR_CAP_MIN = 5.0
JOB_LINE = re.compile(r"^job (\d+)$")
#: classh's line for a node it drops (``classh: node dead1 dropped: ...``).
DROPPED_LINE = re.compile(r"(?m)^classh: node (\S+) dropped: ")

# clstr writes its status to /dev/tty unconditionally (it dies without a
# terminal): this runs it on a pseudo-terminal of its own, stdin /dev/null,
# stdout and stderr the wrapper's, and forwards SIGTERM/SIGINT to its group.
PTY_RUN = r"""
import os, pty, signal, sys
out, err = os.dup(1), os.dup(2)
pid, master = pty.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0); os.dup2(out, 1); os.dup2(err, 2)
    for fd in (null, out, err):
        os.close(fd)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
def forward(signum, frame):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
while True:
    try:
        if not os.read(master, 65536):
            break
    except InterruptedError:
        continue
    except OSError:
        break
while True:
    try:
        _, status = os.waitpid(pid, 0)
        break
    except InterruptedError:
        continue
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""

# classh's OWN CPU, children excluded: classh runs in this very process and
# its RUSAGE_SELF (user+sys of this process; classh starts no thread) is
# written to argv[1] when it exits, however it exits.
SELF_CPU = r"""
import resource, runpy, sys
report = sys.argv[1]
sys.argv = sys.argv[2:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open(report, "w") as fh:
        fh.write("%.6f %.6f\n" % (ru.ru_utime, ru.ru_stime))
"""


def _write_lines(path, lines):
    with open(path, "w") as fh:
        fh.write("".join(line + "\n" for line in lines))
    return path


def _script(path, text):
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o755)
    return path


def ensure_clstr():
    """(path of clstr 0.1.0's command, None) or (None, why not).

    clstr comes from PyPI into a throwaway venv under bench/out/peers (ignored
    by git), made on the first run and reused while it answers --version.
    """
    venv = os.path.join(OUT_DIR, "peers", "clstr-" + CLSTR_VERSION)
    exe = os.path.join(venv, "bin", "clstr")
    if os.access(exe, os.X_OK) and CLSTR_VERSION in _out([exe, "--version"]):
        return exe, None
    log("bench: installing clstr==%s from PyPI into %s" % (CLSTR_VERSION, venv))
    shutil.rmtree(venv, ignore_errors=True)
    for argv in ([sys.executable, "-m", "venv", venv],
                 [os.path.join(venv, "bin", "pip"), "install", "--quiet",
                  "clstr==" + CLSTR_VERSION]):
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as e:
            return None, "clstr install failed: %s" % e
        if p.returncode != 0:
            return None, "clstr install failed: %s" % _tail_text(p.stdout)
    if CLSTR_VERSION not in _out([exe, "--version"]):
        return None, "clstr %s did not install" % CLSTR_VERSION
    return exe, None


def _tail_text(text, n=2):
    return " | ".join([l for l in text.splitlines() if l.strip()][-n:])[:300]


def job_lines(path):
    """{job number: how many times its ``job N`` line was printed}."""
    seen = {}
    try:
        with open(path, "r", errors="replace") as fh:
            for line in fh:
                m = JOB_LINE.match(line.rstrip("\r\n"))
                if m:
                    seen[int(m.group(1))] = seen.get(int(m.group(1)), 0) + 1
    except OSError:
        pass
    return seen


def check_job_lines(row, m, njobs):
    """A job tool's row is ok when rc is 0 and each job's line came out once."""
    seen = job_lines(m["stdout"])
    row["ok"] = sum(1 for j in range(1, njobs + 1) if seen.get(j) == 1)
    row["twice"] = sum(1 for n in seen.values() if n > 1)
    if m["timed_out"]:
        row["status"], row["note"] = "TIMEOUT", "killed after %.0f s" % m["wall"]
    elif m["rc"] == 0 and row["ok"] == njobs and not row["twice"]:
        row["status"] = "ok"
    else:
        row["status"] = "FAILED"
        row["note"] = "rc %s, %d/%d jobs printed once, %d twice: %s" % (
            m["rc"], row["ok"], njobs, row["twice"], _tail(m["stderr"]))


def job_cap(args, first, times=JOB_CAP, floor=None):
    """(seconds, why) at which a peer is stopped: times x classh's wall (its row
    ``first``), never before floor (JOB_CAP_MIN, or JOB_CAP_MIN_QUICK with --quick);
    (None, None) with --cap 0 or when classh failed."""
    if not args.cap or first.get("status") != "ok":
        return None, None
    if floor is None:
        floor = JOB_CAP_MIN_QUICK if args.quick else JOB_CAP_MIN
    return max(floor, times * first["wall"]), "%dx classh, at least %.0f s" % (times, floor)


def run_job_tool(setup, label, argv, env, njobs, timeout, tag, stdin_path=None,
                 check=check_job_lines, shown=None, cap=(None, None)):
    """One timed run of a job tool; a row with wall, CPU, RSS, ok = jobs done.
    cap ((seconds, why) from job_cap): stop it there, a lower bound (status CAPPED)."""
    cap, cap_why = cap
    row = {"tool": label, "jobs": njobs,
           "argv": shown or " ".join(shlex.quote(a) for a in argv) + (
               " < " + stdin_path if stdin_path else ""),
           "loadavg_before": _loadavg()}
    log("  %-16s running: %s" % (label, row["argv"]))
    capped = cap is not None and cap < timeout
    m = measure(argv, env, setup.tmp, tag, cap if capped else timeout, stdin_path)
    row.update(m)
    if m.get("status") == "ERROR":
        row["ok"] = 0
        return row
    check(row, m, njobs)
    if m["timed_out"] and capped:
        row.update(status="CAPPED", capped=True, wall=m["stopped_at"], stop_s=m["wall"],
                   note="stopped at %.1f s (%s); %d jobs printed by then" % (
                       cap, cap_why, row.get("ok") or 0))
    log("  %-16s %s wall %.2f s cpu %.2f s%s" % (
        label, row["status"], m["wall"], m["cpu"],
        "  (%s)" % row["note"] if row.get("note") else ""))
    return row


def job_table(sc, extra=()):
    """(head, rows) of a job scenario: times against classh's row."""
    ref = _row(sc, "classh")
    ref_wall = ref["wall"] if ref and ref.get("status") == "ok" else None
    head = ["tool", "wall s", "x classh", "CPU s", "RSS MB", "jobs ok"] + \
        [h for h, _ in extra] + ["status"]
    rows = []
    for r in sc["rows"]:
        status = r.get("status", "")
        if r.get("note"):
            status = "%s (%s)" % (status, r["note"])
        ratio = r["wall"] / ref_wall if ref_wall and r.get("wall") else None
        ge = ">" if r.get("capped") else ""
        rows.append([r["tool"], ge + _fmt(r.get("wall"), "%.2f"), ge + _fmt(ratio, "%.2f"),
                     ge + _fmt(r.get("cpu"), "%.2f"), _fmt(r.get("rss_main_mb"), "%.1f"),
                     "-" if status.startswith("SKIPPED") else
                     "%s/%d" % ("?" if r.get("ok") is None else r["ok"], r["jobs"])]
                    + [f(r) for _, f in extra] + [status])
    return head, rows


def job_files(setup, prefix, nodes, slots, commands):
    """A node file (each node ``slots`` times, as clstr and classh read it)
    and a job file (one command a line)."""
    nf = _write_lines(os.path.join(setup.tmp, "%s-nodes" % prefix),
                      [n for n in nodes for _ in range(slots)])
    jf = _write_lines(os.path.join(setup.tmp, "%s-jobs" % prefix), commands)
    return nf, jf


def wrapper_bin(setup, name, ssh_config):
    """A bin directory with ``ssh`` = the real ssh with ``-F ssh_config`` and
    a ``ping`` that always answers: what clstr finds first on its PATH."""
    real_ssh = shutil.which("ssh")
    bindir = os.path.join(setup.tmp, "bin-" + name)
    os.makedirs(bindir, exist_ok=True)
    _script(os.path.join(bindir, "ssh"), "#!/bin/sh\nexec %s -F %s \"$@\"\n" % (
        shlex.quote(real_ssh), shlex.quote(ssh_config)))
    _script(os.path.join(bindir, "ping"), "#!/bin/sh\n# clstr pings each node first\nexit 0\n")
    return bindir


def classh_jobs_argv(setup, nodefile, jobfile, ssh_cmd, extra=()):
    return [setup.python, CLASSH, "--node-file", nodefile, "--job-file", jobfile,
            "--ssh", ssh_cmd] + list(extra)


def sc_jobs_400(setup, args, nnodes, slots, njobs):
    """clstr, GNU parallel -S (and -M) and classh: echo jobs over node slots."""
    name = "jobs-400"
    sc = {"name": name, "hosts": nnodes, "jobs": njobs, "rows": [],
          "title": "real loopback sshd, %d echo jobs over %d nodes x %d slots"
                   % (njobs, nnodes, slots)}
    log("bench: %s" % sc["title"])
    clstr, clstr_note = ensure_clstr()
    fleet = _bench_fleet(nnodes)
    try:
        nf, jf = job_files(setup, name, fleet.hosts, slots,
                           ["echo job %d" % i for i in range(1, njobs + 1)])
        cfg = fleet.ssh_config
        ssh_cmd = "ssh -F %s" % shlex.quote(cfg)
        env = setup.env(False)
        # Untimed warm-up: one login per node (cold caches, sshd's first forks).
        for host in fleet.hosts:
            subprocess.run(fleet.ssh_argv + [host, "true"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        first = run_job_tool(setup, "classh", classh_jobs_argv(setup, nf, jf, ssh_cmd),
                             env, njobs, args.timeout, name + "-classh")
        sc["rows"].append(first)
        cap = job_cap(args, first)
        if clstr:
            cenv = dict(env, PATH=wrapper_bin(setup, name, cfg) + os.pathsep + env["PATH"])
            argv = [sys.executable, "-c", PTY_RUN, clstr, "--node-file", nf, "--job-file", jf]
            sc["rows"].append(run_job_tool(
                setup, "clstr " + CLSTR_VERSION, argv, cenv, njobs, args.timeout, name + "-clstr",
                shown="clstr --node-file NODES(each x%d) --job-file JOBS  (on a pty; ssh and "
                      "ping wrappers first on PATH)" % slots, cap=cap))
        else:
            sc["rows"].append({"tool": "clstr " + CLSTR_VERSION, "jobs": njobs,
                               "status": "SKIPPED", "note": clstr_note})
        par = setup.paths.get("parallel")
        logins = ",".join("%d/%s" % (slots, h) for h in fleet.hosts)
        far = job_cap(args, first, FAR_CAP, FAR_CAP_MIN)
        for label, flags, stop in (("parallel -S", [], cap), ("parallel -S -M", ["-M"], far)):
            if not par:
                sc["rows"].append({"tool": label, "jobs": njobs, "status": "SKIPPED",
                                   "note": setup.peer_notes.get("parallel", "not installed")})
                continue
            argv = [par, "--will-cite", "-S", logins, "--ssh", ssh_cmd] + flags
            sc["rows"].append(run_job_tool(setup, label, argv, env, njobs, args.timeout,
                                           name + "-parallel" + "".join(flags), stdin_path=jf,
                                           cap=stop))
    finally:
        _drop_fleet(fleet)
    sc["table"] = job_table(sc)
    return sc


def json_records(path):
    """([job objects of classh --format json], lines that are no JSON)."""
    records, bad = [], 0
    try:
        with open(path, "r", errors="replace") as fh:
            for line in fh:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    bad += 1
    except OSError:
        pass
    return records, bad


def check_json_records(row, m, njobs):
    """classh --format json: one object per job; ok = jobs with exit 0 recorded once."""
    seen = {}
    records, bad = json_records(m["stdout"])
    for data in records:
        if data.get("exitcode") == 0 and isinstance(data.get("job"), int):
            seen[data["job"]] = seen.get(data["job"], 0) + 1
    row["ok"] = sum(1 for j in range(1, njobs + 1) if seen.get(j) == 1)
    row["twice"] = sum(1 for n in seen.values() if n > 1)
    row["bad_lines"] = bad
    if m["timed_out"]:
        row["status"], row["note"] = "TIMEOUT", "killed after %.0f s" % m["wall"]
    elif m["rc"] == 0 and row["ok"] == njobs and not row["twice"] and not bad:
        row["status"] = "ok"
    else:
        row["status"] = "FAILED"
        row["note"] = "rc %s, %d/%d jobs recorded once with exit 0, %d twice, %d bad lines: %s" % (
            m["rc"], row["ok"], njobs, row["twice"], bad, _tail(m["stderr"]))


def sc_jobs_20k(setup, args, nnodes, slots, njobs):
    """classh alone, stand-in ssh: `true` jobs, every one recorded; classh's own CPU."""
    name = "jobs-20k"
    sc = {"name": name, "hosts": nnodes, "jobs": njobs, "rows": [],
          "title": "stand-in ssh, %d true jobs over %d nodes x %d slots: classh's own CPU"
                   % (njobs, nnodes, slots)}
    log("bench: %s" % sc["title"])
    nf, jf = job_files(setup, name, hosts_list(nnodes), slots, ["true"] * njobs)
    report = os.path.join(setup.tmp, name + "-self-cpu")
    argv = [setup.python, "-c", SELF_CPU, report] + classh_jobs_argv(
        setup, nf, jf, setup.standin, ["--format", "json"])[1:]
    row = run_job_tool(setup, "classh", argv, setup.env(True), njobs, args.timeout, name,
                       check=check_json_records,
                       shown="classh --node-file NODES(each x%d) --job-file JOBS --ssh STANDIN "
                             "--format json  (in-process, RUSAGE_SELF at exit)" % slots)
    try:
        user, system = (float(x) for x in _read(report).split())
        row["self_cpu"] = user + system
        row["self_cpu_ms_per_job"] = 1000.0 * (user + system) / njobs
    except ValueError:
        row["note"] = (row.get("note", "") + "; no RUSAGE_SELF report").lstrip("; ")
    sc["rows"].append(row)
    sc["table"] = job_table(sc, extra=[
        ("own CPU s", lambda r: _fmt(r.get("self_cpu"), "%.2f")),
        ("own CPU ms/job", lambda r: _fmt(r.get("self_cpu_ms_per_job"), "%.3f"))])
    return sc


def _dying_config(setup, main, dying, dead):
    """An ssh config: ``dead*`` on main's closed port, ``dying1`` on the second
    sshd (its key and known host first), then main's own config."""
    text = ("# bench jobs-dying: dead nodes, the dying node, then the main fleet\n"
            "Host %s\n    HostName 127.0.0.1\n    Port %d\n"
            "Host %s\n    HostName 127.0.0.1\n    Port %d\n    IdentityFile %s\n"
            "    UserKnownHostsFile %s\n" % (
                " ".join(dead), main.refused_port, dying.hosts[0], dying.port,
                dying.client_key, os.path.join(dying.workdir, "known_hosts")))
    path = os.path.join(setup.tmp, "jobs-dying-ssh_config")
    with open(path, "w") as fh:
        fh.write(text + _read(main.ssh_config))
    return path


def _sleeps_under(pid, arg):
    """How many ``sleep ARG`` processes descend from pid."""
    from fleet import _descendants
    want = b"sleep\0" + arg.encode() + b"\0"
    n = 0
    for kid in _descendants(pid):
        try:
            with open("/proc/%d/cmdline" % kid, "rb") as fh:
                n += fh.read() == want
        except OSError:
            pass
    return n


def _completions(path):
    """[(job number, server port)] from the jobs' own log on the target."""
    out = []
    for line in _read(path).splitlines():
        f = line.split()
        if len(f) >= 6 and f[0] == "job" and f[1].isdigit():
            out.append((int(f[1]), int(f[5])))
    return out


def _stop_when_busy(dying, log_path, njobs, sleep_arg, state, done):
    """Stop the dying node's sshd once a quarter of the jobs finished, it has
    finished some and has jobs running (or after 60 s)."""
    deadline = time.monotonic() + 60
    while not done.is_set() and time.monotonic() < deadline:
        finished = _completions(log_path)
        on_dying = sum(1 for _, port in finished if port == dying.port)
        running = _sleeps_under(dying.pid, sleep_arg) if dying.pid else 0
        if len(finished) >= njobs // 4 and on_dying and running:
            state.update(done_before=on_dying, running_at_stop=running,
                         finished_at_stop=len(finished))
            break
        done.wait(0.05)
    state["stopped_at"] = time.monotonic()
    dying.stop()


def _twice_on_target(row, completions, dying_port):
    """Jobs that completed more than once on the target, from their own log.

    A job may finish on the dying node just as its sshd is stopped: its exit
    status never reaches classh (ssh error 255), so classh rightly runs it
    again.  Such a job ("lost") has every completion but the last on the dying
    node and classh's record says it took more than one attempt; any other
    repeat is a job run again after it succeeded ("remote_twice")."""
    attempts = {d.get("job"): d.get("attempts", 1) for d in json_records(row["stdout"])[0]}
    ports = {}
    for job, port in completions:
        ports.setdefault(job, []).append(port)
    lost = twice = 0
    for job, seen in ports.items():
        if len(seen) < 2:
            continue
        if all(p == dying_port for p in seen[:-1]) and attempts.get(job, 1) >= len(seen):
            lost += 1
        else:
            twice += 1
    row.update(remote_done=len(ports), remote_twice=twice, lost_exit=lost)


def sc_jobs_dying(setup, args, nnodes, slots, njobs):
    """classh over a pool with 3 dead nodes and one whose sshd is stopped mid-run."""
    from fleet import Fleet
    name = "jobs-dying"
    ndead, ndying = 3, 1
    sc = {"name": name, "hosts": nnodes, "jobs": njobs, "rows": [],
          "title": "real loopback sshd, %d jobs over %d nodes x %d slots: %d dead, %d stopped "
                   "mid-run" % (njobs, nnodes, slots, ndead, ndying)}
    log("bench: %s" % sc["title"])
    main = _bench_fleet(nnodes - ndead - ndying)
    dying = Fleet(tempfile.mkdtemp(prefix="classh-bench-dying-"), hosts=ndying, prefix="dying")
    logdir = tempfile.mkdtemp(prefix="classh-bench-joblog-")
    state, done = {}, threading.Event()
    try:
        dying.start()
        os.chmod(logdir, 0o1777)  # the jobs log as the fleet's login account
        log_path = os.path.join(logdir, "done")
        dead = ["dead%d" % i for i in range(1, ndead + 1)]
        cfg = _dying_config(setup, main, dying, dead)
        nodes = [n for pair in zip(main.hosts, dead + dying.hosts) for n in pair] + \
            main.hosts[ndead + ndying:]
        sleep_arg = "%g" % DYING_SLEEP
        nf, jf = job_files(setup, name, nodes, slots, [
            'sleep %s; echo "job %d $SSH_CONNECTION" >> %s; echo job %d'
            % (sleep_arg, i, log_path, i) for i in range(1, njobs + 1)])
        killer = threading.Thread(target=_stop_when_busy, daemon=True,
                                  args=(dying, log_path, njobs, sleep_arg, state, done))
        killer.start()
        row = run_job_tool(setup, "classh", classh_jobs_argv(setup, nf, jf, "ssh -F %s" % cfg,
                                                             ["--format", "json"]),
                           setup.env(False), njobs, args.timeout, name, check=check_json_records)
        done.set()
        killer.join(10)
        _twice_on_target(row, _completions(log_path), dying.port)
        err = _read(row.get("stderr", ""))
        row["dropped"] = sorted(set(DROPPED_LINE.findall(err)))
        row.update(state)
        row["summary"] = next((l for l in reversed(err.splitlines())
                               if l.startswith("classh:") and " jobs in " in l), "")
        problems = []
        if row["remote_twice"]:
            problems.append("%d jobs completed twice on the target after classh saw them "
                            "succeed" % row["remote_twice"])
        if not state.get("running_at_stop"):
            problems.append("the dying node had no job running when stopped")
        if row["dropped"] != sorted(dead + dying.hosts):
            problems.append("nodes dropped with a line: %s, expected %s" % (
                ", ".join(row["dropped"]) or "none", ", ".join(dead + dying.hosts)))
        if row.get("status") == "ok" and problems:
            row["status"] = "FAILED"
            row["note"] = "; ".join(problems)
        sc["rows"].append(row)
    finally:
        done.set()
        dying.stop()
        _drop_fleet(main)
        shutil.rmtree(dying.workdir, ignore_errors=True)
        shutil.rmtree(logdir, ignore_errors=True)
    sc["table"] = job_table(sc, extra=[
        ("dying: done / running at stop", lambda r: "%s / %s" % (
            r.get("done_before", "-"), r.get("running_at_stop", "-"))),
        ("ran twice to success", lambda r: "%s (%s lost)" % (
            r.get("remote_twice", "-"), r.get("lost_exit", "-"))),
        ("dropped with a line", lambda r: ",".join(r.get("dropped", [])) or "-")])
    return sc


# -- job mode, issue 11: GPU slots, a run's kill ------------------------------------
#: gpu-40: jobs, seconds each job sleeps, and the bars (wall, jobs at once).
GPU_JOBS = 40
GPU_SLEEP = 1
GPU_WALL_BAR = 16.0
GPU_CONCURRENCY_BAR = 3
#: The stand-in GPU taken by a foreign process (node, index, uuid, pid).
GPU_BUSY = ("gpu2", 1, "GPU-busy", 999999)
#: kill-run: hosts, and the bar (seconds from ``classh --kill`` to no process of the run).
KILL_RUN_HOSTS = 20
KILL_RUN_BAR = 3.0
NO_GPU_PEER = ("no peer has GPU slots: GNU parallel does no nvidia-smi probing, the task "
               "deliverer seed parsed nvidia-smi's ASCII table")
NO_KILL_PEER = ("no peer has a run-tagged kill: pssh/clush would need pkill -f by pattern, "
                "which also hits other runs' processes")


def max_concurrent(spans):
    """The most (started, stopped) spans open at one time (a stop before a start at the
    same instant: a slot handed on is not two jobs at once)."""
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans],
                    key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def check_gpu_results(row, m, results, njobs):
    """gpu-40's row from classh's results directory: jobs ok (exit 0, once), the most
    running at once, jobs on the busy GPU, .out files that do not hold their GPU index."""
    records = []
    try:
        with open(os.path.join(results, "summary.jsonl")) as fh:
            records = [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError) as e:
        row["note"] = "no summary.jsonl: %s" % e
    done = [r for r in records if r.get("exitcode") == 0 and isinstance(r.get("job"), int)]
    row["ok"] = len({r["job"] for r in done})
    row["max_concurrent"] = max_concurrent([(r["started"], r["stopped"]) for r in records])
    busy_node, busy_index = GPU_BUSY[0], GPU_BUSY[1]
    row["on_busy"] = sum(1 for r in records if (r.get("node"), r.get("gpu")) == (busy_node, busy_index))
    row["no_gpu"] = sum(1 for r in records if r.get("gpu") is None)
    row["gpus_used"] = sorted("%s:gpu%s" % (r.get("node"), r.get("gpu"))
                              for r in {(r.get("node"), r.get("gpu")): r for r in done}.values())
    row["out_mismatch"] = sum(1 for r in done if _read(os.path.join(
        results, "job-%d.out" % r["job"])) != "%s\n" % r.get("gpu"))
    good = (m["rc"] == 0 and not m["timed_out"] and row["ok"] == njobs == len(records)
            and not row["on_busy"] and not row["no_gpu"] and not row["out_mismatch"])
    row["status"] = "ok" if good else ("TIMEOUT" if m["timed_out"] else "FAILED")
    if not good and not row.get("note"):
        row["note"] = "rc %s, %d/%d jobs ok, %d records, %d on the busy GPU, %d without a GPU, " \
                      "%d .out not their GPU: %s" % (m["rc"], row["ok"], njobs, len(records),
                                                     row["on_busy"], row["no_gpu"],
                                                     row["out_mismatch"], _tail(m["stderr"]))


def sc_gpu_40(setup, args, njobs=GPU_JOBS):
    """classh --gpus: one-second jobs over 2 nodes x 2 stand-in GPUs, one GPU busy."""
    from gpufleet import GpuFleet, gpu
    name = "gpu-40"
    busy_node, busy_index, busy_uuid, busy_pid = GPU_BUSY
    sc = {"name": name, "hosts": 2, "jobs": njobs, "rows": [],
          "title": "real loopback sshd, %d jobs (sleep %d) over 2 nodes x 2 stand-in GPUs, "
                   "%s:gpu%d busy: classh --gpus" % (njobs, GPU_SLEEP, busy_node, busy_index)}
    log("bench: %s" % sc["title"])
    jf = _write_lines(os.path.join(setup.tmp, name + "-jobs"),
                      ["sleep %d; echo $CUDA_VISIBLE_DEVICES" % GPU_SLEEP] * njobs)
    fleet = GpuFleet(tempfile.mkdtemp(prefix="classh-bench-gpus-"), hosts=2)
    try:
        fleet.start()
        fleet.set_gpus("gpu1", [gpu(0), gpu(1)])
        fleet.set_gpus(busy_node, [gpu(0), gpu(busy_index, uuid=busy_uuid)],
                       apps=[{"gpu_uuid": busy_uuid, "pid": busy_pid, "used_memory": 700}])
        results = os.path.join(setup.tmp, name + "-results")
        argv = [setup.python, CLASSH, "--node", "gpu[1-2]", "--gpus", "-o", results,
                "--job-file", jf, "--ssh", fleet.ssh_command]
        row = {"tool": "classh --gpus", "jobs": njobs,
               "argv": " ".join(shlex.quote(a) for a in argv), "loadavg_before": _loadavg()}
        log("  %-16s running: %s" % (row["tool"], row["argv"]))
        m = measure(argv, setup.env(False), setup.tmp, name + "-classh", args.timeout)
        row.update(m)
        if m.get("status") != "ERROR":
            check_gpu_results(row, m, results, njobs)
            row["slots_lines"] = [l for l in _read(m["stderr"]).splitlines() if "GPU slots" in l]
        log("  %-16s %s wall %.2f s, at most %s at once, %s on the busy GPU, GPUs used: %s%s" % (
            row["tool"], row.get("status"), m.get("wall") or 0, row.get("max_concurrent"),
            row.get("on_busy"), ", ".join(row.get("gpus_used", [])),
            "  (%s)" % row["note"] if row.get("note") else ""))
        sc["rows"].append(row)
    finally:
        _drop_fleet(fleet)
    if args.all:    # a local floor, no peer: 14 s that make bench can spare
        sc["rows"].append(gpu_floor_row(setup, args, jf, njobs))
    sc["table"] = gpu_table(sc)
    return sc


def gpu_floor_row(setup, args, jobfile, njobs):
    """GNU parallel -j 3, local, the same jobs: no GPU probing, a floor for the wall time."""
    label = "parallel -j %d (local)" % GPU_CONCURRENCY_BAR
    par = setup.paths.get("parallel")
    if not par:
        return {"tool": label, "jobs": njobs, "status": "SKIPPED",
                "note": setup.peer_notes.get("parallel", "not installed")}
    argv = [par, "--will-cite", "-j", str(GPU_CONCURRENCY_BAR)]
    row = run_job_tool(setup, label, argv, setup.env(False), njobs, args.timeout,
                       "gpu-40-parallel", stdin_path=jobfile, check=_check_exit_0)
    row["note"] = "a floor: 3 at once locally, no ssh, no GPU slots (%s)" % NO_GPU_PEER
    return row


def _check_exit_0(row, m, njobs):
    """A local floor run is ok when it exits 0 in time (its jobs print nothing to count)."""
    row["ok"] = njobs if m["rc"] == 0 and not m["timed_out"] else None
    row["status"] = "ok" if row["ok"] == njobs else ("TIMEOUT" if m["timed_out"] else "FAILED")


def gpu_table(sc):
    """(head, rows) of gpu-40."""
    head = ["tool", "wall s", "CPU s", "jobs ok", "max at once", "on busy GPU", "GPUs used",
            "status"]
    rows = []
    for r in sc["rows"]:
        status = r.get("status", "") + (" (%s)" % r["note"] if r.get("note") else "")
        rows.append([r["tool"], _fmt(r.get("wall"), "%.2f"), _fmt(r.get("cpu"), "%.2f"),
                     "%s/%d" % ("-" if r.get("ok") is None else r["ok"], r["jobs"]),
                     _fmt(r.get("max_concurrent"), "%d"), _fmt(r.get("on_busy"), "%d"),
                     " ".join(r.get("gpus_used", [])) or "-", status])
    return head, rows


def _start_bg(argv, env, workdir, name):
    """A classh started in the background, its own session, stdout/stderr to files."""
    out = open(os.path.join(workdir, name + ".out"), "wb")
    err_path = os.path.join(workdir, name + ".err")
    err = open(err_path, "wb")
    try:
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
    finally:
        out.close()
        err.close()
    proc.err_path = err_path
    return proc


def _run_id(proc, timeout=30):
    """The run id of a background classh: its first stderr line ``classh: run ID``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        first = _read(proc.err_path).partition("\n")
        if first[1]:
            return first[0].split()[-1] if first[0].startswith("classh: run ") else None
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def _wait_until(predicate, timeout, step=0.02):
    """Poll predicate until true or timeout s; (its last value, seconds waited)."""
    began = time.monotonic()
    while True:
        value = predicate()
        if value or time.monotonic() - began >= timeout:
            return value, time.monotonic() - began
        time.sleep(step)


def _end_run(proc, sig=signal.SIGTERM, grace=10):
    """End a background classh by pid (sig, then SIGKILL to its group); its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    _kill_pids(_group_members(proc.pid), signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    return proc.wait()


def sc_kill_run(setup, args, nhosts=KILL_RUN_HOSTS):
    """classh --kill RUN-ID over 20 hosts running that run's jobs and another run's."""
    name = "kill-run"
    sc = {"name": name, "hosts": nhosts, "rows": [],
          "title": "real loopback sshd, %d hosts running two classh job runs: classh --kill "
                   "RUN_A" % nhosts}
    log("bench: %s" % sc["title"])
    marks = {run: "400.%d%d" % (os.getpid() % 100000, i) for i, run in enumerate("AB", 1)}
    fleet = _bench_fleet(nhosts)
    procs = {}
    row = {"tool": "classh --kill", "hosts": nhosts, "expected": nhosts}
    try:
        ssh_cmd = "ssh -F %s" % shlex.quote(fleet.ssh_config)
        nodes = "%s[1-%d]" % (fleet.prefix, nhosts)
        for run, mark in marks.items():
            argv = [setup.python, CLASSH, "-q", "--node", nodes, "--ssh", ssh_cmd] + \
                ["--job", "sleep " + mark] * nhosts
            procs[run] = _start_bg(argv, setup.env(False), setup.tmp, "%s-run%s" % (name, run))
        run_a = _run_id(procs["A"])
        all_up, row["start_s"] = _wait_until(
            lambda: all(len(marked_pids(m)) == nhosts for m in marks.values()), 90, 0.05)
        row["run_a"] = run_a
        if not run_a or not all_up:
            row["status"] = "FAILED"
            row["note"] = "run A id %s; running: A %d, B %d of %d" % (
                run_a, len(marked_pids(marks["A"])), len(marked_pids(marks["B"])), nhosts)
        else:
            kill_and_watch(setup, row, [setup.python, CLASSH, "--ssh", ssh_cmd, "--kill", run_a,
                                        nodes], marks, nhosts)
        row["a_exit"] = procs["A"].poll()  # its jobs killed: it should have ended
        row["b_exit"] = _end_run(procs["B"])
        row["a_exit"] = _end_run(procs["A"]) if row["a_exit"] is None else row["a_exit"]
        left, row["b_gone_s"] = _wait_until(lambda: not mark_procs(*marks.values()), 10, 0.05)
        row["left"] = len(mark_procs(*marks.values()))
    finally:
        for proc in procs.values():
            _end_run(proc, signal.SIGKILL, 1)
        _kill_pids(mark_procs(*marks.values()), signal.SIGKILL)  # whatever is left, by pid
        _drop_fleet(fleet)
    if row.get("status") != "FAILED" and row.get("left"):
        row["status"], row["note"] = "FAILED", "%d processes of the runs left 10 s after run " \
                                               "B's SIGTERM" % row["left"]
    sc["rows"].append(row)
    sc["rows"].append({"tool": "pssh / clush", "hosts": nhosts, "status": "n/a",
                       "note": NO_KILL_PEER})
    sc["table"] = kill_run_table(sc)
    return sc


def kill_and_watch(setup, row, argv, marks, nhosts):
    """Run ``classh --kill`` (argv); fill row: seconds until no process of run A is left,
    whether any came back, run B's processes alive (the same pids), the kill's output."""
    before_b = sorted(marked_pids(marks["B"]))
    log("  %-16s running: %s" % (row["tool"], " ".join(shlex.quote(a) for a in argv)))
    began = time.monotonic()
    kill = _start_bg(argv, setup.env(False), setup.tmp, "kill-run-kill")
    gone, row["kill_s"] = _wait_until(lambda: not marked_pids(marks["A"]), 15)
    try:
        row["rc"] = kill.wait(60)
    except subprocess.TimeoutExpired:
        row["rc"] = _end_run(kill, signal.SIGKILL, 1)
    row["wall"] = time.monotonic() - began
    time.sleep(1.0)  # none of run A may come back (a retry would start it again)
    row["a_back"] = len(marked_pids(marks["A"]))
    after_b = sorted(marked_pids(marks["B"]))
    row["b_alive"] = len(set(after_b) & set(before_b))
    row["kill_output"] = kill_output_summary(_read(os.path.join(setup.tmp, "kill-run-kill.out")))
    good = (gone and row["rc"] == 0 and not row["a_back"] and row["b_alive"] == nhosts
            and after_b == before_b)
    row["status"] = "ok" if good else "FAILED"
    if not good:
        row["note"] = "rc %s, A gone %s, %d came back, B alive %d/%d: %s" % (
            row["rc"], bool(gone), row["a_back"], row["b_alive"], nhosts,
            _tail(os.path.join(setup.tmp, "kill-run-kill.err")))
    log("  %-16s %s: run A gone in %.2f s, %d came back, run B alive %d/%d; kill rc %s in %.2f "
        "s: %s" % (row["tool"], row["status"], row["kill_s"], row["a_back"], row["b_alive"],
                   nhosts, row["rc"], row["wall"], row["kill_output"]))


KILL_LINE = re.compile(r"^(\S+): (\d+) process(?:es)?$")


def kill_output_summary(out):
    """``host: N processes`` lines in short: hosts, N's range and sum. Every node of the
    loopback fleet is this one machine, so each host's kill also finds (and races for)
    the other nodes' jobs: the per-host counts overlap."""
    found = [int(m.group(2)) for m in map(KILL_LINE.match, out.splitlines()) if m]
    if not found:
        return "no 'host: N processes' line"
    return "%d hosts answered 'host: N processes', N %d-%d (%d in all; every node is this " \
           "machine, so each host's kill sees all nodes' jobs)" % (
               len(found), min(found), max(found), sum(found))


def mark_procs(*marks):
    """Live pids whose command line holds one of ``marks`` anywhere (a job's sleep, its
    shells and watchdog on the target, classh and its ssh children here)."""
    wanted = [m.encode() for m in marks]
    return _live_pids(lambda cmdline: any(w in cmdline for w in wanted))


def kill_run_table(sc):
    """(head, rows) of kill-run."""
    head = ["tool", "run A gone s", "kill wall s", "run B alive", "rc A / B", "left at end",
            "kill output", "status"]
    rows = []
    for r in sc["rows"]:
        status = r.get("status", "") + (" (%s)" % r["note"] if r.get("note") else "")
        rows.append([r["tool"], _fmt(r.get("kill_s"), "%.2f"), _fmt(r.get("wall"), "%.2f"),
                     "%d/%d" % (r["b_alive"], r["hosts"]) if "b_alive" in r else "-",
                     "%s / %s" % (r["a_exit"], r["b_exit"]) if "b_exit" in r else "-",
                     _fmt(r.get("left"), "%d"),
                     r.get("kill_output") or "-", status])
    return head, rows


# -- bars --------------------------------------------------------------------------

# -- blocks (issue 10): --input cut into blocks, fed to --task on node slots --------

#: blocks-1m: `seq 1 1000000` in blocks of 10,000 lines over 10 nodes x 2 slots.
BLOCKS_LINES = 1000000
BLOCKS_SIZE = 10000
BLOCKS_NODES = 10
BLOCKS_SLOTS = 2
BLOCKS_WALL_BAR = 3.7       # the issue's 2.5x parallel --pipe -S measured there (9.2 s)
BLOCKS_PEER_TIMES = 2.5
BLOCKS_RSS_BAR = 100.0      # MB, classh's peak RSS in both block scenarios
#: blocks-1g: 2^30 bytes of 128-byte lines (``yes`` of 127 x's), 8,388,608
#: lines, once in blocks of 2^15 lines (4 MiB: 256 blocks), once in blocks of
#: 2^17 lines (16 MiB: 64 blocks; only with --all).  classh holds a block whole until it
#: is done (it may run again), at most 32 MiB of them (one at least) plus 16 MiB read
#: ahead, so its peak RSS is bounded; with 16 MiB blocks that bound is just above the bar.
GIG_BYTES = 1 << 30
GIG_LINE = 128
GIG_BLOCK_LINES = (1 << 15, 1 << 17)
#: blocks-stall: 40 one-line blocks (sleep STALL_WORK each) over 4 nodes x 2
#: slots; block STALL_BLOCK sleeps STALL_HANG on its first attempt only.
STALL_BLOCKS = 40
STALL_NODES = 4
STALL_WORK = 0.5
STALL_BLOCK = 3
STALL_HANG = "300.1010"     # the hang's `sleep` argument: its mark on the target
STALL_HARD_TIMEOUT = 120
STALL_TIMES_BAR = 3.0


def blocks_nodes(nodes, slots):
    """``--node NAME*SLOTS`` for each node (classh's slot syntax)."""
    return [a for n in nodes for a in ("--node", "%s*%d" % (n, slots))]


def parallel_logins(nodes, slots):
    """GNU parallel's -S list: ``SLOTS/node1,SLOTS/node2,...``."""
    return ",".join("%d/%s" % (slots, n) for n in nodes)


def local_blocks_output(path, lines_per_block, task):
    """What ``task`` prints for each block of ``path`` run locally, in order (bytes)."""
    out = []
    with open(path, "rb") as fh:
        while True:
            block = b"".join(line for _, line in zip(range(lines_per_block), fh))
            if not block:
                return b"".join(out)
            out.append(subprocess.run(["sh", "-c", task], input=block,
                                      stdout=subprocess.PIPE, check=True).stdout)


def count_lines_out(path):
    """[ints] of a ``wc -l`` run's stdout, one a block (None for a line that is no count)."""
    counts = []
    for line in _read(path).splitlines():
        counts.append(int(line) if line.strip().isdigit() else None)
    return counts


def check_block_counts(nblocks, nlines, expect=None):
    """A row check: rc 0, nblocks counts adding up to nlines (and stdout == expect)."""
    def check(row, m, _jobs):
        counts = count_lines_out(m["stdout"])
        good = [c for c in counts if c is not None]
        row.update(blocks_out=len(counts), lines_counted=sum(good))
        row["ok"] = len(good) if len(good) == len(counts) else None
        if expect is not None:
            with open(m["stdout"], "rb") as fh:
                row["same_as_local"] = fh.read() == expect
        if m["timed_out"]:
            row["status"], row["note"] = "TIMEOUT", "killed after %.0f s" % m["wall"]
        elif m["rc"] == 0 and len(counts) == nblocks and row["lines_counted"] == nlines \
                and row.get("same_as_local", True):
            row["status"] = "ok"
        else:
            row["status"] = "FAILED"
            row["note"] = "rc %s, %d outputs, %d lines counted%s: %s" % (
                m["rc"], len(counts), row["lines_counted"],
                "" if row.get("same_as_local", True) else ", not the local output",
                _tail(m["stderr"]))
    return check


def blocks_table(sc):
    """(head, rows) of a block scenario: job_table plus outputs and lines counted."""
    return job_table(sc, extra=(
        ("lines counted", lambda r: _fmt(r.get("lines_counted"), "%d")),
        ("= local", lambda r: {True: "yes", False: "NO"}.get(r.get("same_as_local"), "-"))))


def sc_blocks_1m(setup, args):
    """classh --input (a file, then stdin) against GNU parallel --pipe -S / -S -M."""
    name = "blocks-1m"
    nblocks = BLOCKS_LINES // BLOCKS_SIZE
    sc = {"name": name, "hosts": BLOCKS_NODES, "jobs": nblocks, "rows": [],
          "title": "real loopback sshd, seq 1 %d in blocks of %d lines (%d blocks) over %d "
                   "nodes x %d slots, task wc -l" % (BLOCKS_LINES, BLOCKS_SIZE, nblocks,
                                                     BLOCKS_NODES, BLOCKS_SLOTS)}
    log("bench: %s" % sc["title"])
    data = _write_lines(os.path.join(setup.tmp, name + ".in"),
                        [str(i) for i in range(1, BLOCKS_LINES + 1)])
    expect = local_blocks_output(data, BLOCKS_SIZE, "wc -l")
    fleet = _bench_fleet(BLOCKS_NODES)
    try:
        ssh_cmd = fleet.ssh_command
        env = setup.env(False)
        warm_up(fleet)
        nodes = blocks_nodes(fleet.hosts, BLOCKS_SLOTS)
        flags = ["--blocksize", str(BLOCKS_SIZE), "-k", "--task", "wc -l", "--ssh", ssh_cmd]
        check = check_block_counts(nblocks, BLOCKS_LINES, expect)
        for label, source, stdin_path in (("classh", data, None), ("classh --input -", "-", data)):
            argv = [setup.python, CLASSH] + nodes + ["--input", source] + flags
            sc["rows"].append(run_job_tool(setup, label, argv, env, nblocks, args.timeout,
                                           "%s-%s" % (name, label.replace(" ", "")),
                                           stdin_path=stdin_path, check=check))
        first = sc["rows"][0]
        caps = {"": job_cap(args, first), "-M": job_cap(args, first, FAR_CAP, FAR_CAP_MIN)}
        par = setup.paths.get("parallel")
        # --tmpdir: -M's control_path_dir-* (one per --pipe job) land in the bench's tmp.
        ptmp = os.path.join(setup.tmp, name + "-parallel-tmp")
        os.makedirs(ptmp, exist_ok=True)
        for label, extra in (("parallel --pipe -S", []), ("parallel --pipe -S -M", ["-M"])):
            if not par:
                sc["rows"].append({"tool": label, "jobs": nblocks, "status": "SKIPPED",
                                   "note": setup.peer_notes.get("parallel", "not installed")})
                continue
            argv = [par, "--will-cite", "--tmpdir", ptmp, "--pipe", "-N", str(BLOCKS_SIZE),
                    "-S", parallel_logins(fleet.hosts, BLOCKS_SLOTS), "--ssh", ssh_cmd] + \
                extra + ["wc", "-l"]
            sc["rows"].append(run_job_tool(
                setup, label, argv, env, nblocks, args.timeout,
                "%s-parallel%s" % (name, "".join(extra)), stdin_path=data,
                check=check_block_counts(nblocks, BLOCKS_LINES), cap=caps["".join(extra)]))
    finally:
        _drop_fleet(fleet)
    sc["table"] = blocks_table(sc)
    return sc


def warm_up(fleet):
    """Untimed: one login per node (cold caches, sshd's first forks)."""
    for host in fleet.hosts:
        subprocess.run(fleet.ssh_argv + [host, "true"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def start_producer(setup, name, nbytes, line_len):
    """A FIFO fed by ``yes X...X | head -c nbytes`` (its own session): (path, proc)."""
    fifo = os.path.join(setup.tmp, name + ".fifo")
    os.mkfifo(fifo)
    shell = "yes %s | head -c %d > %s" % ("x" * (line_len - 1), nbytes, shlex.quote(fifo))
    proc = subprocess.Popen(["sh", "-c", shell], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, start_new_session=True)
    return fifo, proc


def sc_blocks_1g(setup, args):
    """1 GiB through classh --input - from a producer: every block counted, RSS bounded."""
    name = "blocks-1g"
    nlines = GIG_BYTES // GIG_LINE
    sc = {"name": name, "hosts": BLOCKS_NODES, "jobs": None, "lines": nlines, "rows": [],
          "title": "real loopback sshd, 1 GiB on stdin (yes | head -c, %d-byte lines) over %d "
                   "nodes x %d slots, task wc -l" % (GIG_LINE, BLOCKS_NODES, BLOCKS_SLOTS)}
    log("bench: %s" % sc["title"])
    fleet = _bench_fleet(BLOCKS_NODES)
    try:
        warm_up(fleet)
        for size in GIG_BLOCK_LINES if args.all else GIG_BLOCK_LINES[:1]:
            sc["rows"].append(gig_row(setup, args, fleet, name, nlines, size))
    finally:
        _drop_fleet(fleet)
    sc["table"] = blocks_table(sc)
    return sc


def gig_row(setup, args, fleet, name, nlines, size):
    """One classh --input - run of GIG_BYTES from a producer, blocks of size lines."""
    nblocks = -(-nlines // size)
    label = "classh --input -, blocks of %d lines (%d MiB)" % (size, size * GIG_LINE >> 20)
    fifo, producer = start_producer(setup, "%s-%d" % (name, size), GIG_BYTES, GIG_LINE)
    try:
        argv = [setup.python, CLASSH] + blocks_nodes(fleet.hosts, BLOCKS_SLOTS) + [
            "--input", "-", "--blocksize", str(size), "--task", "wc -l",
            "--ssh", fleet.ssh_command]
        return run_job_tool(
            setup, label, argv, setup.env(False), nblocks, args.timeout,
            "%s-%d-classh" % (name, size), stdin_path=fifo,
            check=check_block_counts(nblocks, nlines),
            shown=" ".join(shlex.quote(a) for a in argv) + " < FIFO fed by `yes x*%d | head "
                  "-c %d`" % (GIG_LINE - 1, GIG_BYTES))
    finally:
        sweep_group(producer.pid)
        producer.wait()


def classh_help(setup):
    """classh --help's text (what options this classh has)."""
    return _out([setup.python, CLASSH, "--help"])


def stall_task(markdir):
    """Block STALL_BLOCK hangs (sleep STALL_HANG) on its first attempt only: the
    attempt that makes markdir/first; every block then works STALL_WORK s."""
    return ('read x; if test "$x" = %d && mkdir %s/first 2>/dev/null; then sleep %s; fi; '
            'sleep %s; echo "$x"' % (STALL_BLOCK, shlex.quote(markdir), STALL_HANG, STALL_WORK))


def check_stall_output(row, m, nblocks):
    """A stall row is ok when rc is 0 and each block's number came out once, in order."""
    lines = _read(m["stdout"]).split()
    row["ok"] = sum(1 for got, want in zip(lines, range(1, nblocks + 1)) if got == str(want))
    row["hung_left"] = len(marked_pids(STALL_HANG))
    if m["timed_out"]:
        row["status"], row["note"] = "TIMEOUT", "killed after %.0f s" % m["wall"]
    elif m["rc"] == 0 and row["ok"] == nblocks == len(lines):
        row["status"] = "ok"
    else:
        row["status"] = "FAILED"
        row["note"] = "rc %s, %d/%d blocks in order: %s" % (m["rc"], row["ok"], nblocks,
                                                           _tail(m["stderr"]))


def sc_blocks_stall(setup, args):
    """A block hanging on its first attempt: killed, requeued, the run not held."""
    name = "blocks-stall"
    sc = {"name": name, "hosts": STALL_NODES, "jobs": STALL_BLOCKS, "rows": [],
          "title": "real loopback sshd, %d one-line blocks (sleep %s) over %d nodes x 2 slots, "
                   "block %d hanging (sleep %s) on its first attempt only, -t %d" % (
                       STALL_BLOCKS, STALL_WORK, STALL_NODES, STALL_BLOCK, STALL_HANG,
                       STALL_HARD_TIMEOUT)}
    log("bench: %s" % sc["title"])
    helptext = classh_help(setup)
    if "--stall-factor" not in helptext:
        sc["skipped"] = "this classh has no --stall-factor"
        log("  skipped: %s" % sc["skipped"])
        return sc
    data = _write_lines(os.path.join(setup.tmp, name + ".in"),
                        [str(i) for i in range(1, STALL_BLOCKS + 1)])
    markdir = tempfile.mkdtemp(prefix="classh-bench-stall-")
    os.chmod(markdir, 0o1777)   # the fleet's login account makes its marker here
    fleet = _bench_fleet(STALL_NODES)
    try:
        warm_up(fleet)
        stall_flags = ["--stall-min", "1"] if "--stall-min" in helptext else []
        argv = [setup.python, CLASSH] + blocks_nodes(fleet.hosts, 2) + [
            "--input", data, "-k", "-t", str(STALL_HARD_TIMEOUT), "--task", stall_task(markdir),
            "--ssh", fleet.ssh_command] + stall_flags
        for label, hang in (("classh, no hang", False), ("classh, block %d hangs" % STALL_BLOCK,
                                                         True)):
            if not hang:
                os.mkdir(os.path.join(markdir, "first"))    # the marker there: no attempt hangs
            else:
                os.rmdir(os.path.join(markdir, "first"))
            sc["rows"].append(run_job_tool(setup, label, argv, setup.env(False), STALL_BLOCKS,
                                           args.timeout, "%s-%s" % (name, "hang" if hang else
                                                                    "normal"),
                                           check=check_stall_output))
        time.sleep(1)
        left = marked_pids(STALL_HANG)
        sc["hung_left_after"] = len(left)
        _kill_pids(left, signal.SIGKILL)
    finally:
        _drop_fleet(fleet)
        shutil.rmtree(markdir, ignore_errors=True)
    sc["table"] = job_table(sc, extra=(("sleep %s left" % STALL_HANG,
                                        lambda r: _fmt(r.get("hung_left"), "%d")),))
    return sc


def blocks_bars(scs, bar):
    """The block bars (issue 10)."""
    s = scs.get("blocks-1m")
    if s:
        c = _row(s, "classh") or {}
        good = c.get("status") == "ok"
        label = "seq 1 %d in blocks of %d, %d nodes x %d: " % (
            BLOCKS_LINES, BLOCKS_SIZE, BLOCKS_NODES, BLOCKS_SLOTS)
        bar(label + "classh <= %.1f s, output identical to a local run" % BLOCKS_WALL_BAR,
            "PASS" if good and c["wall"] <= BLOCKS_WALL_BAR else "FAIL",
            "%.2f s, %s outputs, %s lines counted, same as local: %s" % (
                c.get("wall") or 0, c.get("blocks_out"), c.get("lines_counted"),
                c.get("same_as_local")) if c else "classh not run")
        for peer, times in (("parallel --pipe -S", BLOCKS_PEER_TIMES),
                            ("parallel --pipe -S -M", 1)):
            p = _row(s, peer)
            name = label + ("classh >= %.1fx faster than %s" % (times, peer) if times > 1
                            else "classh faster than %s" % peer)
            if not good:
                bar(name, "FAIL", "classh %s" % c.get("status", "not run"))
            elif not p or p.get("status") not in ("ok", "CAPPED"):
                bar(name, "n/a", "%s %s" % (peer, p.get("status") if p else "not run"))
            else:
                r = p["wall"] / c["wall"]
                ge = ">" if p.get("capped") else ""
                bar(name, "PASS" if r >= times and r > 1 else "FAIL",
                    "%.2f s vs %s%.2f s = %s%.1fx" % (c["wall"], ge, p["wall"], ge, r))
        bar(label + "classh peak RSS <= %.0f MB" % BLOCKS_RSS_BAR,
            "PASS" if good and (c.get("rss_main_mb") or 1e9) <= BLOCKS_RSS_BAR else "FAIL",
            "%s MB" % _fmt(c.get("rss_main_mb"), "%.1f"))
    s = scs.get("blocks-1g")
    for c in (s or {}).get("rows", []):
        bar("1 GiB through --input -, %d blocks of %d lines: every block counted, classh peak "
            "RSS < %.0f MB" % (c["jobs"], c["jobs_size"] if "jobs_size" in c else
                               -(-s["lines"] // c["jobs"]), BLOCKS_RSS_BAR),
            "PASS" if c.get("status") == "ok" and (c.get("rss_main_mb") or 1e9) < BLOCKS_RSS_BAR
            else "FAIL",
            "%s s, %s/%d outputs, %s/%d lines counted, peak RSS %s MB%s" % (
                _fmt(c.get("wall"), "%.2f"), c.get("blocks_out"), c["jobs"],
                c.get("lines_counted"), s["lines"], _fmt(c.get("rss_main_mb"), "%.1f"),
                "; " + c["note"] if c.get("note") else ""))
    s = scs.get("blocks-stall")
    if s:
        label = "block hanging on its first attempt: requeued, total < %.0fx the normal run, " \
                "not the -t %d, nothing left" % (STALL_TIMES_BAR, STALL_HARD_TIMEOUT)
        if s.get("skipped"):
            bar(label, "SKIP", s["skipped"])
            return
        n, h = s["rows"][0], s["rows"][1]
        ok = n.get("status") == "ok" and h.get("status") == "ok"
        r = h["wall"] / n["wall"] if ok else None
        bar(label, "PASS" if ok and r < STALL_TIMES_BAR and h["wall"] < STALL_HARD_TIMEOUT
            and not h.get("hung_left") and not s.get("hung_left_after") else "FAIL",
            "%.2f s vs %.2f s = %.2fx, %s hung sleep left" % (
                h["wall"], n["wall"], r, h.get("hung_left")) if ok else
            "normal %s, hang %s: %s" % (n.get("status"), h.get("status"),
                                        h.get("note") or n.get("note")))


def _row(sc, tool):
    if not sc:
        return None
    return next((r for r in sc["rows"] if r["tool"] == tool), None)


def job_bars(scs, bar):
    """The job-mode bars (issue 9)."""
    s = scs.get("jobs-400")
    if s:
        c = _row(s, "classh")
        label = "%d jobs over %d nodes x 4: " % (s["jobs"], s["hosts"])
        good = c and c.get("status") == "ok"
        for peer, times in (("clstr " + CLSTR_VERSION, 5), ("parallel -S", 5),
                            ("parallel -S -M", 1)):
            p = _row(s, peer)
            name = label + ("classh >= %dx faster than %s" % (times, peer) if times > 1
                            else "classh faster than %s" % peer)
            if not good:
                bar(name, "FAIL", "classh %s" % (c.get("status") if c else "not run"))
            elif not p or p.get("status") not in ("ok", "CAPPED"):
                bar(name, "n/a", "%s %s" % (peer, p.get("status") if p else "not run"))
            else:  # a capped peer's time is a lower bound: it still decides the bar
                r = p["wall"] / c["wall"]
                ge = ">" if p.get("capped") else ""
                bar(name, "PASS" if r >= times and (times > 1 or r > 1) else "FAIL",
                    "%.2f s vs %s%.2f s = %s%.1fx" % (c["wall"], ge, p["wall"], ge, r))
        if good and s["jobs"] == 400:
            bar(label + "classh <= 4.4 s (the issue's 5x clstr 22.2 s)",
                "PASS" if c["wall"] <= 4.4 else "FAIL", "%.2f s" % c["wall"])
    s = scs.get("jobs-20k")
    if s:
        c = _row(s, "classh") or {}
        n = s["jobs"]
        bar("stand-in, %d jobs over %d nodes x 8 slots: every job recorded (exit 0, %d JSON records)"
            % (n, s["hosts"], n), "PASS" if c.get("status") == "ok" else "FAIL",
            "rc %s, %s/%d jobs recorded once with exit 0" % (c.get("rc"), c.get("ok"), n))
        ms = c.get("self_cpu_ms_per_job")
        bar("stand-in, %d jobs: classh's own CPU <= 1 ms per job" % n,
            "PASS" if ms is not None and ms <= 1.0 else "FAIL",
            "%s s / %d = %s ms (RUSAGE_SELF, children excluded)" % (
                _fmt(c.get("self_cpu"), "%.2f"), n, _fmt(ms, "%.3f")))
    s = scs.get("jobs-dying")
    if s:
        c = _row(s, "classh") or {}
        bar("%d jobs, 3 of %d nodes dead, one stopped mid-run: every job done once, exit 0, "
            "none run twice to success, the 4 nodes dropped with a line" % (s["jobs"], s["hosts"]),
            "PASS" if c.get("status") == "ok" else "FAIL",
            "rc %s, %s/%d jobs, %s run again after a success (%s rerun after finishing on the "
            "dying node as it stopped, exit status lost), dying node: %s done / %s "
            "running when stopped, dropped: %s" % (
                c.get("rc"), c.get("ok"), s["jobs"], c.get("remote_twice", "?"),
                c.get("lost_exit", "?"),
                c.get("done_before", "?"), c.get("running_at_stop", "?"),
                ", ".join(c.get("dropped", [])) or "none"))


def gpu_kill_bars(scs, bar):
    """The bars of issue 11: GPU slots (gpu-40) and a run's kill (kill-run)."""
    s = scs.get("gpu-40")
    if s:
        c = _row(s, "classh --gpus") or {}
        label = "%d one-second jobs, 2 nodes x 2 stand-in GPUs, one busy: " % s["jobs"]
        ran = c.get("status") == "ok"
        why = "classh %s%s" % (c.get("status", "not run"), ": " + c["note"] if c.get("note") else "")
        wall = c.get("wall")
        bar(label + "total <= %.0f s" % GPU_WALL_BAR,
            "PASS" if ran and wall <= GPU_WALL_BAR else "FAIL",
            "%.2f s (%s/%d jobs ok)" % (wall, c.get("ok"), s["jobs"]) if ran else why)
        most = c.get("max_concurrent")
        bar(label + "at most %d at once" % GPU_CONCURRENCY_BAR,
            "PASS" if ran and most is not None and most <= GPU_CONCURRENCY_BAR else "FAIL",
            "at most %s running at once (summary.jsonl started/stopped)" % most)
        bar(label + "every job on a free GPU, none on the busy one",
            "PASS" if ran and c.get("on_busy") == 0 else "FAIL",
            "%s on %s:gpu%d, %s without a GPU, %s .out not their GPU index; used: %s" % (
                c.get("on_busy"), GPU_BUSY[0], GPU_BUSY[1], c.get("no_gpu"),
                c.get("out_mismatch"), ", ".join(c.get("gpus_used", [])) or "-"))
    s = scs.get("kill-run")
    if s:
        c = _row(s, "classh --kill") or {}
        label = "classh --kill RUN-ID over %d hosts, two runs: " % s["hosts"]
        gone = c.get("kill_s")
        bar(label + "that run's processes gone within %.0f s" % KILL_RUN_BAR,
            "PASS" if c.get("status") == "ok" and gone <= KILL_RUN_BAR else "FAIL",
            "%s s, %s came back; kill: %s" % (_fmt(gone, "%.2f"), c.get("a_back", "?"),
                                               c.get("kill_output") or c.get("note", "-")))
        bar(label + "the other run's processes all alive",
            "PASS" if c.get("b_alive") == s["hosts"] else "FAIL",
            "%s/%d alive (the same pids)" % (c.get("b_alive", "?"), s["hosts"]))


def bars(scs, sizes):
    out = []

    def bar(name, verdict, detail):
        out.append({"bar": name, "result": verdict, "detail": detail})

    s1 = scs.get("standin-100")
    n = sizes["hosts"]
    label = "stand-in %d/100" % n
    if s1:
        c, x = _row(s1, "classh"), _row(s1, "xargs")
        if c and x and c.get("status") == "ok" and x.get("status") == "ok":
            r = c["wall"] / x["wall"]
            bar("%s: classh wall <= 1.3x xargs" % label, "PASS" if r <= 1.3 else "FAIL",
                "%.2f s vs %.2f s = %.2fx" % (c["wall"], x["wall"], r))
        else:
            bar("%s: classh wall <= 1.3x xargs" % label, "FAIL", "classh or xargs failed")
        for peer in ("pssh", "clush"):
            p = _row(s1, peer)
            if not p or p.get("status") == "SKIPPED":
                bar("%s: classh below %s" % (label, peer), "n/a", "%s not installed" % peer)
            elif c and c.get("status") == "ok":
                # a failed peer is no race won: only a finished or capped one counts
                if p.get("status") in ("ok", "CAPPED"):
                    ok = c["wall"] < p["wall"]
                    bar("%s: classh below %s" % (label, peer), "PASS" if ok else "FAIL",
                        "%.2f s vs %s%.2f s" % (c["wall"], ">" if p.get("capped") else "",
                                               p["wall"]))
                else:
                    bar("%s: classh below %s" % (label, peer), "n/a",
                        "%s %s" % (peer, p.get("status")))
            else:
                bar("%s: classh below %s" % (label, peer), "FAIL", "classh failed")
        if c and c.get("status") == "ok" and c.get("rss_main_mb"):
            bar("%s: classh peak RSS <= 150 MB" % label,
                "PASS" if c["rss_main_mb"] <= 150 else "FAIL",
                "%.1f MB" % c["rss_main_mb"])
    s3 = scs.get("standin-50k")
    if s3:
        c = _row(s3, "classh")
        n3 = s3["hosts"]
        ok = bool(c and c.get("rc") == 0 and c.get("summary_hosts") == n3
                  and c.get("summary_ok") == n3)
        bar("stand-in %d/500: every host recorded (exit 0, summary %d hosts, %d ok)"
            % (n3, n3, n3), "PASS" if ok else "FAIL",
            "rc %s, summary %s hosts / %s ok, peak RSS %s MB" % (
                c and c.get("rc"), c and c.get("summary_hosts"), c and c.get("summary_ok"),
                "%.1f" % c["rss_main_mb"] if c and c.get("rss_main_mb") else "?"))
    s4 = scs.get("results-dir")
    if s4:
        if s4.get("skipped"):
            bar("-o DIR <= 1.2x without", "SKIP", s4["skipped"])
        else:
            r = s4.get("ratio")
            w = _row(s4, "classh -o DIR")
            ok = r is not None and r <= 1.2 and w and w.get("status") == "ok"
            bar("-o DIR <= 1.2x without (and %d .ret files)" % s4["hosts"],
                "PASS" if ok else "FAIL",
                "wall %s (CPU %s), %s .ret files" % (
                    "%.2fx" % r if r else "?", "%.2fx" % s4["cpu_ratio"]
                    if s4.get("cpu_ratio") else "?", w and w.get("ret_files")))
    s5 = scs.get("real-sshd")
    if s5:
        lab = "real sshd %d hosts: classh within 1.1x xargs" % s5["hosts"]
        if s5.get("skipped"):
            bar(lab, "SKIP", s5["skipped"])
        else:
            c, x = _row(s5, "classh"), _row(s5, "xargs")
            if c and x and c.get("status") == "ok" and x.get("status") == "ok":
                r = c["wall"] / x["wall"]
                bar(lab, "PASS" if r <= 1.1 else "FAIL",
                    "%.2f s vs %.2f s = %.2fx" % (c["wall"], x["wall"], r))
            else:
                bar(lab, "FAIL", "classh or xargs failed")
    ratio_bars = (
        ("auth", "password logins <= 1.2x key logins (%d hosts)", lambda r: r <= 1.2),
        ("persist", "--persist second run >= 8x faster than the first (%d hosts)", lambda r: r >= 8),
        ("api", "classh.run() within 1.2x the CLI (%d hosts)", lambda r: r <= 1.2),
    )
    for name, text, good in ratio_bars:
        sc = scs.get(name)
        if not sc:
            continue
        label = text % sc["hosts"]
        if sc.get("skipped"):
            bar(label, "SKIP", sc["skipped"])
            continue
        failed = [r["tool"] for r in sc["rows"] if r.get("status") != "ok"]
        r = sc.get("ratio_value")
        if failed or r is None:
            bar(label, "FAIL", "failed: %s" % ", ".join(failed))
        else:
            bar(label, "PASS" if good(r) else "FAIL", "%s = %.2fx" % (sc["ratio_label"], r))
    kills = [r for r in (scs.get("remote-kill") or {}).get("rows", []) if r["tool"] == "classh"]
    if kills:
        bad = [r for r in kills if r["status"] != "ok" or r.get("left") != 0]
        bar("remote kill, %d hosts: 0 processes left 3 s after classh exits (%d cases)"
            % (kills[0]["hosts"], len(kills)), "FAIL" if bad else "PASS",
            "; ".join("%s: %s left" % (r["case"], r.get("left", "?")) for r in kills))
    wrong = next((r for r in (scs.get("auth") or {}).get("rows", [])
                  if r["tool"].startswith("wrong password")), None)
    if wrong:
        ok = wrong.get("status") == "ok" and wrong["wall"] < 15
        bar("wrong password on %d hosts: exit 4 in under 15 s" % wrong["hosts"],
            "PASS" if ok else "FAIL",
            "rc %s in %.2f s" % (wrong.get("rc"), wrong.get("wall") or 0))
    job_bars(scs, bar)
    gpu_kill_bars(scs, bar)
    blocks_bars(scs, bar)
    return out


# -- output ----------------------------------------------------------------------

def _fmt(v, spec):
    return spec % v if isinstance(v, (int, float)) else "-"


def table_rows(sc):
    head = ["tool", "wall s", "x xargs", "CPU s", "CPU x xargs", "RSS MB", "ok", "status"]
    rows = []
    for r in sc["rows"]:
        status = r.get("status", "")
        if r.get("note"):
            status = "%s (%s)" % (status, r["note"])
        ratio = r.get("x_xargs")
        ge = ">" if r.get("capped") else ""
        if r["tool"] == "classh -o DIR" and r.get("x_plain"):
            ratio_s = "%.2fx plain" % r["x_plain"]
        else:
            ratio_s = ge + _fmt(ratio, "%.2f")
        rows.append([r["tool"], ge + _fmt(r.get("wall"), "%.2f"), ratio_s,
                     ge + _fmt(r.get("cpu"), "%.2f"), ge + _fmt(r.get("cpu_x_xargs"), "%.2f"),
                     _fmt(r.get("rss_main_mb"), "%.1f"),
                     "%s/%d" % ("?" if r.get("ok") is None else r["ok"], r["hosts"])
                     if r.get("status") != "SKIPPED" else "-",
                     status])
    return head, rows


def text_table(head, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    widths[-1] = 0
    line = lambda cells: "  ".join(str(c).ljust(w) if i < len(cells) - 1 else str(c)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(head), line(["-" * w for w in widths[:-1]] + ["-" * 6])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def md_table(head, rows):
    esc = lambda s: str(s).replace("|", "\\|")
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---" if i == 0 or i == len(head) - 1 else "---:"
                          for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


LEGEND = ("wall: elapsed seconds (\">\": a peer stopped once it had run --cap "
          "times as long as xargs, so a lower bound; --cap 0 lets every peer finish); CPU: user+sys of the tool and every process it "
          "reaped (wait4 rusage); RSS: peak resident memory (VmHWM) of the tool's "
          "main process; ok: hosts that succeeded per the tool's own "
          "report (exit status, pssh's [SUCCESS] lines, classh's summary). "
          "One run each; the machine may be shared, so numbers are noisy.")


JOB_LEGEND = ("Job scenarios: jobs ok = jobs whose `job N` line was printed exactly once "
              "(jobs-20k: JSON records with exit 0, once each; gpu-40: summary.jsonl records "
              "with exit 0, each job's .out its GPU index; max at once: the most "
              "started-stopped spans open together); kill-run: run A gone = from starting "
              "classh --kill to no `sleep MARK_A` left, rc A / B = the runs' exit statuses, "
              "left at end = processes holding either mark 10 s after run B's SIGTERM; x classh = wall / classh's "
              "wall; clstr runs on a pseudo-terminal (it writes to /dev/tty), with a `ping` "
              "that always answers and an `ssh` adding -F CONFIG first on its PATH; own CPU = "
              "classh's RUSAGE_SELF at exit (it runs inside a small Python wrapper, "
              "interpreter start-up included, children excluded).")


def header_lines(info):
    v = info["versions"]
    lines = [
        "machine: %s, %s, nproc %s (usable %s), %s RAM, load %s, nofile %s" % (
            info["os"], info["system"], info["nproc"], info["cpus_usable"], info["memory"],
            info["loadavg_start"], info["nofile_limit"]),
        "date: %s; classh source: %s" % (info["date"], info.get("classh_source")),
    ]
    for k in ("classh", "python", "ssh", "xargs", "pssh", "clush", "pdsh", "parallel"):
        if k in v:
            lines.append("  %-9s %s" % (k + ":", v[k]))
    return lines


def render(info, scs, bar_list, order, quick):
    text, md = [], []
    text.append("classh benchmark%s" % (" (--quick)" if quick else ""))
    text += header_lines(info)
    md.append("### classh benchmark%s\n" % (" (--quick)" if quick else ""))
    md += ["    " + l for l in header_lines(info)]
    for name in order:
        sc = scs.get(name)
        if not sc:
            continue
        text.append("")
        text.append("== %s [%s]" % (sc["title"], name))
        md.append("")
        md.append("#### %s\n" % sc["title"])
        if sc.get("skipped") and not sc["rows"]:
            text.append("skipped: %s" % sc["skipped"])
            md.append("skipped: %s" % sc["skipped"])
            continue
        head, rows = sc["table"] if "table" in sc else table_rows(sc)
        text.append(text_table(head, rows))
        md.append(md_table(head, rows))
        if sc.get("ratio"):
            line = "-o DIR / without: wall %.2fx, CPU %.2fx" % (sc["ratio"],
                                                               sc.get("cpu_ratio") or 0)
            text.append(line)
            md.append("\n" + line)
        if sc.get("ratio_value"):
            line = "%s: %.2fx" % (sc["ratio_label"], sc["ratio_value"])
            text.append(line)
            md.append("\n" + line)
    text.append("")
    text.append("bars:")
    md.append("")
    md.append("#### Bars\n")
    md.append("| bar | result | measured |")
    md.append("|---|---|---|")
    for b in bar_list:
        text.append("  %-5s %s: %s" % (b["result"], b["bar"], b["detail"]))
        md.append("| %s | %s | %s |" % (b["bar"].replace("|", "\\|"), b["result"],
                                         b["detail"].replace("|", "\\|")))
    text.append("")
    text.append(LEGEND)
    md.append("")
    md.append(LEGEND)
    if any(name in scs for name in JOB_SCENARIOS):
        text.append(JOB_LEGEND)
        md.append("")
        md.append(JOB_LEGEND)
    return "\n".join(text) + "\n", "\n".join(md) + "\n"


# -- main --------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description="Benchmark classh against its peers.")
    p.add_argument("--quick", action="store_true",
                   help="1,000 / 5,000 / 50 hosts instead of 10,000 / 50,000 / 200")
    p.add_argument("--all", action="store_true",
                   help="also the larger stand-in runs (%s)" % ", ".join(EXTRA_SCENARIOS))
    p.add_argument("--only", choices=SCENARIOS + [str(i) for i in range(1, len(SCENARIOS) + 1)],
                   help="run one scenario (name or number 1-%d)" % len(SCENARIOS))
    p.add_argument("--timeout", type=int, default=300,
                   help="kill any tool after SECS seconds (default 300)")
    p.add_argument("--cap", type=float, default=1.4,
                   help="in the stand-in scenarios, stop a peer once it has run "
                        "CAP times as long as xargs (at least 10 s) and report a lower "
                        "bound; 0: let every peer finish (default 1.4)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args(argv)
    if a.only and a.only.isdigit():
        a.only = SCENARIOS[int(a.only) - 1]
    return a


def run_scenario(setup, args, sizes, scs, name):
    """Run scenario name; its result lands in scs[name]."""
    if name == "standin-100":
        scs[name] = sc_standin(setup, args, sizes["hosts"], 100, name, TOOLS)
    elif name == "standin-500":
        scs[name] = sc_standin(setup, args, sizes["hosts"], 500, name, TOOLS)
    elif name == "standin-50k":
        sc = sc_standin(setup, args, sizes["big"], 500, name, ["classh"])
        scs[name] = sc
    elif name == "results-dir":
        plain = _row(scs.get("standin-100"), "classh")
        scs[name] = sc_results_dir(setup, args, sizes["hosts"], 100, plain)
    elif name == "real-sshd":
        scs[name] = sc_real(setup, args, sizes["real"], 100)
    elif name == "auth":
        scs[name] = sc_auth(setup, args, sizes["real"], 100)
    elif name == "persist":
        scs[name] = sc_persist(setup, args, sizes["real"], 100)
    elif name == "api":
        scs[name] = sc_api(setup, args, sizes["api"], 100)
    elif name == "remote-kill":
        scs[name] = sc_remote_kill(setup, args, sizes["kill"])
    elif name == "jobs-400":
        scs[name] = sc_jobs_400(setup, args, *JOB_SIZES[args.quick][name])
    elif name == "jobs-20k":
        scs[name] = sc_jobs_20k(setup, args, *JOB_SIZES[args.quick][name])
    elif name == "jobs-dying":
        scs[name] = sc_jobs_dying(setup, args, *JOB_SIZES[args.quick][name])
    elif name == "gpu-40":
        scs[name] = sc_gpu_40(setup, args)
    elif name == "kill-run":
        scs[name] = sc_kill_run(setup, args)
    elif name == "blocks-1m":
        scs[name] = sc_blocks_1m(setup, args)
    elif name == "blocks-1g":
        scs[name] = sc_blocks_1g(setup, args)
    elif name == "blocks-stall":
        scs[name] = sc_blocks_stall(setup, args)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sizes = ({"hosts": 1000, "big": 5000, "real": 50, "api": 200, "kill": 20} if args.quick
             else {"hosts": 10000, "big": 50000, "real": 200, "api": 1000, "kill": 50})
    nofile = raise_nofile()
    paths, peer_notes = ensure_peers()
    info = machine_info(paths)
    info["nofile_limit"] = nofile
    for l in ["classh benchmark"] + header_lines(info):
        log(l)
    tmp = tempfile.mkdtemp(prefix="classh-bench-")
    setup = Setup(tmp, paths, peer_notes)
    setup.cap = args.cap
    wanted = [args.only] if args.only else [
        name for name in SCENARIOS if args.all or name not in EXTRA_SCENARIOS]
    scs = {}
    t0 = time.monotonic()

    # SIGTERM/SIGHUP: unwind through finally blocks (fleet.stop, rmtree).
    def on_signal(signum, frame):
        raise KeyboardInterrupt
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        for name in wanted:
            began = time.monotonic()
            run_scenario(setup, args, sizes, scs, name)
            if name in scs:
                scs[name]["seconds"] = round(time.monotonic() - began, 1)
                log("bench: %s took %.0f s (%.0f s so far)" % (
                    name, scs[name]["seconds"], time.monotonic() - t0))
    except KeyboardInterrupt:
        log("bench: interrupted; writing what was measured")
    finally:
        if args.keep:
            log("bench: kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    info["bench_seconds"] = round(time.monotonic() - t0, 1)
    info["loadavg_end"] = _loadavg()
    bar_list = bars(scs, sizes)
    text, md = render(info, scs, bar_list, SCENARIOS, args.quick)
    sys.stdout.write("\n" + text)
    sys.stdout.write("total bench time: %.0f s\n" % info["bench_seconds"])
    os.makedirs(OUT_DIR, exist_ok=True)
    for r in (r for sc in scs.values() for r in sc["rows"]):
        r.pop("stdout", None)
        r.pop("stderr", None)
    with open(os.path.join(OUT_DIR, "latest.json"), "w") as fh:
        json.dump({"quick": args.quick, "only": args.only, "sizes": sizes,
                   "machine": info, "scenarios": [scs[n] for n in SCENARIOS if n in scs],
                   "bars": bar_list}, fh, indent=2)
        fh.write("\n")
    with open(os.path.join(OUT_DIR, "latest.md"), "w") as fh:
        fh.write(md)
    log("bench: wrote %s and %s" % (os.path.join(OUT_DIR, "latest.json"),
                                    os.path.join(OUT_DIR, "latest.md")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
