"""Official label tables of the real data sets: class names in train-id order, palettes, raw id -> train id tables.

The lookup tables are ``folder.label_table`` tables: (256,) uint8 from a raw 8-bit label value to a train id, 255
(ignore) for defined but unevaluated values, ``UNDEFINED_LABEL`` for values the format does not define.

Palettes: Cityscapes, CamVid and PASCAL VOC use their official colours. PASCAL-Context, COCO-Stuff and ADE20K use
the PASCAL VOC colour map from entry 1 on (entry 0 is black), one distinct colour per class, for plots only.
"""

from __future__ import annotations

from contrastseg.data.folder import identity_table, label_table

Palette = tuple[tuple[int, int, int], ...]


def voc_colour_map(count: int) -> Palette:
    """The first ``count`` colours of the PASCAL VOC colour map (index bits spread over the high bits of R, G, B)."""
    colours = []
    for index in range(count):
        red = green = blue = 0
        bits = index
        for shift in range(7, -1, -1):
            red |= (bits & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        colours.append((red, green, blue))
    return tuple(colours)


def distinct_palette(count: int) -> Palette:
    """``count`` distinct colours, none black: the VOC colour map from entry 1 on."""
    return voc_colour_map(count + 1)[1:]


# ---------------------------------------------------------------------------------------------------------------
# Cityscapes: 19 evaluated classes; label ids 0..33 (and -1, stored as 255) from cityscapesScripts' labels.py

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation", "terrain",
    "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE: Palette = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
CITYSCAPES_EVALUATED_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_NUM_LABEL_IDS = 34
CITYSCAPES_LABEL_ID_TO_TRAIN_ID = label_table(
    {label_id: train_id for train_id, label_id in enumerate(CITYSCAPES_EVALUATED_LABEL_IDS)},
    ignored=range(CITYSCAPES_NUM_LABEL_IDS))

# ---------------------------------------------------------------------------------------------------------------
# CamVid, the 11-class SegNet version: 0..10 classes, 11 = Unlabelled (void)

CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car", "pedestrian", "bicyclist",
)
CAMVID_PALETTE: Palette = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0), (192, 128, 128),
    (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
CAMVID_VOID = 11
CAMVID_TO_TRAIN_ID = label_table({value: value for value in range(len(CAMVID_CLASSES))}, ignored=[CAMVID_VOID])

# ---------------------------------------------------------------------------------------------------------------
# PASCAL-Context, 59 classes: SegmentationClassContext holds 0 = background (ignored) and 1..59

PASCAL_CONTEXT_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building", "bus",
    "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door", "fence",
    "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky",
    "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)
PASCAL_CONTEXT_PALETTE = distinct_palette(len(PASCAL_CONTEXT_CLASSES))
PASCAL_CONTEXT_TO_TRAIN_ID = label_table({value: value - 1 for value in range(1, len(PASCAL_CONTEXT_CLASSES) + 1)},
                                         ignored=[0])

# ---------------------------------------------------------------------------------------------------------------
# COCO-Stuff, 171 classes: 80 things then 91 stuff, in the order of the 182 COCO ids with 11 unused thing ids dropped

COCO_STUFF_THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
COCO_STUFF_STUFF = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower",
    "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow",
    "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof",
    "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone",
    "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops",
    "window-blind", "window-other", "wood",
)
COCO_STUFF_CLASSES = COCO_STUFF_THINGS + COCO_STUFF_STUFF
COCO_STUFF_PALETTE = distinct_palette(len(COCO_STUFF_CLASSES))
COCO_STUFF_NUM_IDS = 182
COCO_STUFF_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)  # 0-based thing ids no annotation uses
COCO_STUFF_182_TO_171 = label_table(
    {coco_id: train_id for train_id, coco_id in
     enumerate(coco_id for coco_id in range(COCO_STUFF_NUM_IDS) if coco_id not in COCO_STUFF_UNUSED_IDS)},
    ignored=COCO_STUFF_UNUSED_IDS)
"""Raw 164k stuffthingmaps (0-based ids 0..181, 255 unlabeled) -> 171 train ids; unused ids and 255 -> 255."""
COCO_STUFF_TRAIN_IDS = identity_table(len(COCO_STUFF_CLASSES))
COCO_STUFF10K_TRAIN_IDS = label_table({value: value - 1 for value in range(1, len(COCO_STUFF_CLASSES) + 1)},
                                      ignored=(0,))
"""COCO-Stuff 10k labelTrainIds as mmsegmentation writes them (0 = unlabeled, 1..171) -> 0..170, 0 -> 255."""

# ---------------------------------------------------------------------------------------------------------------
# ADE20K SceneParsing, 150 classes: annotations hold 0 = other (ignored) and 1..150

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock",
    "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers",
    "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway",
    "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall",
    "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase",
    "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)
ADE20K_PALETTE = distinct_palette(len(ADE20K_CLASSES))
ADE20K_TO_TRAIN_ID = label_table({value: value - 1 for value in range(1, len(ADE20K_CLASSES) + 1)}, ignored=[0])

# ---------------------------------------------------------------------------------------------------------------
# PASCAL VOC 2012 (+ SBD), 21 classes with background; 255 = object boundaries and difficult regions

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_PALETTE = voc_colour_map(len(VOC_CLASSES))
VOC_TRAIN_IDS = identity_table(len(VOC_CLASSES))
