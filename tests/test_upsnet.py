"""UPSNet end to end: training losses (incl. empty ground truth), panoptic output format, the single-pass ROI heads
(box and mask heads run once at inference), the ``extract_features`` seam, renamed config keys, training lowers
every loss, and export parity (TorchScript for the deformable head, TorchScript + ONNX for the plain one)."""
import copy
import os

import numpy as np
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model, build_sem_seg_head
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from conftest import REPO_ROOT, load_cfg, tiny_cfg
from segx.config import add_segx_config
from segx.config.upsnet import RENAMED_KEYS
from segx.modeling.meta_arch.upsnet import UPSNet
from segx.modeling.panoptic import UPSNetSemanticHead
from segx.modeling.roi_heads import SinglePassROIHeads

LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg", "loss_sem_roi", "loss_panoptic"}
# let a random model's boxes reach the Mask R-CNN output and the panoptic head
OPEN = {"MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 0.0, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0}


def _inputs(cfg, n=2, training=True):
    dicts = DatasetCatalog.get("segx_shapes_panoptic_val_separated")[:n]
    mapper = DatasetMapper(cfg, is_train=training)
    return [mapper(copy.deepcopy(d)) for d in dicts]


@pytest.fixture(scope="module")
def train_batch():
    return _inputs(tiny_cfg("upsnet"), 2, True)


def test_parts_come_from_their_registries():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("upsnet"))
    assert isinstance(model.roi_heads, SinglePassROIHeads) and isinstance(model.sem_seg_head, UPSNetSemanticHead)
    # the semantic head is usable on its own through detectron2's builder, with detectron2's head contract
    cfg = tiny_cfg("upsnet")
    head = build_sem_seg_head(cfg, model.backbone.output_shape()).eval()
    feats = {f"p{i}": torch.randn(1, 32, 64 // 2 ** i, 64 // 2 ** i) for i in range(2, 6)}
    logits, losses = head(feats)
    assert logits.shape == (1, 3 + 4, 64, 64) and losses == {}
    head.train()
    _, losses = head(feats, torch.randint(0, 7, (1, 64, 64)))
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])


def test_training_losses_finite_including_empty_ground_truth(train_batch):
    torch.manual_seed(0)
    model = build_model(tiny_cfg("upsnet")).train()
    empty = dict(train_batch[1])
    empty["instances"] = Instances(train_batch[1]["instances"].image_size)
    empty["instances"].gt_boxes = Boxes(torch.zeros(0, 4))
    empty["instances"].gt_classes = torch.zeros(0, dtype=torch.long)
    sem = empty["sem_seg"].clone()
    sem[sem == 0] = 1  # no thing pixels either
    empty["sem_seg"] = sem
    for batch in (train_batch, [empty], [train_batch[0], empty]):
        with EventStorage(0):
            losses = model(batch)
        assert set(losses) == LOSSES
        total = sum(losses.values())
        assert torch.isfinite(total)
        total.backward()
        model.zero_grad()


def test_training_needs_semantic_labels(train_batch):
    model = build_model(tiny_cfg("upsnet")).train()
    bad = dict(train_batch[0])
    del bad["sem_seg"]
    with pytest.raises(ValueError, match="separated"):
        with EventStorage(0):
            model([bad])


