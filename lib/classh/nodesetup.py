"""Node set-up in job mode: a node's working directory made, init files copied, an init
script run, once per node and before its first job (kssh's ``--init-file``/``--init-script``).

:class:`NodeSetup` holds what every node gets (one tar archive, built once, of the
``--init-file`` files and the ``--init-script``); :meth:`NodeSetup.command` is the remote
line for one node's working directory (``wd`` of a ``--machines`` entry; the login
directory without one). It runs in a POSIX ``sh`` whatever the login shell::

    mkdir -p -- WD && tar -x -f - -C WD && cd -- WD && chmod u+x -- ./SCRIPT && ./SCRIPT

The archive is the task's stdin. Nothing here prints or runs anything.
"""
from __future__ import annotations

import os
import shlex
from typing import Optional, Sequence

from .remote import quote_word, remote_word
from .transfer import copy_plan

__all__ = ["NodeSetup"]


class NodeSetup:
    """What a node needs before its first job; ``copy_plan`` checks the files (a missing or
    unreadable one, two of the same name: TransferError naming it)."""

    def __init__(self, init_files: Sequence[str] = (), init_script: Optional[str] = None):
        files = list(init_files) + ([init_script] if init_script else [])
        self.archive: Optional[bytes] = copy_plan(files, "./")[1] if files else None
        self.script = os.path.basename(init_script.rstrip("/")) if init_script else None

    def needed(self, wd: Optional[str]) -> bool:
        """True when a node with working directory ``wd`` needs a set-up at all."""
        return self.archive is not None or wd is not None

    def command(self, wd: Optional[str]) -> str:
        """The remote line setting up a node whose working directory is ``wd``."""
        where = remote_word(wd) if wd else "."
        steps = ["mkdir -p -- %s" % where]
        if self.archive is not None:
            steps.append("tar -x -f - -C %s" % where)
        if self.script is not None:
            script = shlex.quote("./" + self.script)
            steps += ["cd -- %s" % where, "chmod u+x -- %s" % script, script]
        return "sh -c " + quote_word(" && ".join(steps))
