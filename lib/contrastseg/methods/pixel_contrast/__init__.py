"""Pixel contrast (Wang et al., ICCV 2021): cross-image pixel-to-pixel InfoNCE with hard anchor sampling and pixel
and segment memory queues.

* ``config``: its fields (``PixelContrastConfig``);
* ``objective``: CE + weight x the contrast term (``PixelContrastObjective``);
* ``loss``: the InfoNCE module over anchors and memory rows (on the shared chunked core, ``losses.functional``);
* ``memory``: the class-wise pixel and segment queues (``PixelSegmentMemory``), with the reference code's defects
  as a switch;
* ``memory_selection``: which memory rows each anchor contrasts with (all, random, hardest, semi-hard).

Its anchor sampling (hard and random) is in the shared ``samplers.hard_anchor``, beside Contextrast's class-balanced
sample, since both build on the same per-(image, class) pixel sampling.
"""

from contrastseg.method import Method
from contrastseg.methods.pixel_contrast.config import PixelContrastConfig

METHOD = Method("pixel_contrast", PixelContrastConfig,
                "contrastseg.methods.pixel_contrast.objective:PixelContrastObjective",
                summary="Wang et al. 2021: pixel-to-pixel InfoNCE, hard anchors, pixel and segment memory")