def test_inference_gives_detectron2_panoptic_seg():
    torch.manual_seed(0)
    cfg = tiny_cfg("upsnet", **{"MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 0.0, "MODEL.UPSNET.STUFF_AREA_LIMIT": 0})
    model = build_model(cfg).eval()
    inputs = _inputs(cfg, 2, False)
    with torch.no_grad():
        outs = model(inputs)
        raw = model.inference(inputs, do_postprocess=False)
    for x, out, r in zip(inputs, outs, raw):
        seg, info = out["panoptic_seg"]
        assert seg.shape == (x["height"], x["width"]) and seg.dtype == torch.int32
        assert sorted(s["id"] for s in info) == list(range(1, len(info) + 1))
        assert set(seg.unique().tolist()) - {0} == {s["id"] for s in info}
        n_inst = len(r["panoptic_instances"])
        assert n_inst > 0
        assert r["panoptic_logits"].shape[0] == model.num_stuff + n_inst + 1  # stuff, instances, unknown
        for s in info:
            if s["isthing"]:
                assert 0 <= s["category_id"] < cfg.MODEL.ROI_HEADS.NUM_CLASSES and 0 <= s["instance_id"] < n_inst
            else:
                assert 1 <= s["category_id"] <= model.num_stuff
                assert s["area"] == int((seg == s["id"]).sum())
        assert out["instances"].image_size == (x["height"], x["width"])


def test_panoptic_head_mode_reaches_decode_and_losses(train_batch):
    """``MODEL.UPSNET.PANOPTIC_HEAD_MODE``: official (default) decodes with the official paste of detectron2 boxes
    converted to the inclusive convention and per-class mask removal; segx with its own; both train."""
    from segx.modeling.panoptic import mask_removal_keep, paste_mask_logits_official, upsnet_panoptic_logits

    torch.manual_seed(0)
    cfg = tiny_cfg("upsnet", **OPEN)
    assert cfg.MODEL.UPSNET.PANOPTIC_HEAD_MODE == "official"
    model = build_model(cfg).eval()
    segx_model = build_model(tiny_cfg("upsnet", **dict(OPEN, **{"MODEL.UPSNET.PANOPTIC_HEAD_MODE": "segx"}))).eval()
    segx_model.load_state_dict(model.state_dict())
    inputs = _inputs(cfg, 1, False)
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        pred = model.predict(model.backbone(images.tensor), images)
        out = model.decode(pred, images, inputs)[0]
        segx_out = segx_model.inference(inputs, do_postprocess=False)[0]
    (h, w), sel = images.image_sizes[0], pred["panoptic_instances"][0]
    assert len(sel) > 1
    boxes = sel.pred_boxes.tensor - torch.tensor([0.0, 0.0, 1.0, 1.0])  # detectron2 → official inclusive convention
    keep = mask_removal_keep(paste_mask_logits_official(sel.pred_mask_logits, boxes, h, w) > 0, 0.3, sel.pred_classes)
    sem = torch.nn.functional.interpolate(pred["sem_seg_logits"], size=images.tensor.shape[-2:], mode="bilinear",
                                          align_corners=False)[0, :, :h, :w]
    expected = upsnet_panoptic_logits(sem, model.num_stuff, sel.pred_mask_logits[keep], boxes[keep],
                                      sel.pred_classes[keep], True, "official")
    torch.testing.assert_close(out["panoptic_logits"], expected)
    assert out["panoptic_logits"].shape != segx_out["panoptic_logits"].shape or not torch.allclose(
        out["panoptic_logits"], segx_out["panoptic_logits"])
    losses = {}
    for mode, m in (("official", model), ("segx", segx_model)):
        torch.manual_seed(0)
        np.random.seed(0)
        with EventStorage(0):
            losses[mode] = m.train()(train_batch)
        assert torch.isfinite(sum(losses[mode].values()))
    assert float(losses["official"]["loss_panoptic"]) != float(losses["segx"]["loss_panoptic"])
    assert float(losses["official"]["loss_sem_seg"]) == float(losses["segx"]["loss_sem_seg"])
    with pytest.raises(ValueError, match="PANOPTIC_HEAD_MODE"):
        build_model(tiny_cfg("upsnet", **{"MODEL.UPSNET.PANOPTIC_HEAD_MODE": "nearest"}))


def _leaves(module):
    return [m for m in module.modules() if not list(m.children())]


def test_inference_runs_box_head_and_mask_head_once():
    torch.manual_seed(0)
    cfg = tiny_cfg("upsnet", **OPEN)
    model = build_model(cfg).eval()
    rh = model.roi_heads
    calls = {}
    watched = {"box_head": rh.box_head, "box_predictor": rh.box_predictor, "mask_head": rh.mask_head}
    for name, part in watched.items():
        for i, leaf in enumerate(_leaves(part)):
            leaf.register_forward_hook(lambda m, i_, o, key=(name, i): calls.__setitem__(key, calls.get(key, 0) + 1))
    inputs = _inputs(cfg, 1, False)
    with torch.no_grad():
        raw = model.inference(inputs, do_postprocess=False)
    assert len(raw[0]["instances"]) > 0 and len(raw[0]["panoptic_instances"]) > 0  # both paths had boxes
    for name, part in watched.items():
        counts = [calls.get((name, i), 0) for i in range(len(_leaves(part)))]
        assert counts and set(counts) == {1}, f"{name}: its layers ran {counts} times"


def test_single_pass_detections_equal_standard_roi_heads():
    torch.manual_seed(0)
    cfg = tiny_cfg("upsnet", **OPEN)
    model = build_model(cfg).eval()
    images = model.preprocess_image(_inputs(cfg, 2, False))
    with torch.no_grad():
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        expected, _ = StandardROIHeads.forward(model.roi_heads, images, features, proposals)
        out = model.roi_heads.predict(features, proposals, select=model.select_instances)
    for e, a in zip(expected, out["instances"]):
        assert len(e) > 0 and set(e.get_fields()) == set(a.get_fields())
        for f in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
            x, y = e.get(f), a.get(f)
            x, y = (x.tensor, y.tensor) if isinstance(x, Boxes) else (x, y)
            torch.testing.assert_close(y, x, atol=1e-6, rtol=1e-6)
    for sel, boxes in zip(out["selected"], out["boxes"]):
        assert sel.pred_mask_logits.shape == (len(sel), 28, 28) and boxes.shape[1] == 4 * 4


@pytest.mark.parametrize("old,new", sorted(RENAMED_KEYS.items()))
def test_old_config_key_names_the_new_key(tmp_path, old, new):
    cfg = get_cfg()
    add_segx_config(cfg)
    with pytest.raises(KeyError, match=new.replace(".", r"\.")):
        cfg.merge_from_list([old, "1"])
    path = tmp_path / "old.yaml"
    *parents, leaf = old.split(".")
    text = f'_BASE_: "{os.path.join(REPO_ROOT, "configs/UPSNet/upsnet_R_18_FPN_scratch.yaml")}"\n'
    for depth, p in enumerate(parents):
        text += "  " * depth + f"{p}:\n"
    text += "  " * len(parents) + f"{leaf}: 1\n"
    path.write_text(text)
    with pytest.raises(KeyError, match=new.replace(".", r"\.")):
        load_cfg(str(path))


def test_small_config_shares_the_panoptic_fpn_baselines_rcnn_settings():
    """The R-CNN and data/schedule values written out in upsnet_R_18_FPN_scratch.yaml (which _BASE_s on
    Base-UPSNet.yaml) stay those of the PanopticFPN baseline (which _BASE_s on the Mask R-CNN scratch config)."""
    ups = load_cfg("configs/UPSNet/upsnet_R_18_FPN_scratch.yaml")
    pfpn = load_cfg("configs/PanopticFPN/panoptic_fpn_R_18_FPN_scratch.yaml")
    for node in ("BACKBONE", "RESNETS", "FPN", "ANCHOR_GENERATOR", "RPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD"):
        assert ups.MODEL[node] == pfpn.MODEL[node], node
    for key in ("PIXEL_MEAN", "PIXEL_STD", "WEIGHTS", "MASK_ON"):
        assert ups.MODEL[key] == pfpn.MODEL[key], key
    assert {k: v for k, v in ups.MODEL.ROI_HEADS.items() if k != "NAME"} == {
        k: v for k, v in pfpn.MODEL.ROI_HEADS.items() if k != "NAME"}
    for node in ("INPUT", "SOLVER", "DATASETS", "TEST", "DATALOADER"):
        assert ups[node] == pfpn[node], node


class _ScaledUPSNet(UPSNet):
    """UPSNet whose ``extract_features`` step scales FPN level p2 by ``SCALE`` (what VPSNet's fusion does there)."""

    SCALE = 0.5

    def extract_features(self, images, batched_inputs, state=None):
        features = super().extract_features(images, batched_inputs, state)
        return dict(features, p2=features["p2"] * self.SCALE)


def test_extract_features_override_changes_outputs_trains_and_exports(tmp_path, train_batch):
    pytest.importorskip("onnxruntime")
    from segx.export import export_model, export_tolerances, sample_input

    torch.manual_seed(0)
    cfg = tiny_cfg("upsnet", **OPEN)
    model = build_model(cfg).eval()
    scaled = _ScaledUPSNet(cfg).eval()
    scaled.load_state_dict(model.state_dict())
    inputs = _inputs(cfg, 1, False)
    with torch.no_grad():
        plain_out = model.inference(inputs, do_postprocess=False)[0]
        scaled_out = scaled.inference(inputs, do_postprocess=False)[0]
        # the steps of the plain model on hand-scaled features: the override feeds every branch (RPN, ROI heads,
        # semantic head)
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        features["p2"] = features["p2"] * _ScaledUPSNet.SCALE
        expected = model.decode(model.predict(features, images), images, inputs)[0]
    torch.testing.assert_close(scaled_out["panoptic_logits"], expected["panoptic_logits"])
    torch.testing.assert_close(scaled_out["instances"].scores, expected["instances"].scores)
    torch.testing.assert_close(scaled_out["instances"].pred_masks, expected["instances"].pred_masks)
    assert scaled_out["panoptic_logits"].shape != plain_out["panoptic_logits"].shape or not torch.allclose(
        scaled_out["panoptic_logits"], plain_out["panoptic_logits"])
    # still trains a step
    scaled.train()
    with EventStorage(0):
        losses = scaled(train_batch)
    assert set(losses) == LOSSES and torch.isfinite(sum(losses.values()))
    sum(losses.values()).backward()
    # and exports (plain-conv head: TorchScript and ONNX) matching eager
    report = export_model(scaled.eval(), sample_input(cfg), str(tmp_path), formats=("torchscript", "onnx"))
    assert report.onnx_error is None, report.onnx_error
    assert not report.exceeds(export_tolerances(scaled)), report.summary()


class _FixedProposals(torch.nn.Module):
    """The RPN with its losses, but the proposals of the untrained RPN throughout: detectron2 normalises the box
    loss over all sampled RoIs, so with improving proposals it grows with the foreground share."""

    def __init__(self, rpn):
        super().__init__()
        self.rpn, self.proposals = rpn, None

    def forward(self, images, features, gt_instances=None):
        proposals, losses = self.rpn(images, features, gt_instances)
        if self.proposals is None:
            self.proposals = [p.to("cpu") for p in proposals]
            for p in self.proposals:
                p.objectness_logits = p.objectness_logits.detach()
                p.proposal_boxes.tensor = p.proposal_boxes.tensor.detach()
        return self.proposals, losses


@pytest.mark.slow
def test_training_lowers_every_loss(train_batch):
    torch.manual_seed(0)
    np.random.seed(0)
    model = build_model(tiny_cfg("upsnet")).train()
    model.proposal_generator = _FixedProposals(model.proposal_generator)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    with EventStorage(0):
        for _ in range(25):
            losses = model(train_batch)
            history.append({k: float(v) for k, v in losses.items()})
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
    first = {k: np.mean([h[k] for h in history[:3]]) for k in LOSSES}
    last = {k: np.mean([h[k] for h in history[-3:]]) for k in LOSSES}
    worse = {k: (round(first[k], 4), round(last[k], 4)) for k in LOSSES if not last[k] < first[k]}
    assert not worse, worse


@pytest.mark.parametrize("deformable,empty", [(False, False), (True, False), (False, True)])
def test_export_matches_eager(tmp_path, deformable, empty):
    """``empty``: no box passes the panoptic score threshold (the panoptic head sees stuff + unknown only)."""
    pytest.importorskip("onnxruntime")
    from segx.export import export_model, export_tolerances, sample_input

    torch.manual_seed(0)
    cfg = tiny_cfg("upsnet", **{"MODEL.UPSNET.SEM_DEFORMABLE": deformable, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
                                "MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 1.01 if empty else 0.0})
    model = build_model(cfg).eval()
    image = sample_input(cfg)
    # the deformable head's ONNX (pure-PyTorch deformable conv) is checked in tests/test_export_any_size.py (slow)
    formats = ("torchscript",) if deformable else ("torchscript", "onnx")
    report = export_model(model, image, str(tmp_path), formats=formats)
    # outputs: instances (boxes, classes, masks, scores, size), panoptic_instances (boxes, classes, scores,
    # size), panoptic_logits [S + N + 1, h, w]
    n_panoptic = report.output_shapes[5][0]
    assert (n_panoptic == 0) == empty
    assert report.output_shapes[-1][0] == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1 + n_panoptic + 1
    if not deformable:
        assert report.onnx_error is None, report.onnx_error
    assert not report.exceeds(export_tolerances(model)), report.summary()
