"""Answering prompts: ssh passwords and key passphrases, and sudo's password.

ssh asks for passwords on its controlling terminal. classh gives each child
a pseudo terminal of its own and watches it with pexpect
(``pexpect.fdpexpect`` on the master fd, polled with ``timeout=0`` from the
event loop), answering password and passphrase prompts once each. Anything
it cannot answer (a second prompt of a kind: the password was wrong; a host
key question; any other question) fails the host at once.

sudo runs as ``sudo -S`` with a prompt of classh's own: its prompt arrives
on the command's stderr, where classh removes it and writes the password to
the command's stdin. The command itself starts only after sudo has
validated (a second marker says so), so the password can never end up in
the command's input.

The password lives only in this process's memory: never on argv, in a
child's environment, in a file or in a record.
"""
from __future__ import annotations

import re
import secrets
import shlex
from typing import Optional, Tuple

from pexpect import EOF, TIMEOUT
from pexpect.fdpexpect import fdspawn

from .results import last_line

__all__ = ["Prompter", "SudoWrapper", "PromptFailure"]

PASSWORD = re.compile(rb"(?i)password[^\n]*:[ \t]*\Z")
PASSPHRASE = re.compile(rb"(?i)passphrase[^\n]*:[ \t]*\Z")
HOST_KEY = re.compile(rb"(?i)\(yes/no[^)\n]*\)\?[ \t]*\Z")
QUESTION = re.compile(rb"[:?][ \t]*\Z")
_PATTERNS = [PASSWORD, PASSPHRASE, HOST_KEY, QUESTION, EOF, TIMEOUT]
_KINDS = ("password", "passphrase")


class PromptFailure(Exception):
    """A prompt classh cannot answer; the message says which."""


class Prompter:
    """Watches one child's terminal and answers its ssh prompts with ``password``."""

    def __init__(self, password: Optional[str]):
        self._password = password
        self._answered = set()
        self._tty = None

    def attach(self, fd: int) -> None:
        """Start watching the master side ``fd`` of the child's terminal."""
        # use_poll: pexpect's default select() fails on descriptors above 1024.
        self._tty = fdspawn(fd, timeout=0, encoding=None, use_poll=True)
        self._tty.delaybeforesend = None
        self._tty.delayafterclose = 0
        self._tty.delayafterterminate = 0

    def readable(self) -> Optional[str]:
        """Handle what the terminal shows now; return a failure reason, or None."""
        while True:
            index = self._tty.expect(_PATTERNS, timeout=0)
            if index >= 4:  # EOF or nothing more to match yet
                return None
            failure = self._answer(index, self._tty.after)
            if failure:
                return failure

    def _answer(self, index: int, prompt: bytes) -> Optional[str]:
        if index == 2:
            return "ssh asked about an unknown host key (see --accept-new-hostkeys)"
        if index == 3:
            return "ssh asked a question classh cannot answer: %r" % last_line(self._tty.before + prompt, 120)
        kind = _KINDS[index]
        if self._password is None:
            return "ssh asked for a %s and none was given (-P)" % kind
        if kind in self._answered:
            return "the %s was not accepted" % kind
        self._answered.add(kind)
        self._tty.send(self._password.encode() + b"\n")
        return None


