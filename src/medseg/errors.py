"""User-facing errors.

A `MedsegError` is a problem with the user's input (a file, a dataset, an argument). The
command line prints its message as one line and exits non-zero, without a traceback.
Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

from pathlib import Path


class MedsegError(Exception):
    """An error the user can act on; the message names the file and the problem."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)
