"""ssh's own notes about its control master, kept out of a job's stderr.

A session through a ControlMaster that cannot be had makes the ssh client
say so on stderr before it runs the command over a login of its own
(``mux_client_request_session: session request failed: Session open
refused by peer``, ``muxclient: master hello exchange failed``,
``ControlSocket PATH already exists, disabling multiplexing``). Those lines
are ssh's, not the job's: :class:`MuxNotes` takes them off the start of a
job's stderr as it arrives and keeps them in ``notes`` (what the scheduler
reads when the session failed). Nothing else is touched: only whole lines
at the very start, before the first byte the job wrote.
"""
from __future__ import annotations

import re

__all__ = ["MuxNotes"]

#: A line of ssh's mux client, or of a master it could not start.
_NOTE = re.compile(rb"(mux_client_\w+|muxclient): .*|ControlSocket .* already exists, "
                   rb"disabling multiplexing\r?")


class MuxNotes:
    """A filter of one attempt's stderr: ``feed(data)`` returns what is the job's;
    ``notes`` holds ssh's lines. Nothing is ever held back (a read cut short by a pipe
    closed on linger loses nothing): a note split over two reads stays in stderr."""

    def __init__(self):
        self.notes = b""
        self._past = False  # the job's own output began: nothing more is looked at

    def feed(self, data: bytes) -> bytes:
        """``data`` less the whole note lines at its start (while the job wrote nothing)."""
        if self._past:
            return data
        while True:
            line, newline, rest = data.partition(b"\n")
            if not (newline and _NOTE.fullmatch(line)):
                self._past = bool(data)
                return data
            self.notes += line + newline
            data = rest
