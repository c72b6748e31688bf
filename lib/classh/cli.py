"""The command line: docopt usage -> options -> a run -> an exit status."""
from __future__ import annotations

import getpass
import os
import re
import resource
import shlex
import sys
from typing import Callable, Dict, List, Optional

from docopt import (DocoptExit, DocoptLanguageError, Option, Tokens, docopt, parse_argv,
                    parse_docstring_sections, parse_longer, parse_options, parse_shorts)

from . import __version__
from .display import (ClassicDisplay, GatherDisplay, JsonDisplay, LinesDisplay, Palette,
                      ProgressDisplay, SafeStream, StatusLine, is_terminal, summary_line,
                      use_colour)
from .display import KeepOrder
from .interactive import Shell
from .hostmode import TargetSource, is_stream, open_stream, task_maker
from .observers import SinkError
from .options import MAX_PERSIST, Options, OptionError, from_env, positive_int
from .jobviews import (JOB_FORMATS, ActiveNodes, JobLog, JobOutput, JobStatusLine,
                       job_plan, job_summary_line)
from .results import STDOUT_PATHS, ResultsError, write_run_id
from .run import EXIT_CLASSH, EXIT_USAGE, Run, RunSummary, assemble
from .routers import RouterError, Routing, make_router
from .persist import DEFAULT_PERSIST, PersistError, control_dir, sockets_for, sweep_stale
from .ssh import SshCommand, SshConfigError
from .supervisor import ListSource, Task
from .transfer import SlurpSink, TransferError, copy_plan, slurp_command
from .targets import (DEFAULT_MAX_HOSTS, Resolver, Target, TargetError, fold, is_host_file,
                      resolve, strip_comment)

USAGE = """classh - the Cluster Administrator's ssh.

Runs COMMAND over ssh on every TARGET, many hosts at a time, and records each
host's output, errors and exit status.

Usage:
  classh [options] [-x PATTERN]... [-O OPTION]... [-S DEST]... [-E DEST]...
         [-w HOSTS]...
         [--job CMD]... [--job-file FILE]... [--input FILE]... [--init-file FILE]...
         [--] (-i | --close | --list | --fold | --copy=SRC... --dest=PATH
               | --slurp=REMOTE --dest=PATH
               | (--node=HOST | --node-file=FILE | --machines=FILE)...
               | --kill=ID [(--node=HOST | --node-file=FILE | --machines=FILE)...]
               | COMMAND) [--] [TARGET...]
  classh -h | --help
  classh --version

Targets:
  A TARGET is [user@]name[:port], or several separated by commas, or a host
  file (an argument with a '/' outside brackets): one pattern a line, '#'
  comments; a pipe such as /dev/stdin is read as lines arrive.
  Names expand ranges: n[1-40,45]  n[01-10]  rack[1-2]n[1-4]  n[1-10/2].
  Each -w HOSTS gives more (pdsh, clush; ^FILE: a host file). With no
  TARGET, the hosts in $CLASSH_HOSTS are used. No host at all (an empty
  host file, every host excluded) is an error; a pipe that ends with no
  host is nothing to do (exit 0). A TARGET naming a file here without a
  '/' is refused.

Modes:
  --copy SRC                     Push a local file or directory into PATH
                                 (given with --dest) on every host; one SRC
                                 per --copy, repeatable. PATH is a
                                 directory, made if needed; but a single
                                 file is written as PATH unless PATH is a
                                 directory there.
  --slurp REMOTE                 Pull REMOTE (a file or a directory) from
                                 every host into PATH/HOST/ here (--dest).
  --dest PATH                    Where --copy and --slurp put files.
  --close                        Close the --persist connections to TARGETs.
  --list                         Print the hosts a run would reach (after
                                 host files, ranges, -x, duplicates), one a
                                 line; run nothing.
  --fold                         Read host names on stdin and print them
                                 folded into ranges: n[1-40,45].
  --count                        With --list or --fold: print how many hosts.
  --kill ID                      Kill a job run's processes on every TARGET
                                 (or on the nodes of --node, --node-file or
                                 of a --machines file, each over its own
                                 connect_cmd): ID
                                 is RUN-ID (the whole run) or RUN-ID.JOB-ID
                                 (one job). Each process whose environment
                                 holds that CLASSH_TAG ends with its process
                                 group. Prints "host: N processes"; exit 0
                                 when every host answered, none found too.

Job mode (chosen by --node, --node-file or --machines; no COMMAND, no TARGET):
  Jobs are run over node slots, each slot one job at a time, over one ssh
  connection per node; a dead node is dropped and its job goes to another.
  --node HOST                    A node: a pattern as a TARGET (ranges,
                                 commas); HOST*K, or a node named K times,
                                 has K slots (repeatable).
  --node-file FILE               Nodes from FILE, one pattern a line
                                 (repeatable).
  --machines FILE                Nodes from a kssh machines file: a JSON list
                                 of {"hostname", "username", "port", "slots",
                                 "wd", "connect_cmd", "init_timeout"}; the
                                 "default" hostname gives defaults.
  --init-file FILE               Copied into each node's working directory
                                 before its first job (repeatable).
  --init-script FILE             Copied there too, and run once per node; a
                                 node whose set-up fails is dropped.
  --job CMD                      A job: CMD runs once, on some node
                                 (repeatable).
  --job-file FILE                Jobs from FILE, one command a line; blank
                                 lines and '#' comments skipped; a pipe
                                 such as "-" (stdin) is read as lines arrive
                                 (repeatable).
  --on-each-node CMD             A job running CMD once on every distinct
                                 node, whatever its slots.
  --input FILE                   Blocks: the stdin of --task runs. One FILE
                                 ('-': stdin, read as it arrives) is cut into
                                 blocks of --blocksize lines; several FILEs
                                 (--input a b c, or --input repeated) are
                                 one block each.
  --task CMD                     The command each block is fed to.
  --blocksize N                  Lines per block (default 1, at most 10^9).
  --task-success-code N          The exit status that means success
                                 (default 0).
  --retries N                    Attempts per job (default 3).
  --stall-factor F               A job running F times longer than the
                                 moving average of completed ones is killed
                                 (while other jobs wait) and runs again on
                                 another node (job lists: only when given);
                                 a block gets a backup copy on another node
                                 instead, the first to finish wins (blocks:
                                 default 5; 0: never).
  --stall-min SECS               Never count a job as stalled before SECS
                                 seconds (default 10).
  --fail-node-on-error           A job exiting non-zero also drops its node.
  --max-node-uses N              Run at most N jobs on one node.
  --max-nodes N                  Use at most N nodes.
  --no-reuse                     Log in once per job (no shared connection).
  --gpus                         Slots are the nodes' free GPUs, as
                                 nvidia-smi lists them; a job on GPU I runs
                                 with CUDA_VISIBLE_DEVICES=I.
  --gpu-mem MIB                  A GPU needs MIB MiB free (default 0); it
                                 runs at most free/MIB jobs.
  --jobs-per-gpu N               Jobs one GPU runs at once (default 1).
  --share-gpus                   Use GPUs that other processes use too.
  --joblog FILE                  Write GNU parallel's joblog into FILE (new
                                 unless --overwrite; --resume appends; "-"
                                 or /dev/stdout: stdout).
  --active-nodes FILE            Keep FILE listing the busy slots, one a
                                 line: "node: job-ID command" (replaced
                                 within 50 ms of each change).
  In job mode -n caps the jobs running over the whole pool (default: the
  slots), -t is per job (default: none), --format is lines ("job-ID node:
  line") or json (one object per job); by default each job's stdout (and
  stderr) is written whole when it ends. -o DIR gets job-ID.out, .err,
  .ret and summary.jsonl; --resume skips the jobs (by number and text) that
  succeeded there. The run id is printed on stderr: classh: run ID.

Options:
  -n N, --numjobs N              Run on at most N hosts at a time (default 100).
  -t SECS, --timeout SECS        Kill a host's command after SECS seconds
                                 (default 300; 0 or less: no timeout).
  --connect-timeout SECS         ssh's ConnectTimeout (default 10).
  -w HOSTS, --hosts HOSTS        Targets, as a TARGET (repeatable; pdsh's
                                 ^FILE: the host file FILE).
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
  -k, --keep-order               Show hosts in target order (jobs in job
                                 order), not as they finish.
  -I, --send-input               Read classh's stdin once and send it to
                                 every host's COMMAND (host mode only).
  --status                       A live status line on stderr (terminal only).
  -o DIR, --results DIR          Write host.out, host.err, host.ret for each
                                 host and summary.jsonl into DIR (new or
                                 empty unless --resume or --overwrite).
  --resume                       With -o: skip hosts whose .ret is 0 in DIR,
                                 rerun the others.
  --overwrite                    Allow replacing results: those of the hosts
                                 run in an existing DIR, a whole --json FILE.
  --json FILE                    Save every result, output included, as JSON
                                 Lines in FILE (a new file; "-": stdout).
  -S DEST, --success DEST        Route successful hosts to DEST (repeatable).
  -E DEST, --failure DEST        Route failed hosts to DEST (repeatable).
  -P, --password                 Ask for a password once (on the terminal)
                                 and answer every ssh password, passphrase
                                 and sudo prompt with it.
  --password-file FILE           Read that password from the first line of
                                 FILE instead.
  --raw                          Send COMMAND exactly as given, without
                                 classh's sh watchdog (targets without a
                                 POSIX shell).
  --sudo                         Run COMMAND under sudo on each host
                                 (--sudo=USER: as USER).
  --sudo-user USER               The same as --sudo=USER.
  --persist=SECS                 Keep one ssh connection per host open SECS
                                 seconds after its last use, for the next
                                 runs (--persist alone: 300; --persist 60
                                 is refused: write --persist=60).
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

pssh, pdsh and clush users: -h is --help (a host file is a TARGET with a
'/': ./hosts.txt, or -w ^hosts.txt), -p is the ssh port (fanout is -n), -o
the results directory (ssh options are -O, as pssh's), -i the interactive
shell (output inline is the default display), -x excludes hosts.

Destinations (-S, -E), in this order: "-" (or /dev/stdout) is classh's
stdout (host names, one a line); "|COMMAND" runs COMMAND (any shell code); an existing directory
gets host.out and host.err (and host.ret for -E); text with a space is a
command line whose first word must be a command (else an error); a path
with a '/' to an executable runs it; anything else, a bare word such as
"test" included, is a file the names are appended to. A command is started
once through the shell and gets host names on its stdin as hosts finish;
one that exits non-zero makes classh's exit status at least 1.

Environment:
  CLASSH_NUMJOBS, CLASSH_TIMEOUT, CLASSH_SSH, CLASSH_SSH_OPTIONS, CLASSH_USER,
  CLASSH_RESULTS, CLASSH_PASSWORD_FILE give defaults for -n, -t, --ssh, -O
  (several, space-separated), -l, -o, --password-file;
  CLASSH_HOSTS gives the targets when none are named; NO_COLOR turns colour off.

Exit status:
  0 all hosts ok; 1 classh failed; 2 usage or bad input; 3 some host timed
  out or was killed; 4 some ssh error; 5 some command exited non-zero (the
  first of 4, 3, 5 that applies); 130/143 interrupted by SIGINT/SIGTERM.
  Job mode: 4 some jobs left undone (no node could run them, or SIGHUP
  drained the run: listed on stderr) or ended by an ssh error, then 3 (a job timed out or was
  killed), then 5 (a job failed).
"""

