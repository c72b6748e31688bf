"""Job mode: a queue of jobs run over node slots (clstr, kssh, the task deliverer).

A *node* is an ssh target with a number of *slots*: each slot runs one job
at a time. :class:`JobSource` is a :class:`~classh.supervisor.TaskSource`
on the ordinary supervisor (no second loop, no threads):

* every node is *probed* first, all at once: an internal task running ssh
  ``true`` within the connect timeout. A node that fails is dropped with one
  ``notify`` line naming it and ssh's last stderr line.
* with ``reuse`` (the default) the probe also starts the node's ssh
  ControlMaster, in a private 0700 directory (:mod:`classh.masters`), and
  every job of the node runs through it. sshd's MaxSessions (10 by default)
  caps the sessions of one connection, so a node has one master per
  :data:`SESSIONS_PER_MASTER` slots, each opened (and probed) only once every
  open one is busy and jobs wait: 2 jobs on a node of 10,000 slots use one
  master. A further connection that fails leaves its node working on the
  others. ``close()`` ends every master, waits for it and removes the
  directory; if classh dies, the directory's keeper does. With
  ``Options.persist`` the shared persistent masters are used and left open.
* free slots wait in a deque, so handing out a job costs O(1) whatever the
  size of the pool. A job ending in an ssh error drops its node and goes
  back to the queue; a remote failure (non-zero exit, signal, timeout) is
  retried, on any node, until it has run ``retries`` times; with
  ``fail_node_on_error`` it drops its node too. When no node is left, every
  job still waiting is listed in ``undone``.
* every job runs inside the remote watchdog (:mod:`classh.remote`) with
  ``CLASSH_TAG=<run-id>.<job-id>``, so a killed ssh ends the job on the node.
* the stall watch (:mod:`classh.stalls`): opt-in for job lists (a stalled job
  is killed and runs again elsewhere); on by default for blocks, as backup
  copies: a straggling block gets a second copy on another node (an internal
  task tagged ``<run-id>.0<job-id>``, its output kept), the first copy to
  succeed wins, the other is ended by its tag, and a winning backup's record
  is shown through ``Supervisor.publish`` once the first copy's went out.

Nothing here prints: lines for the user go to ``notify``.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
import signal
import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple, Union

from .api import _Collector, _reraise, as_options
from .gpus import GpuRule, assess, cuda_env, parse_probe, probe_command
from .hostmode import ssh_reads_no_stdin
from .muxnotes import MuxNotes
from .options import Options, OptionError, not_negative, positive_int, seconds
from .prompts import HostAuth
from .remote import cut, remote_command, remote_task
from .results import KILLED, OK, Record, ResultsError, SSH_ERROR, TIMEOUT, last_line, some_names
from .resume import JobsDone
from .blocks import BlockInput
from .nodesetup import NodeSetup
from .kill import kill_command
from .masters import MARK, ControlDir
from .run import Run, assemble
from .spawn import SpawnError, raise_fd_limit, spawn
from .stalls import StallWatch
from .ssh import SshCommand
from .supervisor import Task, TaskSource
from .streams import LineStreams, is_pipe_or_device, open_nonblocking
from .targets import (DEFAULT_MAX_HOSTS, Target, TargetError, split_commas, expand as expand_pattern,
                      parse_target, strip_comment)

__all__ = ["Job", "NodeSpec", "JobOptions", "JobSource", "JobError", "parse_nodes", "read_jobs",
           "jobs", "SESSIONS_PER_MASTER", "MAX_SLOTS"]

#: Sessions one ControlMaster carries at most (sshd's default MaxSessions).
SESSIONS_PER_MASTER = 10
#: The most slots one node may have.
MAX_SLOTS = 10_000
#: Seconds a private master stays up once idle: a safety net if classh dies without close().
MASTER_IDLE = 300
#: Seconds a probe may take beyond the connect timeout.
PROBE_MARGIN = 5.0
#: Seconds close() waits for the masters to exit.
CLOSE_WAIT = 5.0
#: Seconds between two looks at the node files (their size and time stamps).
NODE_FILE_CHECK = 1.0
#: Seconds a node's set-up (--init-file, --init-script) may take unless its init_timeout says.
INIT_TIMEOUT = 300.0
#: Seconds nvidia-smi may take on top of a probe's time.
GPU_QUERY_TIME = 30.0
#: The most MiB ``--gpu-mem`` may ask for.
MAX_GPU_MIB = 1 << 30
#: Bytes of blocks taken and not yet done with (queued, running, waiting to run again): no
#: block is taken past it (one always is when none is held), so memory stays bounded
#: whatever the block size times the slots.
MAX_BLOCK_BYTES = 32 << 20
#: Job files that are pipes are read while fewer jobs than this wait for a slot.
READ_AHEAD_JOBS = 10000
#: Stall watch (its policy: :mod:`classh.stalls`): the stalls after which a node is dropped.
STALLS_TO_DROP = 3
#: The stall factor of blocks when none is given (job lists have no stall watch unless
#: one is given: a long job among short ones is no stall).
BLOCK_STALL_FACTOR = 5.0
#: Bytes of stdout, and of stderr, a block's backup copy keeps (its output is shown only
#: if it wins): one that writes more is given up (see JobSource._backup_ended).
BACKUP_OUTPUT = 4 << 20
#: Backup copies running at once: the output they hold stays under 2 x 4 x BACKUP_OUTPUT.
MAX_BACKUPS = 4

PROBING, READY, DROPPED, RETIRED = "probing", "ready", "dropped", "retired"
# What ssh's mux client says when the master's connection refuses one more session.
_MUX_REFUSED = (b"Session open refused by peer", b"mux_client_request_session")


class JobError(TargetError):
    """Bad job input (an unreadable job file, a command that cannot be sent); names it."""


@dataclass
class Job:
    """One unit of work: ``command`` run once to success (or ``retries`` times) on some node."""

    id: int
    command: str
    pin: Optional[str] = None  # --on-each-node: the label of the node it must run on
    attempts: int = 0          # attempts started so far
    data: Optional[bytes] = None  # a block's bytes: the stdin of each attempt
    identity: Optional[str] = None  # a block's identity (block-N:HASH); a job's is its text
    stalled: bool = False      # killed by the stall watch: it runs again elsewhere
    started: float = 0.0       # when its attempt started (on the stall watch's clock)
    nodes: List[str] = field(default_factory=list)  # the node of each attempt, in order
    failed_on: Set[str] = field(default_factory=set)  # nodes an attempt failed on


@dataclass
class NodeSpec:
    """A node as asked for: the target and its number of slots; from a ``--machines``
    file also its ssh command line, working directory and set-up time limit."""

    target: Target
    slots: int
    ssh: Optional[str] = None
    wd: Optional[str] = None
    init_timeout: Optional[float] = None


@dataclass
class JobOptions:
    """How jobs are scheduled; see :class:`JobSource`."""

    retries: int = 3
    fail_node_on_error: bool = False
    max_node_uses: Optional[int] = None
    max_nodes: Optional[int] = None
    max_running: Optional[int] = None
    reuse: bool = True
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    #: SIGUSR1 pauses and SIGHUP drains (the command line's); off, a program calling
    #: :func:`jobs` keeps SIGHUP ending the call, as with :func:`classh.run`.
    job_control: bool = False
    #: --gpus: a node's slots are its free GPUs (see :mod:`classh.gpus`), each taking
    #: ``jobs_per_gpu`` jobs; ``gpu_mem``: MiB free a GPU needs (0: any); ``share_gpus``:
    #: foreign processes do not make a GPU busy; ``gpu_check``: seconds between two looks
    #: at a node's GPUs (between its jobs, and while a GPU is busy).
    gpus: bool = False
    gpu_mem: int = 0
    jobs_per_gpu: int = 1
    share_gpus: bool = False
    gpu_check: float = 30.0
    #: The exit status that means success (``--task-success-code``).
    success_code: int = 0
    #: Seconds a node's set-up may take (a --machines entry's init_timeout wins).
    init_timeout: float = INIT_TIMEOUT
    #: A job running longer than ``stall_factor`` times the moving average of completed
    #: durations (and ``stall_min`` s at least) is killed and runs again on another node;
    #: a block gets a backup copy instead (see :meth:`JobSource._back_up`). None (the
    #: default): no stall watch for job lists, :data:`BLOCK_STALL_FACTOR` for blocks; 0: none.
    stall_factor: Optional[float] = None
    stall_min: float = 10.0

    def __post_init__(self):
        self.retries = positive_int("retries", self.retries)
        for name in ("max_node_uses", "max_nodes", "max_running"):
            if getattr(self, name) is not None:
                setattr(self, name, positive_int(name.replace("_", "-"), getattr(self, name)))
        if not (isinstance(self.run_id, str) and self.run_id.isalnum() and self.run_id.isascii()
                and len(self.run_id) <= 32):
            raise OptionError("run id must be 1-32 letters and digits, not %r" % (self.run_id,))
        if self.gpu_mem in (0, "0"):
            self.gpu_mem = 0
        else:
            self.gpu_mem = positive_int("gpu-mem", self.gpu_mem, MAX_GPU_MIB)
        self.jobs_per_gpu = positive_int("jobs-per-gpu", self.jobs_per_gpu, MAX_SLOTS)
        if self.success_code not in (0, "0"):
            self.success_code = positive_int("task-success-code", self.success_code, 255)
        self.success_code = int(self.success_code)
        self.gpu_check = seconds("gpu-check", self.gpu_check)
        self.init_timeout = seconds("init-timeout", self.init_timeout) or INIT_TIMEOUT
        not_negative("stall-factor", self.stall_factor)
        not_negative("stall-min", self.stall_min)
        try:
            if self.stall_factor is not None:  # 0 (or less) stays 0: no stall watch at all
                self.stall_factor = seconds("stall-factor", self.stall_factor) or 0.0
        except OptionError:
            raise OptionError("stall-factor must be a number (0: no stall watch), not %r"
                              % (self.stall_factor,)) from None
        self.stall_min = seconds("stall-min", self.stall_min) or 0.0
        if not self.gpu_check:
            raise OptionError("gpu-check must be more than 0 seconds, not %r" % (self.gpu_check,))

    @property
    def gpu_rule(self) -> Optional[GpuRule]:
        """The rule that picks the GPUs taking jobs, None without ``gpus``."""
        if not self.gpus:
            return None
        return GpuRule(min_mib=self.gpu_mem, jobs_per_gpu=self.jobs_per_gpu, share=self.share_gpus)


# -- input -----------------------------------------------------------------
def _slot_count(piece: str, where: str) -> Tuple[str, int]:
    """``host*k`` -> ("host", k); a piece without ``*`` has one slot."""
    if "*" not in piece:
        return piece, 1
    pattern, _, count = piece.rpartition("*")
    if not (count.isascii() and count.isdigit()) or not pattern.strip() or "*" in pattern:
        raise TargetError("%sbad slot count in %r: write HOST*N with N a whole number"
                          % (where, piece))
    slots = int(count)
    if not 1 <= slots <= MAX_SLOTS:
        raise TargetError("%sslot count in %r must be 1 to %d" % (where, piece, MAX_SLOTS))
    return pattern.strip(), slots


def _add_node_text(found: Dict[str, List], text: str, expand: bool, max_hosts: int,
                   where: str = "") -> None:
    """Add the nodes of one ``--node`` value or node-file line to ``found`` (label -> [target, slots])."""
    for piece in split_commas(text):
        pattern, slots = _slot_count(piece, where)
        try:
            labels = expand_pattern(pattern, expand, max_hosts)
        except TargetError as exc:
            raise TargetError(where + str(exc)) from None
        for label in labels:
            entry = found.get(label)
            if entry is None:
                found[label] = [parse_target(label), slots]
            else:
                entry[1] += slots
            if len(found) > max_hosts:
                raise TargetError("%stoo many nodes: %r brings the total over the limit of %d "
                                  "(--max-hosts)" % (where, text.strip(), max_hosts))


def _file_lines(path: str, what: str) -> List[str]:
    """The lines of a node or job file, read once as a stream (``/dev/stdin`` works)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline=None) as stream:
            return stream.readlines()
    except OSError as exc:
        raise TargetError("cannot read %s %r: %s" % (what, path, exc.strerror or exc)) from None


