"""Job mode's ``--resume``: what a results directory says was done, under one rule.

A job's identity is its number (its position in the input, as in the first
run) together with its text (a block's: ``block-N:HASH``; a job pinned by
``--on-each-node``: also its node). A job is done when the last line of
``summary.jsonl`` for its number says it succeeded with that identity; then
it is skipped and its files are never replaced. Nothing else counts: a
``.ret`` written by a run killed before its summary line is not "done", so
that job runs again and its files are replaced. A number whose success was
another job (an edited line, a block whose bytes changed) is refused: the
run cannot both keep those results and put the new job's beside them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Set

from .remote import cut
from .results import OK, SUMMARY, ResultsError, command_from_dict

__all__ = ["JobsDone", "job_label", "shorten"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def job_label(job_id: int) -> str:
    """The name of a job's result files and records: ``job-N``."""
    return "job-%d" % job_id


def shorten(text: str) -> str:
    """``text`` on one line for a message, quoted, cut as :func:`classh.remote.cut` does."""
    return repr(cut(" ".join(text.split("\n"))))


@dataclass(frozen=True)
class _Last:
    """What the last summary line of a job number says."""

    identity: str
    node: Optional[str]
    ok: bool


def _summary_lines(directory: str) -> Iterator[dict]:
    """The job lines of ``directory``'s ``summary.jsonl`` as dicts, oldest first (none when
    there is no summary; a line cut short by a kill or a full disk is passed over). Never
    read through a symlink."""
    path = os.path.join(directory, SUMMARY)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ResultsError("cannot read %r: %s" % (path, exc.strerror)) from None
    with os.fdopen(fd, "rb") as lines:
        for line in lines:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("job"), int):
                yield data


class JobsDone:
    """The jobs a results directory holds as done, read once from its ``summary.jsonl``."""

    def __init__(self, directory: str):
        self.directory = directory
        self._last: Dict[int, _Last] = {}
        for data in _summary_lines(directory):
            identity = data.get("block") or command_from_dict(data)
            if isinstance(identity, str):
                self._last[data["job"]] = _Last(identity, data.get("node"),
                                                data.get("status") == OK)

    def labels(self) -> Set[str]:
        """The ``job-N`` names of the jobs done: their files are never replaced."""
        return {job_label(job) for job, last in self._last.items() if last.ok}

    def done(self, job_id: int, identity: str, pin: Optional[str] = None) -> bool:
        """True when job ``job_id`` with ``identity`` (pinned to node ``pin``) succeeded
        before; ResultsError when what succeeded under that number was another job."""
        last = self._last.get(job_id)
        if last is None or not last.ok:
            return False
        if last.identity != identity:
            raise ResultsError(
                "--resume: job %d in %r was %s (done), it is now %s: give another results"
                " directory, or --overwrite" % (job_id, self.directory, shorten(last.identity),
                                               shorten(identity)))
        if pin is not None and last.node != pin:
            raise ResultsError(
                "--resume: job %d in %r ran on %s (done), it is now for %s: give another"
                " results directory, or --overwrite" % (job_id, self.directory, last.node, pin))
        return True