FORMATS = ("classic", "lines", "gather", "json")


class UsageError(Exception):
    """Bad command-line input; the message names the offending text."""


def parse(argv: List[str]) -> dict:
    """Parse ``argv`` with the docopt usage (UsageError on bad syntax).

    docopt-ng alone decides what every word is. The one thing it cannot
    express, a long option with an optional value, is spelled out for it
    first by :func:`spell_optional_values` (which reads ``argv`` with
    docopt-ng's own tokenizer, so that it cannot disagree with the parse):
    ``--sudo=USER`` becomes ``--sudo-user=USER`` and a bare ``--persist``
    becomes ``--persist=300``. A literal ``--`` is dropped from the words.
    """
    words = spell_optional_values(argv)
    try:
        args = docopt(USAGE, words, default_help=False, version=None)
    except DocoptExit as exc:
        raise UsageError("%s (see classh --help)" % explain_bad_arguments(words, exc)) from None
    except DocoptLanguageError as exc:  # an ambiguous stacked short option, say
        raise UsageError("%s (see classh --help)" % exc) from None
    return args


def _option_table() -> list:
    """docopt-ng's own table of the options described in USAGE (a fresh copy)."""
    sections = parse_docstring_sections(USAGE)
    return parse_options(sections.before_usage) + parse_options(sections.after_usage)


def _long_name(word: str, table: list) -> str:
    """The option a ``--word`` means to docopt-ng (exact name or unique prefix), or the word."""
    name = word.partition("=")[0]
    try:
        option = parse_longer(Tokens([name, "VALUE"]), list(table), argv=True)[0]
    except (DocoptExit, DocoptLanguageError):
        return name
    return option.longer or name


