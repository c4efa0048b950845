"""The DensePose-COCO annotation format: part tables, validation, horizontal-flip maps, the embedded synthetic sets.

A DensePose-COCO file is a COCO instances file whose person annotations may carry (Güler et al., CVPR 2018):

| field | what |
|---|---|
| ``dp_x``, ``dp_y`` | annotated points, in a 256-cell frame over the person box: ``x = x0 + dp_x * w / 256`` (0–256) |
| ``dp_I`` | the part of each point, 1..24 (``PART_NAMES``) |
| ``dp_U``, ``dp_V`` | the point's coordinates in that part's chart, in [0, 1] |
| ``dp_masks`` | 14 coarse part masks (``MASK_PART_NAMES``), each an RLE on a 256×256 grid over the box, or ``[]`` |

``register_coco_dataset`` (``segx.data.datasets.coco``) loads these fields into the records and checks them with
``check_densepose_annotation``: the five point arrays together and of one length, part ids in range, U/V in
[0, 1], ``dp_masks`` as 14 RLE-or-empty entries; every error names the annotation and image ids. A file with
DensePose fields gets ``evaluator_type="densepose"`` and the part metadata of ``densepose_metadata``.

Horizontal flips (DensePose's own convention, which segx follows): x → 256 − x in the box frame, left/right parts
swap (``PART_FLIP``, ``MASK_PART_FLIP``, derived from the part names), and U/V move to the mirrored chart. That
last step needs a per-dataset map, named in the metadata ``densepose_uv_flip``:

- ``"synthetic_charts"``: the embedded synthetic figures' exact map (``segx.data.synthetic_dense.flip_uv``);
- a path to DensePose's ``UV_symmetry_transforms.mat`` (24 lookup tables of 256×256 for U and for V, distributed
  with the official DensePose data; not shipped here): ``UVSymmetryTable``, looked up as the official code does
  (tables indexed by [int(255 V), int(255 U)]);
- absent: ``MODEL.ROI_DENSEPOSE_HEAD.FLIP_WITHOUT_UV_SYMMETRY`` decides ("error", or "drop_uv": flipped instances
  keep their parts and masks but give no U/V loss).

| builtin name | what |
|---|---|
| ``segx_densepose_train`` / ``segx_densepose_val`` | synthetic figures with exact charts (``segx.data.synthetic_dense``), 600 / 100 images, 128×128 |
| ``densepose_coco_2014_{train,valminusminival,minival}`` | ``$SEGX_DATASETS/coco/annotations/densepose_coco_2014_*.json`` (user-provided) |
"""
import logging
import math
import os

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from segx.data import synthetic_dense
from segx.data.rle import rle_problems

__all__ = [
    "DP_KEYS",
    "DP_POINT_KEYS",
    "DP_GRID",
    "NUM_PARTS",
    "NUM_MASK_PARTS",
    "PART_NAMES",
    "MASK_PART_NAMES",
    "PART_FLIP",
    "MASK_PART_FLIP",
    "DENSE_SYNTHETIC_SPECS",
    "UVSymmetryTable",
    "check_densepose_annotation",
    "densepose_metadata",
    "resolve_uv_flip",
    "ensure_dense_dataset",
]

logger = logging.getLogger(__name__)

DP_POINT_KEYS = ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")
DP_KEYS = DP_POINT_KEYS + ("dp_masks",)
DP_GRID = 256  # dp_x / dp_y frame and dp_masks size
NUM_PARTS = 24
NUM_MASK_PARTS = 14

# The 24 fine parts (dp_I = 1..24) and the 14 coarse parts (dp_masks[0..13] = parts 1..14). "right"/"left" are the
# person's.
PART_NAMES = (
    "torso_back", "torso_front", "right_hand", "left_hand", "left_foot", "right_foot",
    "upper_leg_right_back", "upper_leg_left_back", "upper_leg_right_front", "upper_leg_left_front",
    "lower_leg_right_back", "lower_leg_left_back", "lower_leg_right_front", "lower_leg_left_front",
    "upper_arm_left_front", "upper_arm_right_front", "upper_arm_left_back", "upper_arm_right_back",
    "lower_arm_left_front", "lower_arm_right_front", "lower_arm_left_back", "lower_arm_right_back",
    "head_right", "head_left",
)
MASK_PART_NAMES = (
    "torso", "right_hand", "left_hand", "left_foot", "right_foot", "upper_leg_right", "upper_leg_left",
    "lower_leg_right", "lower_leg_left", "upper_arm_left", "upper_arm_right", "lower_arm_left", "lower_arm_right",
    "head",
)


def _flip_table(names):
    """[0] + for each 1-based part the id of its mirror twin (left <-> right in the name), itself when none."""
    index = {n: i + 1 for i, n in enumerate(names)}
    out = [0]
    for n in names:
        twin = n.replace("left", "@").replace("right", "left").replace("@", "right")
        out.append(index.get(twin, index[n]))
    return tuple(out)


