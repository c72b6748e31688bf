"""The command line: docopt usage -> options -> a run -> an exit status."""
from __future__ import annotations

import os
import re
import shlex
import sys
from typing import List, Optional

from docopt import DocoptExit, docopt

from . import __version__
from .display import (ClassicDisplay, LinesDisplay, Palette, ProgressDisplay, SafeStream,
                      summary_line, use_colour)
from .hostmode import HostRun
from .options import Options, OptionError, from_env, port_number, positive_int
from .ssh import SshConfigError
from .targets import TargetError, resolve

USAGE = """classh - the Cluster Administrator's ssh.

Runs COMMAND over ssh on every TARGET, many hosts at a time, and records each
host's output, errors and exit status.

Usage:
  classh [options] [-x PATTERN]... [-O OPTION]... COMMAND [TARGET...]
  classh -h | --help
  classh --version

Targets:
  A TARGET is [user@]name[:port], or several separated by commas, or a host
  file (any argument holding a '/'): one pattern a line, '#' comments.
  Names expand ranges: n[1-40,45]  n[01-10]  rack[1-2]n[1-4]  n[1-10/2].
  With no TARGET, the hosts in $CLASSH_HOSTS are used.

Options:
  -n N, --numjobs N              Run on at most N hosts at a time (default 100).
  -t SECS, --timeout SECS        Kill a host's command after SECS seconds
                                 (default 300; 0 or less: no timeout).
  --connect-timeout SECS         ssh's ConnectTimeout (default 10).
  -x PATTERN, --exclude PATTERN  Leave these hosts out (repeatable).
  --noexpand                     Take names literally: no range expansion.
  --max-hosts N                  Refuse more than N hosts (default 1000000).
  -l USER, --user USER           Log in as USER unless the target names one.
  -p PORT, --port PORT           Connect to PORT unless the target names one.
  --ssh CMD                      The ssh command line (default: ssh).
  -O OPTION, --ssh-option OPTION  Pass -o OPTION to ssh (repeatable).
  --format FORMAT                Per-host display: classic (the default) or
                                 lines (each line as "host: line", live).
  -q, --quiet                    No per-host display.
  --progress                     One character per host on stderr: . ok,
                                 ? remote error, ~ ssh error, ! killed or
                                 timed out (and no per-host display unless
                                 a format is given).
  -h, --help                     Show this help.
  --version                      Show the version.

COMMAND may hold {host}, replaced by each target's name.

Environment:
  CLASSH_NUMJOBS, CLASSH_TIMEOUT, CLASSH_SSH, CLASSH_SSH_OPTIONS, CLASSH_USER
  give defaults for -n, -t, --ssh, -O (several, space-separated), -l;
  CLASSH_HOSTS gives the targets when none are named; NO_COLOR turns colour off.

Exit status:
  0 all hosts ok; 1 classh failed; 2 usage or bad input; 3 some host timed
  out or was killed; 4 some ssh error; 5 some command exited non-zero (the
  first of 4, 3, 5 that applies); 130/143 interrupted by SIGINT/SIGTERM.
"""