def parse_nodes(args: Sequence[str], files: Sequence[str] = (), *, expand: bool = True,
                max_hosts: int = DEFAULT_MAX_HOSTS) -> List[NodeSpec]:
    """The nodes of ``--node`` values and ``--node-file`` paths, in first-seen order.

    Values are host patterns (ranges, commas, ``user@name:port``); a node
    named k times, or written ``host*k``, gets k slots. Node files use the
    host-file syntax (one pattern or more a line, ``#`` comments), ``*k``
    included. Bad input, or no node at all, is a TargetError naming it.
    """
    found: Dict[str, List] = {}
    for text in args:
        _add_node_text(found, text, expand, max_hosts)
    for path in files:
        for number, line in enumerate(_file_lines(path, "node file"), 1):
            line = strip_comment(line)
            if line:
                _add_node_text(found, line, expand, max_hosts, "%s:%d: " % (path, number))
    if not found:
        raise TargetError("no nodes: give --node or --node-file with at least one host")
    if sum(slots for _, slots in found.values()) > max_hosts:
        raise TargetError("too many slots: over the limit of %d (--max-hosts)" % max_hosts)
    return [NodeSpec(target, slots) for target, slots in found.values()]


def node_pool(node_args: Sequence[str] = (), node_files: Sequence[str] = (),
              machine_files: Sequence[str] = (), *, expand: bool = True,
              max_hosts: int = DEFAULT_MAX_HOSTS) -> Tuple[List[NodeSpec], List[str]]:
    """(the pool, the machines files' notices): the nodes of ``node_args`` and
    ``node_files`` (see :func:`parse_nodes`), then those of the kssh machines files; a
    node in both is a JobError naming it."""
    from .machines import read_machines

    nodes = []
    if node_args or node_files or not machine_files:
        nodes = parse_nodes(node_args, node_files, expand=expand, max_hosts=max_hosts)
    seen = {spec.target.label for spec in nodes}
    notices = []
    for path in machine_files:
        machines, said = read_machines(path, max_hosts=max_hosts)
        notices += said
        for machine in machines:
            if machine.target.label in seen:
                raise JobError("node %r is in --machines %r and in another node list: give it "
                               "once" % (machine.target.label, path))
            seen.add(machine.target.label)
            nodes.append(NodeSpec(machine.target, machine.slots, ssh=machine.ssh, wd=machine.wd,
                                  init_timeout=machine.init_timeout))
    return nodes, notices


def job_line(line: str, where: str = "") -> Optional[str]:
    """The command of one job-file line; None for a blank line or a ``#`` comment."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    check_command(text, where)
    return text


def check_command(command: str, where: str = "") -> None:
    """JobError unless ``command`` can be sent (text without NUL)."""
    if not isinstance(command, str):
        raise JobError("%sa job must be text, not %r" % (where, command))
    if "\0" in command:
        raise JobError("%sa job cannot hold a NUL character: %r" % (where, command))
    if not command.strip():
        raise JobError("%sempty job %r" % (where, command))


def _is_stream(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        raise JobError("cannot read job file %r: %s" % (path, exc.strerror)) from None
    return is_pipe_or_device(path)


def read_jobs(commands: Sequence[str], files: Sequence[str] = ()) -> Tuple[List[str], Dict[int, str]]:
    """``--job`` values and ``--job-file`` paths -> (commands known now, {fd: path} of streams).

    A job file holds one command a line; blank lines and ``#`` comments are
    skipped. ``-`` is standard input. A pipe or device (``-``, ``/dev/stdin``
    fed by a running program) is not read here: it is opened non-blocking and
    returned, for :class:`JobSource` to read as lines arrive. Bad input is a
    JobError naming it.
    """
    known = []
    for command in commands:
        check_command(command)
        known.append(command)
    streams: Dict[int, str] = {}
    try:
        for path in files:
            path = "/dev/stdin" if path == "-" else path
            if _is_stream(path):
                try:
                    streams[open_nonblocking(path)] = path
                except OSError as exc:
                    raise JobError("cannot read job file %r: %s" % (path, exc.strerror)) from None
                continue
            for number, line in enumerate(_file_lines(path, "job file"), 1):
                text = job_line(line, "%s:%d: " % (path, number))
                if text is not None:
                    known.append(text)
    except BaseException:
        for fd in streams:
            os.close(fd)
        raise
    return known, streams


# -- the scheduler ---------------------------------------------------------
class _Link:
    """One ssh connection of a node (a ControlMaster, or plain logins) and its slots."""

    __slots__ = ("node", "index", "slots", "usable", "running", "path", "up")

    def __init__(self, node: "_Node", index: int, slots: int, path: Optional[str]):
        self.node, self.index, self.slots, self.usable = node, index, slots, slots
        self.running = 0
        self.path = path  # the ControlPath of a private master, else None
        self.up = False   # its probe succeeded


class _Gpu:
    """One GPU of a node (``--gpus``): the jobs it may run now and runs; why none."""

    __slots__ = ("node", "index", "usable", "running", "why", "may_change")

    def __init__(self, node: "_Node", index: int):
        self.node, self.index = node, index
        self.usable = 0          # jobs it may run at once now
        self.running = 0
        self.why: Optional[str] = None  # why it takes no job (None: it does)
        self.may_change = True   # a busy GPU may be free later; a MIG one is not

    @property
    def name(self) -> str:
        """``node:gpuI``, as the status line and --active-nodes show it."""
        return "%s:gpu%d" % (self.node.label, self.index)


class _Node:
    """A node of the pool: its connections, GPUs, state and counters."""

    __slots__ = ("label", "target", "slots", "links", "state", "running", "started",
                 "admitted", "pinned", "probes_left", "number", "gpus", "checking", "checked",
                 "check_timer", "stalls", "rest_timer", "spec", "ssh", "watch_stdin", "setup",
                 "opened")

    def __init__(self, spec: NodeSpec, number: int, ssh: SshCommand, watch_stdin: bool):
        self.label, self.target, self.slots = spec.target.label, spec.target, spec.slots
        self.spec = spec
        self.ssh = ssh  # its ssh command line (a --machines entry's connect_cmd, else the run's)
        #: its jobs' watchdog sees the end of their stdin (False when ssh gives them none, -n)
        self.watch_stdin = watch_stdin
        self.setup: Optional[str] = None  # None, "running" or "done"
        self.number = number  # its place in the pool (names its masters' sockets)
        self.links: List[_Link] = []
        self.opened = 0  # its first links opened (probed) so far: the others wait for work
        self.state = PROBING
        self.running = 0
        self.started = 0
        self.admitted = False
        self.pinned: Deque[Job] = deque()
        self.probes_left = 0
        self.gpus: Dict[int, _Gpu] = {}
        self.checking = False  # a look at its GPUs is under way
        self.checked = 0.0     # when its GPUs were last looked at (monotonic)
        self.check_timer = None
        self.stalls = 0          # its jobs killed by the stall watch
        self.rest_timer = None   # set while it gets no new job after a stall


class _OnLink:
    """An internal task's context: the connection (and node) it runs over."""

    __slots__ = ("node", "link")

    def __init__(self, link: _Link):
        self.node, self.link = link.node, link


class _GpuCheck(_OnLink):
    """A look at a node's GPUs: the first one also opens the node's first connection."""

    __slots__ = ("first",)

    def __init__(self, link: _Link, first: bool):
        super().__init__(link)
        self.first = first


class _Setup(_OnLink):
    """A node's set-up (working directory, init files and script) over its first link."""

    __slots__ = ()


class _Kill(_OnLink):
    """A kill by tag of one job's processes on a node (its last attempt was killed; with
    ``backup``, its backup copy)."""

    __slots__ = ("job", "backup")

    def __init__(self, link: _Link, job: Job, backup: bool = False):
        super().__init__(link)
        self.job, self.backup = job, backup


class _Backup:
    """A block's backup copy (MapReduce's backup task): an internal task on a slot of
    another node, its output kept (BACKUP_OUTPUT) and shown only if it wins.

    ``record`` is set when it won (its record waits for the first copy's end to be
    published); ``lost`` when the first copy won or the run ends (it is being killed)."""

    __slots__ = ("job", "link", "gpu", "started", "record", "task", "lost", "ended")

    def __init__(self, job: Job, link: _Link, gpu: Optional["_Gpu"], started: float):
        self.job, self.link, self.gpu, self.started = job, link, gpu, started
        self.record: Optional[Record] = None
        self.task: Optional[Task] = None
        self.lost = False
        self.ended = False  # its kill by tag was sent

    @property
    def node(self) -> "_Node":
        """The node it runs on."""
        return self.link.node


def _reached(record: Record) -> bool:
    """True when ssh got through (whatever the remote command said)."""
    return (record.exitcode is not None and record.exitcode != 255 and not record.timed_out
            and not record.error and not record.interrupted)


def _not_started(record: Record) -> bool:
    """True when ssh itself could not be started (the supervisor's spawn failed, e.g. a job
    line too long for one argument, E2BIG): nothing reached the node."""
    return (record.error is not None and record.exitcode is None and record.signal is None
            and not record.timed_out and not record.interrupted)