PART_FLIP = _flip_table(PART_NAMES)  # PART_FLIP[i]: the part id of part i after a horizontal flip
MASK_PART_FLIP = _flip_table(MASK_PART_NAMES)


class UVSymmetryTable:
    """DensePose's U/V mirror map: for each part, 256×256 tables giving U and V on the mirrored part, indexed by
    (int(255·V), int(255·U)) of the point before the flip.

    ``u_tables``, ``v_tables``: arrays [24, 256, 256]. ``load(path)`` reads ``UV_symmetry_transforms.mat`` (cells
    ``U_transforms`` and ``V_transforms`` of 24 matrices) with segx's MAT reader.
    """

    def __init__(self, u_tables, v_tables, source=None):
        self.u_tables = np.asarray(u_tables, np.float32)
        self.v_tables = np.asarray(v_tables, np.float32)
        self.source = source
        if self.u_tables.shape != self.v_tables.shape or self.u_tables.ndim != 3 or self.u_tables.shape[0] != NUM_PARTS:
            raise ValueError(f"UVSymmetryTable({source}): U and V tables must both be [24, S, S], got "
                             f"{self.u_tables.shape} and {self.v_tables.shape}")

    @classmethod
    def load(cls, path):
        from segx.data.matfile import load_mat

        mat = load_mat(path)
        missing = [k for k in ("U_transforms", "V_transforms") if k not in mat]
        if missing:
            raise ValueError(f"{path}: not a DensePose UV symmetry file (no {', '.join(missing)}; has {sorted(mat)})")
        tables = [np.stack([np.asarray(c, np.float32) for c in np.asarray(mat[k], dtype=object).ravel()])
                  for k in ("U_transforms", "V_transforms")]
        return cls(*tables, source=path)

    def __call__(self, part, u, v):
        part = np.asarray(part, np.int64)
        s = self.u_tables.shape[-1] - 1
        iu = np.clip((np.asarray(u) * s).astype(np.int64), 0, s)
        iv = np.clip((np.asarray(v) * s).astype(np.int64), 0, s)
        return self.u_tables[part - 1, iv, iu], self.v_tables[part - 1, iv, iu]


def resolve_uv_flip(spec, dataset_name=None):
    """The U/V flip function ``(part, u, v) -> (u, v)`` named by a dataset's ``densepose_uv_flip`` metadata, or
    None (see the module doc)."""
    if spec is None or spec == "":
        return None
    if callable(spec):
        return spec
    if spec == "synthetic_charts":
        return synthetic_dense.flip_uv
    if isinstance(spec, (str, os.PathLike)):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"dataset {dataset_name}: densepose_uv_flip {spec} does not exist (expected "
                                    f"DensePose's UV_symmetry_transforms.mat or 'synthetic_charts')")
        return UVSymmetryTable.load(spec)
    raise ValueError(f"dataset {dataset_name}: densepose_uv_flip must be 'synthetic_charts', a path to "
                     f"UV_symmetry_transforms.mat or a function, got {spec!r}")


def _numbers(values):
    return isinstance(values, (list, tuple)) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in values)


def _check_rle(entry, k):
    if entry in ([], None, {}):
        return []
    if isinstance(entry, list):
        return [f"dp_masks[{k}] is a list (a polygon?); DensePose part masks must be RLE dicts or []"]
    if not isinstance(entry, dict) or "counts" not in entry or "size" not in entry:
        kind = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        return [f"dp_masks[{k}] is not RLE (needs 'counts' and 'size', has {kind})"]
    return [f"dp_masks[{k}]: {p}" for p in rle_problems(entry)]


def check_densepose_annotation(ann, num_parts=NUM_PARTS):
    """Problems (messages without the ids; the caller adds them) with the ``dp_*`` fields of one annotation."""
    problems = []
    present = [k for k in DP_POINT_KEYS if k in ann]
    if present and len(present) < len(DP_POINT_KEYS):
        problems.append(f"has {', '.join(present)} but not {', '.join(k for k in DP_POINT_KEYS if k not in ann)}: "
                        f"DensePose points need all of {', '.join(DP_POINT_KEYS)}")
    elif present:
        bad = [k for k in DP_POINT_KEYS if not _numbers(ann[k])]
        if bad:
            problems.append(f"{', '.join(bad)} must be lists of finite numbers")
        else:
            lengths = {k: len(ann[k]) for k in DP_POINT_KEYS}
            if len(set(lengths.values())) > 1:
                problems.append("DensePose point arrays differ in length (" +
                                ", ".join(f"{k}: {n}" for k, n in lengths.items()) + ")")
            parts = ann["dp_I"]
            wrong = [(j, p) for j, p in enumerate(parts) if p != int(p) or not 1 <= p <= num_parts]
            if wrong:
                problems.append(f"dp_I must be part ids 1..{num_parts}; point {wrong[0][0]} has {wrong[0][1]!r}"
                                + (f" ({len(wrong) - 1} more)" if len(wrong) > 1 else ""))
            for k in ("dp_U", "dp_V"):
                out = [(j, x) for j, x in enumerate(ann[k]) if not 0.0 <= x <= 1.0]
                if out:
                    problems.append(f"{k} must be in [0, 1]; point {out[0][0]} has {out[0][1]!r}"
                                    + (f" ({len(out) - 1} more)" if len(out) > 1 else ""))
            for k in ("dp_x", "dp_y"):
                out = [(j, x) for j, x in enumerate(ann[k]) if not 0.0 <= x <= DP_GRID]
                if out:
                    problems.append(f"{k} must be in [0, {DP_GRID}] (the box's 256-cell frame); point {out[0][0]} has "
                                    f"{out[0][1]!r}" + (f" ({len(out) - 1} more)" if len(out) > 1 else ""))
    if "dp_masks" in ann:
        masks = ann["dp_masks"]
        if not isinstance(masks, list) or len(masks) != NUM_MASK_PARTS:
            what = f"{len(masks)} entries" if isinstance(masks, list) else f"a {type(masks).__name__}"
            problems.append(f"dp_masks must be a list of {NUM_MASK_PARTS} part masks (RLE or []), got {what}")
        else:
            for k, entry in enumerate(masks):
                problems += _check_rle(entry, k)
    return problems


