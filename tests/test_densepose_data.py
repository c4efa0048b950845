"""DensePose data: the DensePose-COCO format through ``register_coco_dataset`` (validation that names the
annotation), a hand-written file (registration, a training step, drawing), the mapper's resize / flip, the synthetic
set's exact charts."""
import copy
import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage

from conftest import tiny_cfg, unique_dataset_name
from segx.data import DatasetValidationError, register_coco_dataset
from segx.data.datasets.densepose import PART_FLIP, UVSymmetryTable, check_densepose_annotation, resolve_uv_flip
from segx.data.mappers import build_mapper
from segx.data.mappers.densepose import DensePoseMapper, densepose_target
from segx.data.synthetic_dense import COARSE_OF_PART, DenseSpec, Figure, render_dense_scene, surface_at
from test_densepose import small_dense_set

_name = unique_dataset_name  # conftest's fixture `cleanup` removes what a test registers


# ------------------------------------------------------------------------------- a hand-written DensePose-COCO file
# Two images, three people, a few points each; part masks as hand-written uncompressed RLE on the 256 grid
# (column-major runs: 32768 zeros then 32768 ones = the right half of the box), [] where a part is absent.
RIGHT_HALF = {"size": [256, 256], "counts": [32768, 32768]}
LEFT_HALF = {"size": [256, 256], "counts": [0, 32768, 32768]}
HAND_WRITTEN = {
    "images": [{"id": 1, "file_name": "street.jpg", "width": 96, "height": 80},
               {"id": 2, "file_name": "park.jpg", "width": 96, "height": 80}],
    "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    "annotations": [
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1200.0, "bbox": [10, 8, 30, 60],
         "dp_x": [128.0, 60.0, 200.0, 128.0], "dp_y": [30.0, 120.0, 120.0, 230.0], "dp_I": [23, 16, 15, 9],
         "dp_U": [0.5, 0.2, 0.8, 0.4], "dp_V": [0.5, 0.3, 0.3, 0.9],
         "dp_masks": [LEFT_HALF, [], [], [], [], [], [], [], [], [], [], [], [], RIGHT_HALF]},
        {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 900.0, "bbox": [55, 20, 25, 50],
         "dp_x": [100.0, 150.0], "dp_y": [64.0, 180.0], "dp_I": [2, 14], "dp_U": [0.1, 0.6], "dp_V": [0.7, 0.2],
         "dp_masks": [RIGHT_HALF] + [[]] * 13},
        {"id": 13, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 1500.0, "bbox": [30, 10, 35, 65],
         "dp_x": [128.0, 90.0, 170.0], "dp_y": [20.0, 100.0, 250.0], "dp_I": [24, 2, 5],
         "dp_U": [0.9, 0.5, 0.5], "dp_V": [0.1, 0.5, 0.5], "dp_masks": [LEFT_HALF] + [[]] * 13},
        {"id": 14, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 200.0, "bbox": [70, 40, 10, 20]},
    ],
}


