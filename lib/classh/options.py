"""Run options shared by the command line and the Python API, and their env defaults."""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field, fields
from typing import List, Mapping, Optional

__all__ = ["Options", "OptionError", "from_env", "ENV_NAMES"]

#: Option name -> environment variable that gives its default.
ENV_NAMES = {
    "numjobs": "CLASSH_NUMJOBS",
    "timeout": "CLASSH_TIMEOUT",
    "ssh": "CLASSH_SSH",
    "ssh_options": "CLASSH_SSH_OPTIONS",
    "user": "CLASSH_USER",
    "results": "CLASSH_RESULTS",
}


_NAME = re.compile(r"[A-Za-z0-9._-]+")


class OptionError(ValueError):
    """An option value that cannot be used; the message names it."""


@dataclass
class Options:
    """How to reach hosts and how hard to push.

    ``timeout`` of None, 0 or less disables the per-host timeout.
    ``ssh`` is a command line (``"ssh -F cfg"``); ``ssh_options`` are ``-o``
    values (``"ConnectTimeout=5"``). ``input`` is fed to every command's stdin.
    ``password`` answers ssh's password and passphrase prompts (and sudo's,
    with ``sudo``/``sudo_user``); it is never shown in the repr. ``persist``
    keeps one ssh master connection per host that many seconds for later runs.
    ``raw`` sends the command exactly as given (no watchdog wrapper: targets
    without a POSIX ``sh``).
    """

    numjobs: int = 100
    timeout: Optional[float] = 300.0
    connect_timeout: Optional[float] = 10.0
    user: Optional[str] = None
    port: Optional[int] = None
    ssh: str = "ssh"
    ssh_options: List[str] = field(default_factory=list)
    password: Optional[str] = field(default=None, repr=False)
    input: Optional[bytes] = field(default=None, repr=False)
    results: Optional[str] = None
    expand: bool = True
    max_hosts: int = 1_000_000
    accept_new_hostkeys: bool = False
    sudo: bool = False
    sudo_user: Optional[str] = None
    persist: Optional[int] = None
    kill_grace: float = 2.0
    raw: bool = False

    def __post_init__(self):
        self.numjobs = positive_int("numjobs", self.numjobs)
        self.timeout = seconds("timeout", self.timeout)
        self.connect_timeout = seconds("connect_timeout", self.connect_timeout)
        if self.port is not None:
            self.port = port_number(self.port)
        if isinstance(self.ssh_options, str):
            self.ssh_options = split_ssh_options(self.ssh_options)
        if isinstance(self.input, str):
            self.input = self.input.encode()
        for what, name in (("user", self.user), ("sudo user", self.sudo_user)):
            if name is not None and (not _NAME.fullmatch(name) or name.startswith("-")):
                raise OptionError("bad %s %r" % (what, name))
        if self.sudo_user is not None:
            self.sudo = True
        if self.password is not None and ("\n" in self.password or "\r" in self.password):
            raise OptionError("a password cannot hold a line break")

    def replace(self, **changes) -> "Options":
        """A copy with ``changes`` applied."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Options(**values)


def positive_int(name: str, value) -> int:
    """``value`` as an int of at least 1, else OptionError naming it."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise OptionError("%s must be a whole number, not %r" % (name, value)) from None
    if number < 1:
        raise OptionError("%s must be at least 1, not %r" % (name, value))
    return number


def seconds(name: str, value) -> Optional[float]:
    """A duration in seconds; None, 0 or negative mean 'no limit' (None)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionError("%s must be a number of seconds, not %r" % (name, value)) from None
    if number != number:  # NaN
        raise OptionError("%s must be a number of seconds, not %r" % (name, value))
    return number if number > 0 else None


def port_number(value) -> int:
    """A TCP port 1-65535, else OptionError naming it."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise OptionError("port must be a number, not %r" % (value,)) from None
    if not 1 <= number <= 65535:
        raise OptionError("port %r is outside 1-65535" % (value,))
    return number


def split_ssh_options(text: str) -> List[str]:
    """Split ``"A=1 -o B=2 -oC=3"`` into ``["A=1", "B=2", "C=3"]``."""
    words = shlex.split(text)
    result = []
    for word in words:
        if word == "-o":
            continue
        result.append(word[2:] if word.startswith("-o") else word)
    return result


def from_env(environ: Optional[Mapping[str, str]] = None) -> dict:
    """Option defaults from the ``CLASSH_*`` environment variables that are set."""
    environ = os.environ if environ is None else environ
    values = {}
    for name, var in ENV_NAMES.items():
        text = environ.get(var)
        if text:
            values[name] = text
    return values
