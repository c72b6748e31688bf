"""What job mode shows and saves: job output, the status line, the joblog, active nodes.

Every class here is an :class:`~classh.observers.Observer` of a job run. They
see each job's final record in ``finished``; an attempt that the scheduler
runs again arrives as ``retried`` and is not a result (its output is dropped).
Output is written to streams handed in by the caller; nothing here picks
``sys.stdout``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from typing import Callable, Dict, List, Optional

from .display import LinesDisplay, SafeStream, StatusLine, StreamObserver
from .remote import cut
from .observers import Observer, SinkError
from .results import (OK, SSH_ERROR, SSH_ERROR_EXIT, STDOUT_PATHS, NewFile, Record,
                      ResultsError, Tally, check_plain_file, describe_exit, json_line_pieces,
                      some_names, write_new)
from .spool import Spill, Spool

__all__ = ["JobOutput", "JobStatusLine", "JobLog", "ActiveNodes", "job_summary_line",
           "JOB_FORMATS", "JOBLOG_HEADER", "joblog_row", "job_plan"]

#: Job mode's --format values: None is the default (each job's output, whole).
JOB_FORMATS = ("lines", "json")

JOBLOG_HEADER = b"Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"


def job_label(record: Record) -> str:
    """``job-17`` (the record's task key)."""
    return record.host


def job_where(record: Record, default: str = "") -> str:
    """Where the job ran: ``node``, or ``node:gpuI`` with ``--gpus``; ``default`` if nowhere."""
    if not record.node:
        return default
    return record.node if record.gpu is None else "%s:gpu%d" % (record.node, record.gpu)


class JobOutput(StreamObserver):
    """Each job's output, written whole when the job ends (never mixed mid-line with another's).

    ``fmt`` None: the job's stdout to ``out`` and its stderr to ``err``, as
    they were (an unterminated last line gets a newline), and one line on
    ``err`` for a job that did not succeed. ``"lines"``: every line prefixed
    ``job-ID node: `` (stdout lines to ``out``, stderr lines to ``err``).
    ``"json"``: one JSON object per job on ``out`` (see ``record_to_dict``),
    with the whole output. ``exact`` (blocks): stdout as it was, even an
    unterminated last line (so ``-k`` gives what one local run of the task would).

    Output is collected here as it arrives (so the records need carry none),
    in spools (:class:`~classh.spool.Spool`): in memory up to a budget shared by
    every job, in a temporary file past it, and written back in pieces (``json``
    too, encoded a piece at a time), so a job printing GBs is never whole in
    memory. A retried attempt's output is dropped. ``"lines"`` without
    ``keep_order`` is live: each line is written as it arrives (prefixed with
    where the attempt runs, ``where(task)``; lines of an attempt that is
    retried were shown already). With ``keep_order`` jobs are written in
    job order: a finished job waits until every job before it was written,
    or is known never to come (``skipped(id)``: done before, ``--resume``);
    ``close`` writes what still waits (jobs left undone come no more).
    """

    def __init__(self, out: SafeStream, err: SafeStream, fmt: Optional[str] = None,
                 keep_order: bool = False, skipped: Callable[[int], bool] = lambda job: False,
                 exact: bool = False, where: Optional[Callable[[object], str]] = None,
                 spill: Optional[Spill] = None):
        super().__init__(out, err)
        self.exact = exact
        self.out, self.err = out, err
        self.fmt = fmt
        self.keep_order = keep_order
        self.skipped = skipped
        self.spill = spill or Spill()
        self.buffers: Dict[str, Dict[int, Spool]] = {}
        self.held: Dict[int, tuple] = {}
        self.next_job = 1
        self.live = None
        if fmt == "lines" and not keep_order:
            self.live = _LiveLines(out, err, where or _node_of, self.spill)

    def started(self, task) -> None:
        """Live lines: learn where the attempt runs."""
        if self.live is not None:
            self.live.started(task)

    def output(self, task, fd: int, data: bytes) -> None:
        """Live lines: write the complete ones; else hold ``data`` until the job ends."""
        if self.live is not None:
            self.live.output(task, fd, data)
            return
        spools = self.buffers.get(task.key)
        if spools is None:
            spools = self.buffers[task.key] = {1: self.spill.spool(), 2: self.spill.spool()}
        spools[fd].write(data)

    def retried(self, task, record: Record) -> None:
        """This attempt is no result: forget its output (live lines: end its last line)."""
        if self.live is not None:
            self.live.flush(task)
            return
        _release(self.buffers.pop(task.key, {}))

    def finished(self, task, record: Record) -> None:
        """Write the job's output now, or hold it for ``keep_order``."""
        if self.live is not None:
            self.live.finished(task, record)
            self.err.write(self._failure_line(record))
            return
        spools = self.buffers.pop(task.key, None) or {1: self.spill.spool(),
                                                       2: self.spill.spool()}
        if not self.keep_order or record.job is None:
            self.write(record, spools[1], spools[2])
            return
        self.held[record.job] = (record, spools[1], spools[2])
        self._release()

    def _release(self) -> None:
        """Write held jobs while the next one in order is there (or never comes)."""
        while True:
            if self.next_job in self.held:
                self.write(*self.held.pop(self.next_job))
            elif not self.skipped(self.next_job):
                return
            self.next_job += 1

    def write(self, record: Record, stdout: Spool, stderr: Spool) -> None:
        """Write one job's output in the chosen format, a piece at a time; the spools are
        released."""
        try:
            self._write(record, stdout, stderr)
        finally:
            _release({1: stdout, 2: stderr})

    def _write(self, record: Record, stdout: Spool, stderr: Spool) -> None:
        if self.fmt == "json":
            whole = dataclasses.replace(record, stdout=b"", stderr=b"",
                                        stdout_size=stdout.size, stderr_size=stderr.size)
            for piece in json_line_pieces(whole, stdout.pieces, stderr.pieces):
                self.out.write(piece)
            return
        if self.fmt == "lines":
            prefix = ("%s %s: " % (job_label(record), job_where(record, "-"))).encode()
            _write_prefixed(self.out, stdout, prefix)
            _write_prefixed(self.err, stderr, prefix)
            self.err.write(self._failure_line(record))
            return
        _write_spool(self.out, stdout, newline=not self.exact)
        _write_spool(self.err, stderr, newline=True)
        self.err.write(self._failure_line(record))

    @staticmethod
    def _failure_line(record: Record) -> bytes:
        """``classh: job-3 on node2: exit 1: make test`` for a job that did not succeed."""
        if record.status == OK:
            return b""
        why = describe_exit(record)
        why = "exit " + why if why.isdigit() else why
        if record.error:
            why += " (%s)" % record.error
        return ("classh: %s on %s: %s: %s\n" % (job_label(record), job_where(record, "no node"),
                                                why, cut(record.command or ""))).encode(errors="replace")

    def close(self) -> None:
        """Write the jobs still held (in order), then hand the streams back."""
        try:
            for job in sorted(self.held):
                self.write(*self.held.pop(job))
        finally:
            for spools in self.buffers.values():
                _release(spools)
            self.buffers.clear()
            if self.live is not None:
                self.live.close()
            self.spill.close()
            super().close()


def _node_of(task) -> str:
    """Where a job's attempt runs, from its task's context ``(job, node label)``: ``-`` if
    unknown."""
    context = getattr(task, "context", None)
    return context[1] if isinstance(context, tuple) and len(context) > 1 else "-"


def _release(spools: Dict[int, Spool]) -> None:
    for spool in spools.values():
        spool.release()


def _write_spool(stream: SafeStream, spool: Spool, newline: bool) -> None:
    """The spool's bytes to ``stream``; with ``newline`` an unterminated last line gets one."""
    for piece in spool.pieces():
        stream.write(piece)
    stream.write(b"\n" if newline and spool.size and spool.last != b"\n" else b"")


def _write_prefixed(stream: SafeStream, spool: Spool, prefix: bytes) -> None:
    """Every line of the spool with ``prefix`` before it (an unterminated last line gets a
    newline), a piece at a time."""
    at_start = True
    for piece in spool.pieces():
        if at_start:
            stream.write(prefix)
        at_start = piece.endswith(b"\n")
        body = piece[:-1] if at_start else piece
        stream.write(body.replace(b"\n", b"\n" + prefix) + (b"\n" if at_start else b""))
    stream.write(b"" if at_start else b"\n")


class _LiveLines(LinesDisplay):
    """``--format lines`` for jobs: ``job-ID node: line`` written as each line arrives."""

    def __init__(self, out: SafeStream, err: SafeStream, where: Callable[[object], str],
                 spill: Spill):
        super().__init__(out, err, spill)
        self.where = where
        self.prefixes: Dict[str, bytes] = {}

    def started(self, task) -> None:
        """The attempt's prefix: ``job-ID node: `` (``node:gpuI`` with ``--gpus``)."""
        self.prefixes[task.key] = ("%s %s: " % (task.key, self.where(task))).encode(
            errors="surrogateescape")

    def prefix(self, task) -> bytes:
        """``job-ID node: `` (``job-ID -: `` for an attempt never seen starting)."""
        return self.prefixes.get(task.key) or ("%s -: " % task.key).encode()

    def finished(self, task, record: Record) -> None:
        """End the job's last lines; its prefix is forgotten."""
        try:
            self.flush(task)
        finally:
            self.prefixes.pop(task.key, None)


class JobStatusLine(StatusLine):
    """``110 of 556 jobs complete, 176 of 176 nodes running jobs, 2 failed, 5 retried,
    1 node dropped, 3.2/s, ETA 2m10s`` on a terminal, from the scheduler's own counts.

    ``source`` is the :class:`~classh.jobs.JobSource` (``jobs``: every job known and not
    skipped, ``node_states()``, ``counts``, ``pending()``). Nodes that are neither dropped
    nor retired (``--max-node-uses``) count as nodes.
    """

    def __init__(self, err: SafeStream, source, enabled: bool):
        super().__init__(err, None, enabled)
        self.source = source

    def text(self) -> str:
        """The status text (without terminal control)."""
        done = self.tally.total
        failed = done - self.tally.counts[OK]
        states = self.source.node_states()
        alive = [s for s in states if s[1] not in ("dropped", "retired") or s[3] > 0]
        busy = sum(1 for s in alive if s[3] > 0)
        streaming = self.source.pending() is None
        total = len(self.source.jobs)
        counts = getattr(self.source, "counts", {}) or {}
        text = status_text(done, None if streaming else total, busy, len(alive), failed,
                           counts.get("retried", 0), counts.get("dropped", 0),
                           time.monotonic() - self.started_at)
        gpus = self.source.gpu_states() if hasattr(self.source, "gpu_states") else []
        if gpus:
            text += " " + gpu_status(gpus)
        return ("PAUSED (SIGUSR1 to resume): " + text) if getattr(self.source, "paused", False) \
            else text


def gpu_status(gpus: List[tuple]) -> str:
    """``GPUs: 3 of 4 running jobs: n1:gpu0, n1:gpu1, n2:gpu0; n2:gpu1 busy: foreign process 7.``
    from ``(node:gpuI, running, usable, why)`` tuples."""
    running = [name for name, busy, usable, why in gpus if busy]
    blocked = ["%s %s" % (name, why) for name, busy, usable, why in gpus if why]
    text = "GPUs: %d of %d running jobs" % (len(running), len(gpus))
    if running:
        text += ": " + some_names(running, 6)
    if blocked:
        text += "; " + some_names(blocked, 6)
    return text + "."


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    if seconds >= 60:
        return "%dm%02ds" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


def job_plan(run_id: str, jobs: int, streamed: bool, nodes: int, slots: int,
             done_before: Optional[int] = None, results: Optional[str] = None,
             followed: bool = False, gpus=None, blocks=None) -> List[str]:
    """The plan of a job run, shown on stderr before it starts (3 lines, ``-q`` or not)::

        run 1a2b3c4d
        jobs: 120 to run + streamed; 14 done before in r/ (skipped)
        (``jobs: streamed (read as they arrive)`` while none is known yet)
        nodes: 3 with 10 slots asked for; the node files are followed

    ``streamed``: a job file is still open (more jobs may come); ``done_before``
    (``--resume``): the jobs skipped because they succeeded in ``results``;
    ``gpus`` (a :class:`~classh.gpus.GpuRule`): slots are GPUs, found when
    each node is probed (one line per node follows then); ``blocks`` (a
    :class:`~classh.blocks.BlockInput`): the jobs are its blocks.
    """
    work = ("jobs: %d to run" % jobs + (" + streamed" if streamed else "") if jobs or not streamed
            else "jobs: streamed (read as they arrive)")
    if blocks is not None:
        paths = blocks.paths
        work = ("blocks: %d line%s each from %s" % (blocks.size, "" if blocks.size == 1 else "s",
                                                     paths[0]) if len(paths) == 1
                else "blocks: %d files, one block each" % len(paths))
    if done_before is not None and blocks is not None:
        work += "; those done before in %s are skipped" % results
    elif done_before is not None:
        work += "; %d done before in %s (skipped)" % (done_before, results)
    if gpus is None:
        pool = "nodes: %d with %d slot%s asked for" % (nodes, slots, "" if slots == 1 else "s")
    else:
        pool = "nodes: %d; slots: their GPUs with %s, %d job%s each%s" % (
            nodes, "%d MiB free" % gpus.min_mib if gpus.min_mib else "any memory free",
            gpus.jobs_per_gpu, "" if gpus.jobs_per_gpu == 1 else "s",
            ", busy ones too" if gpus.share else ", busy ones skipped")
        pool += " (nvidia-smi, as each node is probed)"
    if followed:
        pool += "; the node files are followed"
    return ["run %s" % run_id, work, pool]


def status_text(done: int, total: Optional[int], busy: int, nodes: int, failed: int,
                retried: int, dropped: int, elapsed: float) -> str:
    """The job status line from its figures (``total`` None: more jobs may still arrive)."""
    rate = done / max(1e-6, elapsed)
    parts = ["%d of %s jobs complete" % (done, "?" if total is None else total),
             "%d of %d nodes running jobs" % (busy, nodes)]
    if failed:
        parts.append("%d failed" % failed)
    if retried:
        parts.append("%d retried" % retried)
    if dropped:
        parts.append("%d node%s dropped" % (dropped, "" if dropped == 1 else "s"))
    parts.append("%.1f/s" % rate)
    eta = "?" if total is None or not rate else _duration(max(0, total - done) / rate)
    parts.append("ETA " + eta)
    return ", ".join(parts) + "."


def joblog_row(record: Record) -> bytes:
    """One line of GNU parallel's joblog for a job's final record.

    Exitval is the exit code (255 for an ssh error, -1 when the job was
    killed or timed out, as parallel writes it); Signal the signal number
    (SIGTERM, the one classh sends, for a job timed out or killed without
    one known), else 0; Receive the bytes of stdout; Send those of the
    block's input (0 for a job: no input). Tabs and newlines in the command
    are written as spaces (one row a line).
    """
    if record.status == SSH_ERROR:
        exitval = SSH_ERROR_EXIT
    elif record.exitcode is None or record.timed_out or record.interrupted:
        exitval = -1
    else:
        exitval = record.exitcode
    command = (record.command or "").replace("\t", " ").replace("\n", " ")
    killed = signal.SIGTERM if record.timed_out or record.interrupted else 0
    return ("%d\t%s\t%.3f\t%.3f\t%d\t%d\t%d\t%d\t%s\n" % (
        record.job or 0, job_where(record), record.started, record.duration,
        record.extra.get("sent", 0), record.stdout_size, exitval, record.signal or killed,
        command)).encode(errors="surrogateescape")


class JobLog(NewFile):
    """``--joblog FILE``: GNU parallel's TAB-separated joblog, one row per job's final record
    (a new file, never written through a symlink; ``-``: stdout; ``append`` (``--resume``):
    rows after those there, the header only in an empty file; see
    :class:`~classh.results.NewFile`)."""

    what = "joblog"

    def __init__(self, path: str, overwrite: bool = False, append: bool = False, stdout=None):
        super().__init__(path, overwrite, append, stdout)
        if self.empty:
            self.append(JOBLOG_HEADER)

    def finished(self, task, record: Record) -> None:
        """Append the job's row."""
        self.append(joblog_row(record))


class ActiveNodes(Observer):
    """``--active-nodes FILE``: one line per busy slot, ``node: job-ID command``, rewritten
    atomically (a new file beside it, renamed over it) after every change.

    ``active()`` gives ``(node, job id, command)`` for every busy slot (the
    scheduler's ``JobSource.active``). Changes within ``DELAY`` seconds (a
    burst of short jobs) make one rewrite, at most ``DELAY`` after the first
    (without a loop: at once). The file is made with ``O_EXCL`` and
    ``O_NOFOLLOW`` and renamed into place, so no symlink is ever written
    through; at the end it lists no slot. With ``run_id`` the first line is
    ``# run RUN-ID`` (what ``classh --kill RUN-ID`` takes), always there.
    """

    DELAY = 0.05

    def __init__(self, path: str, active: Callable[[], List[tuple]], run_id: Optional[str] = None):
        self.path = path
        self.active = active
        self._head = b"" if run_id is None else ("# run %s\n" % run_id).encode()
        self.loop = None
        self._timer = None
        directory = os.path.dirname(os.path.abspath(path))
        if path in STDOUT_PATHS:
            raise ResultsError("--active-nodes %r: it is a file rewritten whole, not stdout" % path)
        check_plain_file(path, "--active-nodes", "")  # never renamed over a link or a device
        if not os.path.isdir(directory):
            raise ResultsError("--active-nodes %r: no directory %r" % (path, directory))
        self._temp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
        self._last: Optional[bytes] = None
        try:
            self.rewrite()
        except SinkError as exc:
            raise ResultsError("cannot write --active-nodes %r: %s" % (path, exc.error)) from None

    def text(self) -> bytes:
        """The file's content now."""
        return self._head + b"".join(("%s: job-%d %s\n" % (
            node, job, command.replace("\n", " "))).encode(errors="surrogateescape")
            for node, job, command in self.active())

    def rewrite(self) -> None:
        """Replace the file with the busy slots now (unless nothing changed)."""
        data = self.text()
        if data == self._last:
            return
        with SinkError.wrap(self.path):
            write_new(self._temp, data, replace=True)
            os.rename(self._temp, self.path)
        self._last = data

    def attach(self, loop) -> None:
        """Rewrite through ``loop``'s timers (bursts of changes coalesce)."""
        self.loop = loop

    def changed(self) -> None:
        """A slot was taken or freed: rewrite now, or soon when a loop is there."""
        if self.loop is None:
            self.rewrite()
        elif self._timer is None:
            self._timer = self.loop.call_later(self.DELAY, self._due)

    def _due(self) -> None:
        self._timer = None
        self.rewrite()

    def started(self, task) -> None:
        """A job started on a slot."""
        self.changed()

    def retried(self, task, record: Record) -> None:
        """A slot was freed (the job goes back to the queue)."""
        self.changed()

    def finished(self, task, record: Record) -> None:
        """A slot was freed."""
        self.changed()

    def close(self) -> None:
        """The last rewrite (no slot busy any more); the temporary file never stays."""
        if self._timer is not None:
            self.loop.cancel(self._timer)
            self._timer = None
        try:
            self.rewrite()
        except SinkError:
            pass
        with contextlib.suppress(OSError):
            os.unlink(self._temp)


def job_summary_line(tally: Tally, elapsed: float, interrupted: bool = False, retried: int = 0,
                     dropped: int = 0, undone: int = 0, skipped: int = 0) -> str:
    """``classh: 40 jobs in 3.1 s: 38 ok, 2 failed; 5 retried, 1 node dropped, 3 undone``."""
    from .display import summary_line

    line = summary_line(tally, elapsed, interrupted, noun="job")
    extra = []
    if retried:
        extra.append("%d retried" % retried)
    if dropped:
        extra.append("%d node%s dropped" % (dropped, "" if dropped == 1 else "s"))
    if undone:
        extra.append("%d undone" % undone)
    if skipped:
        extra.append("%d skipped: done before" % skipped)
    return line + ("; " + ", ".join(extra) if extra else "")
