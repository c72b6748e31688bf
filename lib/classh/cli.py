"""The command line: docopt usage -> options -> a run -> an exit status."""
from __future__ import annotations

import getpass
import os
import re
import shlex
import sys
from typing import List, Optional

from docopt import DocoptExit, docopt

from . import __version__
from .display import (ClassicDisplay, GatherDisplay, JsonDisplay, LinesDisplay, Palette,
                      ProgressDisplay, SafeStream, StatusLine, is_terminal, summary_line,
                      use_colour)
from .interactive import Shell
from .hostmode import HostRun, TargetSource, is_stream, open_stream, task_maker
from .options import Options, OptionError, from_env, positive_int
from .results import JsonFile, ResultsDir, ResultsError, prepare_results_dir
from .routers import RouterError, Routing, make_router
from .persist import DEFAULT_PERSIST, PersistError, control_dir, sockets_for, sweep_stale
from .ssh import SshCommand, SshConfigError
from .supervisor import ListSource, Task
from .transfer import SlurpSink, TransferError, copy_plan, slurp_command
from .targets import Resolver, TargetError, resolve

USAGE = """classh - the Cluster Administrator's ssh.

Runs COMMAND over ssh on every TARGET, many hosts at a time, and records each
host's output, errors and exit status.

Usage:
  classh [options] [-x PATTERN]... [-O OPTION]... [-S DEST]... [-E DEST]...
         COMMAND [TARGET...]
  classh [options] [-x PATTERN]... [-O OPTION]... [-S DEST]... [-E DEST]...
         --copy SRC... --dest=PATH [TARGET...]
  classh [options] [-x PATTERN]... [-O OPTION]... [-S DEST]... [-E DEST]...
         --slurp=REMOTE --dest=PATH [TARGET...]
  classh [options] [-x PATTERN]... [-O OPTION]... -i [TARGET...]
  classh [options] [-x PATTERN]... --close [TARGET...]
  classh -h | --help
  classh --version

Targets:
  A TARGET is [user@]name[:port], or several separated by commas, or a host
  file (an argument with a '/' outside brackets): one pattern a line, '#'
  comments; a pipe such as /dev/stdin is read as lines arrive.
  Names expand ranges: n[1-40,45]  n[01-10]  rack[1-2]n[1-4]  n[1-10/2].
  With no TARGET, the hosts in $CLASSH_HOSTS are used.

Modes:
  --copy SRC...                  Push local files and directories into PATH
                                 (given with --dest) on every host: a
                                 directory, made if needed; but a single
                                 file is written as PATH unless PATH is a
                                 directory there.
  --slurp REMOTE                 Pull REMOTE (a file or a directory) from
                                 every host into PATH/HOST/ here (--dest).
  --dest PATH                    Where --copy and --slurp put files.
  --close                        Close the --persist connections to TARGETs.

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
  --format FORMAT                Per-host display: classic (the default),
                                 lines (each line as "host: line", live),
                                 gather (identical results grouped, at the
                                 end) or json (one JSON object per host).
  -q, --quiet                    No per-host display.
  --status                       A live status line on stderr (terminal only).
  -o DIR, --results DIR          Write host.out, host.err, host.ret for each
                                 host and summary.jsonl into DIR (new or
                                 empty unless --resume or --overwrite).
  --resume                       With -o: skip hosts whose .ret is 0 in DIR,
                                 rerun the others.
  --overwrite                    Allow replacing results: those of the hosts
                                 run in an existing DIR, a whole --json FILE.
  --json FILE                    Save every result, output included, as JSON
                                 Lines in FILE (a new file).
  -S DEST, --success DEST        Route successful hosts to DEST (repeatable).
  -E DEST, --failure DEST        Route failed hosts to DEST (repeatable).
  -P, --password                 Ask for a password once (on the terminal)
                                 and answer every ssh password, passphrase
                                 and sudo prompt with it.
  --password-file FILE           Read that password from the first line of
                                 FILE instead.
  --sudo                         Run COMMAND under sudo on each host
                                 (--sudo=USER: as USER).
  --sudo-user USER               The same as --sudo=USER.
  --persist=SECS                 Keep one ssh connection per host open SECS
                                 seconds after its last use, for the next
                                 runs (--persist alone: 300).
  --accept-new-hostkeys          Let ssh add keys of hosts it has never seen
                                 (StrictHostKeyChecking=accept-new).
  -i, --interactive              A shell: each line typed runs on every
                                 TARGET, shown gathered (:help for more).
  --progress                     One character per host on stderr: . ok,
                                 ? remote error, ~ ssh error, ! killed or
                                 timed out (and no per-host display unless
                                 a format is given).
  -h, --help                     Show this help.
  --version                      Show the version.

COMMAND may hold {host}, replaced by each target's name.

Destinations (-S, -E): "-" is classh's stdout (host names, one a line); an
existing directory gets host.out and host.err (and host.ret for -E); an
executable, or a command line starting with one, is started once through
the shell and gets host names on its stdin as hosts finish; anything else
is a file the names are appended to.

Environment:
  CLASSH_NUMJOBS, CLASSH_TIMEOUT, CLASSH_SSH, CLASSH_SSH_OPTIONS, CLASSH_USER,
  CLASSH_RESULTS, CLASSH_PASSWORD_FILE give defaults for -n, -t, --ssh, -O
  (several, space-separated), -l, -o, --password-file;
  CLASSH_HOSTS gives the targets when none are named; NO_COLOR turns colour off.

Exit status:
  0 all hosts ok; 1 classh failed; 2 usage or bad input; 3 some host timed
  out or was killed; 4 some ssh error; 5 some command exited non-zero (the
  first of 4, 3, 5 that applies); 130/143 interrupted by SIGINT/SIGTERM.
"""

