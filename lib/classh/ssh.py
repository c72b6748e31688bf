"""Building ssh command lines for targets (the only place that knows ssh's flags)."""
from __future__ import annotations

import shlex
from typing import List, Optional, Sequence

from .options import Options
from .persist import control_dir, persist_options, sweep_stale
from .spawn import find_executable
from .targets import Target

__all__ = ["SshCommand", "SshConfigError", "option_keyword", "SERVER_ALIVE_INTERVAL",
           "SERVER_ALIVE_COUNT"]

#: ssh's keepalives: a server silent for this many seconds is asked whether it is alive...
SERVER_ALIVE_INTERVAL = 10
#: ...and after this many unanswered asks ssh gives up (exit 255): a dead or stopped node is
#: noticed in about (SERVER_ALIVE_COUNT + 1) * SERVER_ALIVE_INTERVAL seconds (30).
SERVER_ALIVE_COUNT = 2


class SshConfigError(ValueError):
    """The ssh command cannot be used (missing executable, bad quoting)."""


def option_keyword(option: str) -> str:
    """The lower-cased keyword of an ssh ``-o`` value: ``"ConnectTimeout=5"`` -> ``"connecttimeout"``."""
    for sep in ("=", " "):
        option = option.split(sep, 1)[0]
    return option.strip().lower()


class SshCommand:
    """Turns (target, command) into an argv, per the run's options.

    classh's own defaults (``ConnectTimeout``, ``BatchMode``...) are left out
    where the user gave the same keyword with ``-O``, because ssh keeps the
    first value it sees for each keyword.
    """

    def __init__(self, options: Options):
        try:
            words = shlex.split(options.ssh)
        except ValueError as exc:
            raise SshConfigError("cannot parse ssh command %r: %s" % (options.ssh, exc)) from None
        if not words:
            raise SshConfigError("the ssh command is empty")
        path = find_executable(words[0])
        if path is None:
            raise SshConfigError("ssh command not found: %r" % words[0])
        self.options = options
        self.base: List[str] = [path] + words[1:] + self._option_args(options)

    @staticmethod
    def _option_args(options: Options) -> List[str]:
        defaults = []
        if options.connect_timeout:
            defaults.append("ConnectTimeout=%d" % max(1, round(options.connect_timeout)))
        # Without a password nothing may prompt; with one, prompts must be allowed
        # even if a config says otherwise.
        defaults.append("BatchMode=yes" if options.password is None else "BatchMode=no")
        defaults += ["ServerAliveInterval=%d" % SERVER_ALIVE_INTERVAL,
                     "ServerAliveCountMax=%d" % SERVER_ALIVE_COUNT]
        if options.accept_new_hostkeys:
            defaults.append("StrictHostKeyChecking=accept-new")
        if options.persist:
            directory = control_dir()
            sweep_stale(directory)
            defaults += persist_options(options.persist, directory)
        given = {option_keyword(o) for o in options.ssh_options}
        args = []
        for option in [d for d in defaults if option_keyword(d) not in given] + list(options.ssh_options):
            args += ["-o", option]
        return args

    def login_args(self, target: Target) -> List[str]:
        """``-l USER -p PORT`` for ``target`` (its own user/port win over the options')."""
        args = []
        user = target.user or self.options.user
        port = target.port or self.options.port
        if user:
            args += ["-l", user]
        if port:
            args += ["-p", str(port)]
        return args

    def control_argv(self, target: Target, action: str, socket_path: str) -> List[str]:
        """``ssh -O ACTION`` for the master of ``target`` listening on ``socket_path``."""
        return (self.base + ["-o", "ControlPath=" + socket_path] + self.login_args(target)
                + ["-O", action, "--", target.name])

    def argv(self, target: Target, command: Optional[str], options: Sequence[str] = ()) -> List[str]:
        """The full argv running ``command`` on ``target``; ``{host}`` becomes its name
        (unless the options' ``host_names`` is False).

        ``options`` are more ``-o`` values for this one command (job mode's
        ControlMaster and ControlPath); the run's own options come first and win.
        """
        argv = list(self.base)
        for option in options:
            argv += ["-o", option]
        argv += self.login_args(target) + ["--", target.name]
        if command is not None:
            argv.append(command.replace("{host}", target.name) if self.options.host_names
                        else command)
        return argv