def _failure_reason(record: Record) -> str:
    """Why an attempt failed, in a few words (ssh's last stderr line when there is one)."""
    if record.timed_out:
        return "timed out"
    last = last_line(record.stderr)
    if record.error:
        return record.error
    if record.signal is not None:
        return "killed by signal %d" % record.signal
    if record.exitcode is not None and record.exitcode != 255:
        return "exit status %d" % record.exitcode + (": " + last if last else "")
    return last or "ssh exited with status %s" % record.exitcode


class JobSource(TaskSource):
    """Hands the jobs to node slots; see the module's documentation.

    ``nodes`` and ``commands`` come from :func:`parse_nodes` and
    :func:`read_jobs` (``streams``: fds read as lines arrive);
    ``on_each_node`` adds one job per node, pinned to it. ``notify(line)``
    gets one line per event the user should know of (a node dropped, no node
    left). ``jobs`` holds every job known so far, ``undone`` one line per job
    no node could run, ``errors`` the bad streamed lines, ``counts`` the
    attempts requeued (``retried``) and the nodes ``dropped``.
    """

    def __init__(self, nodes: List[NodeSpec], commands: List[str], options: Options,
                 job_options: Optional[JobOptions] = None, streams: Optional[Dict[int, str]] = None,
                 on_each_node: Optional[str] = None, notify: Callable[[str], None] = lambda line: None,
                 blocks: Optional[BlockInput] = None, task: Optional[str] = None,
                 setup: Optional[NodeSetup] = None):
        self.options = options
        self.job_options = job_options = job_options or JobOptions()
        self.notify = notify
        self.streams = LineStreams(streams or {}, self._add_line)
        self.jobs: Dict[int, Job] = {}
        self.undone: List[str] = []
        self.errors: List[str] = []
        self.counts = {"retried": 0, "dropped": 0}
        #: (SshCommand, watch stdin) per distinct --machines connect_cmd; None: the run's own
        self._ssh_commands: Dict[Optional[str], Tuple[SshCommand, bool]] = {}
        self._setup = setup or NodeSetup()  # a node's wd is made even without init files
        self._env = dict(os.environ)
        #: made when the run starts (attach); its keeper ends what classh leaves if it dies
        self._control_dir: Optional[ControlDir] = ControlDir(self._env)
        if not options.persist:  # (a --persist master, shared, must outlive any run)
            self._env[MARK] = self._control_dir.path  # the keeper knows classh's children by it
        self._private = job_options.reuse and not options.persist  # private masters
        self._opening = 0  # slots of the connections being opened (probed)
        self._growable: Deque[_Node] = deque()  # admitted nodes with connections not opened
        self._gpus = job_options.gpu_rule
        self._nodes = [self._new_node(spec, number) for number, spec in enumerate(nodes)]
        self._by_label = {node.label: node for node in self._nodes}
        self._queue: Deque[Job] = deque()
        self._free: Deque[_Link] = deque()  # one entry per free slot
        self._standby: Deque[_Node] = deque()  # ready, waiting for --max-nodes room
        self._probes: Deque[Task] = deque()
        self._alive = len(self._nodes)  # probing or ready, not retired
        self._admitted = 0
        self._pinned = 0  # pinned jobs waiting
        self._running = 0
        self._active: Dict[int, Tuple[_Link, Job, Optional[_Gpu]]] = {}  # running jobs by id
        self._done: Optional[JobsDone] = None  # --resume: the jobs done before
        #: Job numbers follow the input order, each line its own, skipped ones too.
        self._ids = itertools.count(1)
        #: Jobs that will never run here: done before (``--resume``), or left undone.
        self.skipped_ids: Set[int] = set()
        self.undone_ids: Set[int] = set()
        self._loop = self._supervisor = None
        #: SIGUSR1: no new job starts while paused; SIGHUP: draining, the run ends when idle.
        self.paused = self.draining = False
        self._on_each_node = on_each_node
        self._follow: Optional[_NodeFiles] = None  # the node files re-read when they change
        #: --input: blocks taken one at a time as slots free up, each the stdin of ``task``
        self.blocks, self._task = blocks, task
        if blocks is not None:
            if task is None or commands or on_each_node is not None or streams:
                raise JobError("blocks (--input) run --task, and no other job")
            check_command(task)
            blocks.errors = self.errors  # a read error of the input is an input error of the run
        #: nodes where a job with input was killed: its processes are ended by tag at close()
        self._kill_at_close: Set[str] = set()
        #: jobs whose last attempt is being killed by tag: id -> the job once it is to rerun
        self._killing: Dict[int, Optional[Job]] = {}
        #: blocks' backup copies by job id (see _back_up): running, or won and waiting
        #: for the first copy's end, or lost and being killed
        self._backups: Dict[int, _Backup] = {}
        #: job id -> the start of its first copy that got a backup (one backup per copy)
        self._backed_up: Dict[int, float] = {}
        #: Probes and GPU looks running (their task keys); ``_needless``: every job has
        #: ended and no more can come, so they were ended (see _end_needless_looks).
        self._looking: Set[str] = set()
        self._needless = False
        #: Blocks whose kill by tag was sent when they timed out (see timed_out).
        self._ended_early: Set[int] = set()
        self._block_bytes = 0  # bytes of the blocks taken and not let go (MAX_BLOCK_BYTES)
        #: the stall watch: its policy (moving average, limit, decision) and its timer
        factor = job_options.stall_factor
        if factor is None and blocks is not None:
            factor = BLOCK_STALL_FACTOR
        self._stall = StallWatch(factor, job_options.stall_min)
        self._stall_timer = None
        for node in self._nodes:
            self._plan_links(node)
        for command in commands:
            self._add_job(command)
        if on_each_node is not None:
            check_command(on_each_node)
            for node in self._nodes:
                self._add_job(on_each_node, node)

    # -- set-up ------------------------------------------------------------
    def _new_node(self, spec: NodeSpec, number: int) -> _Node:
        """A node of the pool, with its ssh command line (each distinct one parsed once)."""
        if spec.ssh not in self._ssh_commands:
            options = self.options if spec.ssh is None else self.options.replace(ssh=spec.ssh)
            watch_stdin = not options.raw and not ssh_reads_no_stdin(options)
            self._ssh_commands[spec.ssh] = (SshCommand(options), watch_stdin)
        return _Node(spec, number, *self._ssh_commands[spec.ssh])

    def _plan_links(self, node: _Node) -> None:
        """The node's connections, each probed; with GPUs, only the first until its GPUs
        are known (it is sized then)."""
        self._add_links(node, [1] if self._gpus else self._link_sizes(node.slots))

    def _link_sizes(self, slots: int) -> List[int]:
        """One connection per SESSIONS_PER_MASTER slots (one in all without private masters)."""
        if not self._private:
            return [slots]
        full, rest = divmod(slots, SESSIONS_PER_MASTER)
        return [SESSIONS_PER_MASTER] * full + ([rest] if rest else [])

    def _add_links(self, node: _Node, sizes: List[int]) -> None:
        """Connections of ``node``: the first opened now (with GPUs all of them), the others
        once work waits for them (:meth:`_grow`)."""
        for size in sizes:
            index = len(node.links)
            path = None
            if self._private:
                path = self._control_dir.socket("%d-%d" % (node.number, index))
            link = _Link(node, index, size, path)
            node.links.append(link)
            if index == 0 or self._gpus:
                self._open(link)

    def _open(self, link: _Link) -> None:
        """Probe ``link``, opening its master (how to end it is written down first)."""
        node = link.node
        node.opened = max(node.opened, link.index + 1)
        self._opening += link.slots
        if link.path is not None:
            self._control_dir.record(link.path, node.ssh.control_argv(node.target, "exit",
                                                                      link.path))
        self._probes.append(self._probe_task(link))
        node.probes_left += 1

    def _probe_ended(self, link: _Link) -> None:
        """The probe of ``link`` ended (or will not run)."""
        link.node.probes_left -= 1
        self._opening -= link.slots

    def _grow(self) -> Optional[Task]:
        """Every open connection is busy and work waits: open as many more as it needs (a
        queue of known jobs; with more to come, as many slots as run now), round the
        nodes; the first probe to run, or None."""
        want = len(self._queue) + (max(1, self._running) if self._more_coming() else 0)
        if self.job_options.max_running is not None:
            want = min(want, self.job_options.max_running - self._running)
        while self._growable and want > len(self._free) + self._opening:
            node = self._growable[0]
            if node.state != READY or not node.admitted or node.opened >= len(node.links):
                self._growable.popleft()
                continue
            self._open(node.links[node.opened])
            self._growable.rotate(-1)
        return self.next_task() if self._probes else None  # a probe, handed out as any is

    def _control_options(self, link: _Link, master: bool) -> List[str]:
        if link.path is None:
            return []
        if master:
            return ["ControlMaster=yes", "ControlPersist=%d" % MASTER_IDLE, "ControlPath=" + link.path]
        return ["ControlMaster=no", "ControlPath=" + link.path]

    def _auth(self) -> Optional[HostAuth]:
        password = self.options.password
        return HostAuth(password, True) if password is not None else None

    def _internal_task(self, key: str, link: _Link, command: str, context, timeout: float,
                       master: bool = False, **extra) -> Task:
        """An internal task: ``command`` over ``link`` (starting its master with ``master``)."""
        node = link.node
        return Task(key=key, argv=node.ssh.argv(node.target, command,
                                                self._control_options(link, master)),
                    timeout=timeout, env=self._env, context=context, auth=self._auth(),
                    internal=True, **extra)

    def _probe_timeout(self) -> float:
        """Seconds a probe or another short internal command may take."""
        return (self.options.connect_timeout or 10.0) + PROBE_MARGIN

    def _probe_task(self, link: _Link) -> Task:
        """ssh ``true`` opening ``link``'s master; with GPUs, the first one looks at them."""
        if self._gpus and link.index == 0:
            return self._check_task(_GpuCheck(link, first=True))
        return self._internal_task("probe-%s-%d" % (link.node.label, link.index), link, "true",
                                   link, self._probe_timeout(), master=True)

    def _check_task(self, check: _GpuCheck) -> Task:
        """nvidia-smi on ``check``'s node, over its link (opening the master the first time)."""
        link = check.link
        return self._internal_task("gpus-%s-%d" % (link.node.label, link.index), link,
                                   probe_command(self.job_options.run_id), check,
                                   self._probe_timeout() + GPU_QUERY_TIME, master=check.first,
                                   keep_output=True)

    def _add_job(self, command: str, node: Optional[_Node] = None) -> Job:
        return self._enqueue_new(Job(next(self._ids), command, pin=node.label if node else None))

    def _enqueue_new(self, job: Job) -> Job:
        """A job the run did not know of: counted in ``jobs`` and put in line."""
        self._needless = False  # probes count again (a node added while the run ends)
        self.jobs[job.id] = job
        self._enqueue(job)
        return job

    def _enqueue(self, job: Job, front: bool = False) -> None:
        """Put ``job`` in line (its node's line when pinned); undone when no node can take it."""
        if job.pin is None:
            if not self._alive:
                self._give_up(job)
            elif front:
                self._queue.appendleft(job)
            else:
                self._queue.append(job)
            return
        node = self._by_label[job.pin]
        if node.state in (DROPPED, RETIRED):
            self._give_up(job)
            return
        node.pinned.append(job)
        self._pinned += 1
        if node.state == READY and not node.admitted:
            self._admit(node)  # --max-nodes never keeps a pinned job from its node

    def _give_up(self, job: Job) -> None:
        self.undone.append("job-%d: %s" % (job.id, job.identity or cut(job.command)))
        self.undone_ids.add(job.id)
        self._let_go(job)

    def _let_go(self, job: Job) -> None:
        """``job`` will not run again: its block's bytes are freed."""
        self._backed_up.pop(job.id, None)
        if job.data is not None:
            self._block_bytes -= len(job.data)
            job.data = None

    def _take_block(self) -> None:
        """The next block of the input into the queue (blocks done before are skipped)."""
        while True:
            block = self.blocks.take()
            if block is None:
                return
            job = Job(block.index, self._task, data=block.data, identity=block.identity())
            if self._skipped(job):
                continue
            self._block_bytes += len(block.data)
            self._enqueue_new(job)
            return

    # -- TaskSource ----------------------------------------------------------
    def attach(self, loop, supervisor) -> None:
        """Make the masters' directory; start reading the streamed job files and the blocks'
        input."""
        try:
            self._control_dir.make()
        except OSError as exc:
            raise JobError(exc.strerror) from None
        self._loop, self._supervisor = loop, supervisor
        self.streams.on_batch = self._lines_read
        self.streams.attach(loop)
        if self.blocks is not None:
            self.blocks.attach(loop, self._lines_read)
        if self._stall.factor:
            self._stall_timer = loop.call_later(self._stall.schedule(), self._look_for_stalls)
        if self._follow is not None:
            self._follow.timer = loop.call_later(self._follow.interval, self._check_node_files)

    def next_task(self) -> Optional[Task]:
        """A probe, else the next job on a free slot; None when nothing can start now."""
        self._pace_reading()
        if self._probes:
            task = self._probes.popleft()
            if isinstance(task.context, (_Link, _GpuCheck)):
                self._looking.add(task.key)
            return task
        if self.paused or self.draining:
            return None
        limit = self.job_options.max_running
        if limit is not None and self._running >= limit:
            return None
        if not self._queue and self.blocks is not None and self._free and (
                self._block_bytes < MAX_BLOCK_BYTES):
            self._take_block()
        if self._queue:
            passed = []  # free slots whose node only retried jobs that failed there would get
            task = None
            while self._free and task is None:
                link = self._free.popleft()
                if not self._usable(link):
                    continue
                node = link.node
                job = node.pinned.popleft() if node.pinned else self._take_job_for(node)
                if job is None:
                    passed.append(link)
                else:
                    task = self._start(job, link)
            self._free.extend(passed)
            return task if task is not None else self._grow()
        if self._pinned:
            return self._next_pinned()
        return self._grow() if not self._free else None

    def _take_job_for(self, node: _Node) -> Optional[Job]:
        """The first job in line that may run on ``node`` (taken out of the line): a retried
        job does not go back to a node it failed on while another node may still take it
        (GNU parallel's "on another computer on which it has not failed")."""
        for at, job in enumerate(self._queue):
            if node.label not in job.failed_on or not self._elsewhere(job):
                del self._queue[at]
                return job
        return None  # a fresh job is always taken: only retried ones were looked at

    def _elsewhere(self, job: Job) -> bool:
        """True when a node of the pool that ``job`` has not failed on may still run it."""
        return any(node.state in (PROBING, READY) and node.label not in job.failed_on
                   for node in self._nodes)

    def _next_pinned(self) -> Optional[Task]:
        """A pinned job on a free slot of its node (the general queue is empty)."""
        idle = []
        task = None
        while self._free and task is None:
            link = self._free.popleft()
            if not self._usable(link):
                continue
            if link.node.pinned:
                task = self._start(link.node.pinned.popleft(), link)
            else:
                idle.append(link)
        self._free.extend(idle)
        return task

    @staticmethod
    def _usable(slot: Union[_Link, _Gpu]) -> bool:
        """True when a job may start on ``slot`` now (a free-slot entry may be stale)."""
        node = slot.node
        if not (node.state == READY and node.admitted and slot.running < slot.usable):
            return False
        return not isinstance(slot, _Gpu) or (not node.checking
                                              and _link_with_room(node) is not None)

    def _start(self, job: Job, slot: Union[_Link, _Gpu]) -> Task:
        if job.pin is not None:
            self._pinned -= 1
        link, gpu = self._occupy(job, slot)
        job.started = self._stall.now()
        self._active[job.id] = (link, job, gpu)
        return self._attempt_task(job, link, gpu)

    def _occupy(self, job: Job, slot: Union[_Link, _Gpu]) -> Tuple[_Link, Optional[_Gpu]]:
        """Count a new attempt (or backup copy) of ``job`` on ``slot``: its connection, node,
        GPU and the pool's counts (the node retires at --max-node-uses); its link and GPU."""
        node = slot.node
        gpu = slot if isinstance(slot, _Gpu) else None
        link = slot if gpu is None else _link_with_room(node)
        job.attempts += 1
        job.nodes.append(node.label)
        link.running += 1
        node.running += 1
        node.started += 1
        self._running += 1
        if gpu is not None:
            gpu.running += 1
        if self.job_options.max_node_uses and node.started >= self.job_options.max_node_uses:
            self._retire(node)
        return link, gpu

    def _attempt_task(self, job: Job, link: _Link, gpu: Optional[_Gpu],
                      backup: Optional["_Backup"] = None) -> Task:
        """The task running ``job`` over ``link``: key ``job-N``; a ``backup`` copy is an
        internal task ``backup-N`` with a tag of its own, its output kept for
        :meth:`Supervisor.publish <classh.supervisor.Supervisor.publish>`."""
        node = link.node
        watch_stdin = node.watch_stdin and job.data is None
        line, first = self._remote(job, node, watch_stdin, gpu, self._tag(job, backup is not None))
        extra = {} if backup is None else {"internal": True, "keep_output": BACKUP_OUTPUT}
        return Task(key=("backup-%d" if backup else "job-%d") % job.id,
                    argv=node.ssh.argv(node.target, line, self._control_options(link, False)),
                    input=job.data if first is None else first + (job.data or b""),
                    timeout=self.options.timeout, env=self._env,
                    context=(job, node.label) if backup is None else backup,
                    attempt=job.attempts, auth=self._auth(), hold_stdin=watch_stdin,
                    stderr_notes=MuxNotes() if link.path is not None else None, **extra)

    def _tag(self, job: Job, backup: bool = False) -> str:
        """``CLASSH_TAG`` of ``job``'s processes: ``RUN.N``; its backup copy's ``RUN.0N``
        (a job number has no leading 0), so a kill by tag of one copy never meets the other,
        and ``classh --kill RUN`` ends both."""
        return "%s.%s%d" % (self.job_options.run_id, "0" if backup else "", job.id)

    def _remote(self, job: Job, node: _Node, watch_stdin: bool,
                gpu: Optional[_Gpu] = None, tag: Optional[str] = None) -> Tuple[str, Optional[bytes]]:
        """(the line for ssh, what to write first on its stdin): a long job's text goes
        over stdin where the node's ssh gives the target one (see remote_task)."""
        if self.options.raw:
            return job.command, None
        return remote_task(job.command, watch_stdin, node.watch_stdin,
                           tag=tag or self._tag(job),
                           env=cuda_env(gpu.index) if gpu is not None else None,
                           cwd=node.spec.wd)

    def fanout(self) -> int:
        """The supervisor's cap for this source: every slot plus one probe per connection."""
        return sum(node.slots + len(node.links) for node in self._nodes)

    def pending(self) -> Optional[int]:
        """Probes and jobs still to hand out (None while job files or input may bring more)."""
        if self._more_coming():
            return None
        return len(self._probes) + len(self._queue) + self._pinned

    def exhausted(self) -> bool:
        """True once no probe or job is left to hand out and no job file or input is open."""
        return not (self._probes or self._queue or self._pinned or self._more_coming())

    def _more_coming(self) -> bool:
        """True while a job file or the blocks' input may bring more work."""
        return bool(self.streams) or (self.blocks is not None and not self.blocks.done)

    def completed(self, task: Task, record: Record) -> bool:
        """Account for an ended probe or attempt; True when ``record`` is the job's final one."""
        if task.internal:
            self._looking.discard(task.key)
            if isinstance(task.context, _Backup):
                self._backup_ended(task, record)
            elif isinstance(task.context, _Kill):
                self._killed(task.context)
            elif isinstance(task.context, _Setup):
                self._set(task.context, record)
            elif isinstance(task.context, _GpuCheck):
                self._gpus_seen(task.context, record)
            else:
                self._probed(task.context, record)
            self._end_needless_looks()
            return False
        job, label = task.context
        node = self._by_label[label]
        link, gpu = self._release(job, node)
        self._describe(record, job, label, gpu)
        _keep_mux_notes(task, record)
        if job.id in self._ended_early:
            self._ended_early.discard(job.id)
        elif job.data is not None and record.status in (TIMEOUT, KILLED):
            self._end_remote(job, link)
        if job.id in self._backups:
            final = self._first_copy_ended(job, node, link, record)
        else:
            final = self._judge(job, node, link, record)
            if final:
                self._let_go(job)
            else:
                self.counts["retried"] += 1
        self._check_nodes_left()
        self._end_needless_looks()
        return final

    def _describe(self, record: Record, job: Job, label: str, gpu: Optional[_Gpu]) -> None:
        """Fill in what a record of ``job`` run on node ``label`` says of the job."""
        record.job, record.node, record.command, record.attempts = job.id, label, job.command, job.attempts
        record.attempt_nodes = list(job.nodes)
        record.gpu = gpu.index if gpu is not None else None
        record.block = job.identity
        if job.data is not None:
            record.extra["sent"] = len(job.data)  # the joblog's Send
        record.success_code = self.job_options.success_code
    def _end_needless_looks(self) -> None:
        """Every job has ended and none can come: the probes and GPU looks still to run
        are dropped and the running ones killed, unjudged (a silent node held a finished
        run for its whole connect timeout). Set-ups and kills by tag go on."""
        if (self._running or self._queue or self._pinned or self._killing
                or self._more_coming() or self._supervisor is None):
            return
        self._needless = True
        for task in [task for task in self._probes if isinstance(task.context, (_Link, _GpuCheck))]:
            self._probes.remove(task)
            self._unplanned(task.context)
        for key in list(self._looking):
            self._supervisor.kill(key)

    def timed_out(self, task: Task) -> None:
        """A block ran past -t: its remote processes are ended by tag now. Through a shared
        connection the master holds its pipes until they end, so waiting for the record
        first cost the pipes' linger (-t 2 ended at 5.4 s)."""
        if isinstance(task.context, _Backup):
            self._end_backup_early(task.context)
        elif not task.internal and task.context[0].data is not None:
            self._end_early(task.context[0])

    def _end_early(self, job: Job) -> None:
        """End the running (first) copy of block ``job`` on its node by tag now, not once
        its record is in (see timed_out)."""
        if job.id in self._active and job.id not in self._killing:
            self._end_remote(job, self._active[job.id][0])
            self._ended_early.add(job.id)
            self._supervisor.fill()

    def _end_backup_early(self, backup: "_Backup") -> None:
        """End a backup copy on its node by its tag now (as _end_early)."""
        if not backup.ended:
            backup.ended = True
            self._end_remote(backup.job, backup.link, backup=True)
            self._supervisor.fill()

    def _end_remote(self, job: Job, link: _Link, backup: bool = False) -> None:
        """A job with input was killed: its remote processes are ended by their tag (the
        watchdog sees no end of its input through a shared connection). The job runs
        again only once that is done (the tag is the same); a ``backup`` copy's tag is
        its own."""
        if link.path is None:
            return  # a login of its own: the watchdog sees sshd's session end
        self._kill_at_close.add(link.node.label)
        if self._stopping():
            return  # close() ends the run's processes on the node
        link.running += 1  # the kill takes one of the connection's sessions
        if not backup:
            self._killing[job.id] = None
        tag = self._tag(job, backup)
        self._probes.append(self._internal_task("kill-" + tag.partition(".")[2], link,
                                                kill_command(tag), _Kill(link, job, backup),
                                                self._probe_timeout()))

    def _killed(self, kill: "_Kill") -> None:
        """A kill by tag ended: its session is free, and the job may run again."""
        link = kill.link
        link.running -= 1
        if self._gpus:
            if link.node.admitted:
                self._offer(link.node)
        elif self._usable(link):
            self._free.append(link)
        job = None if kill.backup else self._killing.pop(kill.job.id, None)
        if job is not None:
            self._enqueue(job, front=True)

    def _requeue(self, job: Job) -> None:
        """``job`` runs again, first in line (once the kill of its last attempt is done);
        not while its backup copy runs (that copy decides)."""
        if job.id in self._backups:
            return
        if job.id in self._killing:
            self._killing[job.id] = job
        else:
            self._enqueue(job, front=True)

    # -- probes ----------------------------------------------------------------
    def _probed(self, link: _Link, record: Record) -> None:
        node = link.node
        self._probe_ended(link)
        link.up = record.status == OK
        if node.state != PROBING and node.state != READY or self._stopping():
            return  # a probe the run's end cut short says nothing of its node
        if record.status != OK and any(other.up for other in node.links):
            # e.g. our own load made it time out: the node works over its other connections
            self.notify("node %s: one more connection failed (%s); its open ones go on"
                        % (node.label, _failure_reason(record)))
            return
        if record.status != OK:
            self._drop(node, "probe failed: " + _failure_reason(record))
            self._check_nodes_left()
            return
        if node.state == PROBING:
            self._ready(node)
        elif node.admitted:
            if self._gpus:
                self._offer(node)  # GPU slots that waited for this connection's room
            else:
                self._free.extend([link] * link.usable)

    def _ready(self, node: _Node) -> None:
        """``node`` answered its probe: once set up, its slots go to the jobs (or wait for
        --max-nodes room)."""
        if self._setup.needed(node.spec.wd) and node.setup != "done":
            if node.setup is None:
                self._set_up(node)
            return
        node.state = READY
        self._admit_or_wait(node)

    def _admit_or_wait(self, node: _Node) -> None:
        """A ready node's slots go to the jobs, or it waits for --max-nodes room."""
        if self._admissible(node):
            self._admit(node)
        else:
            self._standby.append(node)

    def _set_up(self, node: _Node) -> None:
        """Make the node's working directory, copy the init files there, run the init script:
        once, over its first connection (tagged RUN.0: ``--kill RUN`` ends it too)."""
        link = node.links[0]
        node.setup = "running"
        link.running += 1
        command = remote_command(self._setup.command(node.spec.wd), False,
                                 tag="%s.0" % self.job_options.run_id)
        self._probes.append(self._internal_task(
            "setup-%s" % node.label, link, command, _Setup(link),
            node.spec.init_timeout or self.job_options.init_timeout,
            input=self._setup.archive or b""))

    def _set(self, setup: _Setup, record: Record) -> None:
        """A node's set-up ended: the node is ready, or dropped saying why."""
        node, link = setup.node, setup.link
        link.running -= 1
        if node.state != PROBING or self._stopping():
            return
        if record.status != OK:
            if record.status in (TIMEOUT, KILLED):
                self._kill_at_close.add(node.label)
            self._drop(node, "set-up failed: " + _failure_reason(record))
            self._check_nodes_left()
            return
        node.setup = "done"
        self._ready(node)

    # -- GPUs ------------------------------------------------------------------
    def _gpus_seen(self, check: _GpuCheck, record: Record) -> None:
        """A look at ``check``'s node's GPUs ended: its GPU slots as nvidia-smi says now."""
        node, link = check.node, check.link
        if check.first:
            self._probe_ended(link)
            link.up = _reached(record)
        else:
            node.checking = False
            link.running -= 1
        node.checked = time.monotonic()
        if node.state not in (PROBING, READY) or self._stopping():
            return
        if not _reached(record):
            self._drop(node, ("probe failed: " if check.first else "GPU check failed: ")
                       + _failure_reason(record))
            self._check_nodes_left()
            return
        report = parse_probe(record.exitcode, record.stdout)
        if report.error is not None and check.first:
            self._drop(node, "no GPU slot: " + report.error)
            self._check_nodes_left()
            return
        if report.error is not None:
            self.notify("node %s: GPU check failed: %s (its GPUs stay as they were)"
                        % (node.label, report.error))
        else:
            self._take_report(node, report, check.first)
        if check.first:
            if not any(gpu.usable or gpu.may_change for gpu in node.gpus.values()):
                self._drop(node, "no usable GPU: " + _gpu_reasons(node))
                self._check_nodes_left()
                return
            self._size_links(node)
            self._ready(node)
        elif node.admitted:
            self._offer(node)
        self._watch_busy(node)

    def _take_report(self, node: _Node, report, first: bool) -> None:
        """Each GPU's slots from ``report``; one line for the first look and each change."""
        rule = self._gpus
        changed = []
        for seen in report.gpus:
            gpu = node.gpus.get(seen.index)
            if gpu is None:
                gpu = node.gpus[seen.index] = _Gpu(node, seen.index)
            usable, why, gpu.may_change = assess(seen, rule)
            if gpu.running and not (seen.foreign and not rule.share):
                usable, why = gpu.usable, None  # its free memory is what our own jobs left
            if why != gpu.why and not first:
                changed.append("gpu%d %s" % (gpu.index, why or "free again"))
            gpu.usable, gpu.why = usable, why
        node.slots = sum(gpu.usable for gpu in node.gpus.values())
        if first:
            self.notify("node %s: %s" % (node.label, _gpu_summary(node, self.job_options.gpu_check)))
        elif changed:
            self.notify("node %s: %s" % (node.label, "; ".join(changed)))

    def _size_links(self, node: _Node) -> None:
        """Connections enough for every job its GPUs could ever run at once."""
        if len(node.links) != 1:
            return  # sized before (a node that came back)
        most = max(1, sum(self._gpus.jobs_per_gpu for gpu in node.gpus.values()
                          if gpu.usable or gpu.may_change))
        sizes = self._link_sizes(most)
        first = node.links[0]
        first.slots = first.usable = sizes[0]
        self._add_links(node, sizes[1:])
        self._grow_fanout()

    def _offer(self, node: _Node) -> None:
        """Every free slot of ``node`` to the jobs (an entry already there is checked when used)."""
        if self._gpus:
            for gpu in node.gpus.values():
                self._free.extend([gpu] * max(0, gpu.usable - gpu.running))
            return
        for link in node.links:
            if link.up:
                self._free.extend([link] * max(0, link.usable - link.running))

    def _work_waiting(self) -> bool:
        return bool(self._queue or self._pinned or self._more_coming())

    def _check_gpus(self, node: _Node) -> bool:
        """Look at ``node``'s GPUs again, over a connection with room; False if none has."""
        link = _link_with_room(node)
        if link is None:
            return False
        node.checking = True
        link.running += 1  # the look takes one of the connection's sessions
        self._probes.append(self._check_task(_GpuCheck(link, first=False)))
        return True

    def _check_due(self, node: _Node) -> bool:
        """Between jobs: a node's GPUs are looked at again once ``gpu_check`` s have passed."""
        return (not node.checking and node.state == READY and self._work_waiting()
                and time.monotonic() - node.checked >= self.job_options.gpu_check)

    def _watch_busy(self, node: _Node) -> None:
        """While a GPU of ``node`` is busy, look again every ``gpu_check`` s (no job of the
        node may end to make it look)."""
        if node.check_timer is not None or self._loop is None:
            return
        if any(not gpu.usable and gpu.may_change for gpu in node.gpus.values()):
            node.check_timer = self._loop.call_later(self.job_options.gpu_check,
                                                     lambda: self._timed_check(node))

    def _timed_check(self, node: _Node) -> None:
        node.check_timer = None
        if node.state != READY:
            return
        if self._check_due(node) and self._check_gpus(node):
            self._supervisor.fill()
        else:
            self._watch_busy(node)

    def gpu_states(self) -> List[Tuple[str, int, int, Optional[str]]]:
        """(``node:gpuI``, jobs running, jobs it may run, why none) for every GPU of a node
        still in the pool."""
        return [(gpu.name, gpu.running, gpu.usable, gpu.why) for node in self._nodes
                if node.state in (PROBING, READY) or node.running
                for gpu in node.gpus.values()]

    def _admissible(self, node: _Node) -> bool:
        limit = self.job_options.max_nodes
        return limit is None or self._admitted < limit or bool(node.pinned)

    def _admit(self, node: _Node) -> None:
        """Give ``node``'s slots to the jobs."""
        node.admitted = True
        self._admitted += 1
        if node.opened < len(node.links):
            self._growable.append(node)
        self._offer(node)

    def _admit_standby(self) -> None:
        while self._standby and self._admissible(self._standby[0]):
            node = self._standby.popleft()
            if node.state == READY and not node.admitted:
                self._admit(node)

    # -- attempts --------------------------------------------------------------
    def _release(self, job: Job, node: _Node) -> Tuple[_Link, Optional[_Gpu]]:
        """The attempt's slot is free again (with GPUs, after a look at them when one is
        due); returns its link and GPU."""
        link, _, gpu = self._active.pop(job.id)
        self._free_slot(node, link, gpu)
        return link, gpu

    def _free_slot(self, node: _Node, link: _Link, gpu: Optional[_Gpu]) -> None:
        """An attempt's (or a backup copy's) slot is free again."""
        self._running -= 1
        node.running -= 1
        link.running -= 1
        if gpu is not None:
            gpu.running -= 1
            if not (self._check_due(node) and self._check_gpus(node)) and self._usable(gpu):
                self._free.append(gpu)
        elif self._usable(link):
            self._free.append(link)

    def _judge(self, job: Job, node: _Node, link: _Link, record: Record) -> bool:
        """Decide what an ended attempt means for the job and its node."""
        if job.stalled and not self._stopping():
            job.stalled = False
            if job.attempts >= self.job_options.retries:
                return True
            job.failed_on.add(node.label)  # "runs again elsewhere"
            self._requeue(job)
            return False
        if record.status == OK:
            self._stall.learn(self._stall.ran(self._watch_key(job), job.started))
        if record.interrupted or self.draining or (self._supervisor is not None
                                                   and self._supervisor.stopping):
            return True
        status = record.status
        if status == OK:
            _strip_mux_line(record)
            return True
        if _not_started(record):  # ssh could not start (E2BIG): the job's fault, not the node's
            record.error += "; not run again"
            return True
        if status == SSH_ERROR and any(word in record.stderr for word in _MUX_REFUSED) \
                and link.running > 0:
            # The master's connection is full: not the node's fault nor the job's.
            link.usable = max(1, link.running)
            job.attempts -= 1
            self._requeue(job)
            return False
        if status == SSH_ERROR and _killed_on_node(record, link):
            record.error = "killed on the node (a signal, e.g. classh --kill): not run again"
            record.interrupted = True  # a kill, as with -t or Ctrl-C: exit 3, not 4
            return True
        if status == SSH_ERROR or (self.job_options.fail_node_on_error and job.pin is None):
            self._drop(node, "job-%d: %s" % (job.id, _failure_reason(record)))
        if job.id in self._backups:  # its other copy runs on, and decides
            job.failed_on.add(node.label)
            return False
        if job.attempts >= self.job_options.retries:
            return True
        if job.pin is not None and node.state in (DROPPED, RETIRED):
            return True
        job.failed_on.add(node.label)
        self._requeue(job)
        return False

    def _stopping(self) -> bool:
        """True once the run is ending (a signal, a kill, every job done): no probe is
        judged."""
        return self._needless or (self._supervisor is not None and self._supervisor.stopping)

    # -- stalls ----------------------------------------------------------------
    def stall_limit(self) -> Optional[float]:
        """Seconds after which a running job counts as stalled (None: not known yet)."""
        return self._stall.limit()

    @staticmethod
    def _watch_key(job: Job) -> Tuple[int, float]:
        """The stall watch's key of ``job``'s running attempt (its start time tells attempts
        apart; a backup copy started meanwhile changes nothing)."""
        return job.id, job.started

    def _look_for_stalls(self) -> None:
        """Kill every job the stall watch finds stalled, or back up every block it finds so
        (see :mod:`classh.stalls`); backup copies are watched only for the loop's lateness."""
        running = [(self._watch_key(job), job.started, self._may_act(job, link.node))
                   for link, job, gpu in self._active.values() if not job.stalled]
        running += [(("backup", backup.job.id), backup.started, False)
                    for backup in self._backups.values() if backup.task is None]
        stalled = [] if self._stopping() else self._stall.look(running)
        self._stall_timer = self._loop.call_later(self._stall.schedule(), self._look_for_stalls)
        for (job_id, _), ran in stalled:
            link, job, gpu = self._active[job_id]
            if self.blocks is None:
                self._stalled(job, link.node, ran, self._stall.limit())
            else:
                self._back_up(job, link.node, ran, self._stall.limit())

    def _may_act(self, job: Job, node: _Node) -> bool:
        """True when the watch may act on ``job``, running on ``node``, should it stall: a
        job waits that could use its slot; a block's running copy has had no backup copy
        (one each), and a slot is free on another node for one (within MAX_BACKUPS, not
        while paused or draining, within --numjobs)."""
        if self.blocks is None:
            return self._waits_for(node)
        limit = self.job_options.max_running
        return (job.id not in self._backups and len(self._backups) < MAX_BACKUPS
                and self._backed_up.get(job.id) != job.started
                and not (self.paused or self.draining)
                and (limit is None or self._running < limit)
                and self._slot_elsewhere(node) is not None)

    def _waits_for(self, node: _Node) -> bool:
        """True when a job waits that could use a slot of ``node`` (or more may come)."""
        return bool(self._queue or node.pinned or self._more_coming())

    def _slot_elsewhere(self, node: _Node) -> Optional[Union[_Link, _Gpu]]:
        """A free slot of a node other than ``node`` (None if there is none)."""
        for slot in self._free:
            if slot.node is not node and self._usable(slot):
                return slot
        return None

    def _stalled(self, job: Job, node: _Node, ran: float, limit: float) -> None:
        job.stalled = True
        again = ("its last attempt (%d of %d)" % (job.attempts, self.job_options.retries)
                 if job.attempts >= self.job_options.retries else
                 "it runs again" + (" elsewhere" if job.pin is None else ""))
        self.notify("job-%d stalled on %s (%.1f s, the limit is %.1f s): killed, %s"
                    % (job.id, node.label, ran, limit, again))
        self._supervisor.kill("job-%d" % job.id)
        self._penalize(node, limit)

    def _penalize(self, node: _Node, limit: float) -> None:
        """A job stalled on ``node``: it gets no new job for ``limit`` s, and is dropped at
        its STALLS_TO_DROP-th stall."""
        node.stalls += 1
        if node.stalls >= STALLS_TO_DROP:
            self._drop(node, "%d jobs stalled there" % node.stalls)
        elif node.admitted and node.rest_timer is None:
            self._rest(node, limit)

    # -- backup copies of blocks -------------------------------------------------
    def _back_up(self, job: Job, node: _Node, ran: float, limit: float) -> None:
        """A block stalled on ``node``: it is not killed; a backup copy of it starts on a
        free slot of another node, and the first copy to finish wins (MapReduce's backup
        tasks; see _first_copy_ended and _backup_ended)."""
        slot = self._slot_elsewhere(node)
        if slot is None:
            return  # an earlier block of this look took it
        self._free.remove(slot)
        link, gpu = self._occupy(job, slot)
        backup = self._backups[job.id] = _Backup(job, link, gpu, self._stall.now())
        self._backed_up[job.id] = job.started
        self.notify("job-%d stalled on %s (%.1f s, the limit is %.1f s): a backup copy starts "
                    "on %s, the first to finish wins" % (job.id, node.label, ran, limit,
                                                          link.node.label))
        self._probes.append(self._attempt_task(job, link, gpu, backup))
        self._supervisor.fill()

    def _first_copy_ended(self, job: Job, node: _Node, link: _Link, record: Record) -> bool:
        """The first copy of a block with a backup copy ended; True when its record is
        the block's final one. The backup copy won before: this copy was ended for it, and
        the backup's record is the block's (published once this record went out as
        retried). This one succeeded: it wins, the backup copy is killed. It failed: the
        backup copy goes on alone (_judge leaves the decision to it)."""
        backup = self._backups[job.id]
        if backup.task is not None:
            del self._backups[job.id]
            self._publish_backup(backup)
            return False
        final = self._judge(job, node, link, record)
        if final:
            self._let_go(job)
            won = "job-%d finished on %s first: its backup copy on %s is ended" % (
                job.id, node.label, backup.node.label)
            self._lose(backup, won if record.status == OK else None)
        else:
            self.counts["retried"] += 1
            self.notify("job-%d failed on %s (%s): its backup copy on %s goes on"
                        % (job.id, node.label, _failure_reason(record), backup.node.label))
        return final

    def _lose(self, backup: _Backup, line: Optional[str] = None) -> None:
        """The first copy won (``line`` says so), or the run ends: the backup copy is killed
        (its record is then only counted)."""
        backup.lost = True
        if line:
            self.notify(line)
        self._supervisor.kill("backup-%d" % backup.job.id)
        self._end_backup_early(backup)

    def _backup_ended(self, task: Task, record: Record) -> None:
        """A backup copy ended. Lost before: nothing more. Succeeded (its output kept
        whole): it wins; the first copy, if still running, is ended and the backup's record
        is published once that copy's record is in. Failed (or wrote more than it may
        keep: given up) while the first copy runs: that copy goes on alone. Failed after
        the first copy failed: the retry rules judge this record (published if final)."""
        backup = task.context
        job, node, link = backup.job, backup.node, backup.link
        self._free_slot(node, link, backup.gpu)
        self._describe(record, job, node.label, backup.gpu)
        record.host = "job-%d" % job.id
        _keep_mux_notes(task, record)
        if record.status in (TIMEOUT, KILLED) and not backup.ended:
            self._end_remote(job, link, backup=True)
        first = self._active.get(job.id)  # the first copy, while it runs
        if backup.lost or (self._stopping() and first is not None):
            del self._backups[job.id]
            return
        if record.stdout_size > len(record.stdout) or record.stderr_size > len(record.stderr):
            record.output_cut = True  # not ok: it cannot win
            record.error = record.error or ("its output passed %d MiB, what a backup copy "
                                            "keeps" % (BACKUP_OUTPUT >> 20))
        if record.status == OK:
            self._won(backup, task, record, first)
        elif first is not None:
            self._judge(job, node, link, record)  # its node is judged; the first copy decides
            del self._backups[job.id]
            self.notify("job-%d: its backup copy on %s failed (%s): the copy on %s goes on"
                        % (job.id, node.label, _failure_reason(record), first[0].node.label))
        else:
            del self._backups[job.id]
            if self._judge(job, node, link, record):
                self._let_go(job)
                self._supervisor.publish(self._public_task(task, job), record)
            else:
                self.counts["retried"] += 1
        self._check_nodes_left()

    def _won(self, backup: _Backup, task: Task, record: Record, first) -> None:
        """The backup copy succeeded first: its record is the block's. The first copy, if
        still running (``first``: its active entry), is ended (its node penalized, as for a
        stall); the record is published once that copy's record is in."""
        job = backup.job
        self._stall.learn(self._stall.ran(("backup", job.id), backup.started))
        backup.task, backup.record = task, record
        if first is None:
            del self._backups[job.id]
            self._publish_backup(backup)
            return
        slow = first[0].node
        self.notify("job-%d: its backup copy on %s finished first: the copy on %s is ended"
                    % (job.id, backup.node.label, slow.label))
        self._supervisor.kill("job-%d" % job.id)
        self._end_early(job)
        self._penalize(slow, self._stall.limit() or 0.0)

    def _public_task(self, task: Task, job: Job) -> Task:
        """A backup copy's task as the observers are to see it: job ``job``'s."""
        return dataclasses.replace(task, key="job-%d" % job.id, internal=False,
                                   context=(job, task.context.node.label), keep_output=False)

    def _publish_backup(self, backup: _Backup) -> None:
        """The backup copy won: its record and output are the block's, shown once."""
        self._let_go(backup.job)
        self._supervisor.publish(self._public_task(backup.task, backup.job), backup.record)

    def _rest(self, node: _Node, seconds: float) -> None:
        """``node`` gets no new job for ``seconds`` (its running jobs go on)."""
        node.admitted = False
        self._admitted -= 1
        self._admit_standby()
        node.rest_timer = self._loop.call_later(seconds, lambda: self._rested(node))

    def _rested(self, node: _Node) -> None:
        node.rest_timer = None
        if node.state != READY or node.admitted:
            return
        self._admit_or_wait(node)
        self._supervisor.fill()

    # -- nodes -----------------------------------------------------------------
    def _drop(self, node: _Node, reason: str) -> None:
        if node.state in (DROPPED,):
            return
        self._leave(node, DROPPED)
        self.counts["dropped"] += 1
        self.notify("node %s dropped: %s" % (node.label, reason))

    def _retire(self, node: _Node) -> None:
        """``node`` has started --max-node-uses jobs: it gets no more."""
        self._leave(node, RETIRED)

    def _leave(self, node: _Node, state: str) -> None:
        if node.state in (PROBING, READY):
            self._alive -= 1
        if node.admitted:
            node.admitted = False
            self._admitted -= 1
        node.state = state
        while node.pinned:
            self._pinned -= 1
            self._give_up(node.pinned.popleft())
        self._admit_standby()

    def _check_nodes_left(self) -> None:
        """With no node left, every job still waiting is undone."""
        if self._alive:
            return
        if self.blocks is not None and not (self.blocks.done or self._queue or self.blocks.held()):
            self._take_block()  # a file is read as blocks are taken: is there one more?
        blocks = self.blocks is not None and not self.blocks.done
        if not (self._queue or blocks):
            return
        while blocks and self.blocks.held():
            self._take_block()
        jobs = len(self._queue)
        while self._queue:
            self._give_up(self._queue.popleft())
        left = ["%d job%s" % (jobs, "" if jobs == 1 else "s")] if jobs else []
        left += [part for part in (self._stop_input(),) if part]
        if left:
            self.notify("no node left: %s not run" % " and ".join(left))

    def _stop_input(self) -> str:
        """No block will run: stop reading the input (one undone line says where it
        stopped); what was left unread ("" when nothing)."""
        if self.blocks is None or self.blocks.ended:
            return ""
        self.blocks.close()
        unread = "the input past block %d" % max(self.jobs or [0])
        self.undone.append(unread + " (not read)")
        return unread

    # -- streamed job files ------------------------------------------------------
    def _add_line(self, line: str, where: str) -> None:
        try:
            command = job_line(line, where)
        except JobError as exc:
            self.errors.append(str(exc))
            return
        if command is None:
            return
        job = Job(next(self._ids), command)  # its number stays its own, as in the first run
        if not self._skipped(job):
            self._enqueue_new(job)

    def _skipped(self, job: Job) -> bool:
        """A job met on the way (a streamed line, a block) that will not run here: done
        before, or its number was another job's success (an input error naming it)."""
        try:
            if not self._done_before(job):
                return False
        except ResultsError as exc:
            self.errors.append(str(exc))
        self.skipped_ids.add(job.id)
        return True

    def _lines_read(self) -> None:
        self._check_nodes_left()
        self._pace_reading()
        self._supervisor.fill()

    def _pace_reading(self) -> None:
        """Streamed job files are read only while fewer than READ_AHEAD_JOBS jobs wait (and
        always once no node is left, so that the rest is seen and counted undone)."""
        if len(self._queue) < READ_AHEAD_JOBS or not self._alive:
            self.streams.resume()
        else:
            self.streams.pause()

    # -- pause, drain, a pool that changes ------------------------------------------
    def signal_handlers(self) -> Dict[int, Callable[[int], None]]:
        """SIGUSR1 toggles pausing; SIGHUP drains (a second SIGHUP ends the run at once);
        none of it without ``job_control``."""
        if not self.job_options.job_control:
            return {}
        return {signal.SIGUSR1: lambda signum: self.toggle_pause(), signal.SIGHUP: self._hang_up}

    def toggle_pause(self) -> bool:
        """Pause (no new job starts; running jobs and probes go on) or resume; True if paused."""
        self.paused = not self.paused
        self.notify("paused (SIGUSR1 again to resume)" if self.paused else "resumed")
        if not self.paused and self._supervisor is not None:
            self._supervisor.fill()
        return self.paused

    def _hang_up(self, signum: int) -> None:
        if self.draining:
            self._supervisor.interrupt(signum)  # the second one: end the run now
        else:
            self.drain()

    def drain(self) -> None:
        """GNU parallel's SIGHUP: no new job starts, running ones finish, every job not
        started is undone (the run then ends as if the queue were done)."""
        self.draining = True
        self._probes.clear()
        self.streams.close()
        self._stop_input()
        if self._follow is not None:
            self._loop.cancel(self._follow.timer)
        waiting = list(self._queue) + [job for node in self._nodes for job in node.pinned] + [
            job for job in self._killing.values() if job is not None]
        self._killing.clear()
        self._queue.clear()
        for node in self._nodes:
            node.pinned.clear()
        self._pinned = 0
        for job in sorted(waiting, key=lambda job: job.id):
            self._give_up(job)
        self.notify("draining: %d running job%s finish, %d not started (SIGHUP again to stop now)"
                    % (self._running, "" if self._running == 1 else "s", len(waiting)))

    def follow_node_files(self, node_args: Sequence[str], files: Sequence[str], *,
                          expand: bool = True, max_hosts: int = DEFAULT_MAX_HOSTS,
                          interval: float = NODE_FILE_CHECK) -> bool:
        """Re-read the ``--node-file`` ``files`` when one changes while the run goes on.

        ``node_args`` are the ``--node`` values (the pool is both, as
        :func:`parse_nodes` reads them). Every ``interval`` s the files' size
        and time stamps are looked at; on a change, nodes added are probed and
        used, nodes removed get no new job (their running jobs finish), and one
        ``notify`` line says what changed. A file that became unreadable or bad
        keeps the pool as it was (one line). Only regular files can be read
        again: False (nothing followed) when one is a pipe or device.
        """
        if not files or not all(os.path.isfile(path) for path in files):
            return False
        self._follow = _NodeFiles(list(node_args), list(files), expand, max_hosts, interval)
        self._follow.members = {spec.target.label for spec in parse_nodes(
            node_args, files, expand=expand, max_hosts=max_hosts)}  # not --machines' nodes
        return True

    def _check_node_files(self) -> None:
        follow = self._follow
        follow.timer = self._loop.call_later(follow.interval, self._check_node_files)
        seen = follow.look()
        if seen != follow.seen:
            follow.seen = seen
            self._reload(follow)

    def _reload(self, follow: "_NodeFiles") -> None:
        """Make the pool what the node files say now."""
        try:
            specs = parse_nodes(follow.node_args, follow.files, expand=follow.expand,
                                max_hosts=follow.max_hosts)
        except TargetError as exc:
            self.notify("node file not re-read: %s (the nodes stay as they were)" % exc)
            return
        wanted = {spec.target.label: spec for spec in specs}
        added = [spec for label, spec in wanted.items() if label not in follow.members]
        removed = [label for label in follow.members if label not in wanted]
        kept = [label for label, spec in wanted.items()
                if label in follow.members and spec.slots != self._by_label[label].slots]
        follow.members = set(wanted)
        for spec in added:
            self._join(spec)
        for label in removed:
            self._part(self._by_label[label])
        if added or removed or kept:
            self.notify("node file re-read: " + _pool_change(added, removed, kept))
        self._check_nodes_left()
        self._grow_fanout()
        self._supervisor.fill()

    def _grow_fanout(self) -> None:
        """The supervisor runs as many children as the pool may now need."""
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.numjobs = max(supervisor.numjobs, raise_fd_limit(self.fanout()))

    def _join(self, spec: NodeSpec) -> None:
        """A node added to the pool: a new one is probed; one removed before comes back."""
        node = self._by_label.get(spec.target.label)
        if node is not None:
            if node.label in self._follow.removed:
                self._revive(node)
            return  # dropped or retired while listed: it stays so
        node = self._new_node(spec, len(self._nodes))
        self._nodes.append(node)
        self._by_label[node.label] = node
        self._alive += 1
        self._plan_links(node)
        if self._on_each_node is not None:
            self._add_job(self._on_each_node, node)

    def _revive(self, node: _Node) -> None:
        """``node`` left the node file and is back: its connections are used (or probed) again."""
        self._follow.removed.discard(node.label)
        self._alive += 1
        node.state = PROBING
        if any(link.up for link in node.links):
            self._ready(node)  # set up first if its set-up never ended
        if node.probes_left == 0:
            for link in node.links[:node.opened]:
                if not link.up:
                    self._open(link)

    def _part(self, node: _Node) -> None:
        """``node`` left the node file: no new job (nor probe) for it; running jobs finish."""
        if node.state not in (PROBING, READY):
            return
        self._follow.removed.add(node.label)
        for task in [task for task in self._probes  # a kill by tag (or backup copy) still runs
                     if task.context.node is node
                     and not isinstance(task.context, (_Kill, _Backup))]:
            self._probes.remove(task)
            self._unplanned(task.context)
        self._leave(node, RETIRED)

    def _unplanned(self, context: Union[_Link, _GpuCheck]) -> None:
        """A probe or GPU look that will not run after all (its node left the pool)."""
        if isinstance(context, _Setup):
            context.link.running -= 1
            context.node.setup = None
        elif isinstance(context, _GpuCheck) and not context.first:
            context.node.checking = False
            context.link.running -= 1
        else:
            self._probe_ended(getattr(context, "link", context))

    # -- views -------------------------------------------------------------------
    def node_states(self) -> List[Tuple[str, str, int, int]]:
        """(node label, probing|ready|dropped|retired, slots, jobs running) for every node."""
        return [(node.label, node.state, node.slots, node.running) for node in self._nodes]

    def active(self) -> List[Tuple[str, int, str]]:
        """(node label, job id, command) for every busy slot, oldest first (a block's backup
        copy after the first copies)."""
        return [(gpu.name if gpu is not None else link.node.label, job.id, job.command)
                for link, job, gpu in list(self._active.values()) + [
                    (b.link, b.job, b.gpu) for b in self._backups.values() if b.task is None]]

    def where(self, task: Task) -> str:
        """Where the job of ``task`` runs now: ``node``, or ``node:gpuI`` with ``--gpus``."""
        job, label = task.context
        link, _, gpu = self._active.get(job.id, (None, None, None))
        return gpu.name if gpu is not None else label

    def skip(self, done: JobsDone) -> int:
        """``--resume``: drop the waiting jobs ``done`` holds as done; how many went (from now
        on, streamed jobs and blocks are looked up too). ResultsError when a job's number was
        another job's success."""
        self._done = done
        before = len(self.jobs)
        for job in [j for j in self.jobs.values() if not j.attempts and self._done_before(j)]:
            del self.jobs[job.id]
            self.skipped_ids.add(job.id)
            if job.pin is None:
                self._queue.remove(job)
            else:
                self._by_label[job.pin].pinned.remove(job)
                self._pinned -= 1
        return before - len(self.jobs)

    def _done_before(self, job: Job) -> bool:
        """True when ``job`` (its number and identity) succeeded in the run resumed."""
        return self._done is not None and self._done.done(job.id, job.identity or job.command,
                                                          job.pin)

    # -- the end -------------------------------------------------------------------
    def close(self) -> None:
        """Close open job files; end the private masters, wait for them, remove their
        directory."""
        self.streams.close()
        if self.blocks is not None:
            self.blocks.close()
        if self._loop is not None:
            for timer in [self._follow.timer if self._follow else None, self._stall_timer] + [
                    timer for node in self._nodes for timer in (node.check_timer, node.rest_timer)]:
                if timer is not None:
                    self._loop.cancel(timer)
        if self._control_dir is None:
            return
        links = [link for node in self._nodes for link in node.links if link.up]
        kill = kill_command(self.job_options.run_id)
        _run_all([link.node.ssh.argv(link.node.target, kill, self._control_options(link, False))
                  for link in links if link.index == 0 and link.node.label in self._kill_at_close])
        self._control_dir.close()
        self._control_dir = None


