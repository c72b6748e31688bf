"""``classh --kill RUN-ID[.JOB-ID]``: end a job run's processes on a host, found by their tag.

Every job of a run runs with ``CLASSH_TAG=<run-id>.<job-id>`` in its
environment (:func:`classh.remote.remote_command`). :func:`kill_command`
builds the one line sent to each host (as it is, without the watchdog: a
killed ``classh --kill`` leaves its short script to finish). It runs a POSIX
``sh`` script that

* lists the candidates with one ``grep -l -F`` over ``/proc/*/environ`` (only
  the login account's own processes can be read), then checks each one
  exactly: its environment, NUL-separated, turned into one entry a line
  (a newline inside a value becomes ``\\001``, so no value can fake an
  entry), must hold the line ``CLASSH_TAG=RUN.JOB`` (``-x``: the whole line),
  or for a whole run a line ``CLASSH_TAG=RUN.`` followed by a job number.
  ``xRUN.1``, ``RUN2.1`` or a command line mentioning the tag never match.
* ends the process group of every match (the job's shell, its watchdog and
  its children are in it; sshd gives each session a group of its own) with
  SIGTERM, then SIGKILL for the groups still there once every matching
  process has ended (a zombie counts as ended) or after :data:`GRACE`
  seconds (looked at every 0.1 s: processes that end at once cost no
  wait). It never signals its own group, nor groups 0 and 1.
* prints ``N processes``: how many tagged processes it found.

Its exit status is 0 whatever it found; 3 on a host without ``/proc``.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

from .options import OptionError
from .remote import quote_word

__all__ = ["GRACE", "NAME", "parse_kill_id", "kill_command"]

#: Seconds between the SIGTERM and the SIGKILL sent to each matching process group.
GRACE = 1
#: ``$0`` of the kill script on the target (what ``ps`` shows).
NAME = "classh-kill"

_RUN_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
_JOB_ID = re.compile(r"[0-9]{1,18}\Z")

# $1: the fixed text every candidate's environment holds; $2: the regular
# expression (grep -x) one of its entries must match exactly.
_SCRIPT = "; ".join([
    'test -r /proc/self/environ || { echo "%s: no /proc/PID/environ on this host" >&2; exit 3; }'
    % NAME,
    # The state and process group of pid $1, into $st and $g (read and set: no subshell,
    # no fork).
    'pgid() { g=; IFS= read -r s < /proc/$1/stat || return 1; s=${s##*\\) }; set -- $s; st=$1; '
    'g=$3; }',
    'pgid $$; mine=$g; n=0; groups=" "; pids=',
    'for f in $(grep -l -F -e "$1" /proc/[0-9]*/environ 2>/dev/null); do '
    'p=${f#/proc/}; p=${p%/environ}; '
    'test "$p" = $$ && continue; '
    "tr '\\012\\000' '\\001\\012' 2>/dev/null < $f | grep -q -x -e \"$2\" || continue; "
    'pgid $p 2>/dev/null || continue; '
    'test "$g" -gt 1 && test "$g" != "$mine" || continue; '
    'n=$((n + 1)); pids="$pids $p"; '
    'case $groups in *" $g "*) ;; *) groups="$groups$g ";; esac; '
    'done',
    'for g in $groups; do kill -TERM -$g 2>/dev/null; done',
    # Wait while a tagged process still runs (a zombie does not: where init reaps late,
    # kill -0 would count it), looking every 0.1 s for GRACE s (where sleep takes no
    # fraction: GRACE s once); then SIGKILL the groups still there.
    'i=0; while :; do left=; for p in $pids; do '
    'pgid $p 2>/dev/null && test "$st" != Z && { left=$p; break; }; done; '
    'test -z "$left" && break; test $i -ge %d && break; i=$((i + 1)); '
    'sleep 0.1 2>/dev/null || { sleep %d; i=%d; }; done' % (GRACE * 10, GRACE, GRACE * 10),
    'for g in $groups; do kill -0 -$g 2>/dev/null && kill -KILL -$g 2>/dev/null; done',
    'test $n = 1 && echo "1 process" || echo "$n processes"',
])


def parse_kill_id(text: str) -> Tuple[str, Optional[str]]:
    """``RUN-ID`` or ``RUN-ID.JOB-ID`` -> (run id, job id or None).

    A run id is 1-32 letters and digits (as classh makes them), a job id a
    job number; anything else is an OptionError naming the text.
    """
    run, dot, job = text.partition(".")
    if not _RUN_ID.match(run) or (dot and not _JOB_ID.match(job)):
        raise OptionError("bad --kill %r: write RUN-ID or RUN-ID.JOB-ID (the run id in letters "
                          "and digits, as classh printed it; the job id a job number)" % (text,))
    return run, job if dot else None


def kill_command(text: str) -> str:
    """The line to send a host (as it is, without the watchdog) to kill the processes of
    ``text`` (``RUN-ID`` or ``RUN-ID.JOB-ID``, checked by :func:`parse_kill_id`); it prints
    ``N processes``. Any login shell (sh, bash, csh, fish...) runs it: it execs ``sh``."""
    run, job = parse_kill_id(text)
    if job is None:
        fixed, line = "CLASSH_TAG=%s." % run, "CLASSH_TAG=%s\\.[0-9][0-9]*" % run
    else:
        fixed, line = "CLASSH_TAG=%s.%s" % (run, job), "CLASSH_TAG=%s\\.%s" % (run, job)
    return "exec sh -c %s %s %s %s" % (quote_word(_SCRIPT), NAME, quote_word(fixed),
                                       quote_word(line))