FORMATS = ("classic", "lines")
EXIT_CLASSH = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input; the message names the offending text."""


def parse(argv: List[str]) -> dict:
    """Parse ``argv`` with the docopt usage (UsageError on bad syntax)."""
    try:
        return docopt(USAGE, argv, default_help=False, version=None)
    except DocoptExit:
        raise UsageError("%s (see classh --help)" % explain_bad_arguments(argv)) from None


def explain_bad_arguments(argv: List[str]) -> str:
    """Name the first argument docopt could not place, in words."""
    known = set(re.findall(r"(?m)^\s+(?:(-\w)[ ,]\S*,? ?)?(--[\w-]+)", USAGE))
    names = {name for pair in known for name in pair if name}
    for word in argv:
        if word == "--":
            break
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0] if word.startswith("--") else word[:2]
            if name not in names:
                return "unknown option %r" % word
    if not any(not word.startswith("-") for word in argv):
        return "no COMMAND given"
    return "bad arguments: %s" % " ".join(shlex.quote(word) for word in argv)


def build_options(args: dict, environ) -> Options:
    """Options from the parsed arguments over the CLASSH_* environment defaults."""
    values = from_env(environ)
    given = {
        "numjobs": args["--numjobs"],
        "timeout": args["--timeout"],
        "connect_timeout": args["--connect-timeout"],
        "user": args["--user"],
        "port": args["--port"],
        "ssh": args["--ssh"],
    }
    values.update({name: value for name, value in given.items() if value is not None})
    if args["--ssh-option"]:
        values["ssh_options"] = list(args["--ssh-option"])
    if values.get("user") is not None and (not values["user"] or values["user"].startswith("-")):
        raise OptionError("bad user name %r" % values["user"])
    values["expand"] = not args["--noexpand"]
    if args["--max-hosts"] is not None:
        values["max_hosts"] = positive_int("--max-hosts", args["--max-hosts"])
    if values.get("port") is not None:
        values["port"] = port_number(values["port"])
    return Options(**values)


def target_args(args: dict, environ) -> List[str]:
    """The TARGET arguments, or $CLASSH_HOSTS split on whitespace."""
    if args["TARGET"]:
        return args["TARGET"]
    hosts = environ.get("CLASSH_HOSTS", "").split()
    if not hosts:
        raise UsageError("no TARGET given and CLASSH_HOSTS is not set")
    return hosts


def displays(args: dict, out: SafeStream, err: SafeStream, width: int) -> list:
    """The observers that show per-host results, per --format/-q/--progress."""
    fmt = args["--format"]
    if fmt is not None and fmt not in FORMATS:
        raise UsageError("unknown --format %r (choose from %s)" % (fmt, ", ".join(FORMATS)))
    observers = []
    if args["--progress"]:
        observers.append(ProgressDisplay(err))
    if args["--quiet"] or (args["--progress"] and fmt is None):
        return observers
    if fmt == "lines":
        observers.append(LinesDisplay(out, err))
    else:
        observers.append(ClassicDisplay(out, width, Palette(use_colour(sys.stdout))))
    return observers


def run(argv: List[str], environ=None) -> int:
    """Run classh with ``argv`` (without the program name); return the exit status."""
    environ = os.environ if environ is None else environ
    args = parse(argv)
    if args["--help"]:
        sys.stdout.write(USAGE)
        return 0
    if args["--version"]:
        sys.stdout.write("classh %s\n" % __version__)
        return 0
    options = build_options(args, environ)
    targets = resolve(target_args(args, environ), args["--exclude"],
                      expand=options.expand, max_hosts=options.max_hosts)
    out, err = SafeStream(sys.stdout.buffer), SafeStream(sys.stderr.buffer)
    width = min(40, max((len(t.label) for t in targets), default=0))
    observers = displays(args, out, err, width)
    keep = None if any(getattr(o, "needs_output", False) for o in observers) else 0
    host_run = HostRun(targets, args["COMMAND"], options, observers, keep=keep)
    summary = host_run.run()
    for observer in observers:
        if hasattr(observer, "close"):
            observer.close()
    err.write((summary_line(summary.tally, summary.elapsed, summary.interrupted_by is not None)
               + "\n").encode())
    return summary.exit_status


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of the ``classh`` command."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        status = run(argv)
    except (UsageError, OptionError, TargetError, SshConfigError) as exc:
        sys.stderr.write("classh: %s\n" % exc)
        status = EXIT_USAGE
    except KeyboardInterrupt:
        status = 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for users
        if os.environ.get("CLASSH_DEBUG"):
            raise
        sys.stderr.write("classh: internal error: %s: %s\n" % (type(exc).__name__, exc))
        status = EXIT_CLASSH
    sys.exit(status)
