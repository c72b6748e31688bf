"""What runs on the target: the user's COMMAND inside a small POSIX ``sh`` watchdog.

sshd gives a command without a terminal no signal when the connection
drops: killing the local ssh leaves the remote command running. So classh
sends, instead of COMMAND itself, one line that the login shell runs::

    test -z "$status" || exec sh -c 'WATCHDOG; "$SHELL" -c "$1"' classh-watchdog 'COMMAND'; eval 'classh_c='\''COMMAND'\''; WATCHDOG; RUN'; classh_run

A POSIX login shell (sh, dash, bash, ksh: ``$status`` unset) skips the
first part and evaluates the watchdog itself, then COMMAND: no second
shell is started, and COMMAND runs in the login shell as with plain ssh
(bash ``eval``s it and exits; other shells run it as the body of a
function that ``eval`` defined, so that dash's messages carry no ``eval:``).
csh, tcsh, fish and zsh set ``$status``: they ``exec`` a POSIX ``sh`` that
runs the same watchdog and COMMAND through ``"$SHELL" -c`` (fish would
choke on the POSIX text, which it only ever sees inside single quotes).
Words are quoted so that sh, bash, zsh, fish and csh all read them alike
(:func:`quote_word`).

The watchdog starts one *watcher* in the background (stdout and stderr on
/dev/null, so it never holds the session open, and from a command
substitution, so it is no child that COMMAND's ``wait`` would wait for),
then runs COMMAND in the foreground. When the shell exits, however COMMAND
ended, its EXIT trap kills the watcher: nothing is added to stdout or
stderr, nothing waits, and the exit status is COMMAND's.

The watcher notices that classh's ssh is gone in one of two ways:

* ``watch_stdin`` (tasks without input): classh keeps a pipe to ssh's stdin
  open for the child's whole life and never writes to it. The watcher reads
  the session's stdin; end of file means the channel is closed: the
  connection dropped, or a ``--persist`` master closed the channel of a
  killed client. COMMAND itself reads /dev/null, as before.
* otherwise (``Options.input``, ``--copy``'s archive, ``--sudo``'s password):
  COMMAND keeps the session's stdin and the watcher checks once a second
  that the sshd process which started the session still exists
  (``kill -0 $PPID``). Through a ``--persist`` master that process outlives
  a killed client, so this detection does not work there.

A COMMAND too long for one argument (Linux refuses an argument of 128 KiB or
more, both to ssh here and to sshd's ``sh -c`` there) travels over stdin
instead (:func:`remote_task`): the line then starts with ``IFS= read -r
classh_c``, which takes COMMAND's one line off stdin byte by byte, before the
watcher starts or COMMAND runs; the rest of stdin (a block, or the held pipe
the watcher reads) is left as it was. A line that ends early (ssh gone) runs
nothing.

Either way the watcher then sends SIGTERM to the session's process group
(``kill -TERM 0``: sshd starts every session in a process group of its own),
waits :data:`GRACE` seconds and sends SIGKILL to the group, itself included.
sudo ignores a signal sent from its own parent's process group, so the
SIGTERM is also sent from a new session (``setsid kill``, where util-linux
or busybox provide ``setsid``), which sudo relays to the command it runs as
root; the SIGKILL cannot be relayed: a root command that ignores SIGTERM
outlives the session.
"""
from __future__ import annotations

import re
import shlex
from typing import Mapping, Optional, Tuple

__all__ = ["GRACE", "NAME", "MAX_LINE", "MAX_ARGUMENT", "remote_command", "remote_task",
           "quote_word", "remote_word", "cut"]

#: Seconds between the SIGTERM and the SIGKILL sent to the remote process group.
GRACE = 1
#: ``$0`` of the watchdog on the target (what ``ps`` shows).
NAME = "classh-watchdog"
#: Bytes of the line handed to ssh as its command at most (half of Linux's 128 KiB for
#: one argument, here and in sshd's ``sh -c``): a longer COMMAND is sent over stdin.
MAX_LINE = 65536
#: Bytes of one argument Linux takes at most (MAX_ARG_STRLEN, its NUL aside).
MAX_ARGUMENT = 131071
#: Characters of a long text shown in a message (then ``... (N bytes)``).
SHOWN = 100

