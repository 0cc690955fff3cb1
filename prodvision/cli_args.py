"""Argument parsing of the ``prodvision`` command line: every number is checked where it is parsed.

:func:`integer` and :func:`number` build argparse ``type=`` functions that refuse a value outside its range with
the range and a fix::

    $ prodvision train --out r --batch-size 0
    prodvision train: error: argument --batch-size: must be a positive integer (got 0); leave the option out for
    its default (--help says which)
    $ prodvision serve m.onnx --port 99999
    prodvision serve: error: argument --port: must be a TCP port from 1 to 65535 (got 99999); e.g. --port 8000,
    the default
    $ prodvision train --out r --size -32
    prodvision train: error: argument --size: must be a side in pixels from 8 to 4096 (got -32); did you mean 32?

(each error is one line, wrapped here). :class:`Parser` prints such an error in that one line and exits with
argparse's status 2 (``--help`` still shows the usage); where the checker has no fix of its own, the option's default
is the fix. Both run while the arguments are parsed, before any subcommand imports PyTorch: like ``cli``, this module
imports only the standard library and ``prodvision.config``.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

from .config import MAX_INPUT_SIZE, MIN_INPUT_SIZE, ONNX_OPSET, ONNX_OPSETS

__all__ = ["Parser", "integer", "number", "INPUT_SIZE", "PORT", "OPSET", "POSITIVE", "COUNT", "SEED", "FRACTION"]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``PROG: error: MESSAGE``, with exit status 2 as argparse's.

    The usage block argparse prints above an error is left out (for ``prodvision train`` it is a dozen lines that
    push the message off screen); ``PROG --help`` shows it. Subcommand parsers inherit this class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _get_value(self, action, arg_string):
        """argparse's conversion of one value, plus a fix for a checked value refused without one of its own: the
        option's default (``e.g. --port 8000, the default``), or, where the default is computed, to leave it out."""
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError as e:
            if not getattr(action.type, "checked", False) or "; " in e.message:
                raise
            flag = max(action.option_strings, key=len)
            fix = ("leave the option out for its default (--help says which)" if action.default is None
                   else f"e.g. {flag} {_fmt(action.default)}, the default")
            raise argparse.ArgumentError(action, f"{e.message}; {fix}") from None


def _fmt(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _range(lo, hi, lo_open: bool, hi_open: bool) -> str:
    """The valid range in words: "from 1 to 65535", ">= 0", "> 0 and <= 1"."""
    if lo is not None and hi is not None and not lo_open and not hi_open:
        return f"from {_fmt(lo)} to {_fmt(hi)}"
    parts = ([f"{'>' if lo_open else '>='} {_fmt(lo)}"] if lo is not None else []) + \
            ([f"{'<' if hi_open else '<='} {_fmt(hi)}"] if hi is not None else [])
    return " and ".join(parts)


def _checker(kind: type, what: str, lo, hi, lo_open: bool, hi_open: bool, too_big: str | None,
             fix: Callable[[float], str | None] | None) -> Callable[[str], float]:
    if what is None:
        what = ("a positive integer" if (kind is int and lo == 1 and hi is None)
                else f"{'an integer' if kind is int else 'a number'} {_range(lo, hi, lo_open, hi_open)}")
    elif lo is not None or hi is not None:
        what = f"{what} {_range(lo, hi, lo_open, hi_open)}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what} (got {text!r})") from None
        below = lo is not None and (value <= lo if lo_open else value < lo)
        above = hi is not None and (value >= hi if hi_open else value > hi)
        if below or above or (kind is float and not math.isfinite(value)):
            hint = too_big if above and too_big else fix(value) if fix else None
            raise argparse.ArgumentTypeError(f"must be {what} (got {text})" + (f"; {hint}" if hint else ""))
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    parse.checked = True  # Parser adds a fix to a refusal without one ("; " starts a fix)
    return parse


def integer(lo: int | None = 1, hi: int | None = None, *, what: str | None = None, too_big: str | None = None,
            fix: Callable[[int], str | None] | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer in ``[lo, hi]`` (None: unbounded on that side).

    Args:
        what: the value in words ("a side in pixels"); default "a positive integer" or "an integer >= 0"...
        too_big: why values above ``hi`` are refused, appended to the error.
        fix: the value -> a suggestion appended to the error (or None), e.g. ``lambda v: f"did you mean {-v}?"``.
    """
    return _checker(int, what, lo, hi, False, False, too_big, fix)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
           what: str | None = None, fix: Callable[[float], str | None] | None = None) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite float between ``lo`` and ``hi``; ``lo_open``/``hi_open`` exclude the
    bound itself (a learning rate is ``number(0, lo_open=True)``, a probability ``number(0, 1)``)."""
    return _checker(float, what, lo, hi, lo_open, hi_open, None, fix)


#: Counts: batch sizes, epochs, images per class, top-k, pixels, threads...
POSITIVE = integer(1)
#: Worker processes and the like: 0 allowed.
COUNT = integer(0)
#: Random seeds (NumPy's generators refuse negative ones).
SEED = integer(0)
#: A probability, precision or mixing weight.
FRACTION = number(0, 1)
#: The side of a model input or an overlay, in pixels.
INPUT_SIZE = integer(MIN_INPUT_SIZE, MAX_INPUT_SIZE, what="a side in pixels",
                     too_big=f"larger inputs do not fit in memory: at {MAX_INPUT_SIZE} px one image already gives a "
                             "ResNet-18's first layer 1 GiB of activations",
                     fix=lambda v: f"did you mean {-v}?" if -v >= MIN_INPUT_SIZE else "leave the option out for the default")
#: A TCP port (0, "any free port", would leave the address unknown to whoever opens the page).
PORT = integer(1, 65535, what="a TCP port")
#: An ONNX opset that ``prodvision.export`` can write (``config.ONNX_OPSETS``).
OPSET = integer(*ONNX_OPSETS, what="an ONNX opset",
                fix=lambda v: f"torch's TorchScript-based exporter writes no other; the default is {ONNX_OPSET}")


def product_pattern(text: str) -> str:
    """An argparse ``type=`` for ``--group-by``: a regular expression that compiles (its first group, searched in a
    file's relative path without extension, names the product)."""
    import re

    try:
        re.compile(text)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"must be a regular expression (got {text!r}: {e}); e.g. "
                                         "--group-by '^(.+)_\\d+$' for tote_1.jpg, tote_2.jpg") from None
    return text
