"""Target hosts: parse, validate, expand and fold ``[user@]name[:port]`` patterns.

This module holds only pure functions (plus reading host files); it never
prints.  The command-line rule lives in :func:`resolve`:

* an argument containing ``/`` is a host file (one pattern per line, blank
  lines and ``#`` comments ignored, commas allowed);
* otherwise it is a pattern; commas outside brackets separate patterns and
  empty pieces are ignored (``"host1,"``, ``"host1, host2"``);
* a pattern is ``[user@]name[:port]``; ``name`` may hold bracket ranges
  such as ``n[01-10]``, ``bar[3,2,12-23]baz``, ``rack[1-2]n[1-4]`` or
  ``n[1-10/2]``.

:func:`fold` is the inverse of expansion: it turns a list of labels back
into the short range form used by the ``gather`` display.

Every error is a :class:`TargetError` whose one-line message names the
offending text.
"""

from __future__ import annotations

import gc
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Set, Tuple

__all__ = [
    "DEFAULT_MAX_HOSTS",
    "Target",
    "TargetError",
    "expand",
    "fold",
    "fold_targets",
    "parse_target",
    "read_host_file",
    "resolve",
    "Resolver",
    "is_host_file",
    "strip_comment",
    "split_commas",
]

#: Default for ``--max-hosts``: the most hosts one run may expand to.
DEFAULT_MAX_HOSTS = 1_000_000

# Characters allowed in a host name or user name.
_NAME_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
)
_WORD = re.compile(r"[A-Za-z0-9._-]*", re.ASCII).fullmatch
# A plain host name with nothing to parse (the fast path for big host files).
_SIMPLE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9._-]*", re.ASCII).fullmatch
_RANGE_ELEM = re.compile(r"([0-9]+)(?:-([0-9]+)(?:/([0-9]+))?)?", re.ASCII).fullmatch
_ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII).fullmatch
# Longest number accepted inside a bracket range.
_MAX_NUMBER_DIGITS = 20

_NOEXPAND_WHY = "brackets are not expanded with --noexpand"


class TargetError(ValueError):
    """Bad target input.

    ``str(e)`` is a one-line message that names the offending text, quoted
    with ``repr``-style quotes.
    """


@dataclass(frozen=True)
class Target:
    """One validated target host: ``name`` plus optional ``user`` and ``port``.

    Constructing a Target validates its fields (raising :class:`TargetError`),
    so a Target built from API input is as safe as one from :func:`resolve`.
    """

    name: str
    user: Optional[str] = None
    port: Optional[int] = None

    def __post_init__(self) -> None:
        """Validate the fields and cache the label."""
        _check_target_fields(self.name, self.user, self.port)
        object.__setattr__(self, "_label", _make_label(self.name, self.user, self.port))

    @property
    def label(self) -> str:
        """``user@name:port`` with the missing parts left out.

        The label is the target's identity, its display form and the stem of
        its result files.
        """
        try:
            return self.__dict__["_label"]
        except KeyError:  # pragma: no cover - only for exotic copies
            return _make_label(self.name, self.user, self.port)

    def __str__(self) -> str:
        """Return the label."""
        return self.label


# ---------------------------------------------------------------------------
# small helpers


def _make_label(name: str, user: Optional[str], port: Optional[int]) -> str:
    """Build ``user@name:port`` leaving out the parts that are None."""
    label = name if user is None else user + "@" + name
    return label if port is None else label + ":" + str(port)


def _fast_target(name: str, user: Optional[str], port: Optional[int], label: str) -> Target:
    """Build a Target from already-validated parts, skipping validation."""
    target = object.__new__(Target)
    object.__setattr__(target, "__dict__", {"name": name, "user": user, "port": port, "_label": label})
    return target


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many objects.

    Creating a million Targets otherwise triggers repeated full collections
    that cost more than the work itself.  The previous state is restored.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fail(piece: str, why: str) -> TargetError:
    """Return the standard error for a bad pattern."""
    return TargetError("bad host pattern %r: %s" % (piece, why))


def _bad_char(text: str) -> str:
    """Return the first character of ``text`` outside the allowed set, quoted."""
    for ch in text:
        if ch not in _NAME_CHARS:
            return repr(ch)
    return "''"  # pragma: no cover - callers only ask when there is one


