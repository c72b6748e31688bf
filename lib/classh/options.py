"""Run options shared by the command line and the Python API, and their env defaults."""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field, fields
from typing import List, Mapping, Optional

__all__ = ["Options", "OptionError", "UnknownOption", "from_env", "ENV_NAMES"]

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


class UnknownOption(OptionError, AttributeError):
    """An attribute that is no option (``opts.limit = 1``); the message names it and the
    known ones. Both an OptionError and an AttributeError."""


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
    without a POSIX ``sh``). ``host_names`` False leaves ``{host}`` in the
    command as it is (by default it becomes each target's name).
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
    host_names: bool = True

    def __post_init__(self):
        self.numjobs = positive_int("numjobs", self.numjobs)
        self.timeout = seconds("timeout", self.timeout)
        self.connect_timeout = seconds("connect_timeout", self.connect_timeout)
        self.max_hosts = positive_int("max_hosts", self.max_hosts)
        if self.persist is not None:
            self.persist = positive_int("persist", self.persist, MAX_PERSIST)
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

    def __setattr__(self, name: str, value) -> None:
        """Set an option; a name that is no option is refused, never silently kept."""
        if name not in _FIELD_NAMES:
            raise UnknownOption("Options has no option %r (options: %s)"
                                % (name, ", ".join(sorted(_FIELD_NAMES))))
        object.__setattr__(self, name, value)

    def replace(self, **changes) -> "Options":
        """A copy with ``changes`` applied."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Options(**values)


#: The names an Options instance accepts (its fields).
_FIELD_NAMES = frozenset(f.name for f in fields(Options))

#: The longest duration accepted (-t, --connect-timeout): about 23 days, under the
#: 2**31 milliseconds that one epoll/poll wait can count (the event loop waits that long).
MAX_SECONDS = 2_000_000
#: The most seconds --persist may keep a connection (ssh's ControlPersist is an int).
MAX_PERSIST = 2**31 - 1
_WHOLE = re.compile(r"[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?", re.ASCII)


def positive_int(name: str, value, maximum: Optional[int] = None) -> int:
    """``value`` as an int of at least 1 (and at most ``maximum``), else OptionError naming it.

    Text must be plain decimal digits: ``0x10``, ``1e3``, ``1_000`` and ``''`` are refused.
    """
    number = _whole_number(value)
    if number is None:
        raise OptionError("%s must be a whole number, not %r" % (name, value))
    if number < 1:
        raise OptionError("%s must be at least 1, not %r" % (name, value))
    if maximum is not None and number > maximum:
        raise OptionError("%s must be at most %d, not %r" % (name, maximum, value))
    return number


def _whole_number(value) -> Optional[int]:
    """An int from an int or from decimal digits; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        return int(value)
    return None


def seconds(name: str, value) -> Optional[float]:
    """A duration in seconds; None, 0 or negative mean 'no limit' (None).

    Infinite, NaN, over :data:`MAX_SECONDS` or not a plain decimal number
    (``inf``, ``1e400``, ``0x10``, ``''``) is an OptionError naming the value.
    """
    if value is None:
        return None
    if isinstance(value, str) and not _DECIMAL.fullmatch(value.strip()):
        raise OptionError("%s must be a number of seconds, not %r" % (name, value))
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise OptionError("%s must be a number of seconds, not %r" % (name, value)) from None
    if number != number or isinstance(value, bool):  # NaN
        raise OptionError("%s must be a number of seconds, not %r" % (name, value))
    if number > MAX_SECONDS:
        raise OptionError("%s must be at most %d seconds, not %r" % (name, MAX_SECONDS, value))
    return number if number > 0 else None


def not_negative(name: str, value) -> None:
    """OptionError when ``value`` is a negative number: a typo, not 'none' (0 says that)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return  # not a number at all: the caller's own check names it
    if number < 0:
        raise OptionError("%s must be 0 or more, not %r" % (name, value))


def port_number(value) -> int:
    """A TCP port 1-65535, else OptionError naming it."""
    number = _whole_number(value)
    if number is None:
        raise OptionError("port must be a number, not %r" % (value,))
    if not 1 <= number <= 65535:
        raise OptionError("port %r is outside 1-65535" % (value,))
    return number


def split_ssh_options(text: str) -> List[str]:
    """Split ``"A=1 -o B=2 -oC=3"`` into ``["A=1", "B=2", "C=3"]``."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise OptionError("cannot split ssh options %r: %s" % (text, exc)) from None
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