class _NodeFiles:
    """The node files a run follows: what they hold, and the size and time stamps last seen."""

    def __init__(self, node_args: List[str], files: List[str], expand: bool, max_hosts: int,
                 interval: float):
        self.node_args, self.files, self.expand, self.max_hosts = node_args, files, expand, max_hosts
        self.interval = interval
        self.timer = None
        self.members: Set[str] = set()  # the labels they list now
        self.removed: Set[str] = set()  # labels removed while in use (they may come back)
        self.seen: Optional[tuple] = None  # None: read them at the first look

    def look(self) -> tuple:
        """Each file's (inode, size, mtime, ctime), or its error: any change means re-read."""
        seen = []
        for path in self.files:
            try:
                st = os.stat(path)
                seen.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            except OSError as exc:
                seen.append(exc.strerror)
        return tuple(seen)


def _killed_on_node(record: Record, link: _Link) -> bool:
    """ssh's 255 without a word, through a private master that is up: the job's process
    was killed on the node (ssh says nothing then); a lost connection or master makes the
    mux client or ssh say why."""
    return (link.path is not None and record.exitcode == 255 and not record.stderr.strip()
            and not record.timed_out and not record.interrupted and os.path.exists(link.path))


def _link_with_room(node: _Node) -> Optional[_Link]:
    """A connection of ``node`` that is up and has a session to spare."""
    for link in node.links:
        if link.up and link.running < link.usable:
            return link
    return None


