"""DensePose R-CNN: head shapes, losses on a hand-made RoI, structures, the ROI heads on GeneralizedRCNN, export."""
import math
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from conftest import tiny_cfg
from segx.data.datasets.densepose import densepose_metadata
from segx.data.mappers import build_mapper
from segx.data.synthetic_dense import DenseSpec, write_dense_dataset
from segx.modeling.roi_heads.densepose import (
    DensePoseConvHead,
    DensePoseInstanceTarget,
    DensePoseOutput,
    DensePoseROIHeads,
    DensePoseTargets,
    box_grid,
    densepose_losses,
    resample_labels,
    sample_maps,
)


def small_dense_set(name, num_images=8, seed=5):
    """A few synthetic dense images, registered as ``name`` with the builtin sets' metadata."""
    if name not in DatasetCatalog.list():
        from detectron2.data.datasets import load_coco_json

        from segx.data.synthetic import data_cache_dir

        root = write_dense_dataset(DenseSpec(num_images=num_images, seed=seed),
                                   os.path.join(data_cache_dir(), "synthetic", f"test_{name}_{num_images}_{seed}"))
        DatasetCatalog.register(name, lambda: load_coco_json(
            os.path.join(root, "densepose.json"), os.path.join(root, "images"), name,
            extra_annotation_keys=["dp_x", "dp_y", "dp_I", "dp_U", "dp_V", "dp_masks", "id"]))
        MetadataCatalog.get(name).set(json_file=os.path.join(root, "densepose.json"),
                                      image_root=os.path.join(root, "images"),
                                      **densepose_metadata(uv_flip="synthetic_charts", distance="synthetic_charts"))
    return name


# ------------------------------------------------------------------------------------------------------- the head
def test_head_shapes_paper_defaults_and_configurable():
    cfg = tiny_cfg("densepose", config="configs/DensePose/densepose_rcnn_R_50_FPN_s1x.yaml")
    cfg.merge_from_list(["MODEL.ROI_DENSEPOSE_HEAD.NUM_CONVS", 8, "MODEL.ROI_DENSEPOSE_HEAD.HEAD_CHANNELS", 512,
                         "MODEL.ROI_DENSEPOSE_HEAD.POOLER_RESOLUTION", 28, "MODEL.ROI_DENSEPOSE_HEAD.OUTPUT_SIZE", 112])
    head = DensePoseConvHead(cfg, ShapeSpec(channels=256, height=28, width=28))
    assert len(head.convs) == 8 and head.convs[0].weight.shape == (512, 256, 3, 3)
    out = head(torch.randn(2, 256, 28, 28))
    assert out["coarse_segm"].shape == (2, 2, 112, 112)
    assert all(out[k].shape == (2, 25, 112, 112) for k in ("fine_segm", "u", "v"))
    small = DensePoseConvHead(ShapeSpec(channels=16), num_convs=2, conv_dim=32, norm="GN", num_parts=3,
                              coarse_segm_channels=15, output_size=20)
    out = small(torch.randn(3, 16, 7, 7))
    assert out["coarse_segm"].shape == (3, 15, 20, 20) and out["u"].shape == (3, 4, 20, 20)
    assert small(torch.randn(0, 16, 7, 7))["fine_segm"].shape == (0, 4, 20, 20)
    with pytest.raises(ValueError, match="coarse_segm_channels must be 2 or 15"):
        DensePoseConvHead(ShapeSpec(channels=16), num_convs=1, conv_dim=8, coarse_segm_channels=3)


