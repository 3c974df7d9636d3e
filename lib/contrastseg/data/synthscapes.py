"""SynthScapes: procedural street scenes, generated on the fly; the built-in default data set.

Each sample is a street seen from a car: a road that runs to a vanishing point, sidewalks on both sides, building
facades with windows, sky, trees and hedges, parked and driving cars, poles and people, sometimes the hood of the
ego vehicle (ignored, like Cityscapes) and small unlabelled clutter (ignored).

What makes it hard enough that a small CNN does not saturate:

- **Context-only classes.** Road and sidewalk draw their colour and texture from one distribution; only where they
  lie tells them apart (sidewalks are the strips between the road and the buildings). Sky and window glass also share
  one colour distribution; windows are the rectangles inside facades. Car glass is drawn from it too.
- **Colours per image.** Every region's colour is drawn per image from wide, overlapping distributions (grey
  buildings look like grey ground, overcast sky like pale walls), with per-region texture noise.
- **Thin, rare and small things.** Poles are a few pixels wide and few per image; far people and cars are tiny;
  near objects occlude far ones and trees occlude facades.
- **Photometric variation.** A global lighting gain and gradient, cast shadows on the ground, Gaussian pixel noise
  and occasional blur. All of it acts on the image only; labels keep crisp polygon edges (drawn without
  antialiasing) and 255 marks ignored pixels.

The difficulty knobs are the module constants below the class table; change them to recalibrate.

Determinism: sample ``index`` of ``split`` under ``seed`` comes from
``numpy.random.SeedSequence([seed, SPLIT_IDS[split], index])`` alone, so it is bit-identical in any order of access
and in any process. The scene geometry is drawn in normalised coordinates before anything that depends on the
image size, so one index gives the same scene at every ``image_size`` (rendered at that size).

Generation time per sample on one core (mean over 200 train samples, AMD EPYC, numpy 2, Pillow 13):

==========  ========
image_size  time
==========  ========
64          2.5 ms
128         5.0 ms
256         8.2 ms
512         21 ms
==========  ========

The "unlabeled" split is for semi-supervised training. It still returns labels, so that the quality of pseudo-labels
can be measured; a semi-supervised engine must never train on them.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import Dataset

from contrastseg.data.folder import to_tensors

CLASS_NAMES = ("road", "sidewalk", "building", "window", "sky", "vegetation", "car", "pole", "person")
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 255
PALETTE = (
    (128, 64, 128),  # road
    (244, 35, 232),  # sidewalk
    (70, 70, 70),  # building
    (250, 170, 30),  # window
    (70, 130, 180),  # sky
    (107, 142, 35),  # vegetation
    (0, 0, 142),  # car
    (153, 153, 153),  # pole
    (220, 20, 60),  # person
)
ROAD, SIDEWALK, BUILDING, WINDOW, SKY, VEGETATION, CAR, POLE, PERSON = range(NUM_CLASSES)

SPLITS = ("train", "val", "test", "unlabeled")
SPLIT_IDS = {split: split_id for split_id, split in enumerate(SPLITS)}
DEFAULT_LENGTHS = {"train": 512, "val": 128, "test": 128, "unlabeled": 2048}
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 64, 512

# Difficulty knobs. Ranges are (low, high) of a uniform draw per image; sizes are fractions of the image side.
PIXEL_NOISE_STD = (0.01, 0.05)  # Gaussian pixel noise, in [0, 1] intensity units
BLUR_PROBABILITY = 0.3  # chance that an image is blurred
BLUR_SIGMA = (0.002, 0.006)  # blur sigma when blurred
LIGHTING_GAIN = (0.6, 1.3)  # global brightness factor
LIGHTING_GRADIENT = 0.4  # brightness change across the image, at most, either way
MAX_SHADOWS = 2  # cast shadows on the ground, 0..MAX_SHADOWS per image
SHADOW_DARKENING = (0.45, 0.85)  # brightness factor inside a shadow
CURB_PROBABILITY = 0.3  # chance of a visible kerb line between road and sidewalk (a context cue)
LANE_MARKING_PROBABILITY = 0.35  # chance of dashed lane markings on the road (a context cue)
MAX_CARS = 5
MAX_PEOPLE = 6
MAX_POLES = 4  # 0..MAX_POLES poles per image; they are the thin, rare class
MAX_TREES = 5
HOOD_PROBABILITY = 0.4  # chance of the ego-vehicle hood at the bottom (ignored)
MAX_CLUTTER = 3  # small unlabelled blobs (ignored), 0..MAX_CLUTTER per image
WINDOW_MIN_SIZE = 1 / 128  # windows smaller than this are not drawn (same at every image size)

CACHE_BYTES = 512 * 2**20  # rendered samples are kept in memory, shared by every instance, up to this many bytes

KNOBS = (
    "PIXEL_NOISE_STD", "BLUR_PROBABILITY", "BLUR_SIGMA", "LIGHTING_GAIN", "LIGHTING_GRADIENT", "MAX_SHADOWS",
    "SHADOW_DARKENING", "CURB_PROBABILITY", "LANE_MARKING_PROBABILITY", "MAX_CARS", "MAX_PEOPLE", "MAX_POLES",
    "MAX_TREES", "HOOD_PROBABILITY", "MAX_CLUTTER", "WINDOW_MIN_SIZE",
)


def generator_parameters() -> dict:
    """The difficulty knobs and class table, as a JSON-ready dict (written next to data sets saved to disk)."""
    knobs = {name: globals()[name] for name in KNOBS}
    return {
        "class_names": list(CLASS_NAMES), "palette": [list(rgb) for rgb in PALETTE],
        "ignore_index": IGNORE_INDEX, "knobs": {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()},
    }


class SynthScapes(Dataset):
    """Procedural street scenes with per-pixel labels, generated on the fly.

    Args:
        split: "train", "val", "test" or "unlabeled" (labels returned for measurement only, see the module doc).
        image_size: side of the square images, in pixels, 64 to 512.
        length: number of samples; ``DEFAULT_LENGTHS[split]`` when None.
        seed: data set seed; with the split and the index it fixes each sample.
        transform: joint callable ``(image, label) -> (image, label)`` applied to the tensors.

    Rendered samples are kept in memory (read-only uint8 arrays) in one cache of the process that every instance
    shares, up to ``CACHE_BYTES`` in all (``RenderCache``): a training run would render each image once per epoch
    otherwise, and the runs of a batch in one process (a notebook's rows, a ledger) use the same images. A loader
    worker has its own copy.

    Shape:
        image: (3, H, W) float32 in [0, 1].
        label: (H, W) int64, values in [0, NUM_CLASSES) or IGNORE_INDEX (255).
    """

    def __init__(self, split: str = "train", image_size: int = 64, length: int | None = None, seed: int = 0,
                 transform=None):
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown SynthScapes split {split!r}; valid splits: {', '.join(SPLITS)}")
        if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"SynthScapes image_size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} px, "
                             f"got {image_size}")
        length = DEFAULT_LENGTHS[split] if length is None else length
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.split, self.image_size, self.length, self.seed = split, int(image_size), int(length), int(seed)
        self.transform = transform

    def __len__(self) -> int:
        return self.length

    @property
    def image_ids(self) -> list[str]:
        """Sample names, the file names (without suffix) that ``data_scripts/make_synthetic.py`` writes."""
        return [sample_name(index) for index in range(self.length)]

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as arrays: image (H, W, 3) uint8 and label (H, W) uint8 (255 = ignore)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for SynthScapes {self.split!r} of length {self.length}")
        key = (self.seed, SPLIT_IDS[self.split], int(index), self.image_size)
        sample = RENDERED.get(key)
        if sample is None:
            sample = render_scene(np.random.SeedSequence(list(key[:3])), self.image_size)
            RENDERED.put(key, sample)
        return sample

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        if index < 0:
            index += self.length
        return to_tensors(*self.render(index), self.transform)

    def __repr__(self) -> str:
        return (f"SynthScapes(split={self.split!r}, image_size={self.image_size}, length={self.length}, "
                f"seed={self.seed})")


class RenderCache:
    """Rendered samples by (seed, split id, index, image size), up to ``CACHE_BYTES`` (read at each insertion); once
    full, new samples are rendered without being kept. The arrays are made read-only: callers get views of them."""

    def __init__(self):
        self.samples: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.bytes = 0

    def get(self, key: tuple) -> tuple[np.ndarray, np.ndarray] | None:
        return self.samples.get(key)

    def put(self, key: tuple, sample: tuple[np.ndarray, np.ndarray]) -> None:
        size = sum(array.nbytes for array in sample)
        if self.bytes + size > CACHE_BYTES:
            return
        for array in sample:
            array.flags.writeable = False
        self.samples[key] = sample
        self.bytes += size

    def clear(self) -> None:
        self.samples.clear()
        self.bytes = 0


RENDERED = RenderCache()
"""The process's cache of rendered SynthScapes samples."""


def sample_name(index: int) -> str:
    """The name of sample ``index``: its image id in split lists and its file name stem on disk."""
    return f"synthscapes_{index:06d}"


def render_scene(seed_sequence: np.random.SeedSequence, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene from ``seed_sequence`` and render it at ``image_size``.

    Returns:
        image (H, W, 3) uint8 and label (H, W) uint8 with 255 for ignored pixels.
    """
    scene_seed, photo_seed = seed_sequence.spawn(2)
    rng = np.random.default_rng(scene_seed)
    canvas = _Canvas(image_size)
    shadows = _Shadows(image_size)
    _draw_street(canvas, shadows, rng)
    label = canvas.labels()
    image = _photograph(canvas, shadows, np.random.default_rng(photo_seed))
    return image, label


# ----------------------------------------------------------------------------------------------------------------
# Canvas: a map of region ids; each region has a class, a colour and a texture strength.


class _Canvas:
    """Regions drawn without antialiasing into an 8-bit id map, in normalised coordinates (x right, y down)."""

    def __init__(self, image_size: int):
        self.size = image_size
        self.region_map = Image.new("L", (image_size, image_size), 0)
        self.pen = ImageDraw.Draw(self.region_map)
        self.classes: list[int] = []
        self.colours: list[tuple[float, float, float]] = []
        self.textures: list[float] = []

    def new_region(self, class_id: int, colour, texture: float) -> int:
        if len(self.classes) == 256:
            raise RuntimeError("SynthScapes scene has more than 256 regions")
        self.classes.append(class_id)
        self.colours.append(tuple(colour))
        self.textures.append(texture)
        return len(self.classes) - 1

    def _pixels(self, points):
        return [(x * self.size, y * self.size) for x, y in points]

    def polygon(self, region: int, points) -> None:
        self.pen.polygon(self._pixels(points), fill=region)

    def ellipse(self, region: int, centre_x: float, centre_y: float, radius_x: float, radius_y: float) -> None:
        box = self._pixels([(centre_x - radius_x, centre_y - radius_y), (centre_x + radius_x, centre_y + radius_y)])
        if box[1][0] >= box[0][0] and box[1][1] >= box[0][1]:
            self.pen.ellipse(box, fill=region)

    def vertical_bar(self, region: int, centre_x: float, top: float, bottom: float, width: float) -> None:
        """A vertical bar at least one pixel wide (poles, trunks), whatever the image size."""
        width_px = max(1, round(width * self.size))
        left = round(centre_x * self.size - width_px / 2)
        self.pen.rectangle([left, top * self.size, left + width_px - 1, bottom * self.size], fill=region)

    def labels(self) -> np.ndarray:
        class_of_region = np.full(256, IGNORE_INDEX, np.uint8)
        class_of_region[:len(self.classes)] = self.classes
        return class_of_region[np.asarray(self.region_map)]


class _Shadows:
    """Multiplicative brightness mask for cast shadows (image only)."""

    def __init__(self, image_size: int):
        self.size = image_size
        self.mask = Image.new("L", (image_size, image_size), 255)
        self.pen = ImageDraw.Draw(self.mask)

    def polygon(self, points, brightness: float) -> None:
        self.pen.polygon([(x * self.size, y * self.size) for x, y in points], fill=round(brightness * 255))


# ----------------------------------------------------------------------------------------------------------------
# Colours: one sampler per look. Road and sidewalk share one; sky and (window, car) glass share another.


def _hsv(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(hue % 1.0, min(max(saturation, 0.0), 1.0), min(max(value, 0.0), 1.0))


def _sky_or_glass_colour(rng) -> tuple[float, float, float]:
    return _hsv(rng.uniform(0.5, 0.66), rng.uniform(0.0, 0.55), rng.uniform(0.45, 0.95))


def _ground_colour(rng) -> tuple[float, float, float]:
    return _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.15), rng.uniform(0.25, 0.7))


def _building_colour(rng) -> tuple[float, float, float]:
    if rng.random() < 0.5:  # grey concrete, like the ground and overcast sky
        return _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.15), rng.uniform(0.3, 0.9))
    return _hsv(rng.uniform(-0.02, 0.16), rng.uniform(0.15, 0.6), rng.uniform(0.3, 0.9))  # brick, sandstone


def _vegetation_colour(rng) -> tuple[float, float, float]:
    hue = rng.uniform(0.06, 0.14) if rng.random() < 0.15 else rng.uniform(0.17, 0.42)  # autumn or green
    return _hsv(hue, rng.uniform(0.2, 0.75), rng.uniform(0.15, 0.65))


def _paint_colour(rng) -> tuple[float, float, float]:
    """Anything goes: cars, clothes, clutter."""
    return _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.9), rng.uniform(0.08, 0.92))


def _metal_colour(rng) -> tuple[float, float, float]:
    return _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.15), rng.uniform(0.12, 0.6))


def _skin_colour(rng) -> tuple[float, float, float]:
    return _hsv(rng.uniform(0.02, 0.1), rng.uniform(0.2, 0.6), rng.uniform(0.25, 0.9))


def _jitter(rng, colour, amount: float = 0.04) -> tuple[float, float, float]:
    return tuple(float(np.clip(c + rng.normal(0, amount), 0, 1)) for c in colour)


# ----------------------------------------------------------------------------------------------------------------
# The street. The ground is a plane seen in perspective: a "ground line" starts at x = x_bottom on the bottom edge
# and runs to the vanishing point; depth t in [0, 1) moves along it (t < 0 lies below the image). At depth t,
# things are (1 - t) times their size at the bottom edge.


class _Street:
    def __init__(self, rng):
        self.horizon = rng.uniform(0.32, 0.5)
        self.vanish_x = rng.uniform(0.35, 0.65)
        self.road_left = rng.uniform(-0.35, 0.2)
        self.road_right = rng.uniform(0.8, 1.35)
        self.walk_left = self.road_left - rng.uniform(0.15, 0.6)  # outer edge of the left sidewalk
        self.walk_right = self.road_right + rng.uniform(0.15, 0.6)
        self.end_depth = rng.uniform(0.8, 0.93)  # where the street meets the buildings across

    def ground(self, x_bottom: float, depth: float) -> tuple[float, float]:
        return x_bottom + depth * (self.vanish_x - x_bottom), 1 + depth * (self.horizon - 1)

    def facade(self, x_bottom: float, depth: float, height: float, up: float) -> tuple[float, float]:
        """A point ``up`` (0 = ground, 1 = top) on a facade of bottom-edge ``height`` along a ground line."""
        x, y = self.ground(x_bottom, depth)
        return x, y - up * (1 - depth) * height


def _depth(z: float) -> float:
    """Depth t in [0, 1) from a distance z in (-1, inf), so that equal distances shrink towards the horizon."""
    return z / (1 + z)


def _random_depth(rng, street: _Street, near: float = 0.0) -> float:
    far = street.end_depth / (1 - street.end_depth)
    return _depth(rng.uniform(near, far * 0.95))


def _draw_street(canvas: _Canvas, shadows: _Shadows, rng) -> None:
    street = _Street(rng)
    canvas.new_region(SKY, _sky_or_glass_colour(rng), rng.uniform(0.0, 0.03))  # region 0 fills the empty canvas
    _draw_buildings_across(canvas, street, rng)
    _draw_ground(canvas, street, rng)
    for side in ("left", "right"):
        _draw_side(canvas, street, side, rng)
    _draw_ground_markings(canvas, street, rng)
    _draw_objects(canvas, street, rng)
    _draw_shadows(shadows, street, rng)
    _draw_ignored(canvas, rng)


def _draw_ground(canvas: _Canvas, street: _Street, rng) -> None:
    end = street.end_depth
    texture = rng.uniform(0.02, 0.09)  # one texture strength for road and sidewalks: they look alike
    road = canvas.new_region(ROAD, _ground_colour(rng), texture)
    canvas.polygon(road, [street.ground(street.road_left, 0), street.ground(street.road_right, 0),
                          street.ground(street.road_right, end), street.ground(street.road_left, end)])
    for outer, inner in ((street.walk_left, street.road_left), (street.walk_right, street.road_right)):
        walk = canvas.new_region(SIDEWALK, _ground_colour(rng), texture)
        canvas.polygon(walk, [street.ground(outer, -1), street.ground(inner, -1),
                              street.ground(inner, end), street.ground(outer, end)])


def _draw_buildings_across(canvas: _Canvas, street: _Street, rng) -> None:
    """Facades facing the camera where the street ends, with a grid of windows."""
    end = street.end_depth
    left_x, ground_y = street.ground(street.walk_left, end)
    right_x, _ = street.ground(street.walk_right, end)
    scale = 1 - end
    edges = np.sort(rng.uniform(left_x, right_x, size=rng.integers(0, 3)))
    edges = [left_x - 0.15, *edges, right_x + 0.15]
    for x0, x1 in zip(edges[:-1], edges[1:]):
        height = scale * rng.uniform(0.4, 2.0)
        top = ground_y - height
        wall = canvas.new_region(BUILDING, _building_colour(rng), rng.uniform(0.02, 0.08))
        canvas.polygon(wall, [(x0, ground_y), (x1, ground_y), (x1, top), (x0, top)])
        if rng.random() < 0.85:
            glass = canvas.new_region(WINDOW, _sky_or_glass_colour(rng), rng.uniform(0.0, 0.03))
            columns = max(1, round((x1 - x0) / (scale * rng.uniform(0.12, 0.3))))
            rows = max(1, round(height / (scale * rng.uniform(0.15, 0.35))))
            width, tall = rng.uniform(0.35, 0.75), rng.uniform(0.35, 0.7)
            cell_w, cell_h = (x1 - x0) / columns, height / rows
            if min(cell_w * width, cell_h * tall) < WINDOW_MIN_SIZE:
                continue
            for column in range(columns):
                for row in range(rows - (rng.random() < 0.5)):
                    cx, cy = x0 + (column + 0.5) * cell_w, top + (row + 0.45) * cell_h
                    hw, hh = cell_w * width / 2, cell_h * tall / 2
                    canvas.polygon(glass, [(cx - hw, cy - hh), (cx + hw, cy - hh), (cx + hw, cy + hh),
                                           (cx - hw, cy + hh)])


def _draw_side(canvas: _Canvas, street: _Street, side: str, rng) -> None:
    """Facades along one side of the street (or a park), from below the image to the street's end."""
    line = street.walk_left if side == "left" else street.walk_right
    end_distance = street.end_depth / (1 - street.end_depth)
    if rng.random() < 0.15:  # a park: hedges and trees, no buildings
        hedge = canvas.new_region(VEGETATION, _vegetation_colour(rng), rng.uniform(0.08, 0.18))
        height = rng.uniform(0.15, 0.6)
        canvas.polygon(hedge, [street.facade(line, -2, height, 0), street.facade(line, street.end_depth, height, 0),
                               street.facade(line, street.end_depth, height, 1), street.facade(line, -2, height, 1)])
        return
    distance = -0.67  # depth -2: well below the bottom edge
    while distance < end_distance:
        next_distance = min(distance + rng.uniform(0.25, 1.5), end_distance)
        near, far = _depth(distance), _depth(next_distance)
        distance = next_distance
        if rng.random() < 0.1:  # a gap between buildings
            continue
        height = rng.uniform(0.45, 1.5)
        wall = canvas.new_region(BUILDING, _building_colour(rng), rng.uniform(0.02, 0.08))
        canvas.polygon(wall, [street.facade(line, near, height, 0), street.facade(line, far, height, 0),
                              street.facade(line, far, height, 1), street.facade(line, near, height, 1)])
        if rng.random() < 0.85:
            _draw_side_windows(canvas, street, line, near, far, height, rng)
        if rng.random() < 0.2:
            hedge = canvas.new_region(VEGETATION, _vegetation_colour(rng), rng.uniform(0.08, 0.18))
            top = rng.uniform(0.05, 0.2) / height
            canvas.polygon(hedge, [street.facade(line, near, height, 0), street.facade(line, far, height, 0),
                                   street.facade(line, far, height, top), street.facade(line, near, height, top)])


def _draw_side_windows(canvas: _Canvas, street: _Street, line: float, near: float, far: float, height: float,
                       rng) -> None:
    """A grid of windows on the facade between depths ``near`` and ``far``, in perspective; one glass colour."""
    glass = canvas.new_region(WINDOW, _sky_or_glass_colour(rng), rng.uniform(0.0, 0.03))
    near_distance, far_distance = near / (1 - near), far / (1 - far)
    columns = max(1, round((far_distance - near_distance) * rng.uniform(2, 5)))
    rows = max(1, round(height * rng.uniform(4, 9)))
    width, tall = rng.uniform(0.35, 0.75), rng.uniform(0.35, 0.7)
    for column in range(columns):
        d0 = near_distance + (far_distance - near_distance) * (column + 0.5 - width / 2) / columns
        d1 = near_distance + (far_distance - near_distance) * (column + 0.5 + width / 2) / columns
        t0, t1 = _depth(d0), _depth(d1)
        for row in range(1, rows):  # the bottom row is the ground floor: no windows
            u0 = (row + 0.5 - tall / 2) / rows
            u1 = (row + 0.5 + tall / 2) / rows
            corners = [street.facade(line, t0, height, u0), street.facade(line, t1, height, u0),
                       street.facade(line, t1, height, u1), street.facade(line, t0, height, u1)]
            xs = [x for x, _ in corners]
            if max(xs) - min(xs) < WINDOW_MIN_SIZE or (u1 - u0) * height * (1 - t1) < WINDOW_MIN_SIZE:
                continue
            canvas.polygon(glass, corners)


def _draw_ground_markings(canvas: _Canvas, street: _Street, rng) -> None:
    """Kerbs (sidewalk) and dashed lane markings (road): the few local cues that tell road from sidewalk."""
    end = street.end_depth
    if rng.random() < CURB_PROBABILITY:
        kerb = canvas.new_region(SIDEWALK, _jitter(rng, _ground_colour(rng)), 0.02)
        width = rng.uniform(0.015, 0.04)
        for inner, direction in ((street.road_left, -1), (street.road_right, 1)):
            outer = inner + direction * width
            canvas.polygon(kerb, [street.ground(outer, -1), street.ground(inner, -1),
                                  street.ground(inner, end), street.ground(outer, end)])
    if rng.random() < LANE_MARKING_PROBABILITY:
        paint = canvas.new_region(ROAD, _hsv(rng.uniform(0.1, 0.16), rng.uniform(0, 0.7), rng.uniform(0.6, 0.95)), 0.02)
        centre = (street.road_left + street.road_right) / 2 + rng.uniform(-0.1, 0.1)
        half_width = rng.uniform(0.008, 0.02)
        end_distance = end / (1 - end)
        distance, dash, gap = 0.0, rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.4)
        while distance < end_distance:
            t0, t1 = _depth(distance), _depth(min(distance + dash, end_distance))
            canvas.polygon(paint, [street.ground(centre - half_width, t0), street.ground(centre + half_width, t0),
                                   street.ground(centre + half_width, t1), street.ground(centre - half_width, t1)])
            distance += dash + gap


def _draw_objects(canvas: _Canvas, street: _Street, rng) -> None:
    """Cars, people, poles and trees, drawn from far to near so that near ones occlude far ones."""
    placed = []  # (depth, kind, x_bottom)
    road_left, road_right = street.road_left, street.road_right
    for _ in range(rng.integers(0, MAX_CARS + 1)):
        placed.append((_random_depth(rng, street, near=0.15), "car", rng.uniform(road_left + 0.1, road_right - 0.1)))
    for _ in range(rng.integers(0, MAX_PEOPLE + 1)):
        on_road = rng.random() < 0.2
        x_bottom = rng.uniform(road_left, road_right) if on_road else _on_sidewalk(street, rng, 0.05, 0.95)
        placed.append((_random_depth(rng, street), "person", x_bottom))
    for _ in range(rng.integers(0, MAX_POLES + 1)):
        placed.append((_random_depth(rng, street), "pole", _on_sidewalk(street, rng, 0.75, 0.97)))
    for _ in range(rng.integers(0, MAX_TREES + 1)):
        placed.append((_random_depth(rng, street), "tree", _on_sidewalk(street, rng, 0.2, 0.8)))
    drawers = {"car": _draw_car, "person": _draw_person, "pole": _draw_pole, "tree": _draw_tree}
    for depth, kind, x_bottom in sorted(placed, key=lambda item: -item[0]):
        x, y = street.ground(x_bottom, depth)
        drawers[kind](canvas, x, y, 1 - depth, rng)


def _on_sidewalk(street: _Street, rng, low: float, high: float) -> float:
    """A bottom-edge x on a random sidewalk, ``low..high`` of the way from the buildings to the road."""
    fraction = rng.uniform(low, high)
    if rng.random() < 0.5:
        return street.walk_left + fraction * (street.road_left - street.walk_left)
    return street.walk_right + fraction * (street.road_right - street.walk_right)


def _draw_car(canvas: _Canvas, x: float, y: float, scale: float, rng) -> None:
    """A car or van seen from behind, standing on (x, y)."""
    width = scale * rng.uniform(0.25, 0.42)
    body_height = width * rng.uniform(0.3, 0.45)
    cabin_height = width * (rng.uniform(0.25, 0.35) if rng.random() < 0.8 else rng.uniform(0.5, 0.7))  # car, van
    tyre = width * 0.08
    body = canvas.new_region(CAR, _paint_colour(rng), rng.uniform(0.01, 0.04))
    dark = canvas.new_region(CAR, _hsv(0, 0, rng.uniform(0.03, 0.2)), 0.01)
    glass = canvas.new_region(CAR, _sky_or_glass_colour(rng), rng.uniform(0.0, 0.03))
    left, right, body_top = x - width / 2, x + width / 2, y - tyre - body_height
    for wheel_x in (left + width * 0.08, right - width * 0.22):
        canvas.polygon(dark, [(wheel_x, y), (wheel_x + width * 0.14, y), (wheel_x + width * 0.14, y - 2 * tyre),
                              (wheel_x, y - 2 * tyre)])
    canvas.polygon(body, [(left, y - tyre), (right, y - tyre), (right, body_top), (left, body_top)])
    cabin_top, inset = body_top - cabin_height, width * 0.12
    canvas.polygon(body, [(left + width * 0.04, body_top), (right - width * 0.04, body_top),
                          (right - inset, cabin_top), (left + inset, cabin_top)])
    margin = width * 0.05
    canvas.polygon(glass, [(left + inset + margin, body_top - margin), (right - inset - margin, body_top - margin),
                           (right - inset - margin * 0.8, cabin_top + margin),
                           (left + inset + margin * 0.8, cabin_top + margin)])
    lights = canvas.new_region(CAR, _hsv(0.0, rng.uniform(0.6, 1.0), rng.uniform(0.4, 0.9)), 0.02)
    light_top = body_top + body_height * 0.2
    for light_x in (left + width * 0.03, right - width * 0.15):
        canvas.polygon(lights, [(light_x, light_top), (light_x + width * 0.12, light_top),
                                (light_x + width * 0.12, light_top + body_height * 0.25),
                                (light_x, light_top + body_height * 0.25)])


def _draw_person(canvas: _Canvas, x: float, y: float, scale: float, rng) -> None:
    """A standing person with feet at (x, y)."""
    height = scale * rng.uniform(0.25, 0.4)
    shirt = canvas.new_region(PERSON, _paint_colour(rng), rng.uniform(0.01, 0.04))
    trousers = canvas.new_region(PERSON, _paint_colour(rng), rng.uniform(0.01, 0.04))
    skin = canvas.new_region(PERSON, _skin_colour(rng), 0.01)
    hip, shoulder, leg = y - height * 0.47, y - height * 0.8, height * 0.055
    stride = height * rng.uniform(0.0, 0.12)
    for foot_x in (x - stride, x + stride):
        canvas.polygon(trousers, [(x - leg, hip), (x + leg, hip), (foot_x + leg, y), (foot_x - leg, y)])
    half = height * rng.uniform(0.1, 0.14)
    canvas.polygon(shirt, [(x - half, shoulder), (x + half, shoulder), (x + half * 0.9, hip), (x - half * 0.9, hip)])
    canvas.ellipse(skin, x, shoulder - height * 0.08, height * 0.055, height * 0.075)


def _draw_pole(canvas: _Canvas, x: float, y: float, scale: float, rng) -> None:
    """A pole a few pixels wide, sometimes with a lamp arm or a sign."""
    metal = canvas.new_region(POLE, _metal_colour(rng), 0.02)
    width, height = scale * rng.uniform(0.008, 0.016), scale * rng.uniform(0.45, 0.9)
    top = y - height
    canvas.vertical_bar(metal, x, top, y, width)
    if rng.random() < 0.4:  # a lamp arm towards the street
        reach = scale * rng.uniform(0.06, 0.15) * (1 if x < 0.5 else -1)
        canvas.polygon(metal, [(x, top), (x + reach, top), (x + reach, top + width), (x, top + width)])
    elif rng.random() < 0.4:  # a sign plate
        half = scale * rng.uniform(0.02, 0.035)
        plate_y = top + half
        canvas.polygon(metal, [(x - half, plate_y - half), (x + half, plate_y - half),
                               (x + half, plate_y + half), (x - half, plate_y + half)])


def _draw_tree(canvas: _Canvas, x: float, y: float, scale: float, rng) -> None:
    """A trunk and a canopy of overlapping ellipses, all vegetation."""
    bark = _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.4))
    trunk = canvas.new_region(VEGETATION, bark, 0.04)
    leaves = canvas.new_region(VEGETATION, _vegetation_colour(rng), rng.uniform(0.08, 0.18))
    trunk_height = scale * rng.uniform(0.2, 0.45)
    canvas.vertical_bar(trunk, x, y - trunk_height, y, scale * rng.uniform(0.015, 0.03))
    crown_x, crown_y, crown = x, y - trunk_height, scale * rng.uniform(0.08, 0.17)
    for _ in range(rng.integers(3, 7)):
        dx, dy = rng.normal(0, 0.5, size=2) * crown
        radius = crown * rng.uniform(0.5, 0.9)
        canvas.ellipse(leaves, crown_x + dx, crown_y - crown * 0.6 + dy, radius, radius * rng.uniform(0.7, 1.1))


