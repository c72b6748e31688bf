"""kssh's machines file (``--machines FILE``): parse it into :class:`Machine` values.

The file is JSON: a list of objects, one per machine::

    [{"hostname": "default", "username": "user",
      "connect_cmd": "ssh -o ConnectTimeout=10", "init_timeout": 2},
     {"hostname": "worker1.example.com", "wd": "~/working_dir", "init_timeout": 10},
     {"hostname": "gpu[1-4]", "slots": 2}]

* The object whose ``hostname`` is ``"default"`` (at most one, anywhere in the
  list) gives defaults for the other objects' missing keys; it is not a machine.
* Keys: ``hostname`` (required), ``username``, ``port`` (1-65535),
  ``connect_cmd`` (the ssh command line for that machine, split with
  :func:`shlex.split`; its first word must not start with ``-``), ``wd`` (the
  remote working directory), ``slots`` (1 to :data:`classh.jobs.MAX_SLOTS`),
  ``init_timeout`` (seconds, > 0 and finite). JSON ``true``/``false`` are not
  numbers here.
* A ``hostname`` may be a classh host pattern (``worker[1-4]``, ``n[01-10/2]``):
  it is expanded with :func:`classh.targets.expand` and each host gets the
  entry's settings. It is a host name only: ``user@``, ``:port`` and commas are
  refused (use ``username`` and ``port``). Names are checked by the same rules
  as host mode's targets, so the messages match.
* kssh's own keys that classh replaces (``poll_interval``, ``poll_timeout``,
  ``upload_timeout``, ``download_timeout``) are accepted with any value; each
  gives one notice (once per key, whatever the number of entries) saying what
  replaces it, so a kssh user's file works unchanged.
* Anything else wrong (JSON syntax, with line and column; an unknown key; a
  wrong type; a missing ``hostname``; a bad host name; two ``default``
  entries; a key given twice in one object; a machine listed twice; no
  machine at all; an unreadable or non-UTF-8 file) is a :class:`MachinesError`
  whose one-line message starts with ``machines file FILE:`` and names the
  entry (``entry 3 (worker1)``, 1-based) and the key or text.

Nothing here prints; the notices are returned for the caller to show.
"""
from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .options import MAX_SECONDS
from .targets import DEFAULT_MAX_HOSTS, Target, TargetError, expand as expand_pattern

__all__ = ["Machine", "MachinesError", "read_machines", "parse_machines", "LEGACY_KEYS"]

#: kssh keys that classh accepts and ignores -> what replaces each (the notice's reason).
LEGACY_KEYS = {
    "poll_interval": "classh is told when a task ends, it does not poll",
    "poll_timeout": "use --connect-timeout / -t",
    "upload_timeout": "blocks travel on the task's own ssh session",
    "download_timeout": "output comes back on the task's own ssh session",
}
_DEFAULT = "default"
# Longest shown form of a bad value or host name in a message.
_SHOW_MAX = 60


class MachinesError(TargetError):
    """Bad machines file; ``str(e)`` is one line naming the file and the offending key, entry or text."""


@dataclass(frozen=True)
class Machine:
    """One machine of a machines file, with the ``default`` entry's settings applied.

    ``target`` carries the host name, ``username`` and ``port``; ``ssh`` is the
    entry's ``connect_cmd`` as written (a command line, not yet split); ``wd``
    the remote working directory; ``init_timeout`` seconds. None means the
    file did not say (the run's options apply).
    """

    target: Target
    slots: int = 1
    wd: Optional[str] = None
    ssh: Optional[str] = None
    init_timeout: Optional[float] = None


# ---------------------------------------------------------------------------
# showing values in messages


def _show(value: Any) -> str:
    """A value as JSON text, on one line, shortened to about :data:`_SHOW_MAX` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # pragma: no cover - json values always dump
        text = repr(value)
    return text if len(text) <= _SHOW_MAX else text[:_SHOW_MAX - 3] + "..."


def _show_where(where: str) -> str:
    """The file name as given when it is printable, else quoted (a message stays one line)."""
    return where if where.isprintable() else repr(where)


def _entry_name(number: int, entry: Any) -> str:
    """``entry 3 (worker1)``: the 1-based index and, when it has one, the entry's hostname."""
    host = entry.get("hostname") if isinstance(entry, dict) else None
    if not isinstance(host, str):
        return "entry %d" % number
    if not (host.isascii() and host.isprintable() and len(host) <= _SHOW_MAX):
        host = _show(host)
    return "entry %d (%s)" % (number, host)


def _key(key: str) -> str:
    """A key, quoted like Python's repr (one line), shortened."""
    text = repr(key)
    return text if len(text) <= _SHOW_MAX else text[:_SHOW_MAX - 3] + "..."


def _json_type(value: Any) -> str:
    """The JSON name of a value's type (``true`` is a boolean, not a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


# ---------------------------------------------------------------------------
# one key's value


class _Bad(Exception):
    """A key's value is wrong; the message says what was expected (the caller adds where)."""