def write_hand_written(root):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for img in HAND_WRITTEN["images"]:
        pixels = rng.integers(0, 255, (img["height"], img["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, img["file_name"]))
    path = os.path.join(root, "densepose_hand.json")
    with open(path, "w") as f:
        json.dump(HAND_WRITTEN, f)
    return path


def test_hand_written_file_registers_trains_and_draws(tmp_path, cleanup, caplog):
    json_file = write_hand_written(str(tmp_path))
    with caplog.at_level(logging.INFO):
        name = register_coco_dataset(_name("hand"), json_file, str(tmp_path))
    cleanup.append(name)
    assert "3 annotations carry DensePose fields" in caplog.text and "loaded into the records" in caplog.text
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "densepose" and meta.thing_classes == ["person"]
    records = DatasetCatalog.get(name)
    ann = records[0]["annotations"][0]
    assert ann["dp_I"] == [23, 16, 15, 9] and ann["id"] == 11 and len(ann["dp_masks"]) == 14
    assert "dp_x" not in records[1]["annotations"][1]  # a person without DensePose annotation stays one
    # a training step on it (no flips: the file's dataset has no U/V symmetry map)
    cfg = tiny_cfg("densepose", **{"DATASETS.TRAIN": (name,), "DATASETS.TEST": (name,), "INPUT.RANDOM_FLIP": "none",
                                   "INPUT.MIN_SIZE_TRAIN": (80,), "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})
    mapper = build_mapper(cfg, is_train=True)
    batch = [mapper(r) for r in records]
    target = batch[0]["instances"].gt_densepose[0]
    # the first point (128, 30) of box [10, 8, 30, 60] at scale 1: x = 10 + 128 * 30 / 256
    assert target.points[0].tolist() == pytest.approx([25.0, 8 + 30 * 60 / 256])
    assert target.segm.shape == (256, 256) and target.segm[0, 0] == 1 and target.segm[0, 255] == 14
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(batch)
    assert losses["loss_densepose_I"] > 0 and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # drawing: points of the file and the (untrained) model's IUV, U, V and texture transfer
    from segx.engine.densepose_vis import densepose_panels

    model.eval()
    with torch.no_grad():
        inst = model([build_mapper(cfg, is_train=False)(records[0])])[0]["instances"].to("cpu")
    image = cv2.imread(records[0]["file_name"])[:, :, ::-1].copy()
    row = densepose_panels(image, inst[:3], records[0]["annotations"])
    path = tmp_path / "hand_written.png"
    cv2.imwrite(str(path), row[:, :, ::-1])
    assert row.shape == (80 * 3, (96 * 5 + 2 * 4) * 3, 3) and path.stat().st_size > 1000


def test_real_images_with_hand_written_points(real_data, tmp_path, cleanup):
    """The real COCO person photos (read in place) with DensePose points written by hand at their annotated
    keypoints (nose → head, shoulders → upper arms, hips → upper legs): registration, mapping, drawing."""
    src = os.path.join(real_data, "coco_person")
    with open(os.path.join(src, "test_coco.json")) as f:
        coco = json.load(f)
    # keypoint index -> (part id, u, v) placed by hand
    by_hand = {0: (23, 0.3, 0.5), 5: (15, 0.1, 0.5), 6: (16, 0.1, 0.5), 11: (10, 0.1, 0.5), 12: (9, 0.1, 0.5)}
    anns = []
    for a in coco["annotations"]:
        if a["image_id"] not in (785, 40083) or a["num_keypoints"] == 0:
            continue
        x0, y0, w, h = a["bbox"]
        kp = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)
        pts = [(k, p) for k, p in by_hand.items() if kp[k, 2] > 0]
        anns.append({"id": a["id"], "image_id": a["image_id"], "category_id": 1, "iscrowd": 0, "bbox": a["bbox"],
                     "area": a["area"],
                     "dp_x": [round(float((kp[k, 0] - x0) / w * 256), 2) for k, _ in pts],
                     "dp_y": [round(float((kp[k, 1] - y0) / h * 256), 2) for k, _ in pts],
                     "dp_I": [p[0] for _, p in pts], "dp_U": [p[1] for _, p in pts], "dp_V": [p[2] for _, p in pts]})
    images = [i for i in coco["images"] if i["id"] in (785, 40083)]
    json_file = tmp_path / "real_dp.json"
    json_file.write_text(json.dumps({"images": images, "annotations": anns,
                                     "categories": [{"id": 1, "name": "person"}]}))
    name = register_coco_dataset(_name("real"), str(json_file), src)
    cleanup.append(name)
    records = DatasetCatalog.get(name)
    assert sum(len(r["annotations"]) for r in records) == 3
    cfg = tiny_cfg("densepose", **{"DATASETS.TRAIN": (name,), "INPUT.RANDOM_FLIP": "none"})
    mapped = build_mapper(cfg, is_train=True)(records[0])
    t = mapped["instances"].gt_densepose[0]
    scale = mapped["image"].shape[-1] / records[0]["width"]
    kp = np.asarray([a for a in coco["annotations"] if a["id"] == 442619][0]["keypoints"]).reshape(-1, 3)
    assert t.points[0].numpy() == pytest.approx(kp[0, :2] * scale, abs=0.05)  # the nose, through resize
    from segx.engine.densepose_vis import draw_points

    img = draw_points(cv2.imread(records[0]["file_name"])[:, :, ::-1], records[0]["annotations"], radius=4)
    assert cv2.imwrite(str(tmp_path / "real_points.png"), img[:, :, ::-1])


# ------------------------------------------------------------------------------------------------ bad input
def _bad(tmp_path, **changes):
    data = copy.deepcopy(HAND_WRITTEN)
    data["annotations"][1].update(changes)
    root = str(tmp_path)
    write_hand_written(root)
    path = os.path.join(root, "bad.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


@pytest.mark.parametrize("changes, message", [
    ({"dp_x": [100.0, 150.0, 3.0]}, r"DensePose point arrays differ in length \(dp_x: 3, dp_y: 2, dp_I: 2"),
    ({"dp_I": [0, 14]}, r"dp_I must be part ids 1..24; point 0 has 0"),
    ({"dp_I": [2, 25]}, r"dp_I must be part ids 1..24; point 1 has 25"),
    ({"dp_U": [1.2, 0.6]}, r"dp_U must be in \[0, 1\]; point 0 has 1.2"),
    ({"dp_V": [0.5, -0.1]}, r"dp_V must be in \[0, 1\]; point 1 has -0.1"),
    ({"dp_masks": [[10, 10, 20, 10, 20, 20]] + [[]] * 13}, r"dp_masks\[0\] is a list \(a polygon\?\)"),
    ({"dp_masks": ["abc"] + [[]] * 13}, r"dp_masks\[0\] is not RLE"),
    ({"dp_masks": [RIGHT_HALF] * 3}, r"dp_masks must be a list of 14 part masks \(RLE or \[\]\), got 3 entries"),
    ({"dp_U": None}, r"dp_U must be lists of finite numbers"),
])
def test_bad_densepose_fields_name_the_annotation(tmp_path, cleanup, changes, message):
    name = register_coco_dataset(_name("bad"), _bad(tmp_path, **changes), str(tmp_path))
    cleanup.append(name)
    with pytest.raises(DatasetValidationError, match=r"annotation id 12 \(image id 1\): " + message):
        DatasetCatalog.get(name)


def test_partial_point_fields_and_flip_tables():
    assert check_densepose_annotation({"dp_x": [1.0], "dp_y": [2.0]}) == [
        "has dp_x, dp_y but not dp_I, dp_U, dp_V: DensePose points need all of dp_x, dp_y, dp_I, dp_U, dp_V"]
    assert check_densepose_annotation(HAND_WRITTEN["annotations"][0]) == []
    assert PART_FLIP[3] == 4 and PART_FLIP[23] == 24 and PART_FLIP[1] == 1 and PART_FLIP[2] == 2


# -------------------------------------------------------------------------------------------------- the mapper
def _mirror(fig, width):
    """The figure seen in a horizontally flipped image (the generator's own mirror: sides swap)."""
    joints = {(kind, -side): (start * [-1, 1], d * [-1, 1]) for (kind, side), (start, d) in fig.joints.items()}
    return Figure(centre=np.array([width - fig.centre[0], fig.centre[1]]), scale=fig.scale, angle=-fig.angle,
                  joints=joints)


def test_horizontal_flip_is_exact_on_the_synthetic_charts():
    name = small_dense_set("segx_test_dense_small")
    rec = DatasetCatalog.get(name)[3]
    spec = DenseSpec(num_images=8, seed=5)
    scene = render_dense_scene(spec, 3)
    mapper = DensePoseMapper(True, augmentations=[T.RandomFlip(prob=1.0)], image_format="RGB",
                             uv_flip=resolve_uv_flip("synthetic_charts"))
    out = mapper(copy.deepcopy(rec))
    mirrored = [_mirror(f, spec.width) for f in scene.figures]
    assert np.array_equal(out["image"].numpy()[:, :, ::-1], cv2.imread(rec["file_name"])[:, :, ::-1].transpose(2, 0, 1))
    for ann, t in zip(rec["annotations"], out["instances"].gt_densepose.targets):
        owner, part, u, v = surface_at(mirrored, t.points.numpy())
        assert (owner >= 0).all()
        assert t.parts.tolist() == part.tolist()  # left/right swapped where the mirrored figure has them
        assert np.abs(t.uv.numpy() - np.stack([u, v], 1)).max() < 1e-3
        # masks: flipped and relabelled, in the flipped box's frame
        g = (np.arange(256) + 0.5) / 256
        x0, y0, x1, y1 = t.segm_box.tolist()
        gx, gy = np.meshgrid(x0 + g * (x1 - x0), y0 + g * (y1 - y0))
        own, prt, _, _ = surface_at(mirrored, np.stack([gx.ravel(), gy.ravel()], 1))
        expect = np.array([COARSE_OF_PART.get(p, 0) for p in prt]).reshape(256, 256)
        labelled = t.segm.numpy() > 0
        assert (t.segm.numpy()[labelled] == expect[labelled]).mean() > 0.99


def test_flip_with_a_uv_symmetry_table_and_without_one(tmp_path):
    from segx.data.matfile import save_mat

    ramp = np.tile(np.arange(256) / 255.0, (256, 1))  # [v, u] -> u
    save_mat(str(tmp_path / "UV_symmetry_transforms.mat"),
             {"U_transforms": [1.0 - ramp] * 24, "V_transforms": [ramp.T.copy()] * 24})
    table = resolve_uv_flip(str(tmp_path / "UV_symmetry_transforms.mat"))
    assert isinstance(table, UVSymmetryTable) and table.u_tables.shape == (24, 256, 256)
    ann = {**HAND_WRITTEN["annotations"][0], "bbox_mode": BoxMode.XYWH_ABS}
    flip = T.TransformList([T.HFlipTransform(96)])
    t = densepose_target(ann, flip, uv_flip=table)
    assert t.parts.tolist() == [24, 15, 16, 10]  # head right <-> left, arms, legs swapped
    u_idx = (np.array(ann["dp_U"]) * 255).astype(int)
    assert t.uv[:, 0].numpy() == pytest.approx(1.0 - u_idx / 255.0, abs=1e-6)  # the table's U, looked up at int(255 U)
    assert t.uv[:, 1].numpy() == pytest.approx((np.array(ann["dp_V"]) * 255).astype(int) / 255.0, abs=1e-6)
    assert t.points[0, 0].item() == pytest.approx(96 - (10 + 128 * 30 / 256))
    assert t.segm[0, 255] == 1 and t.segm[0, 0] == 14  # mirrored (torso and head are their own twins)
    with pytest.raises(ValueError, match="without the dataset's U/V symmetry"):
        densepose_target(ann, flip, where="annotation id 11 (image id 1)")
    dropped = densepose_target(ann, flip, on_missing_uv_flip="drop_uv")
    assert not dropped.uv_valid.any() and dropped.parts.tolist() == [24, 15, 16, 10]
    with pytest.raises(ValueError, match=r"annotation id 11 \(image id 1\).*RotationTransform"):
        densepose_target(ann, T.TransformList([T.RotationTransform(80, 96, 30)]), where="annotation id 11 (image id 1)")


def test_resize_scales_points_and_mapper_refuses_flips_without_uv_map(tmp_path, cleanup):
    json_file = write_hand_written(str(tmp_path))
    name = register_coco_dataset(_name("flip"), json_file, str(tmp_path))
    cleanup.append(name)
    cfg = tiny_cfg("densepose", **{"DATASETS.TRAIN": (name,)})  # RANDOM_FLIP horizontal
    with pytest.raises(ValueError, match=rf"without a U/V symmetry map \(datasets \['{name}'\]\)"):
        build_mapper(cfg, is_train=True)
    cfg.MODEL.ROI_DENSEPOSE_HEAD.FLIP_WITHOUT_UV_SYMMETRY = "drop_uv"
    assert build_mapper(cfg, is_train=True).on_missing_uv_flip == "drop_uv"
    ann = {**HAND_WRITTEN["annotations"][0], "bbox_mode": BoxMode.XYWH_ABS}
    t = densepose_target(ann, T.TransformList([T.ResizeTransform(80, 96, 160, 192)]))
    assert t.points[0].tolist() == pytest.approx([2 * 25.0, 2 * (8 + 30 * 60 / 256)])
    assert t.segm_box.tolist() == pytest.approx([20, 16, 80, 136])


# ---------------------------------------------------------------------------------------------- synthetic set
def test_synthetic_dense_set_is_deterministic_and_valid():
    spec = DenseSpec(num_images=3, seed=9)
    a, b = render_dense_scene(spec, 1), render_dense_scene(spec, 1)
    assert np.array_equal(a.image, b.image) and a.boxes == b.boxes
    name = small_dense_set("segx_test_dense_small")
    meta = MetadataCatalog.get(name)
    for rec in DatasetCatalog.get(name):
        for ann in rec["annotations"]:
            assert check_densepose_annotation(ann) == [], ann["id"]
            assert len(ann["dp_x"]) > 0 and set(ann["dp_I"]) <= set(COARSE_OF_PART)
    assert meta.densepose_uv_flip == "synthetic_charts" and meta.evaluator_type == "densepose"
    assert "segx_densepose_train" in DatasetCatalog.list() and "segx_densepose_val" in DatasetCatalog.list()