def _draw_shadows(shadows: _Shadows, street: _Street, rng) -> None:
    """Shadows cast across the ground (image only): bands between two depths, from one side towards the other."""
    for _ in range(rng.integers(0, MAX_SHADOWS + 1)):
        t0 = _random_depth(rng, street)
        t1 = min(street.end_depth, t0 + rng.uniform(0.05, 0.4) * (1 - t0))
        start, stop = sorted(rng.uniform(street.walk_left - 0.2, street.walk_right + 0.2, size=2))
        shadows.polygon([street.ground(start, t0), street.ground(stop, t0), street.ground(stop, t1),
                         street.ground(start, t1)], rng.uniform(*SHADOW_DARKENING))


def _draw_ignored(canvas: _Canvas, rng) -> None:
    """Small unlabelled clutter and, sometimes, the ego vehicle's hood: both labelled IGNORE_INDEX."""
    for _ in range(rng.integers(0, MAX_CLUTTER + 1)):
        blob = canvas.new_region(IGNORE_INDEX, _paint_colour(rng), rng.uniform(0.0, 0.08))
        cx, cy, radius = rng.uniform(0.05, 0.95), rng.uniform(0.3, 0.95), rng.uniform(0.01, 0.04)
        corners = rng.integers(3, 7)
        angles = np.sort(rng.uniform(0, 2 * math.pi, size=corners))
        radii = radius * rng.uniform(0.5, 1.0, size=corners)
        canvas.polygon(blob, [(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii)])
    if rng.random() < HOOD_PROBABILITY:
        paint = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.5), rng.uniform(0.05, 0.35))
        hood = canvas.new_region(IGNORE_INDEX, paint, 0.01)
        depth = rng.uniform(0.06, 0.14)
        canvas.ellipse(hood, rng.uniform(0.4, 0.6), 1 + depth * 1.5, rng.uniform(0.7, 0.9), depth * 2.5)