def _expect(key: str, value: Any, expected: str) -> _Bad:
    """The error for ``key`` holding ``value`` where ``expected`` was wanted."""
    return _Bad("%r must be %s, not %s" % (key, expected, _show(value)))


def _string(key: str, value: Any) -> str:
    """A JSON string, else _Bad."""
    if not isinstance(value, str):
        raise _expect(key, value, "a string")
    return value


def _integer(key: str, value: Any, low: int, high: int) -> int:
    """A JSON integer (not a boolean) from ``low`` to ``high``, else _Bad."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _expect(key, value, "a whole number from %d to %d" % (low, high))
    return value


def _max_slots() -> int:
    """:data:`classh.jobs.MAX_SLOTS`, imported late: jobs may import this module."""
    from .jobs import MAX_SLOTS
    return MAX_SLOTS


def _check_username(value: Any) -> str:
    """``username``: a string (Target checks its characters)."""
    return _string("username", value)


def _check_port(value: Any) -> int:
    """``port``: an integer 1-65535."""
    return _integer("port", value, 1, 65535)


def _check_slots(value: Any) -> int:
    """``slots``: an integer from 1 to MAX_SLOTS."""
    return _integer("slots", value, 1, _max_slots())


def _check_wd(value: Any) -> str:
    """``wd``: a non-empty string without NUL or line breaks."""
    text = _string("wd", value)
    if not text or "\0" in text or "\n" in text or "\r" in text:
        raise _expect("wd", value, "a non-empty directory name without NUL or line breaks")
    return text


def _check_connect_cmd(value: Any) -> str:
    """``connect_cmd``: a command line whose first word is a program, not an option."""
    text = _string("connect_cmd", value)
    if "\0" in text:
        raise _expect("connect_cmd", value, "a command line without NUL")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise _Bad("'connect_cmd' %s cannot be split: %s" % (_show(value), exc)) from None
    if not words:
        raise _expect("connect_cmd", value, "a command line such as \"ssh -o ConnectTimeout=10\"")
    if words[0].startswith("-"):
        raise _Bad("'connect_cmd' %s starts with an option, not the ssh program" % _show(value))
    return text


def _check_init_timeout(value: Any) -> float:
    """``init_timeout``: seconds, a number > 0, finite, at most MAX_SECONDS."""
    expected = "a number of seconds above 0 and at most %d" % MAX_SECONDS
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expect("init_timeout", value, expected)
    if isinstance(value, int) and not 0 < value <= MAX_SECONDS:  # no float() of a huge int
        raise _expect("init_timeout", value, expected)
    number = float(value)
    if not (math.isfinite(number) and 0 < number <= MAX_SECONDS):
        raise _expect("init_timeout", value, expected)
    return number


# key -> checker returning the value as Machine wants it (hostname is handled apart).
_CHECKS = {
    "username": _check_username,
    "port": _check_port,
    "connect_cmd": _check_connect_cmd,
    "wd": _check_wd,
    "slots": _check_slots,
    "init_timeout": _check_init_timeout,
}


# ---------------------------------------------------------------------------
# one entry


def _entry_settings(entry: Dict[str, Any], legacy: List[str]) -> Dict[str, Any]:
    """The checked settings of one object (hostname left out); legacy keys go to ``legacy``."""
    settings: Dict[str, Any] = {}
    for key, value in entry.items():
        if key == "hostname":
            if not isinstance(value, str):
                raise _expect("hostname", value, "a string")
        elif key in _CHECKS:
            settings[key] = _CHECKS[key](value)
        elif key in LEGACY_KEYS:
            if key not in legacy:
                legacy.append(key)
        else:
            raise _Bad("unknown key %s (known: hostname, %s)" % (_key(key), ", ".join(_CHECKS)))
    if "hostname" not in entry:
        raise _Bad("missing 'hostname'")
    return settings


def _host_names(hostname: str, max_hosts: int) -> List[str]:
    """The host names of one ``hostname`` value, patterns expanded."""
    if not hostname.strip():
        raise _Bad("'hostname' is empty")
    for char, use in (("@", "'username'"), (":", "'port'"), (",", "one entry per host pattern")):
        if char in hostname:
            raise _Bad("'hostname' %s holds %r: give one host name or pattern (use %s)"
                       % (_show(hostname), char, use))
    return expand_pattern(hostname, True, max_hosts)


def _entry_machines(hostname: str, settings: Dict[str, Any], max_hosts: int) -> List[Machine]:
    """The Machines of one entry (its settings already merged with the defaults)."""
    user, port = settings.get("username"), settings.get("port")
    return [
        Machine(Target(name, user, port), settings.get("slots", 1), settings.get("wd"),
                settings.get("connect_cmd"), settings.get("init_timeout"))
        for name in _host_names(hostname, max_hosts)
    ]


# ---------------------------------------------------------------------------
# the whole file


def _no_duplicate_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """json's object hook: a key given twice in one object is an error, not a silent override."""
    obj: Dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Bad("key %s given twice in one object%s" % (
                _key(key), "" if "hostname" not in obj else " (hostname %s)" % _show(obj["hostname"])))
        obj[key] = value
    return obj


