"""GPU slots: what ``nvidia-smi`` says of a node's GPUs, and which of them may take jobs.

Job mode with ``--gpus`` probes each node once (through the probe that opens
its connection) with :func:`probe_command`: one POSIX ``sh`` line that runs
``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` and
``--query-compute-apps=...`` (the documented machine-readable formats, not
the ASCII table) and marks each compute process that carries this run's
``CLASSH_TAG`` as *ours* (read from ``/proc/PID/environ``: a process of
another user, or of another run, is foreign). :func:`parse_probe` turns the
output into a :class:`GpuReport`; :func:`assess` decides, GPU by GPU, how
many jobs it may run (:class:`GpuRule`) and says why a GPU gets none.

A GPU gets no slot when MIG is enabled on it (its MIG devices, not the GPU,
are what CUDA sees), when a foreign process uses it (unless ``share``), when
less than ``min_mib`` MiB are free, or when a value it needs reads
``[N/A]``/``[Not Supported]``. With ``min_mib`` set, a GPU takes
``min(jobs_per_gpu, free // min_mib)`` jobs (the task deliverer's rule), so
jobs asking that much memory each never overfill it. Nothing here prints or
runs anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .remote import quote_word

__all__ = ["Gpu", "GpuReport", "GpuRule", "probe_command", "parse_probe", "assess",
           "QUERY_GPU", "QUERY_APPS", "cuda_env"]

#: The --query-gpu fields asked for, in this order (the name last: it is free text).
QUERY_GPU = "index,uuid,memory.total,memory.free,mig.mode.current,name"
#: The --query-compute-apps fields asked for.
QUERY_APPS = "gpu_uuid,pid,used_memory"
_FORMAT = "--format=csv,noheader,nounits"
_APPS_MARK = "classh:compute-apps"
_MISSING = 127
#: What nvidia-smi prints for a value it does not have.
_NOT_AVAILABLE = ("[N/A]", "[Not Supported]", "N/A", "[Unknown Error]", "[Insufficient Permissions]")


@dataclass
class Gpu:
    """One GPU as ``nvidia-smi`` lists it (MiB figures None when it says N/A)."""

    index: int
    uuid: Optional[str]
    total_mib: Optional[int]
    free_mib: Optional[int]
    mig: bool
    name: str
    #: pids of foreign compute processes on it (not this run's)
    foreign: List[str] = field(default_factory=list)


@dataclass
class GpuReport:
    """A node's GPUs, or ``error``: why the node has none to offer."""

    gpus: List[Gpu] = field(default_factory=list)
    error: Optional[str] = None


@dataclass(frozen=True)
class GpuRule:
    """Which GPUs take jobs: ``min_mib`` free at least, ``jobs_per_gpu`` each, ``share``:
    foreign processes do not make a GPU busy."""

    min_mib: int = 0
    jobs_per_gpu: int = 1
    share: bool = False


def probe_command(run_id: str) -> str:
    """The remote line that reports the GPUs and their compute processes (any login shell).

    Exit 127 with a line saying so when nvidia-smi is not on the PATH;
    nvidia-smi's own exit status and words when it fails.
    """
    if not (run_id.isascii() and run_id.isalnum()):
        raise ValueError("bad run id %r" % run_id)
    script = "; ".join([
        'command -v nvidia-smi >/dev/null 2>&1 || { echo "nvidia-smi: command not found"; exit %d; }'
        % _MISSING,
        "nvidia-smi --query-gpu=%s %s 2>&1 || exit" % (QUERY_GPU, _FORMAT),
        "echo %s" % _APPS_MARK,
        "classh_a=$(nvidia-smi --query-compute-apps=%s %s 2>&1) || "
        '{ classh_r=$?; printf "%%s\\n" "$classh_a"; exit $classh_r; }' % (QUERY_APPS, _FORMAT),
        # each process: uuid, pid, memory, 1 if it carries this run's tag
        'printf "%%s\\n" "$classh_a" | while IFS=", " read -r classh_u classh_p classh_m; do '
        'classh_o=0; case "$classh_p" in ""|*[!0-9]*) ;; *) tr "\\000" "\\n" '
        '<"/proc/$classh_p/environ" 2>/dev/null | grep -q "^CLASSH_TAG=%s\\." && classh_o=1;; esac; '
        'echo "$classh_u, $classh_p, $classh_m, $classh_o"; done' % run_id,
    ])
    return "sh -c " + quote_word(script)