class SudoWrapper:
    """Wraps commands in ``sudo -S`` and follows sudo's conversation on stderr.

    The remote command becomes ``sudo -S -p PROMPT -v && printf READY >&2 &&
    sudo -n [-u USER] -- sh -c COMMAND``: the first sudo asks for the
    password (answered by classh), the second runs the command on the
    validated credentials. PROMPT and READY are random markers, removed from
    stderr before anything else sees it.
    """

    def __init__(self, user: Optional[str] = None):
        token = secrets.token_hex(8)
        self.user = user
        self.prompt = ("[classh-sudo-%s]" % token).encode()
        self.ready = ("[classh-ready-%s]\n" % token).encode()

    def wrap(self, command: str, pass_ppid: bool = False) -> str:
        """``command`` as sudo must run it on the remote host.

        With ``pass_ppid`` the login shell's ``$PPID`` (the sshd session) is
        passed to ``command`` as ``$1``: the remote watchdog inside sudo watches it.
        """
        as_user = " -u %s" % shlex.quote(self.user) if self.user else ""
        return "sudo -S -p %s -v && printf '%%s\\n' %s >&2 && sudo -n%s -- sh -c %s%s" % (
            shlex.quote(self.prompt.decode()), shlex.quote(self.ready.decode().strip()),
            as_user, shlex.quote(command), ' classh-sudo "$PPID"' if pass_ppid else "")

    def conversation(self) -> "SudoConversation":
        """A new per-host follower of sudo's stderr."""
        return SudoConversation(self)


class SudoConversation:
    """One host's sudo exchange: strips the markers from stderr and says what to do."""

    def __init__(self, wrapper: SudoWrapper):
        self.prompt = wrapper.prompt
        self.ready = wrapper.ready
        self.held = b""
        self.prompts = 0
        self.is_ready = False

    def filter(self, data: bytes) -> Tuple[bytes, list]:
        """Remove markers from stderr ``data``; return (clean bytes, events).

        Events are ``"prompt"`` (send the password) and ``"ready"`` (the
        command runs now: its input may follow). A marker split across two
        reads is held back until it is whole.
        """
        data = self.held + data
        self.held = b""
        events = []
        for marker, event in ((self.prompt, "prompt"), (self.ready, "ready")):
            count = data.count(marker)
            if count:
                data = data.replace(marker, b"")
                events += [event] * count
        if not self.is_ready:
            keep = _partial_suffix(data, (self.prompt, self.ready))
            if keep:
                data, self.held = data[:-keep], data[-keep:]
        if "ready" in events:
            self.is_ready = True
        self.prompts += events.count("prompt")
        return data, events

    def flush(self) -> bytes:
        """Bytes held back at the end of the stream."""
        held, self.held = self.held, b""
        return held


def _partial_suffix(data: bytes, markers) -> int:
    """Length of the longest end of ``data`` that begins one of ``markers``."""
    best = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(data)), best, -1):
            if data.endswith(marker[:size]):
                best = size
                break
    return best


class HostAuth:
    """Everything one host's login needs answered: its terminal, its sudo conversation.

    The supervisor calls :meth:`attach_tty` and :meth:`tty_readable` for the
    child's terminal, and :meth:`stderr` for each stderr chunk; both may
    return a failure reason, which fails the host as an ssh error.
    """

    def __init__(self, password: Optional[str], tty: bool, sudo: Optional[SudoWrapper] = None):
        self._password = password
        self.uses_tty = tty
        self.uses_stdin = sudo is not None
        self._prompter = Prompter(password) if tty else None
        self._sudo = sudo.conversation() if sudo else None

    def attach_tty(self, fd: int) -> None:
        """Watch the child's terminal (master side ``fd``)."""
        self._prompter.attach(fd)

    def tty_readable(self) -> Optional[str]:
        """Answer what the terminal asks; a failure reason or None."""
        return self._prompter.readable()

    def stderr_end(self) -> bytes:
        """At the end of stderr: the bytes held back as the possible start of a marker."""
        return self._sudo.flush() if self._sudo else b""

    def stderr(self, data: bytes) -> Tuple[bytes, bytes, bool, Optional[str]]:
        """Follow sudo on stderr: (clean data, bytes for stdin, input may start, failure)."""
        if self._sudo is None:
            return data, b"", False, None
        clean, events = self._sudo.filter(data)
        answer = b""
        for event in events:
            if event != "prompt":
                continue
            if self._password is None:
                return clean, b"", False, "sudo asked for a password and none was given (-P)"
            if self._sudo.prompts > 1:
                return clean, b"", False, "sudo did not accept the password"
            answer += self._password.encode() + b"\n"
        return clean, answer, "ready" in events, None