def _check_word(piece: str, text: str, what: str) -> None:
    """Check a user name or literal piece of a host name against the whitelist."""
    if not _WORD(text):
        raise _fail(piece, "invalid character %s in %s" % (_bad_char(text), what))


def _check_target_fields(name: object, user: object, port: object) -> None:
    """Validate the fields of a Target built directly (not through a pattern)."""
    shown = "%r (user %r, port %r)" % (name, user, port)
    if not isinstance(name, str):
        raise TargetError("bad target %s: host name must be a string" % shown)
    _check_name_literal(name, name, "a Target's name must already be expanded", full=True)
    if user is not None:
        if not isinstance(user, str):
            raise TargetError("bad target %s: user must be a string" % shown)
        _check_user(name, user)
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise TargetError("bad target %s: port %r is outside 1-65535" % (shown, port))


def _check_user(piece: str, user: str) -> None:
    """Validate the user part of a pattern."""
    if not user:
        raise _fail(piece, "empty user before '@'")
    if "[" in user or "]" in user:
        raise _fail(piece, "brackets are only allowed in the host name, not in the user %r" % user)
    _check_word(piece, user, "user %r" % user)
    if user[0] == "-":
        raise _fail(piece, "user %r starts with '-'" % user)


def _parse_port(piece: str, text: str) -> int:
    """Validate and convert the port part of a pattern."""
    if not text:
        raise _fail(piece, "empty port after ':'")
    if "[" in text or "]" in text:
        raise _fail(piece, "brackets are only allowed in the host name, not in the port %r" % text)
    if not _ASCII_DIGITS(text):
        raise _fail(piece, "port %r is not a number" % text)
    port = int(text) if len(text) <= 10 else 0
    if not 1 <= port <= 65535:
        raise _fail(piece, "port %r is outside 1-65535" % text)
    return port


def _check_name_literal(piece: str, name: str, why: str, full: bool) -> None:
    """Validate a host name (or, with ``full=False``, its first literal part)."""
    if full and not name:
        raise _fail(piece, "empty host name")
    if "[" in name or "]" in name:
        raise _fail(piece, "%r in host name %r (%s)" % ("[" if "[" in name else "]", name, why))
    _check_word(piece, name, "host name %r" % name)
    if name[:1] == "-":
        raise _fail(piece, "host name %r starts with '-'" % name)
    if full and not name.strip("."):
        raise _fail(piece, "host name %r is not valid" % name)


# ---------------------------------------------------------------------------
# parsing patterns


class _Piece(NamedTuple):
    """One parsed ``[user@]name[:port]`` pattern, not yet expanded.

    ``lits`` are the literal parts of the name around the bracket groups
    (``len(lits) == len(groups) + 1``); each group is a list of range elements
    ``(lower_text, lower, upper, step)`` (upper is None for a single number).
    ``plain``, when not None, is a ready list of validated plain host names
    (consecutive simple lines of a host file) and ``lits``/``groups`` are unused.
    """

    user: Optional[str]
    port: Optional[int]
    lits: List[str]
    groups: List[List[Tuple[str, int, Optional[int], int]]]
    count: int
    plain: Optional[List[str]] = None


def split_commas(text: str) -> List[str]:
    """Split on commas outside brackets; strip pieces and drop empty ones."""
    if "[" not in text:
        parts = text.split(",")
    else:
        parts, depth, start = [], 0, 0
        for i, ch in enumerate(text):
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
            elif ch == "," and depth <= 0:
                parts.append(text[start:i])
                start = i + 1
        parts.append(text[start:])
    return [p for p in (part.strip() for part in parts) if p]


def _parse_element(piece: str, elem: str) -> Tuple[str, int, Optional[int], int]:
    """Parse one range element: ``N``, ``N-M`` or ``N-M/S``."""
    m = _RANGE_ELEM(elem)
    if m is None:
        raise _fail(piece, _element_problem(elem))
    lo_text, hi_text, step_text = m.groups()
    for number in (lo_text, hi_text, step_text):
        if number is not None and len(number) > _MAX_NUMBER_DIGITS:
            raise _fail(piece, "number %r in range %r is too long" % (number, elem))
    lo = int(lo_text)
    if hi_text is None:
        return (lo_text, lo, None, 1)
    hi = int(hi_text)
    step = 1 if step_text is None else int(step_text)
    if step == 0:
        raise _fail(piece, "range %r has a zero step" % elem)
    if hi < lo:
        raise _fail(piece, "descending range %r (%s > %s)" % (elem, lo_text, hi_text))
    return (lo_text, lo, hi, step)