def cuda_env(index: int) -> Dict[str, str]:
    """The environment that pins a job to GPU ``index`` (CUDA numbering = nvidia-smi's)."""
    return {"CUDA_VISIBLE_DEVICES": str(index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def parse_probe(exitcode: Optional[int], output: bytes) -> GpuReport:
    """The :class:`GpuReport` of a probe's exit status and output."""
    text = output.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if exitcode != 0:
        last = lines[-1] if lines else "no output"
        if exitcode == _MISSING:
            return GpuReport(error="nvidia-smi not found on the node's PATH")
        return GpuReport(error="nvidia-smi failed (exit %s): %s" % (exitcode, last))
    if _APPS_MARK not in lines:
        return GpuReport(error="unexpected nvidia-smi output: %s" % (lines[-1] if lines else "none"))
    cut = lines.index(_APPS_MARK)
    gpus, bad = [], []
    for line in lines[:cut]:
        gpu = _gpu_line(line)
        (gpus if gpu is not None else bad).append(gpu if gpu is not None else line)
    if not gpus:
        return GpuReport(error="nvidia-smi lists no GPU" + (": " + bad[0] if bad else ""))
    by_uuid = {gpu.uuid: gpu for gpu in gpus if gpu.uuid}
    for line in lines[cut + 1:]:
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 4 or parts[3] == "1":
            continue  # ours, or "No running processes found"
        gpu = by_uuid.get(parts[0])
        if gpu is not None:
            gpu.foreign.append(parts[1])
        elif parts[0] in _NOT_AVAILABLE:
            for gpu in gpus:  # a process on an unknown GPU: any of them may be the one
                gpu.foreign.append(parts[1])
    return GpuReport(gpus=gpus)


#: The highest GPU index believed (a line with a higher one is not a GPU).
MAX_GPU_INDEX = 4095


def _gpu_line(line: str) -> Optional[Gpu]:
    parts = [part.strip() for part in line.split(",", 5)]
    if len(parts) != 6 or not (parts[0].isascii() and parts[0].isdigit()) \
            or int(parts[0]) > MAX_GPU_INDEX:
        return None
    index, uuid, total, free, mig, name = parts
    return Gpu(index=int(index), uuid=None if uuid in _NOT_AVAILABLE else uuid,
               total_mib=_mib(total), free_mib=_mib(free), mig=mig.lower() == "enabled", name=name)


def _mib(value: str) -> Optional[int]:
    try:
        return int(float(value))
    except ValueError:
        return None


def assess(gpu: Gpu, rule: GpuRule) -> Tuple[int, Optional[str], bool]:
    """(jobs ``gpu`` may run now, why none, whether that may change while the run goes on)."""
    if gpu.mig:
        return 0, "MIG enabled (schedule its MIG devices yourself)", False
    if gpu.foreign and not rule.share:
        return 0, "busy: foreign process %s" % ", ".join(gpu.foreign[:3]), True
    if gpu.uuid is None and not rule.share:
        return 0, "uuid [N/A]: its processes cannot be seen", False
    if rule.min_mib:
        if gpu.free_mib is None:
            return 0, "free memory [N/A]", False
        if gpu.free_mib < 0:
            return 0, "free memory %d MiB: not a real figure" % gpu.free_mib, False
        if gpu.total_mib is not None and gpu.total_mib < rule.min_mib:
            return 0, "%d MiB in all, --gpu-mem %d" % (gpu.total_mib, rule.min_mib), False
        if gpu.free_mib < rule.min_mib:
            return 0, "%d MiB free, --gpu-mem %d" % (gpu.free_mib, rule.min_mib), True
        return min(rule.jobs_per_gpu, gpu.free_mib // rule.min_mib), None, True
    return rule.jobs_per_gpu, None, True
