"""classh, the Cluster Administrator's ssh: run shell work over SSH on many hosts.

The command line lives in :mod:`classh.cli`; the Python API is here:

- :func:`run` / :func:`call` -- a command on many hosts, ``{host: (rc, out, err) | Error}``
- :func:`copy` / :func:`slurp` -- push files to, or pull them from, many hosts
- :class:`SSHJobMan` -- a run you drive yourself (``start/poll/wait/kill/done``, ``.results``)
- :func:`jobs` -- job mode: a list of commands over node slots, ``{job_id: record}``
- :class:`Options`, :class:`Error`, :func:`load_results`
"""
__version__ = "0.2.0"

from .api import SSHJobMan, Error, call, copy, run, slurp  # noqa: E402
from .jobs import jobs  # noqa: E402
from .options import Options  # noqa: E402
from .results import Record, load_results  # noqa: E402

__all__ = ["run", "call", "copy", "slurp", "jobs", "Options", "Error", "SSHJobMan", "load_results", "Record"]