def _element_problem(elem: str) -> str:
    """Explain why a range element does not parse."""
    if not elem.strip():
        return "empty range element in %r" % elem if elem else "empty range element"
    if "/" in elem and "-" not in elem:
        return "range %r has a step but no upper bound" % elem
    if elem.endswith("-") or "-/" in elem:
        return "range %r has no upper bound" % elem
    if elem.startswith("-"):
        return "range %r has no lower bound" % elem
    if elem.endswith("/"):
        return "range %r has no step after '/'" % elem
    return "range %r is not N, N-M or N-M/S (non-negative integers)" % elem


def _parse_group(piece: str, body: str) -> List[Tuple[str, int, Optional[int], int]]:
    """Parse the text between one pair of brackets."""
    if not body:
        raise _fail(piece, "empty brackets '[]'")
    elems = body.split(",")
    if "" in elems:
        raise _fail(piece, "empty range element in %r" % ("[" + body + "]"))
    return [_parse_element(piece, elem) for elem in elems]


def _group_size(group: List[Tuple[str, int, Optional[int], int]]) -> int:
    """Number of values a bracket group yields, computed without expanding."""
    return sum(1 if hi is None else (hi - lo) // step + 1 for _, lo, hi, step in group)


def _parse_name(piece: str, name: str, expand: bool, why: str) -> Tuple[List[str], list, int]:
    """Split a host name into literal parts and parsed bracket groups."""
    if not name:
        raise _fail(piece, "empty host name")
    if not expand or ("[" not in name and "]" not in name):
        _check_name_literal(piece, name, why, full=True)
        return [name], [], 1
    lits, groups, count, pos = [], [], 1, 0
    while True:
        open_at = name.find("[", pos)
        lit = name[pos:] if open_at < 0 else name[pos:open_at]
        if "]" in lit:
            raise _fail(piece, "unmatched ']' in host name %r" % name)
        _check_word(piece, lit, "host name %r" % name)
        lits.append(lit)
        if open_at < 0:
            break
        close_at = name.find("]", open_at + 1)
        if close_at < 0:
            raise _fail(piece, "unclosed '[' in host name %r" % name)
        body = name[open_at + 1:close_at]
        if "[" in body:
            raise _fail(piece, "nested '[' in host name %r" % name)
        group = _parse_group(piece, body)
        groups.append(group)
        count *= _group_size(group)
        pos = close_at + 1
    if lits[0][:1] == "-":
        raise _fail(piece, "host name %r starts with '-'" % name)
    return lits, groups, count


def _parse_piece(piece: str, expand: bool = True, why: str = _NOEXPAND_WHY) -> _Piece:
    """Parse and validate one stripped ``[user@]name[:port]`` pattern."""
    if _SIMPLE(piece) and piece.strip("."):
        return _Piece(None, None, [piece], [], 1)
    user: Optional[str] = None
    port: Optional[int] = None
    rest = piece
    at = piece.find("@")
    if at >= 0:
        user, rest = piece[:at], piece[at + 1:]
        _check_user(piece, user)
    colon = rest.rfind(":")
    if colon >= 0:
        rest, port_text = rest[:colon], rest[colon + 1:]
        port = _parse_port(piece, port_text)
    lits, groups, count = _parse_name(piece, rest, expand, why)
    return _Piece(user, port, lits, groups, count)


def _check_count(count: int, max_hosts: int, what: str) -> None:
    """Raise when an expansion would give more than ``max_hosts`` hosts."""
    if count > max_hosts:
        raise TargetError(
            "%s expands to %d hosts, over the limit of %d (--max-hosts)" % (what, count, max_hosts)
        )


def _parse_text(text: str, expand: bool, max_hosts: int, where: str = "") -> List[_Piece]:
    """Parse one argument or host-file line; check the count before expanding."""
    pieces, total = [], 0
    for piece_text in split_commas(text):
        try:
            piece = _parse_piece(piece_text, expand)
        except TargetError as err:
            raise TargetError(where + str(err)) from None
        pieces.append(piece)
        total += piece.count
        if piece.count > max_hosts:
            _check_count(piece.count, max_hosts, where + "host pattern %r" % piece_text)
        _check_count(total, max_hosts, where + "host pattern %r" % text.strip())
    return pieces


# ---------------------------------------------------------------------------
# expanding


def _group_strings(
    group: List[Tuple[str, int, Optional[int], int]], before: str = "", after: str = ""
) -> List[str]:
    """The strings ``before + digits + after`` one bracket group yields, in written order.

    ``before`` and ``after`` are validated literals, so they hold no ``%``.
    A lower bound written with a leading zero pads every number to its width.
    """
    out: List[str] = []
    for lo_text, lo, hi, step in group:
        if hi is None:
            out.append(before + lo_text + after)
            continue
        if len(lo_text) > 1 and lo_text[0] == "0":
            template = "%s%%0%dd%s" % (before, len(lo_text), after)
        else:
            template = before + "%d" + after
        out.extend(map(template.__mod__, range(lo, hi + 1, step)))
    return out


def _names(piece: _Piece) -> List[str]:
    """Expand a parsed piece into its host names (leftmost bracket slowest)."""
    if piece.plain is not None:
        return piece.plain
    lits, groups = piece.lits, piece.groups
    if not groups:
        return [lits[0]]
    if len(groups) == 1:
        return _group_strings(groups[0], lits[0], lits[1])
    names = [lits[0]]
    for group, lit in zip(groups, lits[1:]):
        strings = _group_strings(group, "", lit)
        names = [head + s for head in names for s in strings]
    return names


def _labels(piece: _Piece, names: List[str]) -> List[str]:
    """Turn the names of one piece into labels (``user@name:port``)."""
    if piece.user is None and piece.port is None:
        return names
    head = "" if piece.user is None else piece.user + "@"
    tail = "" if piece.port is None else ":" + str(piece.port)
    return [head + name + tail for name in names]


def expand(pattern: str, expand: bool = True, max_hosts: int = DEFAULT_MAX_HOSTS) -> List[str]:
    """Expand one target argument into spec strings, in order.

    Commas outside brackets separate patterns; whitespace around pieces is
    stripped and empty pieces are ignored.  Bracket ranges in the name part of
    each ``[user@]name[:port]`` piece are expanded (unless ``expand`` is
    false, in which case a bracket is an error).  The host count is checked
    against ``max_hosts`` before anything is expanded.  No host-file handling
    here: see :func:`resolve`.  Duplicates are kept.
    """
    out: List[str] = []
    for piece in _parse_text(pattern, expand, max_hosts):
        out.extend(_labels(piece, _names(piece)))
    return out


def parse_target(spec: str) -> Target:
    """Validate one already-expanded ``[user@]name[:port]`` string.

    Surrounding whitespace is ignored; brackets and commas are errors.
    """
    text = spec.strip()
    piece = _parse_piece(text, expand=False, why="parse_target() takes an expanded target")
    name = piece.lits[0]
    return _fast_target(name, piece.user, piece.port, _make_label(name, piece.user, piece.port))


# ---------------------------------------------------------------------------
# host files


def _read_lines(path: str) -> List[str]:
    """Read a host file once, as a stream (works for ``/dev/stdin`` and pipes)."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline=None) as stream:
            return stream.readlines()
    except OSError as err:
        raise TargetError("cannot read host file %r: %s" % (path, err.strerror or err)) from None


def strip_comment(line: str) -> str:
    """A host-file line without its ``#`` comment and surrounding whitespace."""
    if "#" in line:
        line = line[: line.index("#")]
    return line.strip()


def _parse_file(
    path: str, expand: bool, max_hosts: int, cache: Optional[Dict[str, List[str]]] = None
) -> List[_Piece]:
    """Parse every pattern of a host file, checking the total count first."""
    if cache is not None and path in cache:
        lines = cache[path]
    else:
        lines = _read_lines(path)
        if cache is not None:
            cache[path] = lines
    pieces: List[_Piece] = []
    plain: List[str] = []  # simple names on consecutive lines, batched into one piece
    total = 0
    for number, line in enumerate(lines, 1):
        line = strip_comment(line)
        if not line:
            continue
        where = "%s:%d: " % (path, number)
        if _SIMPLE(line) and line.strip("."):
            plain.append(line)
            total += 1
        else:
            line_pieces = _parse_text(line, expand, max_hosts, where)
            if plain:
                pieces.append(_Piece(None, None, [], [], len(plain), plain))
                plain = []
            pieces.extend(line_pieces)
            total += sum(p.count for p in line_pieces)
        if total > max_hosts:
            _check_count(total, max_hosts, where + "host file %r" % path)
    if plain:
        pieces.append(_Piece(None, None, [], [], len(plain), plain))
    return pieces


def read_host_file(path: str, expand: bool = True, max_hosts: int = DEFAULT_MAX_HOSTS) -> List[str]:
    """Read a host file and return its expanded spec strings, in order.

    One pattern per line (commas allowed too); blank lines and ``#``
    comments, whole-line or trailing, are ignored; each line is expanded like
    :func:`expand`.  The file is read once as a stream, so ``/dev/stdin``
    works.  A missing or unreadable file is a :class:`TargetError` naming
    the path; a bad line's error names the path and line number.
    """
    out: List[str] = []
    for piece in _parse_file(path, expand, max_hosts):
        out.extend(_labels(piece, _names(piece)))
    return out


# ---------------------------------------------------------------------------
# the command-line rule


def is_host_file(arg: str) -> bool:
    """True when a target argument names a host file: it holds a ``/`` outside
    brackets (``n[1-10/2]`` is a step range, not a path)."""
    return "/" in re.sub(r"\[[^\]]*\]", "", arg)


def _arg_pieces(
    arg: str, expand: bool, max_hosts: int, cache: Dict[str, List[str]]
) -> List[_Piece]:
    """Parse one command-line argument: a host file if it holds '/', else a pattern."""
    if is_host_file(arg):
        return _parse_file(arg, expand, max_hosts, cache)
    return _parse_text(arg, expand, max_hosts)


def _exclusions(
    excludes: Iterable[str], expand: bool, max_hosts: int, cache: Dict[str, List[str]]
) -> Tuple[Set[str], Set[str]]:
    """Expand the excludes into (bare names, full labels) to remove."""
    bare: Set[str] = set()
    full: Set[str] = set()
    for arg in excludes:
        for piece in _arg_pieces(arg, expand, max_hosts, cache):
            names = _names(piece)
            if piece.user is None and piece.port is None:
                bare.update(names)
            else:
                full.update(_labels(piece, names))
    return bare, full


def _add_targets(seen: Dict[str, Target], piece: _Piece) -> None:
    """Add the Targets of one parsed piece to ``seen`` (label -> Target), skipping duplicates."""
    names = _names(piece)
    user, port = piece.user, piece.port
    make = object.__new__
    set_dict = object.__setattr__
    for label, name in zip(_labels(piece, names), names):
        if label not in seen:
            target = make(Target)
            set_dict(target, "__dict__", {"name": name, "user": user, "port": port, "_label": label})
            seen[label] = target


def resolve(
    args: Iterable[str],
    excludes: Iterable[str] = (),
    expand: bool = True,
    max_hosts: int = DEFAULT_MAX_HOSTS,
) -> List[Target]:
    """Turn command-line target arguments into a list of unique Targets.

    An argument containing ``/`` is a host file, anything else a pattern.
    Targets with the same label are kept once, in first-occurrence order.
    ``excludes`` use the same syntax (files too): an exclude without user and
    port removes every target with that host name; one with a user or port
    removes the targets with exactly that label.  More than ``max_hosts``
    unique targets (counted before excludes apply) is a
    :class:`TargetError`; each argument's count is checked before it is
    expanded.  Each file is read once even when named several times.
    """
    cache: Dict[str, List[str]] = {}
    seen: Dict[str, Target] = {}
    with _gc_paused():
        for arg in args:
            for piece in _arg_pieces(arg, expand, max_hosts, cache):
                _add_targets(seen, piece)
                if len(seen) > max_hosts:
                    raise TargetError(
                        "too many hosts: %r brings the total over the limit of %d (--max-hosts)"
                        % (arg, max_hosts)
                    )
    excludes = list(excludes)
    if not excludes:
        return list(seen.values())
    bare, full = _exclusions(excludes, expand, max_hosts, cache)
    return [t for label, t in seen.items() if label not in full and t.name not in bare]


class Resolver:
    """:func:`resolve` in steps, for targets that arrive over time (a host file that is a pipe).

    Each call returns the new targets only: duplicates of earlier ones and
    excluded ones are dropped; going over ``max_hosts`` is a TargetError, and
    so is a new target that ``check`` (a callable) refuses with a TargetError:
    the whole line is refused.
    """

    def __init__(self, excludes: Iterable[str] = (), expand: bool = True,
                 max_hosts: int = DEFAULT_MAX_HOSTS, seen: Iterable[Target] = (),
                 check: Optional[Callable[[Target], None]] = None):
        self.check = check
        self.expand = expand
        self.max_hosts = max_hosts
        self._cache: Dict[str, List[str]] = {}
        self._bare, self._full = _exclusions(excludes, expand, max_hosts, self._cache)
        self._seen: Dict[str, Target] = {t.label: t for t in seen}

    def add_line(self, line: str, where: str = "") -> List[Target]:
        """The new targets of one host-file line (comments and blank lines allowed)."""
        line = strip_comment(line)
        if not line:
            return []
        fresh: Dict[str, Target] = {}
        for piece in _parse_text(line, self.expand, self.max_hosts, where):
            _add_targets(fresh, piece)
        new = [t for label, t in fresh.items() if label not in self._seen]
        if len(self._seen) + len(new) > self.max_hosts:
            raise TargetError("too many hosts: %r brings the total over the limit of %d "
                              "(--max-hosts)" % (where + line, self.max_hosts))
        kept = [t for t in new if t.label not in self._full and t.name not in self._bare]
        if self.check is not None:
            for target in kept:
                try:
                    self.check(target)
                except TargetError as err:
                    raise TargetError(where + str(err)) from None
        self._seen.update((t.label, t) for t in new)
        return kept


# ---------------------------------------------------------------------------
# folding back to ranges

_DIGITS = "0123456789"
# Every allowed name character that is not a digit.
_NON_DIGITS = "".join(sorted(_NAME_CHARS.difference(_DIGITS)))
_NATURAL_SPLIT = re.compile(r"([0-9]+)", re.ASCII).split
# Digit runs longer than this are left as they are (int() has limits).
_MAX_FOLD_DIGITS = 64


def _pad(value: int, width: int) -> str:
    """Print ``value`` zero-padded to ``width`` (0: no padding)."""
    return str(value).zfill(width)


def _runs(values: List[int]) -> Iterator[Tuple[int, int]]:
    """Yield (first, last) of each run of consecutive integers in sorted, unique ``values``.

    Within a run ``values[k] - k`` is constant, so a long run is found by a
    binary search instead of a step per element.
    """
    i, n = 0, len(values)
    while i < n:
        first = values[i]
        if i + 1 == n or values[i + 1] != first + 1:
            yield first, first
            i += 1
            continue
        lo, hi = i + 1, n - 1  # values[lo] is in the run; find the last index that is
        offset = first - i
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if values[mid] - mid == offset:
                lo = mid
            else:
                hi = mid - 1
        yield first, values[lo]
        i = lo + 1


def _fold_numbers(digits: Iterable[str]) -> str:
    """Fold digit strings into ``[a-b,c]`` form that expands back to exactly them.

    A string with a leading zero (``"08"``) belongs to the padded width
    ``len("08")``; a padded range may run on into unpadded numbers that are at
    least that wide (``"08-12"``), since their printed form does not change.
    A single string is returned as it is, without brackets.
    """
    unique = set(digits)
    if len(unique) == 1:
        return next(iter(unique))
    zeros = [text for text in unique if text[0] == "0" and len(text) > 1]
    padded: Dict[int, Set[int]] = {}
    for text in zeros:
        padded.setdefault(len(text), set()).add(int(text))
    if zeros:
        unique.difference_update(zeros)
    plain: Set[int] = set(map(int, unique))
    elems: List[Tuple[int, int, str]] = []
    covered: Set[int] = set()
    for width in sorted(padded):
        boundary = 10 ** (width - 1)
        for first, last in _runs(sorted(padded[width])):
            if last == boundary - 1:
                while last + 1 in plain:
                    last += 1
                    covered.add(last)
            elems.append((first, width, _range_text(first, last, width)))
    for first, last in _runs(sorted(plain - covered)):
        elems.append((first, 0, _range_text(first, last, 0)))
    elems.sort()
    return "[" + ",".join(text for _, _, text in elems) + "]"


def _range_text(first: int, last: int, width: int) -> str:
    """``first`` or ``first-last``, both printed with ``width`` padding."""
    if first == last:
        return _pad(first, width)
    return _pad(first, width) + "-" + _pad(last, width)


def _split_label(label: str) -> Tuple[str, str, str]:
    """Split a label into (user, name, port) strings ('' where missing)."""
    user, at, rest = label.partition("@")
    if not at:
        user, rest = "", label
    name, colon, port = rest.rpartition(":")
    if not colon:
        name, port = rest, ""
    return user, name, port


def _fold_pass(
    entries: Set[Tuple[str, str, Tuple[str, ...]]]
) -> Tuple[Set[Tuple[str, str, Tuple[str, ...]]], bool]:
    """Fold the last unfolded digit run of every entry's leading literal.

    Entries are (user, port, parts) with ``parts`` alternating literal text
    and already-folded ranges; only ``parts[0]`` still holds unfolded digits.
    Entries equal except for that digit run are merged.
    """
    groups: Dict[Tuple[str, str, str, Tuple[str, ...]], List[str]] = {}
    done: Set[Tuple[str, str, Tuple[str, ...]]] = set()
    for entry in entries:
        user, port, parts = entry
        text = parts[0]
        core = text.rstrip(_NON_DIGITS)  # up to the last digit, if any
        head = core.rstrip(_DIGITS)
        digits = core[len(head):]
        if not digits or len(digits) > _MAX_FOLD_DIGITS:
            done.add(entry)
            continue
        key = (user, port, head, (text[len(core):],) + parts[1:])
        groups.setdefault(key, []).append(digits)
    if not groups:
        return done, False
    for (user, port, head, rest), digits in groups.items():
        done.add((user, port, (head, _fold_numbers(digits)) + rest))
    return done, True


def _natural_key(text: str) -> Tuple:
    """Sort key comparing digit runs by value ('n2' < 'n10', 'n[1-4]' < 'n5')."""
    chunks = _NATURAL_SPLIT(text.replace("[", ""))
    return (tuple(int(c) if i % 2 else c for i, c in enumerate(chunks)), text)


def fold(labels: Iterable[str]) -> str:
    """Fold labels back into the shortest comma-joined range form.

    ``["node1", ..., "node40", "node45"]`` gives ``"node[1-40,45]"``; a
    single host is returned as is.  The last digit run of the name is folded
    first (``user@`` and ``:port`` are part of the grouping key, never
    folded); then groups that differ only in an earlier digit run and have the
    same ranges are folded too (``rack[1-2]n[1-4]``).  Zero padding is kept
    exactly, so ``set(expand(fold(x))) == set(x)``.  Groups are sorted
    naturally.  An empty input gives ``""``.
    """
    with _gc_paused():
        entries = set()
        for label in labels:
            if "@" in label or ":" in label:
                user, name, port = _split_label(label)
                entries.add((user, port, (name,)))
            else:
                entries.add(("", "", (label,)))
        changed = True
        while changed:
            entries, changed = _fold_pass(entries)
    rendered = []
    for user, port, parts in entries:
        name = "".join(parts)
        text = (user + "@" if user else "") + name + (":" + port if port else "")
        rendered.append(((_natural_key(name), user, int(port) if port.isdigit() else 0, port), text))
    rendered.sort()
    return ",".join(text for _, text in rendered)


def fold_targets(targets: Iterable[Target]) -> str:
    """Fold Targets by their labels: ``fold(t.label for t in targets)``."""
    return fold(t.label for t in targets)
