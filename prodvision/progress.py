"""The package's one progress-bar factory: ``tqdm.auto`` refreshing at most every ``REFRESH_S`` seconds.

Why not tqdm's default (10 refreshes per second): in a Jupyter kernel every refresh of a widget bar is about three
IOPub messages. ZeroMQ drops IOPub messages past its high-water mark (1000 at each end) while no client reads them,
and nbval reads a cell's messages only after the cell has finished -- so a ten-minute training cell lost the kernel's
final "idle" message and nbval failed with "Timeout of 5 seconds exceeded waiting for output" (CI, notebook 07).
At one refresh every 2 s a ten-minute cell sends ~900 messages. JupyterLab reads continuously and is unaffected
either way; a bar that moves every 2 s is still a live bar.
"""

from __future__ import annotations

from typing import Any

__all__ = ["REFRESH_S", "progress_bar"]

REFRESH_S = 2.0


def progress_bar(iterable: Any = None, **kwargs: Any):
    """``tqdm.auto.tqdm(iterable, **kwargs)`` with ``mininterval=REFRESH_S`` unless given."""
    from tqdm.auto import tqdm

    kwargs.setdefault("mininterval", REFRESH_S)
    return tqdm(iterable, **kwargs)
