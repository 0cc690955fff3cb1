"""The errors prodvision raises for bad input: one base class, so the command line can print them in one line.

Every error caused by what a user gave -- a missing or corrupt file, an unknown name, a setting that cannot work --
is a :class:`ProdvisionError` whose message names the file or setting and says how to fix it. ``prodvision``'s
``main`` prints such an error as ``error: <message>`` and exits with status 2; any other exception is a bug and
keeps its traceback. The subclasses also derive from the matching built-in type (``ValueError``,
``FileNotFoundError``), so ``except ValueError`` keeps working for library users.
"""

from __future__ import annotations

__all__ = ["ProdvisionError", "ConfigError", "DataError", "DataNotFoundError", "first_line"]


class ProdvisionError(Exception):
    """Base class of every error about the user's input (files, names, settings)."""


class ConfigError(ProdvisionError, ValueError):
    """A setting that cannot work: an unknown device or arch, zero epochs, a resume with a different recipe..."""


class DataError(ProdvisionError, ValueError):
    """A dataset that cannot be used as given: an empty folder, a class with too few images to split..."""


class DataNotFoundError(ProdvisionError, FileNotFoundError):
    """A dataset, folder, CSV manifest or model file that does not exist where it was looked for."""


def first_line(e: BaseException) -> str:
    """An exception in one short line, ``"Type: the first line of its message"``, for messages that quote it."""
    line = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {line[:160]}" if line else type(e).__name__