def _gpu_reasons(node: _Node) -> str:
    return "; ".join("gpu%d %s" % (gpu.index, gpu.why) for gpu in node.gpus.values()
                     if gpu.why) or "none listed"


def _gpu_summary(node: _Node, every: float) -> str:
    """``GPU slots: gpu0, gpu2 (2 jobs); gpu1 busy: foreign process 4242`` and the like."""
    free = [gpu for gpu in node.gpus.values() if gpu.usable]
    text = "no free GPU now" if not free else "GPU slots: " + ", ".join(
        "gpu%d" % gpu.index + ("" if gpu.usable == 1 else " (%d jobs)" % gpu.usable)
        for gpu in free)
    if any(gpu.why for gpu in node.gpus.values()):
        text += "; " + _gpu_reasons(node)
    if not free:
        text += " (looking again every %g s)" % every
    return text


def _pool_change(added: List[NodeSpec], removed: List[str], kept: List[str]) -> str:
    """``added node3 (2 slots); removed node1 (running jobs finish)`` - names, then a count."""
    parts = []
    if added:
        parts.append("added " + some_names(["%s (%d slot%s)" % (
            spec.target.label, spec.slots, "" if spec.slots == 1 else "s") for spec in added]))
    if removed:
        parts.append("removed %s (no new job there; running ones finish)" % some_names(removed))
    if kept:
        parts.append("slot count changes ignored for nodes in use: " + some_names(kept))
    return "; ".join(parts)


