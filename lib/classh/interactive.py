"""``classh -i``: a shell whose every line runs on all targets, shown gathered.

Lines starting with ``:`` steer the shell: ``:failed`` narrows the targets to
the hosts that failed last time, ``:all`` restores them, ``:hosts`` lists
them, ``:add PATTERN`` and ``:drop PATTERN`` change them, ``:quit`` ends.
Ctrl-C cancels the running line, not the shell; any other signal that ends
a line (SIGTERM: exit 143) ends the shell too. Without a terminal on stdin
the shell reads commands line by line (no prompt).
"""
from __future__ import annotations

import signal
from typing import Callable, List, Optional

from .display import GatherDisplay, SafeStream, summary_line
from .hostmode import TargetSource, task_maker
from .run import Run
from .observers import Observer
from .options import Options, OptionError
from .results import Record
from .targets import Target, TargetError, fold_targets, resolve

__all__ = ["Shell", "HELP"]

HELP = """Each line runs on every current target; results are shown gathered.
  :hosts            list the current targets
  :failed           narrow the targets to the hosts that failed last time
  :all              back to all targets
  :add PATTERN      add targets (same syntax as on the command line)
  :drop PATTERN     remove targets
  :help             this text
  :quit             leave (so does end of input)
"""


class _Failures(Observer):
    """Collects the hosts whose record is not ok (for ``:failed``)."""

    def __init__(self):
        self.hosts: List[str] = []

    def finished(self, task, record: Record) -> None:
        if not record.ok:
            self.hosts.append(record.host)


class Shell:
    """The interactive loop; ``read_line(prompt)`` returns a line, or None at the end."""

    def __init__(self, targets: List[Target], options: Options, out: SafeStream,
                 err: SafeStream, read_line: Callable[[str], Optional[str]], prompt: str = "",
                 palette=None):
        self.all = list(targets)
        self.current = list(targets)
        self.failed: List[Target] = []
        self.options = options
        self.out = out
        self.err = err
        self.read_line = read_line
        self.prompt = prompt
        self.palette = palette
        self.status = 0

    def say(self, text: str) -> None:
        """A line from the shell itself, on stderr."""
        self.err.write((text + "\n").encode())

    def run(self) -> int:
        """Read and run lines until :quit or the end of input; return the last run's status."""
        while True:
            line = self.read_line(self.prompt)
            if line is None:
                return self.status
            line = line.strip()
            if not line:
                continue
            if line.startswith(":"):
                if not self.meta(line):
                    return self.status
                continue
            if not self.run_line(line):
                return self.status

    def run_line(self, command: str) -> bool:
        """Run ``command`` on the current targets; show gathered results and a summary.

        False when a signal other than SIGINT ended the line (SIGTERM): the
        shell ends too, with that signal's status (143).
        """
        if not self.current:
            self.say("classh: no targets (use :all or :add)")
            return True
        failures = _Failures()
        try:
            source = TargetSource(self.current, task_maker(command, self.options))
        except OptionError as exc:
            self.say("classh: %s" % exc)
            return True
        display = GatherDisplay(self.out, self.palette)
        summary = Run(source, self.options, [display, failures]).run()
        by_label = {t.label: t for t in self.current}
        self.failed = [by_label[h] for h in failures.hosts if h in by_label]
        self.status = summary.exit_status
        self.say(summary_line(summary.tally, summary.elapsed, summary.interrupted_by is not None))
        return summary.interrupted_by in (None, signal.SIGINT)

    def meta(self, line: str) -> bool:
        """Handle a ``:`` command; False means leave the shell."""
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word in (":quit", ":q", ":exit"):
            return False
        if word == ":hosts":
            self.say("%s (%d)" % (fold_targets(self.current) or "-", len(self.current)))
        elif word == ":failed":
            if self.failed:
                self.current = list(self.failed)
                self.say("narrowed to %d failed hosts: %s" % (len(self.current), fold_targets(self.current)))
            else:
                self.say("no host failed last time")
        elif word == ":all":
            self.current = list(self.all)
            self.say("%d hosts" % len(self.current))
        elif word in (":add", ":drop") and rest:
            self.change(word, rest)
        elif word == ":help":
            self.err.write(HELP.encode())
        else:
            self.say("classh: unknown shell command %r (try :help)" % line)
        return True

    def change(self, word: str, pattern: str) -> None:
        """``:add`` or ``:drop`` the targets of ``pattern``."""
        try:
            named = resolve([pattern], expand=self.options.expand, max_hosts=self.options.max_hosts)
        except TargetError as exc:
            self.say("classh: %s" % exc)
            return
        if word == ":add":
            known = {t.label for t in self.all}
            fresh = [t for t in named if t.label not in known]
            self.all += fresh
            current = {t.label for t in self.current}
            self.current += [t for t in named if t.label not in current]
            self.say("added %d hosts" % len(fresh))
        else:
            gone = {t.label for t in named}
            self.all = [t for t in self.all if t.label not in gone]
            self.current = [t for t in self.current if t.label not in gone]
            self.failed = [t for t in self.failed if t.label not in gone]
            self.say("%d hosts left" % len(self.current))
