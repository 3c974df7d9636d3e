"""Seeds derived from integer keys, so that every random draw of a run depends only on what it is for."""

from __future__ import annotations

import numpy as np


def sample_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)
