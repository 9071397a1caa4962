"""The third-party start-up warnings our commands filter: known deprecations that say nothing to a user."""

from __future__ import annotations

import warnings

THIRD_PARTY_WARNINGS = (
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    (FutureWarning, r"`torch\.cuda\.amp\.custom_(fwd|bwd)\(args\.\.\.\)` is deprecated"),
    (UserWarning, r"Using a non-tuple sequence for multidimensional indexing"),
    (UserWarning, r"This DataLoader will create \d+ worker processes in total"),
    (DeprecationWarning, r"websockets\.(legacy|connection)"),
)
"""(category, message regex) of each filtered warning: torch's jit and amp deprecations raised by nerfstudio's
imports, its tensor indexing on every render, and its data loader's fixed worker count (ns-localize reads no batches
through it)."""


def quiet_third_party_warnings() -> None:
    """Ignore ``THIRD_PARTY_WARNINGS`` (and only those) in this process."""
    for category, message in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
