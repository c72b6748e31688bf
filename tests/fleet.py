#!/usr/bin/env python3
"""A fleet of SSH "hosts" on loopback for classh's tests (stdlib only).

One real OpenSSH server (``/usr/sbin/sshd``) listens on a free
127.0.0.1 port; an ssh_config maps ``node1``..``nodeN`` (and any other
name) onto it, so N hosts cost one server, not N.  Two fault hosts come
with it: ``refused`` (a closed port) and ``silent`` (a listener that
accepts and never sends the SSH banner).

    from fleet import Fleet
    with Fleet(str(tmp_path), hosts=5) as f:
        subprocess.run(["ssh", "-F", f.ssh_config, "node3", "true"])
        subprocess.run(["classh", ...], env=f.env())

As a script::

    python3 tests/fleet.py [--hosts N] [--dir DIR] [--prefix P] -- CMD ARGS...

runs CMD with ``CLASSH_SSH``, ``FLEET_HOSTS`` (e.g. ``node[1-50]``),
``FLEET_DIR``, ``FLEET_SSH_CONFIG``, ``FLEET_PORT`` and ``FLEET_USER`` in
its environment, stops the fleet and exits with CMD's status.

Login account: as root, a dedicated account ``classhtest`` (shell /bin/sh,
password field ``*`` so key logins work) is created if missing -- root's
own rc files are slow and not concurrency-safe.  Not as root, sshd runs
unprivileged and can only log in as the current user.

Every process started here is ended by pid in ``stop()``, which also runs
at interpreter exit as a safety net.
"""

import atexit
import os
import pwd
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SSHD = "/usr/sbin/sshd"
TEST_USER = "classhtest"
LOOPBACK = "127.0.0.1"

__all__ = ["Fleet", "FleetError", "main"]


class FleetError(RuntimeError):
    """The fleet could not be set up."""


def _free_port():
    """A port on 127.0.0.1 that was free a moment ago (bind to 0, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _listening(port):
    """True/False if port listens on 127.0.0.1 per /proc/net/tcp; None if unknown.

    Reading the table makes no connection, so sshd logs nothing.
    """
    want = ":%04X" % port
    try:
        with open("/proc/net/tcp") as fh:
            next(fh)
            for line in fh:
                f = line.split()
                if f[1].endswith(want) and f[3] == "0A" and \
                        f[1][:8] in ("0100007F", "7F000001", "00000000"):
                    return True
    except (OSError, StopIteration, IndexError):
        return None
    return False


def _port_open(port, timeout=0.2):
    """Does something accept connections on 127.0.0.1:port?"""
    state = _listening(port)
    if state is not None:
        return state
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def _run(argv):
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True)
    if p.returncode != 0:
        raise FleetError("%s failed (rc %d): %s"
                         % (" ".join(map(shlex.quote, argv)), p.returncode,
                            p.stdout.strip()))
    return p.stdout


def _alive(pid):
    """True if pid exists and is not a zombie (kill -0 lies about zombies)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            stat = fh.read()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not os.path.isdir("/proc")


def _descendants(root):
    """Pids of all descendants of root (Linux /proc; empty elsewhere)."""
    children = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as fh:
                stat = fh.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for kid in children.get(todo.pop(), ()):
            out.append(kid)
            todo.append(kid)
    return out


def _ensure_test_user():
    """Create/repair the dedicated login account (root only); return its pwd entry."""
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        p = subprocess.run(["useradd", "-m", "-s", "/bin/sh", TEST_USER],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True)
        try:  # another test process may have created it at the same time
            pw = pwd.getpwnam(TEST_USER)
        except KeyError:
            raise FleetError("useradd %s failed: %s" % (TEST_USER, p.stdout.strip()))
    if pw.pw_shell != "/bin/sh":
        _run(["usermod", "-s", "/bin/sh", TEST_USER])
    # useradd leaves the account locked ("!"), and sshd refuses even key
    # logins to a locked account.  "*" = no password, but not locked.  A
    # real password (set for password-auth tests) is left alone.
    try:
        with open("/etc/shadow") as fh:
            for line in fh:
                fields = line.split(":")
                if fields[0] == TEST_USER and fields[1].startswith("!"):
                    _run(["usermod", "-p", "*", TEST_USER])
                    break
    except OSError:
        pass
    pw = pwd.getpwnam(TEST_USER)
    if not os.path.isdir(pw.pw_dir):  # else sshd warns on every login
        os.makedirs(pw.pw_dir, mode=0o755, exist_ok=True)
        os.chown(pw.pw_dir, pw.pw_uid, pw.pw_gid)
    return pw