_UNQUOTED = {ord("'"): "'\\''", ord("\\"): "'\\\\'"}
_TAG = re.compile(r"[A-Za-z0-9._:@%+=-]{1,128}\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")

# The watcher's body: notice the end of the session, then end the group
# ($$, the session leader's pid, in a subshell too). sudo ignores signals
# sent from its parent's process group: ``setsid kill`` sends the SIGTERM
# again from outside the group, for sudo to relay to its root command.
_KILL_GROUP = "kill -TERM 0; setsid kill -TERM -- -$$; sleep %d; kill -KILL 0" % GRACE
# Started from a command substitution, the watcher is no child of the shell
# that runs COMMAND (whose ``wait`` would wait for it too); it prints its pid.
_ON_STDIN_EOF = (
    "exec 3<&0 </dev/null; "
    "classh_w=$( (trap : TERM; while read -r classh_l <&3; do :; done; %s) >/dev/null 2>&1 & echo $!); "
    "exec 3<&-; " % _KILL_GROUP)
_ON_PARENT_GONE = (
    "classh_p=%s; "
    "classh_w=$( (trap : TERM; while kill -0 $classh_p; do sleep 1; done; %s) "
    "</dev/null >/dev/null 2>&1 & echo $!); " % ("%s", _KILL_GROUP))
# The watcher is killed when the shell exits, however COMMAND ends.
_UNWATCH = 'trap "kill -KILL $classh_w" EXIT; '
# COMMAND's own errors must read as with plain ssh. dash prefixes what goes
# wrong inside ``eval`` with "eval: ", so there eval only defines a function
# holding COMMAND, called after the eval (CALL); bash reads its errors inside
# eval as plain ones (but names a function's "environment: line 2"), so bash
# evals COMMAND and exits with its status. ``${IFS#??}`` is a newline (IFS
# starts as space, tab, newline): it ends COMMAND before the function's "}"
# (a comment or a here-document may end it) with no newline in the line,
# which csh must be able to read.
_RUN = ('if test -n "${BASH_VERSION-}"; then eval "$classh_c"; exit; fi; '
        'eval "classh_run() { $classh_c${IFS#??}}"')
_CALL = "classh_run"
# In a POSIX login shell: COMMAND evaluated right there.
_INLINE = 'classh_c=%s; %s' + _UNWATCH + _RUN
# From csh, fish, zsh: a POSIX sh runs COMMAND ($1) through the login shell.
_EXEC_SH = '%s' + _UNWATCH + '"${SHELL:-/bin/sh}" -c "$1"'
_NEWLINE = "\001"
# COMMAND sent over stdin: its one line is read before anything else; an early end runs nothing.
_READ = ('IFS= read -r classh_c || { echo "%s: the command did not arrive on stdin" >&2; exit 1; }; '
         % NAME)


def quote_word(text: str) -> str:
    """``text`` as one word for sh, bash, zsh, fish and csh alike.

    Single quotes, with each ``'`` and ``\\`` written unquoted as ``\\'`` and
    ``\\\\`` (fish would read ``\\\\`` and ``\\'`` inside single quotes as escapes).
    """
    return "'" + text.translate(_UNQUOTED) + "'"