def _keep_mux_notes(task: Task, record: Record) -> None:
    """ssh's notes on its master (taken off the job's stderr as it came) go back at the
    start of an ssh error's stderr: they say why it failed (see _MUX_REFUSED)."""
    notes = task.stderr_notes.notes if task.stderr_notes is not None else b""
    if notes and record.status == SSH_ERROR:
        record.stderr = notes + record.stderr
        record.stderr_size += len(notes)


def _strip_mux_line(record: Record) -> None:
    """A session the master could not open ran over a login of its own: drop ssh's note of it."""
    if record.stderr.startswith(b"mux_client_request_session: "):
        first, _, rest = record.stderr.partition(b"\n")
        record.stderr = rest
        record.stderr_size -= len(first) + 1


def _run_all(argvs: List[List[str]]) -> None:
    """Run every argv at once (ssh to masters); wait a bounded time for them to end."""
    children = []
    for argv in argvs:
        try:
            children.append(spawn(argv))
        except SpawnError:
            continue
    deadline = time.monotonic() + CLOSE_WAIT
    for child in children:
        _wait(child.pid, deadline)
        os.close(child.stdout)
        os.close(child.stderr)


def _wait(pid: int, deadline: float) -> None:
    """Reap ``pid``, killing it when ``deadline`` passes."""
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        time.sleep(0.005)