def _make_traversable(path):
    """Let other users reach path: add o+x to it and every ancestor lacking it.

    sshd opens AuthorizedKeysFile with the login user's uid, and pytest's
    /tmp/pytest-of-root is 0700.  Search permission only: nothing becomes
    listable or readable that was not already.
    """
    path = os.path.abspath(path)
    while True:
        st = os.stat(path)
        if not st.st_mode & 0o001:
            os.chmod(path, (st.st_mode & 0o7777) | 0o001)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent


class _SilentListener:
    """Accepts TCP connections on 127.0.0.1 and never says a word.

    ssh connects, then waits for the server's banner until ConnectTimeout
    (banner timeout).  Connections are held until the client hangs up.
    """

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(1024)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._conns = set()
        self._thread = threading.Thread(target=self._loop, name="fleet-silent",
                                        daemon=True)
        self._thread.start()

    def _loop(self):
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    if key.data == "accept":
                        try:
                            conn, _ = self.sock.accept()
                        except OSError:
                            continue
                        conn.setblocking(False)
                        self._conns.add(conn)
                        sel.register(conn, selectors.EVENT_READ, "conn")
                    else:
                        conn = key.fileobj
                        try:
                            data = conn.recv(65536)
                        except BlockingIOError:
                            continue
                        except OSError:
                            data = b""
                        if not data:  # client gave up: forget it
                            sel.unregister(conn)
                            self._conns.discard(conn)
                            conn.close()
        finally:
            sel.close()
            for conn in list(self._conns):
                conn.close()
            self._conns.clear()

    def close(self):
        if self._thread is None:
            return
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(5)
        self._thread = None
        for s in (self.sock, self._wake_r, self._wake_w):
            s.close()