# ----------------------------------------------------------------------------------------------------------------
# Photograph: colours, texture, lighting, shadows, noise and blur. Acts on the image only.


def _texture(rng, image_size: int) -> np.ndarray:
    """Smooth noise of zero mean and unit-ish spread, fixed in normalised coordinates, shape (H, W)."""
    total = np.zeros((image_size, image_size), np.float32)
    for grid, weight in ((8, 0.5), (32, 0.6), (64, 0.7)):
        coarse = rng.standard_normal((grid, grid)).astype(np.float32)
        upsampled = Image.fromarray(coarse).resize((image_size, image_size), Image.BILINEAR)
        total += weight * np.asarray(upsampled)
    return total


def _photograph(canvas: _Canvas, shadows: _Shadows, rng) -> np.ndarray:
    size = canvas.size
    regions = np.asarray(canvas.region_map)
    colours = np.asarray(canvas.colours, np.float32)
    region_colours = colours * rng.uniform(0.95, 1.05, size=colours.shape).astype(np.float32)
    texture_strength = np.asarray(canvas.textures, np.float32)

    gain = rng.uniform(*LIGHTING_GAIN)
    angle = rng.uniform(0, 2 * math.pi)
    slope = rng.uniform(-LIGHTING_GRADIENT, LIGHTING_GRADIENT)
    noise_std = rng.uniform(*PIXEL_NOISE_STD)
    blur_sigma = rng.uniform(*BLUR_SIGMA) if rng.random() < BLUR_PROBABILITY else 0.0
    texture = _texture(rng, size)

    image = region_colours[regions]
    image += (texture_strength[regions] * texture)[..., None]
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    lighting = gain * (1 + slope * (math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None]))
    lighting = lighting * (np.asarray(shadows.mask, np.float32) / 255)
    image *= lighting[..., None]
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_std)
    image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    if blur_sigma > 0:
        image = np.array(Image.fromarray(image).filter(ImageFilter.GaussianBlur(blur_sigma * size)))
    return image