def remote_word(path: str) -> str:
    """``path`` as one safe POSIX shell word on the target: quoted, ``~/`` -> ``"$HOME"/``,
    a relative ``-x`` -> ``./-x``."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"/' + (shlex.quote(rest) if rest else "")
    if path.startswith("-"):
        path = "./" + path
    return shlex.quote(path)


def remote_command(command: str, watch_stdin: bool, tag: Optional[str] = None,
                   parent: str = "$PPID", env: Optional[Mapping[str, str]] = None,
                   cwd: Optional[str] = None, from_stdin: bool = False) -> str:
    """The line to hand ssh so that ``command`` dies with the session.

    ``watch_stdin``: the caller keeps ssh's stdin open and writes nothing to
    it (end of file = the session is gone); otherwise ``command`` keeps the
    session's stdin and the sshd parent is watched instead. ``tag`` is
    exported to ``command``'s environment as ``CLASSH_TAG`` (job mode finds
    its processes by it); it is limited to ``[A-Za-z0-9._:@%+=-]``, at most
    128 characters (ValueError otherwise). ``parent`` is the shell expression
    of the pid watched without ``watch_stdin``: ``$PPID`` (sshd's session
    process) or ``$1`` (passed in by the sudo wrapper, see
    :meth:`classh.prompts.SudoWrapper.wrap`). ``env`` is exported too (job
    mode's ``CUDA_VISIBLE_DEVICES``): names are letters, digits and ``_``,
    values as a tag's. ``cwd``: COMMAND runs in that directory (``~/`` is
    the home directory); if it cannot go there it exits 1 without running.
    ``from_stdin``: the line holds no COMMAND but reads it first from stdin, where
    the caller writes :func:`stdin_line` before anything else (see :func:`remote_task`).
    """
    if parent not in ("$PPID", "$1"):
        raise ValueError("parent must be $PPID or $1, not %r" % parent)
    watch = _ON_STDIN_EOF if watch_stdin else _ON_PARENT_GONE % parent
    exported = dict(env or {})
    if tag is not None:
        exported["CLASSH_TAG"] = tag
    for name, value in sorted(exported.items(), reverse=True):
        if not (_ENV_NAME.match(name) and _TAG.match(value)):
            raise ValueError("bad %s=%r: use letters, digits and ._:@%%+=- only" % (name, value))
        watch = "%s=%s; export %s; %s" % (name, value, name, watch)
    if cwd is not None:
        watch = "cd -- %s || exit 1; %s" % (remote_word(cwd), watch)
    fallback, inline = _EXEC_SH, _INLINE
    if "\n" in command and _NEWLINE not in command:
        # csh cannot hold a newline in quotes: it travels as \001, put back by tr.
        command = command.replace("\n", _NEWLINE)
        fallback = 'set -- "$(printf "%%s\\n" "$1" | tr "\\001" "\\012")"; ' + fallback
        inline = inline.replace("; %s", '; classh_c=$(printf "%%s\\n" "$classh_c" | tr "\\001" "\\012"); %s', 1)
    word = inline_word = quote_word(command)
    if from_stdin:  # the read puts COMMAND in $classh_c (and $1 for the fallback's sh)
        fallback, word, inline_word = _READ + 'set -- "$classh_c"; ' + fallback, "''", '"$classh_c"'
        inline = _READ + inline
    return 'test -z "$status" || exec sh -c %s %s %s; eval %s; %s' % (
        quote_word(fallback % watch), NAME, word, quote_word(inline % (inline_word, watch)),
        _CALL)


def stdin_line(command: str) -> Optional[bytes]:
    """``command`` as the one line a ``from_stdin`` remote line reads (newlines travel as
    \\001, as in the line itself); None when it cannot be one line (it holds both)."""
    if "\n" in command:
        if _NEWLINE in command:
            return None
        command = command.replace("\n", _NEWLINE)
    return command.encode("utf-8", "surrogateescape") + b"\n"


def remote_task(command: str, watch_stdin: bool, stdin_free: bool = True,
                **wrap) -> Tuple[str, Optional[bytes]]:
    """(the line for ssh, bytes to write first on its stdin or None) running ``command``.

    The line is :func:`remote_command`'s (``wrap``: its keywords) when it has at most
    :data:`MAX_LINE` bytes. A longer one would not start (E2BIG): ``command`` then
    goes over stdin, ahead of any input, unless ``stdin_free`` is False (ssh gives the
    target no stdin) or it cannot be one line; the long line is returned then, and
    starting it fails.
    """
    line = remote_command(command, watch_stdin, **wrap)
    if len(line.encode("utf-8", "surrogateescape")) <= MAX_LINE or not stdin_free:
        return line, None
    first = stdin_line(command)
    if first is None:
        return line, None
    return remote_command(command, watch_stdin, from_stdin=True, **wrap), first


def cut(text: str, shown: int = SHOWN) -> str:
    """``text`` for a message: whole when short, else its first ``shown`` characters and
    ``... (N bytes)``."""
    if len(text) <= shown:
        return text
    return "%s... (%d bytes)" % (text[:shown], len(text.encode("utf-8", "surrogateescape")))