class Fleet:
    """N ssh host names served by one loopback sshd, plus fault hosts.

    Attributes after start(): ssh_config, ssh_command, hosts, port, user,
    pid (sshd's), refused_port, silent_port, workdir, log (sshd's log file).
    """

    def __init__(self, workdir, hosts=50, prefix="node", sshd=SSHD,
                 extra_sshd_config=""):
        self.workdir = os.path.abspath(str(workdir))
        self.nhosts = int(hosts)
        self.prefix = prefix
        self.sshd = sshd
        # Lines put *before* the defaults (sshd keeps the first value seen),
        # e.g. "PasswordAuthentication yes".
        self.extra_sshd_config = extra_sshd_config
        self.port = None
        self.refused_port = None
        self.silent_port = None
        self.user = None
        self.pid = None
        self._proc = None
        self._silent = None
        self._started = False

    # -- paths -------------------------------------------------------------
    def _path(self, name):
        return os.path.join(self.workdir, name)

    @property
    def ssh_config(self):
        return self._path("ssh_config")

    @property
    def ssh_command(self):
        return "ssh -F %s" % shlex.quote(self.ssh_config)

    @property
    def ssh_argv(self):
        return ["ssh", "-F", self.ssh_config]

    @property
    def hosts(self):
        return ["%s%d" % (self.prefix, i) for i in range(1, self.nhosts + 1)]

    @property
    def hosts_pattern(self):
        return "%s[1-%d]" % (self.prefix, self.nhosts)

    @property
    def client_key(self):
        return self._path("client_key")

    @property
    def log(self):
        return self._path("sshd.log")

    def env(self, base=None):
        env = dict(os.environ if base is None else base)
        env["CLASSH_SSH"] = self.ssh_command
        return env

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        if self._started:
            return self
        self._started = True
        atexit.register(self.stop)
        try:
            self._setup()
        except BaseException:
            self.stop()
            raise
        return self

    def _setup(self):
        os.makedirs(self.workdir, exist_ok=True)
        root = os.geteuid() == 0
        if root:
            pw = _ensure_test_user()
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        else:
            pw = pwd.getpwuid(os.geteuid())
        self.user = pw.pw_name

        for name in ("host_key", "client_key"):
            for f in (self._path(name), self._path(name) + ".pub"):
                if os.path.exists(f):
                    os.unlink(f)
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "",
                  "-C", "classh-fleet-" + name, "-f", self._path(name)])

        authorized = self._path("authorized_keys")
        shutil.copyfile(self.client_key + ".pub", authorized)
        os.chmod(authorized, 0o644)
        if root:
            os.chmod(self.workdir, 0o755)
            _make_traversable(self.workdir)

        self.refused_port = _free_port()
        self._silent = _SilentListener()
        self.silent_port = self._silent.port

        last = None
        for _attempt in range(5):  # the free port may be taken meanwhile
            self.port = _free_port()
            while self.port in (self.refused_port, self.silent_port):
                self.port = _free_port()
            self._write_sshd_config(authorized)
            try:
                self._start_sshd()
                break
            except FleetError as e:
                last = e
                if "Address already in use" not in str(e):
                    raise
        else:
            raise last
        self._write_known_hosts()
        self._write_ssh_config()

    def _write_sshd_config(self, authorized):
        lines = []
        if self.extra_sshd_config:
            lines.append(self.extra_sshd_config.rstrip("\n"))
        lines += [
            "ListenAddress %s:%d" % (LOOPBACK, self.port),
            "HostKey %s" % self._path("host_key"),
            "PidFile %s" % self._path("sshd.pid"),
            "AuthorizedKeysFile %s" % authorized,
            "UsePAM no",
            "UseDNS no",
            "StrictModes no",
            "MaxStartups 4000:30:8000",
            "MaxSessions 100",
            "LogLevel ERROR",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin no" if os.geteuid() == 0 else "PermitRootLogin yes",
            "AllowUsers %s" % self.user,
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "LoginGraceTime 60",
            "ClientAliveInterval 0",
            "Subsystem sftp internal-sftp",
        ]
        with open(self._path("sshd_config"), "w") as fh:
            fh.write("\n".join(lines) + "\n")

    def _start_sshd(self):
        with open(self.log, "ab") as logfh:
            self._proc = subprocess.Popen(
                [self.sshd, "-D", "-f", self._path("sshd_config"), "-E", self.log],
                stdin=subprocess.DEVNULL, stdout=logfh, stderr=logfh,
                start_new_session=True, close_fds=True)
        self.pid = self._proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._proc = None
                self.pid = None
                raise FleetError("sshd exited with status %s at start; log %s:\n%s"
                                 % (rc, self.log, self._read_log()))
            if _port_open(self.port):
                return
            time.sleep(0.02)
        self._stop_sshd()
        raise FleetError("sshd did not accept connections on %s:%d within 10 s;"
                         " log %s:\n%s" % (LOOPBACK, self.port, self.log,
                                           self._read_log()))

    def _read_log(self):
        try:
            with open(self.log, errors="replace") as fh:
                return fh.read()[-4000:]
        except OSError as e:
            return "(unreadable: %s)" % e

    def _write_known_hosts(self):
        with open(self._path("host_key.pub")) as fh:
            keytype, key = fh.read().split()[:2]
        with open(self._path("known_hosts"), "w") as fh:
            fh.write("[%s]:%d %s %s\n" % (LOOPBACK, self.port, keytype, key))

    def _write_ssh_config(self):
        q = self._quote
        text = """\
# Written by tests/fleet.py.  ssh_config keeps the FIRST value it sees for
# each option, so the fault hosts come first, then the fleet itself.
Host refused
    HostName {lo}
    Port {refused}
Host silent
    HostName {lo}
    Port {silent}
# {prefix}1..{prefix}{n}, and any other name, go to the one sshd.
Host {prefix}* *
    HostName {lo}
    Port {port}
Host *
    User {user}
    IdentityFile {key}
    IdentitiesOnly yes
    IdentityAgent none
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    UserKnownHostsFile {known}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    CheckHostIP no
    UpdateHostKeys no
    BatchMode yes
    LogLevel ERROR
    ControlMaster no
""".format(lo=LOOPBACK, refused=self.refused_port, silent=self.silent_port,
           prefix=self.prefix, n=self.nhosts, port=self.port, user=self.user,
           key=q(self.client_key), known=q(self._path("known_hosts")))
        with open(self.ssh_config, "w") as fh:
            fh.write(text)

    @staticmethod
    def _quote(path):
        return '"%s"' % path if any(c.isspace() for c in path) else path

    def _stop_sshd(self):
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # Per-connection sshd processes setsid() away from the listener, so
        # a process group kill would miss them: collect the whole tree.
        tree = _descendants(proc.pid)
        for pid in [proc.pid] + tree:
            try:
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 5
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        left = [p for p in tree if _alive(p)]
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = [p for p in left if _alive(p)]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self):
        """Stop sshd (and its sessions) and the fault listener. Idempotent."""
        try:
            self._stop_sshd()
        finally:
            if self._silent is not None:
                silent, self._silent = self._silent, None
                silent.close()
            if self._started:
                self._started = False
                try:
                    atexit.unregister(self.stop)
                except Exception:
                    pass

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self):
        return "Fleet(%r, hosts=%d, prefix=%r, port=%r, user=%r)" % (
            self.workdir, self.nhosts, self.prefix, self.port, self.user)


