"""The stall watch's policy (job mode): when a running job counts as stalled.

Pure: no process, loop or job is touched here, and every time comes from
``clock`` (``time.monotonic`` unless a test gives its own). Job mode
(:class:`classh.jobs.JobSource`) takes ``now()`` when a job is handed out,
``ran()`` when its end is seen, calls ``look()`` from a timer set
``schedule()`` seconds ahead, and kills what ``look()`` names (job lists,
given a factor) or starts a backup copy of it on another node (blocks, by
default: the first copy to finish wins).

* The limit: ``factor`` times the moving average of completed durations
  (weight :data:`WEIGHT` on the newest, kssh's), ``minimum`` seconds at
  least; none before :data:`SAMPLES` completions.
* Durations and running times are measured alike (:meth:`StallWatch.ran`):
  from a job's hand-out to the moment its end is seen, less the time the
  loop was late while it ran. A loop short of CPU (busy loops beside it)
  or busy starting hundreds of jobs reads ended jobs late; each look
  measures how late it came, and that time (the part of it after the job's
  hand-out) counts against no job.
* A job is stalled when it is over the limit at two looks in a row (the
  loop has read the ends waiting in between, so a job that ended is never
  taken for a stalled one) and acting on it helps: a job waits that could
  use its slot (killing it would free nothing for anyone otherwise), or,
  for a block, a slot is free on another node for its backup copy.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Set, Tuple

__all__ = ["StallWatch", "SAMPLES", "WEIGHT"]

#: Completed jobs before the moving average is trusted.
SAMPLES = 3
#: The weight of the newest duration in the moving average (kssh's).
WEIGHT = 0.75
#: Seconds between two looks while the limit is unknown; a tenth of the limit, within
#: these bounds, once it is known.
FIRST_LOOKS, FASTEST_LOOKS, SLOWEST_LOOKS = 0.5, 0.05, 1.0


class StallWatch:
    """The moving average, the limit and the decision; see the module's documentation."""

    def __init__(self, factor: Optional[float], minimum: float,
                 clock: Callable[[], float] = time.monotonic):
        self.factor, self.minimum, self.clock = factor, minimum, clock
        self.average = 0.0
        self.samples = 0
        self._due: Optional[float] = None  # when the next look is due (on ``clock``)
        self._over: Set[Hashable] = set()  # the jobs over the limit at the last look
        self._credit: Dict[Hashable, float] = {}  # seconds the loop was late, per running job

    def now(self) -> float:
        """The time to note when a job is handed out."""
        return self.clock()

    def ran(self, key: Hashable, started: float) -> float:
        """Seconds job ``key``, handed out at ``started``, has run as the watch counts them
        (the time the loop was late while it ran left out)."""
        return self.clock() - started - self._credit.get(key, 0.0)

    def learn(self, duration: float) -> None:
        """A job completed in ``duration`` s (measured on :meth:`now`): the average moves."""
        self.samples += 1
        if self.samples == 1:
            self.average = duration
        else:
            self.average = WEIGHT * duration + (1 - WEIGHT) * self.average

    def limit(self) -> Optional[float]:
        """Seconds after which a running job counts as stalled (None: not known yet)."""
        if not self.factor or self.samples < SAMPLES:
            return None
        return max(self.minimum, self.factor * self.average)

    def schedule(self) -> float:
        """Seconds to the next look (the caller sets its timer so); how late it comes is
        measured then."""
        limit = self.limit()
        interval = FIRST_LOOKS if limit is None else min(SLOWEST_LOOKS,
                                                         max(FASTEST_LOOKS, limit / 10))
        self._due = self.clock() + interval
        return interval

    def look(self, running: Iterable[Tuple[Hashable, float, bool]]) -> List[Tuple[Hashable, float]]:
        """One look at the ``running`` jobs, each (key, when it was handed out on
        :meth:`now`, whether a job waits that could use its slot): (key, seconds run)
        of each job to kill now. A key names one attempt (a job run again is a new one)."""
        now = self.clock()
        late = 0.0 if self._due is None else max(0.0, now - self._due)
        self._due = None
        limit = self.limit()
        credit: Dict[Hashable, float] = {}
        over: Set[Hashable] = set()
        stalled = []
        for key, started, waiting in running:
            credit[key] = self._credit.get(key, 0.0) + min(late, max(0.0, now - started))
            ran = now - started - credit[key]
            if limit is not None and ran > limit:
                over.add(key)
                if waiting and key in self._over:
                    stalled.append((key, ran))
        self._credit, self._over = credit, over
        return stalled