def _looks_like_number(word: str) -> bool:
    """docopt-ng reads a word such as ``-1`` or ``-.5`` as an argument, not as options."""
    try:
        float(word)
    except ValueError:
        return False
    return True


def spell_optional_values(argv: List[str]) -> List[str]:
    """``argv`` with ``--sudo=USER`` as ``--sudo-user=USER`` and a bare ``--persist`` as
    ``--persist=300``, wherever docopt-ng's tokenizer reads them as options (not after
    ``--``, not as another option's value). A number right after a bare ``--persist``
    that would be the COMMAND is a UsageError (see :func:`check_persist_value`)."""
    words = list(argv)
    table = _option_table()
    at = 0
    arguments = 0
    while at < len(words):
        word = words[at]
        if word == "--":
            break
        is_long = word.startswith("--")
        if not is_long and (not word.startswith("-") or word == "-" or _looks_like_number(word)):
            arguments += 1
            at += 1
            continue
        if is_long:
            words[at] = _respell(word, _long_name(word, table))
            if not arguments and words[at] != word and words[at].startswith("--persist="):
                check_persist_value(words[at + 1:at + 2])
        rest = Tokens(words[at:])
        try:
            if is_long:
                parse_longer(rest, table, argv=True)
            else:
                parse_shorts(rest, table)
        except (DocoptExit, DocoptLanguageError):
            break  # docopt itself will say what is wrong
        at = len(words) - len(rest)
    return words


def check_persist_value(following: List[str]) -> None:
    """A bare ``--persist`` followed by a number that would be the COMMAND (``--persist 60
    CMD``): the value was meant, but an optional value must follow ``=`` (UsageError)."""
    if following and _looks_like_number(following[0]):
        raise UsageError("--persist takes its value after '=': did you mean --persist=%s? "
                         "(a bare --persist means %d s; the next word is not its value)"
                         % (following[0], DEFAULT_PERSIST))


def _respell(word: str, name: str) -> str:
    """One long option word spelled for docopt (see :func:`spell_optional_values`)."""
    _, eq, value = word.partition("=")
    if name == "--sudo" and eq:
        return "--sudo-user=" + value
    if name == "--persist" and not eq:
        return "--persist=%d" % DEFAULT_PERSIST
    return word


def explain_bad_arguments(argv: List[str], exc: DocoptExit) -> str:
    """Name what docopt could not place, in one line."""
    message = str(exc).split("\n", 1)[0].strip()
    if message.endswith(("requires argument", "must not have an argument")):
        return message  # docopt-ng's own words: "-t requires argument", ...
    if "--help" in _options_in(argv):
        return HELP_MISUSE
    table = _option_table()
    names = {name for option in table for name in (option.short, option.longer) if name}
    for word in argv:
        if word == "--":
            break
        if word.startswith("--"):
            name = _long_name(word, table)
            if name not in names:
                return "unknown or ambiguous option %r" % word
        elif word.startswith("-") and word != "-" and not _looks_like_number(word):
            for letter in word[1:]:
                if "-" + letter not in names:
                    return "unknown option %r in %r" % ("-" + letter, word)
                if any(o.short == "-" + letter and o.argcount for o in table):
                    break
    words = [_long_name(word, table) if word.startswith("--") else word
             for word in argv[:argv.index("--") if "--" in argv else len(argv)]]
    modes = set(_JOB_MODE_WORDS.get(word, word) for word in words if word in _MODE_WORDS)
    if "--kill" in modes:
        modes.discard("--node")  # --kill takes the nodes of a run
    modes = sorted(modes)
    if len(modes) > 1:
        return "%s cannot be used together" % " and ".join(modes)
    if set(modes) & {"--copy", "--slurp"} and "--dest" not in words:
        return "%s needs --dest PATH" % modes[0]
    if "--dest" in words and not set(modes) & {"--copy", "--slurp"}:
        return "--dest goes with --copy or --slurp"
    job_words = [word for word in _JOB_ONLY_WORDS if word in words]
    if job_words and not modes:
        return "%s: job mode needs nodes: give --node, --node-file or --machines" % job_words[0]
    if not any(not word.startswith("-") for word in argv):
        return "no COMMAND given"
    return "bad arguments: %s" % " ".join(shlex.quote(word) for word in argv)


#: ``-h`` with anything else: pssh's ``-h HOSTFILE``, or a COMMAND's own option unquoted.
HELP_MISUSE = ("-h is --help in classh and goes alone: pssh's -h HOSTFILE is a TARGET with a "
               "'/' (./hosts.txt) or -w ^hosts.txt, and a COMMAND with options is one quoted "
               "word ('df -h')")


def _options_in(argv: List[str]) -> set:
    """The long names of the options docopt-ng's tokenizer reads in ``argv`` (none when it
    cannot read them)."""
    try:
        parsed = parse_argv(Tokens(list(argv)), _option_table())
    except (DocoptExit, DocoptLanguageError):
        return set()
    return {item.name for item in parsed if isinstance(item, Option)}


_MODE_WORDS = ("--copy", "--slurp", "-i", "--interactive", "--close", "--list", "--fold",
               "--node", "--node-file", "--machines", "--kill")
#: Each word chooses job mode (named by the first).
_JOB_MODE_WORDS = {"--node-file": "--node", "--machines": "--node"}
#: Work that only job mode runs: without nodes, the pool is what is missing.
_JOB_ONLY_WORDS = ("--job", "--job-file", "--on-each-node", "--input", "--task")


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
    values["raw"] = args["--raw"]
    if args["--persist"] is not None:
        values["persist"] = positive_int("--persist", args["--persist"], MAX_PERSIST)
    if args["--max-hosts"] is not None:
        values["max_hosts"] = positive_int("--max-hosts", args["--max-hosts"])
    options = Options(**values)  # every value checked before a password is asked for
    password = read_password(args, environ)
    return options.replace(password=password) if password is not None else options


def read_password(args: dict, environ) -> Optional[str]:
    """The password from --password-file / $CLASSH_PASSWORD_FILE, or asked once with -P.

    A password file others may read gets a warning; once a password is in
    memory, core dumps are off (RLIMIT_CORE 0) so that none can hold it.
    """
    path = args["--password-file"] or environ.get("CLASSH_PASSWORD_FILE")
    if path:
        try:
            with open(path, "rb") as secret:
                warn_if_readable(path, os.fstat(secret.fileno()).st_mode)
                line = secret.readline()
        except OSError as exc:
            raise UsageError("cannot read password file %r: %s" % (path, exc.strerror)) from None
        no_core_dumps()
        return line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
    if not args["--password"]:
        return None
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        raise UsageError("-P needs a terminal to ask on; use --password-file") from None
    no_core_dumps()
    return getpass.getpass("Password: ")  # reads /dev/tty, echo off