# -- command line --------------------------------------------------------------

USAGE = """\
usage: fleet.py [--hosts N] [--dir DIR] [--prefix P] -- COMMAND [ARGS...]

Start a loopback ssh fleet, run COMMAND with CLASSH_SSH, FLEET_HOSTS,
FLEET_DIR, FLEET_SSH_CONFIG, FLEET_PORT and FLEET_USER set, stop the fleet
and exit with COMMAND's status.  Without --dir a temporary directory is
used and removed afterwards."""


def _parse(argv):
    opts = {"hosts": 50, "dir": None, "prefix": "node"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a in ("-h", "--help"):
            print(USAGE)
            sys.exit(0)
        name, eq, val = a.partition("=")
        if name in ("--hosts", "--dir", "--prefix"):
            if not eq:
                i += 1
                if i >= len(argv):
                    raise SystemExit("fleet.py: %s needs a value\n%s" % (name, USAGE))
                val = argv[i]
            opts[name[2:]] = val
            i += 1
            continue
        if a.startswith("-"):
            raise SystemExit("fleet.py: unknown option %s\n%s" % (a, USAGE))
        break
    cmd = argv[i:]
    if not cmd:
        raise SystemExit("fleet.py: no COMMAND given\n%s" % USAGE)
    try:
        opts["hosts"] = int(opts["hosts"])
        if opts["hosts"] < 1:
            raise ValueError
    except ValueError:
        raise SystemExit("fleet.py: --hosts needs a positive integer")
    return opts, cmd


def main(argv=None):
    opts, cmd = _parse(sys.argv[1:] if argv is None else argv)
    tmp = None
    workdir = opts["dir"]
    if workdir is None:
        tmp = workdir = tempfile.mkdtemp(prefix="classh-fleet-")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    # Even where SIGINT was ignored (a background job of a script).
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    fleet = Fleet(workdir, hosts=opts["hosts"], prefix=opts["prefix"])
    child = None
    rc = 1
    try:
        fleet.start()
        env = fleet.env()
        env["FLEET_HOSTS"] = fleet.hosts_pattern
        env["FLEET_DIR"] = fleet.workdir
        env["FLEET_SSH_CONFIG"] = fleet.ssh_config
        env["FLEET_PORT"] = str(fleet.port)
        env["FLEET_USER"] = fleet.user
        try:
            child = subprocess.Popen(cmd, env=env)
        except OSError as e:
            sys.stderr.write("fleet.py: cannot run %s: %s\n" % (cmd[0], e))
            return 127
        rc = child.wait()
    except KeyboardInterrupt:
        rc = 130
        if child is not None and child.poll() is None:
            # A terminal ^C reached the child too; give it a moment.
            try:
                child.send_signal(signal.SIGINT)
                child.wait(3)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            except OSError:
                pass
    except FleetError as e:
        sys.stderr.write("fleet.py: %s\n" % e)
        rc = 1
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        fleet.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if rc < 0:
        rc = 128 - rc
    return rc


if __name__ == "__main__":
    sys.exit(main())
