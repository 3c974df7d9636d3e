"""Loss math that several methods share: pure functions in ``functional`` (the chunked pixel InfoNCE core, class
sums of embeddings) and ``region`` (mask-classification losses: the set loss's, and RC²L's region terms).

A loss module that only one method uses lives in that method's folder (``contrastseg.methods``).
"""

from contrastseg.losses import functional, region

__all__ = ["functional", "region"]