# ----------------------------------------------------------------------------------------------------- sampling
def test_sample_maps_equals_grid_sample_and_resample_labels():
    torch.manual_seed(0)
    maps = torch.randn(3, 4, 6, 6)
    index = torch.tensor([0, 2, 1, 2, 0])
    grid = torch.rand(5, 2) * 2.4 - 1.2  # some outside the box: border padding
    ours = sample_maps(maps, index, grid)
    ref = torch.stack([F.grid_sample(maps[i][None], grid[k].view(1, 1, 1, 2), align_corners=False,
                                     padding_mode="border")[0, :, 0, 0] for k, i in enumerate(index.tolist())])
    assert torch.allclose(ours, ref, atol=1e-6)
    ch = torch.tensor([1, 3, 0, 2, 2])
    assert torch.allclose(sample_maps(maps, index, grid, channel=ch), ref.gather(1, ch[:, None])[:, 0], atol=1e-6)
    # label map over box [0, 0, 8, 8]: left half part 3; resampled into box [4, 0, 12, 8] at 4x4
    segm = torch.zeros(1, 256, 256, dtype=torch.uint8)
    segm[:, :, :128] = 3
    out = resample_labels(segm, torch.tensor([[0.0, 0, 8, 8]]), torch.tensor([[-4.0, 0, 4, 8]]), 4)
    assert out[0].tolist() == [[0, 0, 3, 3]] * 4  # cells at x = -3, -1 (outside), 1, 3 (left half)


# --------------------------------------------------------------------------------------------- the hand-made RoI
def _planted():
    """One RoI [0,0,4,4] with 4x4 outputs (cell (i, j) centred at (j + .5, i + .5)), 2 parts, 3 points."""
    s = 4
    fine = torch.zeros(1, 3, s, s)
    fine[0, 1, 0, 1] = 2.0  # point 1 sits on cell (0, 1)
    fine[0, 2, 2, 1], fine[0, 2, 2, 2] = 1.0, 2.0  # point 2 halfway between cells (2, 1) and (2, 2): 1.5
    u = torch.zeros(1, 3, s, s)
    u[0, 1] = 0.3
    u[0, 2, 2, 1], u[0, 2, 2, 2] = 0.0, 3.0  # 1.5 at point 2
    v = torch.zeros(1, 3, s, s)
    v[0, 1] = 0.25
    v[0, 2] = 0.5
    coarse = torch.zeros(1, 2, s, s)
    coarse[0, 1, 0, 0] = 1.0
    outputs = {k: t.requires_grad_() for k, t in
               (("coarse_segm", coarse), ("fine_segm", fine), ("u", u), ("v", v))}
    segm = torch.zeros(256, 256, dtype=torch.uint8)
    segm[:, :128] = 1  # left half of the box is person
    target = DensePoseInstanceTarget(
        points=torch.tensor([[1.5, 0.5], [2.0, 2.5], [5.0, 1.0]]),  # the third is outside the RoI
        parts=torch.tensor([1, 2, 1]), uv=torch.tensor([[0.5, 0.25], [0.0, 1.0], [0.9, 0.9]]),
        uv_valid=torch.ones(3, dtype=torch.bool), segm=segm, segm_box=torch.tensor([0.0, 0, 4, 4]))
    return outputs, torch.tensor([[0.0, 0, 4, 4]]), [target]


def test_losses_on_hand_worked_points():
    outputs, boxes, targets = _planted()
    losses = densepose_losses(outputs, boxes, targets, part_weight=1.0, uv_weight=0.01, segm_weight=5.0)
    e = math.e
    ce1 = math.log(e ** 2 + 2) - 2  # logits (0, 2, 0) at point 1, class 1
    ce2 = math.log(1 + 1 + e ** 1.5) - 1.5  # logits (0, 0, 1.5) at point 2, class 2
    assert losses["loss_densepose_I"].item() == pytest.approx((ce1 + ce2) / 2, abs=1e-6)
    # U: |0.3 - 0.5| = 0.2 -> 0.5 * 0.04 = 0.02; |1.5 - 0| = 1.5 -> 1.5 - 0.5 = 1.0; summed, x 0.01
    assert losses["loss_densepose_U"].item() == pytest.approx(0.01 * (0.02 + 1.0), abs=1e-7)
    # V: 0.25 vs 0.25 -> 0; 0.5 vs 1.0 -> 0.5 * 0.25
    assert losses["loss_densepose_V"].item() == pytest.approx(0.01 * 0.125, abs=1e-7)
    # S: columns 0, 1 person, 2, 3 background; all logits 0 (CE log 2) except cell (0, 0): (0, 1) on a person cell
    ce_s = (15 * math.log(2) + math.log(1 + e) - 1) / 16
    assert losses["loss_densepose_S"].item() == pytest.approx(5.0 * ce_s, abs=1e-6)
    sum(losses.values()).backward()
    g = outputs["fine_segm"].grad[0]
    touched = {(i, j) for i, j in zip(*torch.nonzero(g.abs().sum(0)).T.tolist())}
    assert touched == {(0, 1), (2, 1), (2, 2)}  # only the cells around the two points inside the RoI
    assert outputs["u"].grad[0, 1, 0, 1] != 0 and outputs["u"].grad[0, 2].abs().sum() > 0
    assert outputs["u"].grad[0, 0].abs().sum() == 0  # only the annotated part's channel
    assert (outputs["coarse_segm"].grad != 0).all()


