"""RC²L (Zhang et al., IJCAI 2022): region-level contrastive and consistency learning for semi-supervised
segmentation, on a mask-classification model with an EMA teacher.

* ``config``: its fields (``RC2LConfig``, with the engine's teacher and unlabeled-stream fields);
* ``objective``: the supervised set loss + the four region terms against the teacher (``RC2LObjective``), and
  ``inspect_regions`` (what the terms see, for the figures);
* ``losses``: the four region losses as modules over the pure functions of the shared ``losses.region``.

The engine's semi-supervised path (``engine.semi``: the EMA teacher, the weak and strong views, CutMix) serves any
method whose ``Method.semi_supervised`` is set.
"""

from contrastseg.method import Method
from contrastseg.methods.rc2l.config import RC2LConfig

METHOD = Method("rc2l", RC2LConfig, "contrastseg.methods.rc2l.objective:RC2LObjective",
                summary="Zhang et al. 2022: region consistency and contrast against an EMA teacher",
                semi_supervised=True, mask_classification=True)
