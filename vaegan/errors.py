"""The one base class of errors a user can act on.

Every error the toolkit raises for bad input (a config key, an image file, a checkpoint, a
weights file) or a failed run derives from :class:`VaeganError`; its message names the file, key
or value and what was expected. The command line catches this type, prints the message and exits
with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class VaeganError(Exception):
    """A user-facing error: the message says what was wrong and what to do."""


class InputError(VaeganError, ValueError):
    """A file, folder or value the user handed over cannot be used (still a ValueError for callers)."""


class MissingFileError(VaeganError, FileNotFoundError):
    """A file or folder the user named (or a command needs) does not exist."""