def _load(text: str) -> List[Any]:
    """The JSON list of a machines file; syntax errors name line and column."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise _Bad("line %d, column %d: not valid JSON: %s" % (exc.lineno, exc.colno, exc.msg)) from None
    except RecursionError:
        raise _Bad("not valid JSON: nested too deeply") from None
    if not isinstance(data, list):
        raise _Bad("must be a JSON list of objects, not %s" % _json_type(data))
    return data


def _split_default(data: List[Any]) -> Tuple[Optional[Tuple[int, Dict[str, Any]]], List[Tuple[int, Any]]]:
    """(the ``default`` entry with its 1-based number, or None; the other entries numbered)."""
    default: Optional[Tuple[int, Dict[str, Any]]] = None
    others: List[Tuple[int, Any]] = []
    for number, entry in enumerate(data, 1):
        if not isinstance(entry, dict):
            raise _Bad("entry %d must be an object, not %s %s" % (number, _json_type(entry), _show(entry)))
        if entry.get("hostname") == _DEFAULT:
            if default is not None:
                raise _Bad("entry %d: a second 'default' entry (the first is entry %d)"
                           % (number, default[0]))
            default = (number, entry)
        else:
            others.append((number, entry))
    return default, others


def _in_entry(number: int, entry: Any, settings_of):
    """Run ``settings_of()``; a _Bad or TargetError gets ``entry N (host): `` in front."""
    try:
        return settings_of()
    except (_Bad, TargetError) as exc:
        raise _Bad("%s: %s" % (_entry_name(number, entry), exc)) from None


def _machines(data: List[Any], max_hosts: int) -> Tuple[List[Machine], List[str]]:
    """The machines and the legacy keys met (in first-seen order) of a loaded file."""
    legacy: List[str] = []
    default, others = _split_default(data)
    defaults: Dict[str, Any] = {}
    if default is not None:
        defaults = _in_entry(default[0], default[1], lambda: _entry_settings(default[1], legacy))
    machines: List[Machine] = []
    seen: Dict[str, int] = {}  # label -> entry number
    for number, entry in others:
        settings = dict(defaults)
        settings.update(_in_entry(number, entry, lambda: _entry_settings(entry, legacy)))
        found = _in_entry(number, entry, lambda: _entry_machines(entry["hostname"], settings, max_hosts))
        for machine in found:
            label = machine.target.label
            if label in seen:
                raise _Bad("%s: machine %s is already listed (entry %d)"
                           % (_entry_name(number, entry), label, seen[label]))
            seen[label] = number
        if len(seen) > max_hosts:
            raise _Bad("%s: too many machines: over the limit of %d (--max-hosts)"
                       % (_entry_name(number, entry), max_hosts))
        machines.extend(found)
    if not machines:
        raise _Bad("no machine listed" + (" (only a 'default' entry)" if default else
                                          " (the list is empty)" if not data else ""))
    return machines, legacy


def _notice(where: str, key: str) -> str:
    """The one-line notice for a kssh key classh ignores."""
    return "machines file %s: %r ignored: %s" % (where, key, LEGACY_KEYS[key])


def parse_machines(text: str, where: str, *,
                   max_hosts: int = DEFAULT_MAX_HOSTS) -> Tuple[List[Machine], List[str]]:
    """(machines in file order, notices) of a machines file's text; ``where`` names the file.

    See the module's docstring for the format. Patterns in ``hostname`` are
    expanded (each host gets the entry's settings); more than ``max_hosts``
    machines is an error. ``notices`` holds one line per kssh legacy key met.
    Any bad input is a :class:`MachinesError` naming ``where`` and the
    offending entry, key, or line and column.
    """
    shown = _show_where(where)
    try:
        machines, legacy = _machines(_load(text), max_hosts)
    except (_Bad, TargetError) as exc:
        raise MachinesError("machines file %s: %s" % (shown, exc)) from None
    return machines, [_notice(shown, key) for key in legacy]


def read_machines(path: str, *, max_hosts: int = DEFAULT_MAX_HOSTS) -> Tuple[List[Machine], List[str]]:
    """(machines in file order, notices) of the machines file at ``path``.

    The file is read whole as UTF-8 (a BOM is allowed), then parsed by
    :func:`parse_machines`. An unreadable or non-UTF-8 file is a
    :class:`MachinesError` naming it.
    """
    shown = _show_where(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
    except OSError as exc:
        raise MachinesError("machines file %s: cannot read it: %s" % (shown, exc.strerror or exc)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MachinesError("machines file %s: not UTF-8 text (byte 0x%02x at offset %d)"
                            % (shown, raw[exc.start], exc.start)) from None
    return parse_machines(text, path, max_hosts=max_hosts)