def test_gradients_reach_the_head_and_empty_targets_give_zero_losses():
    torch.manual_seed(0)
    head = DensePoseConvHead(ShapeSpec(channels=8), num_convs=2, conv_dim=8, num_parts=2, output_size=4)
    _, boxes, targets = _planted()
    losses = densepose_losses(head(torch.randn(1, 8, 2, 2)), boxes, targets)
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    empty = densepose_losses(head(torch.randn(0, 8, 2, 2)), torch.zeros(0, 4), [])
    assert set(empty) == {f"loss_densepose_{k}" for k in "IUVS"} and all(v.item() == 0 for v in empty.values())
    no_dp = densepose_losses(head(torch.randn(1, 8, 2, 2)), boxes, [None])
    assert all(v.item() == 0 for v in no_dp.values())


def test_uv_valid_leaves_points_out_of_uv_loss():
    outputs, boxes, targets = _planted()
    targets[0].uv_valid[:] = torch.tensor([True, False, True])
    losses = densepose_losses(outputs, boxes, targets)
    assert losses["loss_densepose_U"].item() == pytest.approx(0.01 * 0.02, abs=1e-7)


# -------------------------------------------------------------------------------------------------- structures
def test_output_structure_decode_index_cat_and_paste():
    s = 4
    fine = torch.zeros(2, 3, s, s)
    fine[:, 2] = 1.0
    coarse = torch.zeros(2, 2, s, s)
    coarse[0, 1] = 1.0  # detection 0: person everywhere; detection 1: background everywhere
    u = torch.full((2, 3, s, s), 1.7)  # clamped to 1 when decoded
    v = torch.rand(2, 3, s, s)
    out = DensePoseOutput(coarse, fine, u, v)
    assert len(out) == 2 and out.image_size == (s, s)
    assert out.labels()[0].eq(2).all() and out.labels()[1].eq(0).all()
    iuv = out.iuv()
    assert iuv.shape == (2, 3, s, s) and iuv[0, 1].eq(1.0).all() and torch.allclose(iuv[0, 2], v[0, 2])
    assert isinstance(out[1:], DensePoseOutput) and len(out[torch.tensor([True, False])]) == 1
    assert len(DensePoseOutput.cat([out, out[0]])) == 3
    rebuilt = DensePoseOutput.from_instances(Instances((s, s), **out.get_fields()))
    assert torch.equal(rebuilt.fine_segm, fine)
    img = out.paste_iuv(torch.tensor([[1.0, 2.0, 5.0, 6.0], [0.0, 0, 8, 8]]), (8, 8))
    assert img.shape == (3, 8, 8)
    assert img[0, 2:6, 1:5].eq(2).all() and img[0].eq(2).sum() == 16  # pixel centres inside [1, 5) x [2, 6)
    t = DensePoseTargets([None, DensePoseInstanceTarget(torch.zeros(1, 2), torch.ones(1, dtype=torch.long),
                                                        torch.zeros(1, 2), torch.ones(1, dtype=torch.bool)), None])
    assert len(t[torch.tensor([False, True, True])]) == 2 and t[torch.tensor([1])][0] is not None