def warn_if_readable(path: str, mode: int) -> None:
    """One line on stderr when a password file is readable by its group or by others."""
    if mode & 0o044:
        who = "everyone" if mode & 0o004 else "its group"
        sys.stderr.write("classh: warning: password file %r is readable by %s (chmod 600 %s)\n"
                         % (path, who, shlex.quote(path)))


def no_core_dumps() -> None:
    """No core file may hold the password: RLIMIT_CORE to 0 (soft and hard)."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):  # pragma: no cover - lowering a limit is always allowed
        pass


def target_args(args: dict, environ) -> List[str]:
    """The -w HOSTS and TARGET arguments (pdsh's ``-w ^FILE`` as a host file), or
    $CLASSH_HOSTS split on whitespace; a bare word naming a file here is refused."""
    hosts = [_caret_file(word) for word in args["--hosts"]] + list(args["TARGET"])
    if not hosts:
        hosts = environ.get("CLASSH_HOSTS", "").split()
    if not hosts:
        raise UsageError("no TARGET given and CLASSH_HOSTS is not set")
    for word in hosts:
        check_not_a_file(word)
    return hosts


def _caret_file(word: str) -> str:
    """pdsh's ``^FILE`` (a -w value): FILE as a host file argument (with a '/')."""
    if not word.startswith("^") or len(word) == 1:
        return word
    path = word[1:]
    return path if is_host_file(path) else os.path.join(".", path)


def check_not_a_file(word: str) -> None:
    """Refuse a target word without '/' that names a regular file here (pssh's ``-h
    hosts.txt`` habit): it would be run as a host named so."""
    if not is_host_file(word) and os.path.isfile(word):
        raise UsageError("TARGET %r is a file here, not a host: a host file is named with a "
                         "'/' (./%s) or with -w ^%s" % (word, word, word))


def no_hosts_error(names: List[str], excludes: List[str]) -> UsageError:
    """The error for targets that name no host at all (as pdsh and clush refuse them)."""
    text = "no host to run on in TARGET %s" % " ".join(repr(name) for name in names)
    if excludes:
        text += " less -x %s" % " ".join(repr(name) for name in excludes)
    return UsageError(text)


def resolve_targets(args: dict, environ, expand: bool, max_hosts: int) -> List:
    """Every target of the TARGET arguments (host files read whole), less -x; none is an error."""
    names = target_args(args, environ)
    targets = resolve(names, args["--exclude"], expand=expand, max_hosts=max_hosts)
    if not targets:
        raise no_hosts_error(names, args["--exclude"])
    return targets


def displays(args: dict, out: SafeStream, err: SafeStream, source: TargetSource) -> list:
    """The observers that show results, per --format/-q/--progress/--status."""
    fmt = args["--format"]
    if fmt is not None and fmt not in FORMATS:
        raise UsageError("unknown --format %r (choose from %s)" % (fmt, ", ".join(FORMATS)))
    observers = []
    if args["--status"]:
        observers.append(StatusLine(err, status_total(source), enabled=is_terminal(sys.stderr)))
    if args["--progress"]:
        observers.append(ProgressDisplay(err))
    if not shows_per_host(args):
        return observers
    palette = Palette(use_colour(sys.stdout))
    if fmt == "lines":
        display = LinesDisplay(out, err)
    elif fmt == "gather":
        display = GatherDisplay(out, palette)
    elif fmt == "json":
        display = JsonDisplay(out)
    else:
        width = min(40, max((len(t.label) for t in source.queue), default=0))
        display = ClassicDisplay(out, width, palette)
    if args["--keep-order"]:
        display = KeepOrder(display)
        source.make_task = display.numbered(source.make_task)
    observers.append(display)
    return observers


def shows_per_host(args: dict) -> bool:
    """True when a per-host display goes to stdout (not -q, not --progress alone)."""
    return not (args["--quiet"] or (args["--progress"] and args["--format"] is None))


def status_total(source: TargetSource) -> Optional[int]:
    """The hosts --status counts towards: those that will run (not skipped by --resume);
    None while a stream may bring more."""
    if source.streams:
        return None
    return sum(1 for target in source.queue if target.label not in source.skip)


def routing_for(args: dict, options: Options, source: TargetSource, out: SafeStream):
    """A function making the -S/-E routing observer (or None) once the hosts to skip are known;
    it refuses destinations that would overwrite results of the hosts to run."""
    def make(skip: set) -> Optional[Routing]:
        directory = options.results
        success = [make_router(dest, False, out, directory) for dest in args["--success"]]
        failure = [make_router(dest, True, out, directory) for dest in args["--failure"]]
        if not (success or failure):
            return None
        routing = Routing(success, failure)
        routing.check([t.label for t in source.queue if t.label not in skip])
        return routing
    return make


#: Options that only a run shows or saves through (-i shows everything gathered).
_RUN_OUTPUTS = ("--results", "--json", "--format", "--quiet", "--progress", "--status",
                "--resume", "--overwrite", "--success", "--failure", "--keep-order")
#: Options only job mode uses.
_JOB_ONLY = ("--job", "--job-file", "--on-each-node", "--input", "--task", "--blocksize",
             "--init-file", "--init-script",
             "--task-success-code", "--stall-factor", "--stall-min", "--retries",
             "--fail-node-on-error",
             "--max-node-uses", "--max-nodes", "--no-reuse", "--joblog",
             "--active-nodes", "--gpus", "--gpu-mem", "--jobs-per-gpu", "--share-gpus")
#: Options that only mean something with --gpus.
_GPU_ONLY = ("--gpu-mem", "--jobs-per-gpu", "--share-gpus")
#: Per mode, the options it cannot use (they would be silently ignored).
_REFUSED = {
    "--interactive": _RUN_OUTPUTS + ("--count",),
    "--close": _RUN_OUTPUTS + ("--count", "--sudo", "--sudo-user", "--raw"),
    "jobs": ("--count", "--exclude", "--sudo", "--sudo-user", "--raw", "--success", "--failure"),
    "--kill": _RUN_OUTPUTS + ("--count", "--sudo", "--sudo-user", "--raw"),
}
_MODE_NAMES = {
    "jobs": "job mode (--node, --node-file, --machines)",
    "run": "a COMMAND (--count goes with --list or --fold)",
    "--copy": "--copy (--count goes with --list or --fold)",
    "--slurp": "--slurp (--count goes with --list or --fold)",
    "--interactive": "-i (it shows every result gathered and saves none)",
    "--close": "--close (it only ends connections)",
    "--kill": "--kill (it only kills a run's processes)",
    "--list": "--list (it only lists hosts)",
    "--fold": "--fold (it only folds the names on stdin)",
}
#: Per listing mode, the only options it uses.
_ONLY = {
    "--list": ("--exclude", "--noexpand", "--max-hosts", "--count", "--hosts"),
    "--fold": ("--count",),
}


def mode_of(args: dict) -> str:
    """The mode given: --copy, --slurp, --interactive, --close, --list, --fold, --kill, 'jobs'
    (--node or --node-file), or 'run'."""
    for mode in ("--copy", "--slurp", "--interactive", "--close", "--list", "--fold", "--kill"):
        if args[mode] not in (None, False, []):  # an empty value is still the mode's
            return mode
    if args["--node"] or args["--node-file"] or args["--machines"]:
        return "jobs"
    return "run"


def check_mode_options(args: dict, mode: str) -> None:
    """Refuse options the mode would ignore, naming them (nothing given is dropped silently)."""
    given = [name for name, value in args.items()
             if name.startswith("-") and name not in ("--", mode) and value not in (None, False, [])]
    if mode in _ONLY:
        refused = [name for name in given if name not in _ONLY[mode]]
    else:
        refused = [name for name in _REFUSED.get(mode, ("--count",)) if name in given]
        job_only = [name for name in _JOB_ONLY if name in given]
        if job_only and mode != "jobs":
            raise UsageError("%s only go%s with job mode (--node, --node-file or --machines)"
                             % (", ".join(job_only), "" if len(job_only) > 1 else "es"))
    if refused:
        raise UsageError("%s cannot be used with %s" % (", ".join(refused), _MODE_NAMES.get(mode, mode)))
    if mode == "--fold" and args["TARGET"]:
        raise UsageError("--fold reads host names on stdin, not TARGETs: %s"
                         % " ".join(shlex.quote(name) for name in args["TARGET"]))


#: An ssh option as ``-o`` takes it (``Keyword=value``, ``Keyword value``): no directory name.
_SSH_OPTION = re.compile(r"([A-Za-z]+)(=|\s+)\S")
#: Why -I goes with a COMMAND only, per mode.
_NO_INPUT = {
    "jobs": "in job mode stdin feeds --input - or --job-file -; give every node the same "
            "file with --init-file FILE",
    "--copy": "--copy sends its files on the hosts' stdin",
    "--slurp": "--slurp runs its own tar, which reads no input",
    "--interactive": "-i reads its commands on stdin",
}


def check_habits(args: dict, mode: str) -> None:
    """Refuse, with a pointed message, what pssh, pdsh, clush and ssh users write out of habit
    where classh's option means something else (nothing is run, nothing made)."""
    results = args["--results"]
    match = _SSH_OPTION.match(results or "")
    if match and "/" not in results:
        hint = "; --accept-new-hostkeys lets ssh add new hosts' keys" if (
            match.group(1).lower() == "stricthostkeychecking") else ""
        raise UsageError("-o is classh's results directory, and %r is an ssh option: pass it "
                         "with -O %s (as pssh's -O), or write %s for a directory%s"
                         % (results, shlex.quote(results), shlex.quote("./" + results), hint))
    for pattern in args["--exclude"]:
        if pattern.startswith("-"):
            raise UsageError("-x excludes hosts in classh (as in pdsh and clush) and %r is no "
                             "host: pass ssh options with -O OPTION or --ssh 'ssh ARGS' "
                             "(pssh's -x ARGS)" % pattern)
    if args["--send-input"] and mode != "run":
        raise UsageError("-I (--send-input) sends classh's stdin to a COMMAND run on every "
                         "host, not with %s: %s" % (_MODE_NAMES.get(mode, mode).split(" (")[0],
                                                   _NO_INPUT.get(mode, "it runs no COMMAND")))
    if args["--hosts"] and mode == "jobs":
        raise UsageError("-w gives TARGETs, and job mode runs on nodes: write --node %s"
                         % shlex.quote(args["--hosts"][0]))


def run(argv: List[str], environ=None, closed: frozenset = frozenset()) -> int:
    """Run classh with ``argv`` (without the program name); return the exit status.

    ``closed`` holds the standard fds (1, 2) that were closed when classh
    started (now /dev/null): nothing that must write to a closed stdout runs.
    """
    environ = os.environ if environ is None else environ
    args = parse(argv)
    if args["--help"] or args["--version"]:
        need_stdout(closed, "--help" if args["--help"] else "--version")
        sys.stdout.write(USAGE if args["--help"] else "classh %s\n" % __version__)
        return 0
    mode = mode_of(args)
    check_habits(args, mode)
    check_mode_options(args, mode)
    if mode in ("--list", "--fold"):
        need_stdout(closed, mode)
        return list_hosts(args, environ) if mode == "--list" else fold_hosts(args)
    if mode == "jobs":
        check_job_args(args)
    options = build_options(args, environ)
    if mode == "--interactive":
        need_stdout(closed, "-i")
        return interactive(args, environ, options)
    if mode == "--close":
        return close_connections(args, environ, options)
    if mode == "--kill":
        return kill_run(args, environ, options)
    if mode == "jobs":
        return run_jobs(args, environ, options, closed)
    if 1 in closed and (shows_per_host(args) or stdout_files(args)):
        need_stdout(closed, "the per-host display" if shows_per_host(args)
                    else " and ".join(stdout_files(args)), "redirect it, or use -q -o DIR")
    command, transfer_sinks, options = mode_command(args, options)
    names = target_args(args, environ)
    source = target_source(args, names, options, command, name_checker(args, options))
    if args["--send-input"]:
        options = options.replace(input=read_input(names))
        source.make_task = task_maker(command, options)
    out, err = SafeStream(sys.stdout.buffer), SafeStream(sys.stderr.buffer)
    if args["--resume"] and not options.results:
        raise UsageError("--resume needs a results directory (-o DIR)")

    def views(skip: set) -> list:
        source.skip = skip
        return displays(args, out, err, source)

    sinks = assemble(options, mode=transfer_sinks, stdout_is_data=bool(args["--slurp"]),
                     resume=args["--resume"], overwrite=args["--overwrite"],
                     json_path=args["--json"], routing=routing_for(args, options, source, out),
                     views=views, stdout=out)
    summary = Run(source, options, sinks.observers, keep=sinks.keep).run()
    return report(summary, source, names, args, err)


# -- --kill --------------------------------------------------------------------

def kill_run(args: dict, environ, options: Options) -> int:
    """``classh --kill RUN-ID[.JOB-ID]``: the kill script (:mod:`classh.kill`) sent as it is
    to every TARGET, or to the nodes of ``--node``/``--node-file``/``--machines`` (a run's own);
    ``host: N processes`` for each; the exit status of a host-mode run."""
    from .kill import kill_command

    command = kill_command(args["--kill"])  # checked before any host file is read
    out, err = SafeStream(sys.stdout.buffer), SafeStream(sys.stderr.buffer)
    options = options.replace(raw=True)
    if args["--node"] or args["--node-file"] or args["--machines"]:
        if args["TARGET"] or args["--hosts"] or args["--exclude"]:
            raise UsageError("--kill takes TARGETs or --node/--node-file/--machines, not both "
                             "(nor -x)")
        names = args["--node"] + args["--node-file"] + args["--machines"]
        specs = job_nodes(args, options, err)
        targets = [spec.target for spec in specs]
        make_task = per_node_task_maker(command, options, specs)
    else:
        names = target_args(args, environ)
        targets = resolve_targets(args, environ, options.expand, options.max_hosts)
        make_task = task_maker(command, options)
    source = TargetSource(targets, make_task)
    summary = Run(source, options, [LinesDisplay(out, err)], keep=0).run()
    return report(summary, source, names, args, err)


def per_node_task_maker(command: str, options: Options, specs: list):
    """A task maker sending ``command`` to each node of ``specs`` over its own ssh command
    line (a --machines ``connect_cmd``; the run's ssh otherwise)."""
    makers: Dict[Optional[str], Callable] = {}
    by_label = {}
    for spec in specs:
        if spec.ssh not in makers:
            makers[spec.ssh] = task_maker(command, options if spec.ssh is None
                                          else options.replace(ssh=spec.ssh))
        by_label[spec.target.label] = makers[spec.ssh]
    return lambda target: by_label[target.label](target)


# -- job mode -------------------------------------------------------------------

def take_input_words(args: dict) -> None:
    """kssh's ``--input a b c``: with --input, the words docopt took for COMMAND and
    TARGET are more input files (one block each), in their order."""
    words = ([args["COMMAND"]] if args["COMMAND"] else []) + list(args["TARGET"])
    if args["--input"] and words:
        args["--input"] = list(args["--input"]) + words
        args["COMMAND"], args["TARGET"] = None, []


def check_job_args(args: dict) -> None:
    """Refuse what job mode cannot take, before anything is read or asked: a COMMAND or
    TARGET (but see :func:`take_input_words`), a --format it has not, bad numbers."""
    take_input_words(args)
    words = ([args["COMMAND"]] if args["COMMAND"] else []) + list(args["TARGET"])
    if words:
        raise UsageError("job mode (--node, --node-file) takes no COMMAND or TARGET: %s "
                         "(give jobs with --job, --job-file or --on-each-node)"
                         % " ".join(shlex.quote(word) for word in words))
    check_block_args(args)
    gpu_only = [name for name in _GPU_ONLY if args[name] not in (None, False)]
    if gpu_only and not args["--gpus"]:
        raise UsageError("%s only go%s with --gpus" % (", ".join(gpu_only),
                                                       "" if len(gpu_only) > 1 else "es"))
    fmt = args["--format"]
    if fmt is not None and fmt not in JOB_FORMATS:
        raise UsageError("job mode has no --format %r (choose from %s; the default writes "
                         "each job's output whole)" % (fmt, ", ".join(JOB_FORMATS)))
    job_options(args)


def check_block_args(args: dict) -> None:
    """Blocks (--input) run --task and nothing else; --task and --blocksize need --input."""
    if args["--input"]:
        if args["--task"] is None:
            raise UsageError("--input needs --task CMD (the command each block is fed to)")
        others = [name for name in ("--job", "--job-file", "--on-each-node") if args[name]]
        if others:
            raise UsageError("--input (blocks) cannot be used with %s: a run is blocks or jobs"
                             % ", ".join(others))
    else:
        given = [name for name in ("--task", "--blocksize") if args[name] is not None]
        if given:
            raise UsageError("%s go%s with --input FILE" % (" and ".join(given),
                                                            "" if len(given) > 1 else "es"))
    if args["--blocksize"] is not None:
        blocksize(args)
    code = args["--task-success-code"]
    if code is not None and code != "0":
        positive_int("--task-success-code", code, 255)


def job_options(args: dict, **generated):
    """The JobOptions of the command line (numbers checked: an OptionError names the bad one)."""
    from .jobs import JobOptions

    def number(name: str) -> Optional[int]:
        value = args[name]
        return None if value is None else positive_int(name if name != "--numjobs" else "-n", value)

    retries = number("--retries")
    return JobOptions(
        retries=3 if retries is None else retries,
        fail_node_on_error=args["--fail-node-on-error"],
        max_node_uses=number("--max-node-uses"), max_nodes=number("--max-nodes"),
        max_running=number("--numjobs"), reuse=not args["--no-reuse"], job_control=True,
        gpus=args["--gpus"], gpu_mem=args["--gpu-mem"] or 0, share_gpus=args["--share-gpus"],
        jobs_per_gpu=number("--jobs-per-gpu") or 1,
        success_code=int(args["--task-success-code"] or 0),
        stall_factor=args["--stall-factor"],
        stall_min=10.0 if args["--stall-min"] is None else args["--stall-min"], **generated)


def job_run_options(args: dict, environ, options: Options) -> Options:
    """Job mode's Options: no timeout unless -t or $CLASSH_TIMEOUT gives one (jobs are long
    work), -n is the pool's cap (JobOptions), not the fanout."""
    if args["--timeout"] is None and not environ.get("CLASSH_TIMEOUT"):
        options = options.replace(timeout=None)
    return options


def run_jobs(args: dict, environ, options: Options, closed: frozenset) -> int:
    """Job mode: jobs over node slots (see the scheduler, :mod:`classh.jobs`); the exit status."""
    from .jobs import JobSource, read_jobs

    if 1 in closed and (shows_per_host(args) or stdout_files(args)):
        need_stdout(closed, "the job output" if shows_per_host(args)
                    else " and ".join(stdout_files(args)), "redirect it, or use -q -o DIR")
    if args["--resume"] and not options.results:
        raise UsageError("--resume needs a results directory (-o DIR)")
    options = job_run_options(args, environ, options)
    nodes = job_nodes(args, options, err=SafeStream(sys.stderr.buffer))
    setup = None
    if args["--init-file"] or args["--init-script"]:
        from .nodesetup import NodeSetup
        setup = NodeSetup(args["--init-file"], args["--init-script"])
    commands, streams = read_jobs(args["--job"], args["--job-file"])
    blocks = block_input(args)
    if not (commands or streams or args["--on-each-node"] or blocks):
        raise UsageError("no job given%s" % (
            " (the job files %s hold none)" % ", ".join(map(repr, args["--job-file"]))
            if args["--job-file"] else " (use --job, --job-file or --on-each-node)"))
    settings = job_options(args)
    out, err = SafeStream(sys.stdout.buffer), SafeStream(sys.stderr.buffer)
    source = JobSource(nodes, commands, options, settings, streams,
                       on_each_node=args["--on-each-node"], notify=_notifier(err),
                       blocks=blocks, task=args["--task"], setup=setup)
    done = done_before = None
    if args["--resume"]:
        from .resume import JobsDone
        done = JobsDone(options.results)
        done_before = source.skip(done)  # before any file is made: a changed job is refused
    sinks = assemble(options, resume=args["--resume"], overwrite=args["--overwrite"],
                     json_path=args["--json"], stdout=out, done=done.labels() if done else None,
                     views=lambda skip: (job_files(args, source, out)
                                         + job_views(args, out, err, source)))
    followed = source.follow_node_files(args["--node"], args["--node-file"],
                                        expand=options.expand, max_hosts=options.max_hosts)
    show_plan(err, source, settings.run_id, done_before, options.results, followed)
    if options.results:
        write_run_id(options.results, settings.run_id)  # for classh --kill RUN-ID
    summary = Run(source, options, sinks.observers, keep=sinks.keep, fanout=source.fanout()).run()
    return report_jobs(summary, source, len(source.skipped_ids), err)


def job_nodes(args: dict, options: Options, err: SafeStream) -> list:
    """The pool of --node, --node-file and --machines (see :func:`classh.jobs.node_pool`);
    the machines files' notices are said on stderr."""
    from .jobs import node_pool

    nodes, notices = node_pool(args["--node"], args["--node-file"], args["--machines"],
                               expand=options.expand, max_hosts=options.max_hosts)
    for notice in notices:
        _say(err, notice)
    return nodes


def block_input(args: dict):
    """The blocks of --input (None without it); a bad path is a one-line error, exit 2."""
    if not args["--input"]:
        return None
    from .blocks import BlockInput

    return BlockInput(args["--input"], size=blocksize(args))


#: The most lines --blocksize takes (a block is cut at a billion lines).
MAX_BLOCKSIZE = 10**9


def blocksize(args: dict) -> int:
    """--blocksize (default 1), from 1 to :data:`MAX_BLOCKSIZE` (else an OptionError)."""
    if args["--blocksize"] is None:
        return 1
    return positive_int("--blocksize", args["--blocksize"], MAX_BLOCKSIZE)


def show_plan(err: SafeStream, source, run_id: str, done_before: Optional[int],
              results: Optional[str], followed: bool) -> None:
    """The plan of a job run on stderr, before it starts (``-q`` keeps it: see job_plan)."""
    states = source.node_states()
    for line in job_plan(run_id, len(source.jobs), source.pending() is None, len(states),
                         sum(state[2] for state in states), done_before, results, followed,
                         source.job_options.gpu_rule, source.blocks):
        _say(err, line)


def _say(err: SafeStream, line: str, prefix: str = "classh: ") -> None:
    """One ``classh: ...`` line on stderr (a stderr gone only loses it)."""
    try:
        err.write(("%s%s\n" % (prefix, line)).encode(errors="surrogateescape"))
    except SinkError:
        pass


def _notifier(err: SafeStream) -> Callable[[str], None]:
    return lambda line: _say(err, line)


def job_files(args: dict, source, out: SafeStream) -> list:
    """The files of a job run besides -o DIR: --joblog (``-``: through ``out``), --active-nodes."""
    sinks = []
    if args["--joblog"]:
        sinks.append(JobLog(args["--joblog"], overwrite=args["--overwrite"],
                            append=args["--resume"], stdout=out))  # --resume appends, as parallel
    if args["--active-nodes"]:
        sinks.append(ActiveNodes(args["--active-nodes"], source.active,
                                 run_id=source.job_options.run_id))
    return sinks


def job_views(args: dict, out: SafeStream, err: SafeStream, source) -> list:
    """The observers showing a job run: --status, --progress, the job output."""
    observers = []
    if args["--status"]:
        observers.append(JobStatusLine(err, source, enabled=is_terminal(sys.stderr)))
    if args["--progress"]:
        observers.append(ProgressDisplay(err))
    if shows_per_host(args):
        observers.append(JobOutput(out, err, args["--format"], keep_order=args["--keep-order"],
                                   exact=bool(args["--input"]), where=source.where,
                                   skipped=lambda job: job in source.skipped_ids
                                   or job in source.undone_ids))
    return observers


def report_jobs(summary: RunSummary, source, skipped: int, err: SafeStream) -> int:
    """The problems, the undone jobs (one a line) and the summary line on stderr; the exit
    status."""
    for problem in summary.problems:
        _say(err, problem)
    for line in summary.undone:
        _say(err, "undone: %s" % line)
    counts = source.counts
    if (summary.interrupted_by is None and not summary.tally.total and not skipped
            and not summary.undone and not summary.input_errors and not summary.fatal):
        _say(err, "no job to run (%s)" % ("the input holds no block" if getattr(
            source, "blocks", None) is not None else "the job files brought none"))
        return EXIT_USAGE
    _say(err, job_summary_line(summary.tally, summary.elapsed, summary.interrupted_by is not None,
                               retried=counts.get("retried", 0), dropped=counts.get("dropped", 0),
                               undone=len(summary.undone), skipped=skipped), prefix="")
    return summary.exit_status


def report(summary: RunSummary, source: TargetSource, names: List[str], args: dict,
           err: SafeStream) -> int:
    """Say on stderr what went wrong beside the hosts, and the summary line; the exit status.

    A stderr that cannot be written any more (the terminal hung up) only loses these lines.
    """
    for problem in summary.problems:
        _say(err, problem)
    if (summary.interrupted_by is None and not summary.tally.total and not source.skipped
            and not summary.input_errors and not summary.fatal):
        # only streamed host files get here (others naming no host are refused before)
        _say(err, "nothing to do: %s" % no_hosts_error(names, args["--exclude"]))
        return 0
    line = summary_line(summary.tally, summary.elapsed, summary.interrupted_by is not None)
    if source.skipped:
        line += " (%d skipped: done before)" % source.skipped
    _say(err, line, prefix="")
    return summary.exit_status


def read_input(names: List[str]) -> bytes:
    """``-I``: classh's stdin, read whole once (after the targets were accepted), for every
    host; refused when a streamed host file is that stdin too."""
    try:
        stdin = os.fstat(0)
    except OSError:
        stdin = None
    for name in names:
        if stdin is not None and is_stream(name) and os.path.samestat(os.stat(name), stdin):
            raise UsageError("-I sends classh's stdin to every host, so the host file %r (the "
                             "same stdin) cannot be read too: name the hosts otherwise" % name)
    return sys.stdin.buffer.read()


def stdout_files(args: dict) -> List[str]:
    """The options given that write to stdout: ``--json -``, ``--joblog -``, ``-S/-E -``
    (``/dev/stdout`` too)."""
    given = [name for name in ("--json", "--joblog") if args[name] in STDOUT_PATHS]
    if set(STDOUT_PATHS) & set(args["--success"] + args["--failure"]):
        given.append("-S/-E -")
    return given


def need_stdout(closed: frozenset, what: str, hint: str = "redirect it") -> None:
    """Refuse to start what writes to stdout when stdout was closed."""
    if 1 in closed:
        raise UsageError("stdout is closed, so %s has nowhere to go (%s)" % (what, hint))


def mode_command(args: dict, options: Options):
    """(remote command, extra observers, options) for host mode, --copy or --slurp."""
    if args["--copy"]:
        command, archive = copy_plan(list(args["--copy"]), args["--dest"])
        return command, [], options.replace(input=archive)
    if args["--slurp"] is not None:  # an empty REMOTE is refused by slurp_command
        return slurp_command(args["--slurp"]), [SlurpSink(args["--dest"])], options
    return args["COMMAND"], [], options


def list_hosts(args: dict, environ) -> int:
    """``classh --list``: the hosts a run would reach, one a line (or --count: how many)."""
    max_hosts = DEFAULT_MAX_HOSTS
    if args["--max-hosts"] is not None:
        max_hosts = positive_int("--max-hosts", args["--max-hosts"])
    targets = resolve_targets(args, environ, not args["--noexpand"], max_hosts)
    if args["--count"]:
        sys.stdout.write("%d\n" % len(targets))
    else:
        sys.stdout.writelines(target.label + "\n" for target in targets)
    return 0


def fold_hosts(args: dict, stdin=None) -> int:
    """``classh --fold``: host names from stdin (whitespace, commas, ranges, '#' comments)
    folded into ranges on one line (or --count: how many different hosts)."""
    stdin = sys.stdin if stdin is None else stdin
    resolver = Resolver()
    labels: List[str] = []
    for number, line in enumerate(stdin, 1):
        words = ",".join(strip_comment(line).split())
        labels.extend(t.label for t in resolver.add_line(words, "stdin:%d: " % number))
    if args["--count"]:
        sys.stdout.write("%d\n" % len(labels))
    elif labels:
        sys.stdout.write(fold(labels) + "\n")
    return 0


def name_checker(args: dict, options: Options) -> Optional[Callable[[Target], None]]:
    """A check that each target's result files (``host.out``...) fit the file-name limit of
    the directories they go to (-o, -S/-E directories, --slurp --dest); None without any."""
    dirs = [options.results] if options.results else []
    dirs += [dest for dest in args["--success"] + args["--failure"] if os.path.isdir(dest)]
    if args["--slurp"]:
        dirs.append(args["--dest"])
    if not dirs:
        return None
    limit = min(name_max(directory) for directory in dirs)

    def check(target: Target) -> None:
        if len(target.label.encode()) + len(".out") > limit:
            raise TargetError("host name %r is too long for its result files (%s): file names "
                              "there hold at most %d bytes" % (target.label, ", ".join(dirs), limit))
    return check


def name_max(path: str) -> int:
    """The longest file name (bytes) the filesystem of ``path`` (or its nearest existing
    parent) allows; 255 when it cannot say."""
    path = os.path.abspath(path)
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return os.pathconf(path, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def close_connections(args: dict, environ, options: Options) -> int:
    """``classh --close``: end the --persist masters of the targets."""
    targets = resolve_targets(args, environ, options.expand, options.max_hosts)
    directory = control_dir(environ)
    sweep_stale(directory)
    names = os.listdir(directory)
    ssh = SshCommand(options)
    tasks = [Task(key=t.label, argv=ssh.control_argv(t, "exit", path), context=t)
             for t in targets for path in sockets_for(t, directory, names)]
    err = SafeStream(sys.stderr.buffer)
    if not tasks:
        _say(err, "no open connections to close")
        return 0
    summary = Run(ListSource(tasks), options, keep=0).run()
    _say(err, "closed %d of %d connections in %.1f s" % (
        summary.tally.counts["ok"], summary.tally.total, summary.elapsed))
    return summary.exit_status


def target_source(args: dict, names: List[str], options: Options, command: Optional[str],
                  check: Optional[Callable[[Target], None]] = None) -> TargetSource:
    """The TargetSource for the TARGET arguments ``names``: pipes (``/dev/stdin``) are read
    as lines arrive. ``check`` refuses a target (a TargetError) before anything runs, or
    skips the streamed line that brings it."""
    streamed = [arg for arg in names if is_stream(arg)]
    targets = resolve([arg for arg in names if arg not in streamed], args["--exclude"],
                      expand=options.expand, max_hosts=options.max_hosts)
    if not targets and not streamed:
        raise no_hosts_error(names, args["--exclude"])
    if check is not None:
        for target in targets:
            check(target)
    streams = {}
    resolver = None
    if streamed:
        resolver = Resolver(args["--exclude"], options.expand, options.max_hosts, seen=targets,
                            check=check)
        streams = {open_stream(path): path for path in dict.fromkeys(streamed)}
    return TargetSource(targets, task_maker(command, options), streams, resolver)


def interactive(args: dict, environ, options: Options) -> int:
    """``classh -i``: the shell over the targets (a first TARGET with a space is pssh's
    ``-i``, output inline, before a COMMAND: refused, naming it)."""
    if args["TARGET"] and any(char.isspace() for char in args["TARGET"][0]):
        raise UsageError("-i opens a shell over TARGETs and takes no COMMAND: %r is no host "
                         "(pssh's -i, output inline, is classh's default display: classh %s "
                         "TARGET...)" % (args["TARGET"][0], shlex.quote(args["TARGET"][0])))
    targets = resolve_targets(args, environ, options.expand, options.max_hosts)
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


def reopen_closed_std_fds() -> frozenset:
    """Put /dev/null on each of fds 0, 1, 2 that is closed, so that no file classh opens
    later (a pipe, a result file) takes its number and is inherited by every child as
    its stdin, stdout or stderr; give Python streams for them. Returns the fds that were
    closed."""
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:  # pragma: no cover - the lowest free fd is this one
                os.dup2(opened, fd)
                os.close(opened)
    if sys.stdin is None:
        sys.stdin = open(0, "r", closefd=False)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)
    return frozenset(closed)


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of the ``classh`` command."""
    argv = sys.argv[1:] if argv is None else argv
    closed = reopen_closed_std_fds()
    try:
        status = run(argv, closed=closed)
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