# -- the Python API ------------------------------------------------------------
#: ``opts`` keys of :func:`jobs` that are neither Options nor JobOptions: what the job
#: source takes besides (``input`` with ``task``: the block input files, not Options.input).
_SOURCE_KEYS = ("on_each_node", "notify", "task", "blocksize", "machines", "init_files",
                "init_script")


def _split_opts(opts: Union[None, Options, dict]) -> Tuple[Options, JobOptions, dict]:
    """(Options, JobOptions, the rest: see :data:`_SOURCE_KEYS`) from the API's ``opts``."""
    if isinstance(opts, Options) or opts is None:
        return as_options(opts), JobOptions(), {}
    values = dict(opts)
    names = {f.name for f in fields(JobOptions)}
    job_values = {k: values.pop(k) for k in list(values) if k in names}
    rest = {k: values.pop(k) for k in _SOURCE_KEYS if k in values}
    if "task" in rest and "input" in values:
        rest["input"] = values.pop("input")
    return as_options(values), JobOptions(**job_values), rest


def _node_args(nodes) -> List[str]:
    if not nodes:
        return []
    if isinstance(nodes, str):
        return [nodes]
    return [node.label if isinstance(node, Target) else node for node in nodes]


def _paths(value) -> List[str]:
    """One path or a list of them, as a list."""
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _source_parts(rest: dict) -> dict:
    """JobSource's keywords for blocks (``input``, ``task``, ``blocksize``) and set-up
    (``init_files``, ``init_script``) from the API's ``opts``."""
    parts = {key: rest[key] for key in ("on_each_node", "notify") if key in rest}
    if "task" in rest or "input" in rest:
        size = rest.get("blocksize")
        parts["blocks"] = BlockInput(_paths(rest.get("input")),
                                     size=1 if size is None else positive_int("blocksize", size))
        parts["task"] = rest.get("task")
    if rest.get("init_files") or rest.get("init_script"):
        parts["setup"] = NodeSetup(_paths(rest.get("init_files")), rest.get("init_script"))
    return parts