# ----------------------------------------------------------------------------------- on detectron2's GeneralizedRCNN
def test_training_step_and_inference_on_generalized_rcnn():
    name = small_dense_set("segx_test_dense_small")
    cfg = tiny_cfg("densepose", **{"DATASETS.TRAIN": (name,), "DATASETS.TEST": (name,)})
    model = build_model(cfg)
    assert type(model).__name__ == "GeneralizedRCNN" and isinstance(model.roi_heads, DensePoseROIHeads)
    mapper = build_mapper(cfg, is_train=True)
    batch = [mapper(d) for d in DatasetCatalog.get(name)[:2]]
    assert isinstance(batch[0]["instances"].gt_densepose, DensePoseTargets)
    batch.append({**batch[0], "instances": batch[0]["instances"][:0]})  # an image without people
    model.train()
    with EventStorage():
        losses = model(batch)
    assert {f"loss_densepose_{k}" for k in "IUVS"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_densepose_I"] > 0
    sum(losses.values()).backward()
    assert model.roi_heads.densepose_head.predictor.weight.grad.abs().sum() > 0
    model.eval()
    test_mapper = build_mapper(cfg, is_train=False)
    with torch.no_grad():
        out = model([test_mapper(DatasetCatalog.get(name)[0])])[0]["instances"]
    dp = out.pred_densepose
    assert isinstance(dp, DensePoseOutput) and len(dp) == len(out) > 0
    assert dp.fine_segm.shape[1:] == (25, 28, 28) and dp.coarse_segm.shape[1] == 2


def test_missing_densepose_mapper_is_named():
    name = small_dense_set("segx_test_dense_small")
    cfg = tiny_cfg("densepose", **{"DATASETS.TRAIN": (name,)})
    model = build_model(cfg).train()
    from detectron2.data import DatasetMapper

    batch = [DatasetMapper(cfg, is_train=True)(DatasetCatalog.get(name)[0])]
    with EventStorage(), pytest.raises(ValueError, match="SEGX.DATA.MAPPER DensePose"):
        model(batch)


def test_export_torchscript_and_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from segx.export import export_model

    name = small_dense_set("segx_test_dense_small")
    cfg = tiny_cfg("densepose", **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = build_mapper(cfg, is_train=False)(DatasetCatalog.get(name)[0])["image"]
    report = export_model(model, image, str(tmp_path))
    assert report.onnx_error is None, report.onnx_error
    assert report.torchscript_max_diff <= 1e-4 and report.onnx_max_diff <= 1e-3, report.summary()
    assert any(list(s[1:]) == [25, 28, 28] for s in report.output_shapes)  # fine_segm / u / v per detection


@pytest.mark.slow
def test_training_lowers_the_densepose_losses(tmp_path):
    import json

    from segx.engine.train_net import Trainer

    name = small_dense_set("segx_test_dense_train32", num_images=32, seed=6)
    cfg = tiny_cfg("densepose", output_dir=tmp_path, **{
        "DATASETS.TRAIN": (name,), "DATASETS.TEST": (), "SOLVER.MAX_ITER": 60, "SOLVER.BASE_LR": 0.02, "SOLVER.STEPS": (),
        "SOLVER.CHECKPOINT_PERIOD": 1000, "TEST.EVAL_PERIOD": 0})
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    for h in trainer._hooks:
        if type(h).__name__ == "PeriodicWriter":
            h._period = 1
    trainer.resume_or_load(resume=False)
    trainer.train()
    with open(tmp_path / "metrics.json") as f:
        rows = [json.loads(line) for line in f if "loss_densepose_I" in line]
    for k in ("loss_densepose_I", "loss_densepose_U", "loss_densepose_S"):
        first = np.mean([r[k] for r in rows[:8]])
        last = np.mean([r[k] for r in rows[-8:]])
        assert last < 0.8 * first, f"{k}: first 8 mean {first:.3f}, last 8 mean {last:.3f}"
