"""Host mode: one command on every target, through the supervisor."""
from __future__ import annotations

import os
import shlex
from collections import deque
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from .loop import EventLoop
from .options import Options, OptionError
from .prompts import HostAuth, SudoWrapper
from .remote import MAX_ARGUMENT, cut, remote_command, remote_task
from .ssh import SshCommand, option_keyword
from .streams import LineStreams, is_pipe_or_device, open_nonblocking
from .supervisor import Supervisor, Task, TaskSource
from .targets import Resolver, Target, TargetError, is_host_file

__all__ = ["TargetSource", "task_maker", "is_stream", "open_stream"]


#: ssh's short options that take an argument (the rest of the word, or the next word).
_SSH_ARG_FLAGS = set("BbcDEeFIiJLlmOoPpQRSWw")


def ssh_reads_no_stdin(options: Options) -> bool:
    """True when the ssh command line gives the remote side no stdin (``-n``, ``-f``,
    ``StdinNull``): the watchdog must then watch sshd, not the end of its stdin."""
    words = shlex.split(options.ssh)[1:]
    ssh_options = list(options.ssh_options)
    while words:
        word = words.pop(0)
        if not word.startswith("-") or word == "--":
            break
        for at, flag in enumerate(word[1:], 1):
            if flag in "nf":
                return True
            if flag in _SSH_ARG_FLAGS:
                value = word[at + 1:] or (words.pop(0) if words else "")
                if flag == "o":
                    ssh_options.append(value)
                break
    return any(option_keyword(o) == "stdinnull" and "yes" in o.lower() for o in ssh_options)


def task_maker(command: Optional[str], options: Options) -> Callable[[Target], Task]:
    """A function making the task that runs ``command`` on one target over ssh.

    ``{host}`` in ``command`` becomes the target's name; unless
    ``options.raw``, the command is then wrapped in the remote watchdog
    (:mod:`classh.remote`) so that it dies with its ssh. Without input the
    task holds ssh's stdin open: the watchdog's sign that ssh is gone.

    With ``--sudo`` the watchdog runs inside sudo, as root, so that it can
    kill root's processes; with input it watches the sshd session process,
    whose pid the sudo wrapper passes in.

    A command too long for ssh's command line goes over the held stdin
    (:func:`classh.remote.remote_task`); where it cannot (input, ``--raw``,
    ``--sudo``, ssh ``-n``) it is an OptionError naming its length, before
    anything runs.
    """
    ssh = SshCommand(options)
    env = dict(os.environ)  # one plain copy for every child
    sudo = SudoWrapper(options.sudo_user) if options.sudo else None
    tty = options.password is not None
    watch_stdin = options.input is None and not ssh_reads_no_stdin(options)
    hold_stdin = watch_stdin and command is not None and not options.raw

    def wrap(text: str) -> Tuple[str, Optional[bytes]]:
        """(the line for ssh, what to write first on its held stdin) running ``text``."""
        if sudo is None:
            return (text, None) if options.raw else remote_task(text, watch_stdin, hold_stdin)
        if options.raw:
            return sudo.wrap(text), None
        return sudo.wrap(remote_command(text, watch_stdin, parent="$1"),
                         pass_ppid=not watch_stdin), None

    def make(target: Target) -> Task:
        auth = HostAuth(options.password, tty, sudo) if tty or sudo else None
        line, first = wrap(command.replace("{host}", target.name) if options.host_names
                           else command) if command is not None else (None, None)
        return Task(key=target.label, argv=ssh.argv(target, line),
                    input=options.input if first is None else first, timeout=options.timeout,
                    env=env, context=target, auth=auth, hold_stdin=hold_stdin)

    if command is not None:
        _check_length(command, *wrap(command))
    return make


def _check_length(command: str, line: str, first: Optional[bytes]) -> None:
    """OptionError when ``command``'s line for ssh is too long and cannot go over stdin."""
    size = len(line.encode("utf-8", "surrogateescape"))
    if first is None and size > MAX_ARGUMENT:
        raise OptionError("COMMAND too long for ssh's command line: %d bytes as sent (at most %d; "
                          "without input, --raw, --sudo or ssh -n it would go over stdin): %s"
                          % (size, MAX_ARGUMENT, cut(command)))


def is_stream(arg: str) -> bool:
    """True for a host-file argument that is a pipe or device (read as lines arrive)."""
    return is_host_file(arg) and is_pipe_or_device(arg)


def open_stream(path: str) -> int:
    """Open a streamed host file for non-blocking reads (TargetError naming it on failure)."""
    try:
        return open_nonblocking(path)
    except OSError as exc:
        raise TargetError("cannot read host file %r: %s" % (path, exc.strerror)) from None


class TargetSource(TaskSource):
    """Hands out one task per target, in order; more targets may arrive from streams.

    ``streams`` maps an open, non-blocking fd to its path (``/dev/stdin`` fed
    by an earlier classh stage): its lines are resolved as they arrive, so a
    next stage starts its first hosts while the earlier one still runs. A bad
    streamed line is skipped and kept in ``errors``. Targets in ``skip`` (done
    before, ``--resume``) are never run.
    """

    def __init__(self, targets: Iterable[Target], make_task: Callable[[Target], Task],
                 streams: Optional[Dict[int, str]] = None, resolver: Optional[Resolver] = None,
                 skip: Iterable[str] = ()):
        self.queue = deque(targets)
        self.make_task = make_task
        self.streams = LineStreams(streams or {}, self._add_line)
        self.resolver = resolver
        self.skip = set(skip)
        self.skipped = 0
        self.errors: List[str] = []

    def attach(self, loop: EventLoop, supervisor: Supervisor) -> None:
        """Start reading the streams."""
        self.streams.on_batch = supervisor.fill
        self.streams.attach(loop)

    def next_task(self) -> Optional[Task]:
        """The task for the next target not skipped, or None for now."""
        while self.queue:
            target = self.queue.popleft()
            if target.label in self.skip:
                self.skipped += 1
                continue
            return self.make_task(target)
        return None

    def pending(self) -> Optional[int]:
        """Targets still to hand out, or None while streams may bring more."""
        return None if self.streams else len(self.queue)

    def exhausted(self) -> bool:
        """True once every stream has ended and every target was handed out."""
        return not self.queue and not self.streams

    def _add_line(self, line: str, where: str) -> None:
        try:
            self.queue.extend(self.resolver.add_line(line, where))
        except TargetError as exc:
            self.errors.append(str(exc))

    def close(self) -> None:
        """Close streams left open (an interrupted run)."""
        self.streams.close()