def jobs(nodes, jobs=(), opts=None) -> Dict[int, Record]:
    """Run ``jobs`` (commands) over the slots of ``nodes``; ``{job_id: record}``.

    ``nodes`` is a pattern or a list of them (``"node[1-4]*2"``: 2 slots
    each); ``jobs`` a list of commands (ids 1, 2, 3... in that order).
    ``opts`` is an :class:`Options`, or a dict of Options and
    :class:`JobOptions` keywords plus ``on_each_node`` (a command run once on
    every node), ``notify`` (called with each line for the user: a node
    dropped...), ``machines`` (kssh machines files, as ``--machines``; with
    them ``nodes`` may be empty), ``init_files`` and ``init_script`` (node
    set-up), and blocks: ``input`` (a file or a list, as ``--input``) with
    ``task`` (the command each block is fed to, instead of ``jobs``) and
    ``blocksize``. Each record has ``command``, ``node``, ``exitcode``,
    ``output``, ``errors``, ``started``, ``stopped``, ``attempts``; a job no
    node could run gets an ssh-error record saying so. Bad input raises
    TargetError/OptionError before anything runs; a signal ends the call as
    with :func:`classh.run` (KeyboardInterrupt for SIGINT).
    """
    options, job_options, rest = _split_opts(opts)
    specs, notices = node_pool(_node_args(nodes), (), _paths(rest.get("machines")),
                               expand=options.expand, max_hosts=options.max_hosts)
    for notice in notices:
        rest.get("notify", lambda line: None)(notice)
    commands, _ = read_jobs([jobs] if isinstance(jobs, str) else list(jobs or ()))
    source = JobSource(specs, commands, options, job_options, **_source_parts(rest))
    collector = _Collector()
    sinks = assemble(options, views=lambda skip: [collector])
    summary = Run(source, options, sinks.observers, keep=sinks.keep, fanout=source.fanout()).run()
    if summary.interrupted_by is not None:
        _reraise(summary.interrupted_by)
    return _results(source, collector.records)


def _results(source: JobSource, records: Dict[str, Record]) -> Dict[int, Record]:
    """Every job's record by id; a job that never got one is recorded as undone."""
    results = {}
    for job in source.jobs.values():
        record = records.get("job-%d" % job.id)
        if record is None:
            record = Record(host="job-%d" % job.id, ssh_error=True, error="no node left to run it",
                            job=job.id, command=job.command, attempts=job.attempts)
        results[job.id] = record
    return results