def densepose_metadata(uv_flip=None, distance="uv_standin", **extra):
    """Metadata of a DensePose dataset: part names and flip maps, ``densepose_uv_flip`` (see the module doc), the
    evaluator's surface distance (``segx.evaluation.densepose.DISTANCES``) and ``evaluator_type="densepose"``."""
    meta = {
        "thing_classes": ["person"],
        "densepose_part_names": list(PART_NAMES),
        "densepose_mask_part_names": list(MASK_PART_NAMES),
        "densepose_part_flip": list(PART_FLIP),
        "densepose_mask_part_flip": list(MASK_PART_FLIP),
        "densepose_distance": distance,
        "evaluator_type": "densepose",
    }
    if uv_flip is not None:
        meta["densepose_uv_flip"] = uv_flip
    meta.update(extra)
    return meta


# ------------------------------------------------------------------------------------------ embedded synthetic sets
DENSE_SYNTHETIC_SPECS = {
    "segx_densepose_train": synthetic_dense.DenseSpec(num_images=600, seed=41),
    "segx_densepose_val": synthetic_dense.DenseSpec(num_images=100, seed=42),
}


def _dense_root(name):
    return os.path.join(synthetic_dense.data_cache_dir(), "synthetic", f"{name}_{DENSE_SYNTHETIC_SPECS[name].key()}")


def ensure_dense_dataset(name):
    """Writes the files of synthetic dense set ``name`` if they are not in the cache yet; returns its folder."""
    return synthetic_dense.write_dense_dataset(DENSE_SYNTHETIC_SPECS[name], _dense_root(name))


def _load_dense(name):
    root = ensure_dense_dataset(name)
    return load_coco_json(os.path.join(root, "densepose.json"), os.path.join(root, "images"), name,
                          extra_annotation_keys=list(DP_KEYS) + ["id"])


def register_dense_synthetic():
    for name in DENSE_SYNTHETIC_SPECS:
        if name in DatasetCatalog.list():
            continue
        root = _dense_root(name)
        DatasetCatalog.register(name, lambda n=name: _load_dense(n))
        MetadataCatalog.get(name).set(
            json_file=os.path.join(root, "densepose.json"), image_root=os.path.join(root, "images"),
            segx_builtin=True, thing_colors=[(230, 25, 75)],
            **densepose_metadata(uv_flip="synthetic_charts", distance="synthetic_charts"),
        )


# DensePose-COCO (user-provided): $SEGX_DATASETS/coco/annotations/densepose_coco_2014_<split>.json with the COCO 2014
# images, and DensePose's UV_symmetry_transforms.mat in $SEGX_DATASETS/densepose/ (for training with flips).
DENSEPOSE_COCO_SPLITS = {
    "densepose_coco_2014_train": "train2014",
    "densepose_coco_2014_valminusminival": "val2014",
    "densepose_coco_2014_minival": "val2014",
}


def register_densepose_coco_builtin(root=None):
    """Registers the DensePose-COCO splits under ``root`` (``$SEGX_DATASETS``, default ``datasets``) with
    ``register_coco_dataset``; nothing is read until a split is loaded."""
    from segx.data.datasets.coco import register_coco_dataset

    root = root or os.environ.get("SEGX_DATASETS", "datasets")
    uv = os.path.join(root, "densepose", "UV_symmetry_transforms.mat")
    for name, images in DENSEPOSE_COCO_SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        register_coco_dataset(name, os.path.join(root, "coco", "annotations", f"{name}.json"),
                              os.path.join(root, "coco", images),
                              metadata=densepose_metadata(uv_flip=uv if os.path.isfile(uv) else None))


register_dense_synthetic()
register_densepose_coco_builtin()
