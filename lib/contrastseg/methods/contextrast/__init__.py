"""Contextrast (Sung et al., CVPR 2024): contextual contrastive learning of pixels against multi-scale class anchors,
with boundary-aware negatives (BANE).

* ``config``: its fields (``ContextrastConfig``);
* ``objective``: CE + weight x the level-weighted pixel-to-anchor loss (``ContextrastObjective``);
* ``anchors``: per-level class means, mixed with the last level's;
* ``bane``: the boundary-aware negatives, mispredicted pixels nearest the rims of their error regions.

Its class-balanced pixel sample (``samplers.hard_anchor``), the distance transform that BANE uses
(``samplers.distance``) and the InfoNCE core (``losses.functional``) are shared with the other methods.
"""

from contrastseg.method import Method
from contrastseg.methods.contextrast.config import ContextrastConfig

METHOD = Method("contextrast", ContextrastConfig, "contrastseg.methods.contextrast.objective:ContextrastObjective",
                summary="Sung et al. 2024: multi-scale class anchors, boundary-aware negatives (BANE)")