FORMATS = ("classic", "lines", "gather", "json")
#: Bytes of each stream kept in memory per host when output goes to a results directory.
KEEP_WITH_RESULTS = 1 << 20
EXIT_CLASSH = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input; the message names the offending text."""


def parse(argv: List[str]) -> dict:
    """Parse ``argv`` with the docopt usage (UsageError on bad syntax).

    ``--sudo=USER`` is spelled ``--sudo-user USER`` for docopt, which has no
    options with optional values.
    """
    argv = [_respell(word) for word in argv]
    try:
        args = docopt(USAGE, argv, default_help=False, version=None)
    except DocoptExit:
        raise UsageError("%s (see classh --help)" % explain_bad_arguments(argv)) from None
    _trim_repeats(args, argv)
    _drop_double_dash(args)
    return args


def _drop_double_dash(args: dict) -> None:
    """docopt keeps a literal ``--`` among the positionals: take it out."""
    words = ([args["COMMAND"]] if args["COMMAND"] is not None else []) + list(args["TARGET"])
    if "--" not in words:
        return
    words.remove("--")
    if args["COMMAND"] is not None:
        args["COMMAND"] = words.pop(0) if words else None
    args["TARGET"] = words


_REPEATABLE = {"--exclude": "-x", "--ssh-option": "-O", "--success": "-S", "--failure": "-E"}


def _trim_repeats(args: dict, argv: List[str]) -> None:
    """Undo docopt-ng's habit of repeating a repeatable option's last value once per
    usage pattern that names it: keep as many values as the option was given."""
    for long, short in _REPEATABLE.items():
        given = 0
        for word in argv:
            if word == "--":
                break
            if word == long or word.startswith(long + "=") or word.startswith(short):
                given += 1
        if len(args[long]) > given:
            del args[long][given:]


def _respell(word: str) -> str:
    if word.startswith("--sudo="):
        return "--sudo-user=" + word[len("--sudo="):]
    if word == "--persist":
        return "--persist=%d" % DEFAULT_PERSIST
    return word


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
        "results": args["--results"],
        "sudo_user": args["--sudo-user"],
    }
    values.update({name: value for name, value in given.items() if value is not None})
    if args["--ssh-option"]:
        values["ssh_options"] = list(args["--ssh-option"])
    values["expand"] = not args["--noexpand"]
    values["sudo"] = bool(args["--sudo"] or args["--sudo-user"])
    values["accept_new_hostkeys"] = args["--accept-new-hostkeys"]
    values["password"] = read_password(args, environ)
    if args["--persist"] is not None:
        values["persist"] = positive_int("--persist", args["--persist"])
    if args["--max-hosts"] is not None:
        values["max_hosts"] = positive_int("--max-hosts", args["--max-hosts"])
    return Options(**values)


def read_password(args: dict, environ) -> Optional[str]:
    """The password from --password-file / $CLASSH_PASSWORD_FILE, or asked once with -P."""
    path = args["--password-file"] or environ.get("CLASSH_PASSWORD_FILE")
    if path:
        try:
            with open(path, "rb") as secret:
                line = secret.readline()
        except OSError as exc:
            raise UsageError("cannot read password file %r: %s" % (path, exc.strerror)) from None
        return line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
    if not args["--password"]:
        return None
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        raise UsageError("-P needs a terminal to ask on; use --password-file") from None
    return getpass.getpass("Password: ")  # reads /dev/tty, echo off


def target_args(args: dict, environ) -> List[str]:
    """The TARGET arguments, or $CLASSH_HOSTS split on whitespace."""
    names = args["TARGET"]
    if args["--interactive"] and args["COMMAND"]:
        return [args["COMMAND"]] + names  # with -i there is no COMMAND
    if names:
        return names
    hosts = environ.get("CLASSH_HOSTS", "").split()
    if not hosts:
        raise UsageError("no TARGET given and CLASSH_HOSTS is not set")
    return hosts


def displays(args: dict, out: SafeStream, err: SafeStream, source: TargetSource) -> list:
    """The observers that show results, per --format/-q/--progress/--status."""
    fmt = args["--format"]
    if fmt is not None and fmt not in FORMATS:
        raise UsageError("unknown --format %r (choose from %s)" % (fmt, ", ".join(FORMATS)))
    observers = []
    if args["--status"]:
        total = None if source.streams else len(source.queue)
        observers.append(StatusLine(err, total, enabled=is_terminal(sys.stderr)))
    if args["--progress"]:
        observers.append(ProgressDisplay(err))
    if args["--quiet"] or (args["--progress"] and fmt is None):
        return observers
    palette = Palette(use_colour(sys.stdout))
    if fmt == "lines":
        observers.append(LinesDisplay(out, err))
    elif fmt == "gather":
        observers.append(GatherDisplay(out, palette))
    elif fmt == "json":
        observers.append(JsonDisplay(out))
    else:
        width = min(40, max((len(t.label) for t in source.queue), default=0))
        observers.append(ClassicDisplay(out, width, palette))
    return observers


def result_sinks(args: dict, options: Options, source: TargetSource, out: SafeStream) -> list:
    """Results directory, --json file and -S/-E routing observers.

    Everything is checked before anything runs: a refused destination leaves
    no file behind. With --resume, hosts already done are marked to skip.
    """
    sinks = []
    directory = options.results
    resume, overwrite = args["--resume"], args["--overwrite"]
    if resume and not directory:
        raise UsageError("--resume needs a results directory (-o DIR)")
    success = [make_router(dest, False, out, directory) for dest in args["--success"]]
    failure = [make_router(dest, True, out, directory) for dest in args["--failure"]]
    routing = Routing(success, failure) if success or failure else None
    if directory:
        source.skip = prepare_results_dir(directory, resume=resume, overwrite=overwrite)
    if routing:
        routing.check([t.label for t in source.queue if t.label not in source.skip])
    if directory:
        sinks.append(ResultsDir(directory, replace=resume or overwrite, stdout=not args["--slurp"]))
    if args["--json"]:
        sinks.append(JsonFile(args["--json"], overwrite=overwrite))
    if routing:
        sinks.append(routing)
    return sinks


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
    if args["--interactive"]:
        return interactive(args, environ, options)
    if args["--close"]:
        return close_connections(args, environ, options)
    command, transfer_sinks, options = mode_command(args, argv, options)
    source = target_source(args, environ, options, command)
    out, err = SafeStream(sys.stdout.buffer), SafeStream(sys.stderr.buffer)
    observers = (transfer_sinks + result_sinks(args, options, source, out)
                 + displays(args, out, err, source))
    keep = None
    if not any(getattr(o, "needs_output", False) for o in observers):
        keep = 0
    elif options.results and not args["--json"]:
        keep = KEEP_WITH_RESULTS  # the files have it all; --json must have it all too
    if transfer_sinks:
        keep = (0, keep)  # --slurp: stdout is the tar stream, on disk only
    summary = HostRun(source, options, observers, keep=keep).run()
    for problem in summary.input_errors:
        err.write(("classh: %s\n" % problem).encode())
    line = summary_line(summary.tally, summary.elapsed, summary.interrupted_by is not None)
    if source.skipped:
        line += " (%d skipped: done before)" % source.skipped
    err.write((line + "\n").encode())
    return summary.exit_status


def mode_command(args: dict, argv: List[str], options: Options):
    """(remote command, extra observers, options) for host mode, --copy or --slurp."""
    if args["--copy"]:
        sources = copy_sources(argv, args)
        command, archive = copy_plan(sources, args["--dest"])
        return command, [], options.replace(input=archive)
    if args["--slurp"]:
        return slurp_command(args["--slurp"]), [SlurpSink(args["--dest"])], options
    return args["COMMAND"], [], options


def copy_sources(argv: List[str], args: dict) -> List[str]:
    """The SRC words of ``--copy SRC... --dest PATH`` (docopt files the rest under TARGET)."""
    start = next(i for i, word in enumerate(argv) if word == "--copy" or word.startswith("--copy="))
    words = [argv[start][len("--copy="):]] if argv[start].startswith("--copy=") else []
    for word in argv[start + 1:]:
        if word.startswith("--dest"):
            break
        words.append(word)
    if not words:
        raise UsageError("--copy needs at least one SRC before --dest")
    del args["TARGET"][:len(words) - 1]  # docopt took SRC[0] as --copy's value, the rest as TARGETs
    return words


def close_connections(args: dict, environ, options: Options) -> int:
    """``classh --close``: end the --persist masters of the targets."""
    targets = resolve(target_args(args, environ), args["--exclude"],
                      expand=options.expand, max_hosts=options.max_hosts)
    directory = control_dir(environ)
    sweep_stale(directory)
    names = os.listdir(directory)
    ssh = SshCommand(options)
    tasks = [Task(key=t.label, argv=ssh.control_argv(t, "exit", path), context=t)
             for t in targets for path in sockets_for(t, directory, names)]
    err = SafeStream(sys.stderr.buffer)
    if not tasks:
        err.write(b"classh: no open connections to close\n")
        return 0
    summary = HostRun(ListSource(tasks), options, keep=0).run()
    err.write(("classh: closed %d of %d connections in %.1f s\n" % (
        summary.tally.counts["ok"], summary.tally.total, summary.elapsed)).encode())
    return summary.exit_status


def target_source(args: dict, environ, options: Options, command: Optional[str]):
    """The TargetSource for the TARGET arguments: pipes (``/dev/stdin``) are read as lines arrive."""
    names = target_args(args, environ)
    streamed = [arg for arg in names if is_stream(arg)]
    targets = resolve([arg for arg in names if arg not in streamed], args["--exclude"],
                      expand=options.expand, max_hosts=options.max_hosts)
    streams = {}
    resolver = None
    if streamed:
        resolver = Resolver(args["--exclude"], options.expand, options.max_hosts, seen=targets)
        streams = {open_stream(path): path for path in dict.fromkeys(streamed)}
    return TargetSource(targets, task_maker(command, options), streams, resolver)


_NOT_INTERACTIVE = ("--results", "--json", "--format", "--quiet", "--progress", "--status",
                    "--resume", "--overwrite", "--success", "--failure")


def interactive(args: dict, environ, options: Options) -> int:
    """``classh -i``: the shell over the targets."""
    given = [name for name in _NOT_INTERACTIVE if args[name]]
    if given:
        raise UsageError("-i shows every result gathered and saves none: %s cannot be used with it"
                         % ", ".join(given))
    targets = resolve(target_args(args, environ), args["--exclude"],
                      expand=options.expand, max_hosts=options.max_hosts)
    out, err = SafeStream(sys.stdout.buffer), SafeStream(sys.stderr.buffer)
    on_terminal = is_terminal(sys.stdin)
    if on_terminal:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
    shell = Shell(targets, options, out, err, _line_reader(on_terminal),
                  prompt="classh> " if on_terminal else "", palette=Palette(use_colour(sys.stdout)))
    return shell.run()


def _line_reader(on_terminal: bool):
    def read_line(prompt: str) -> Optional[str]:
        if not on_terminal:
            line = sys.stdin.readline()
            return line if line else None
        while True:
            try:
                return input(prompt)
            except EOFError:
                sys.stderr.write("\n")
                return None
            except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line, not the end
                sys.stderr.write("^C\n")
    return read_line


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of the ``classh`` command."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        status = run(argv)
    except (UsageError, OptionError, TargetError, SshConfigError, ResultsError, RouterError,
            TransferError, PersistError) as exc:
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
