"""UPSNet end to end: training losses (incl. empty ground truth), panoptic output format, training lowers every
loss, and export parity (TorchScript for the deformable head, TorchScript + ONNX for the plain one)."""
import copy

import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from conftest import small_rcnn_cfg

LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg", "loss_sem_roi", "loss_panoptic"}


def tiny_cfg():
    cfg = small_rcnn_cfg("configs/UPSNet/upsnet_R_18_FPN_scratch.yaml")
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.MODEL.UPSNET.SEM_CONV_DIM = 32
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.MODEL.UPSNET.PANOPTIC_TOPK = 10
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    return cfg


def _inputs(cfg, n=2, training=True):
    dicts = DatasetCatalog.get("segx_shapes_panoptic_val_separated")[:n]
    mapper = DatasetMapper(cfg, is_train=training)
    return [mapper(copy.deepcopy(d)) for d in dicts]


@pytest.fixture(scope="module")
def train_batch():
    return _inputs(tiny_cfg(), 2, True)


def test_training_losses_finite_including_empty_ground_truth(train_batch):
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
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
    model = build_model(tiny_cfg()).train()
    bad = dict(train_batch[0])
    del bad["sem_seg"]
    with pytest.raises(ValueError, match="separated"):
        with EventStorage(0):
            model([bad])


def test_inference_gives_detectron2_panoptic_seg():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.UPSNET.PANOPTIC_SCORE_THRESH = 0.0  # let a random model's boxes reach the panoptic head
    cfg.MODEL.UPSNET.STUFF_AREA_LIMIT = 0
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


def test_training_lowers_every_loss(train_batch):
    torch.manual_seed(0)
    np.random.seed(0)
    model = build_model(tiny_cfg()).train()
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
    from segx.export import export_model, sample_input

    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.UPSNET.SEM_DEFORMABLE = deformable
    cfg.MODEL.UPSNET.PANOPTIC_SCORE_THRESH = 1.01 if empty else 0.0
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model = build_model(cfg).eval()
    image = sample_input(cfg)
    formats = ("torchscript",) if deformable else ("torchscript", "onnx")  # deform_conv2d: no ONNX symbolic
    report = export_model(model, image, str(tmp_path), formats=formats)
    # outputs: instances (boxes, classes, masks, scores, size), panoptic_instances (boxes, classes, scores,
    # size), panoptic_logits [S + N + 1, h, w]
    n_panoptic = report.output_shapes[5][0]
    assert (n_panoptic == 0) == empty
    assert report.output_shapes[-1][0] == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1 + n_panoptic + 1
    assert report.torchscript_max_diff <= 1e-3
    if not deformable:
        assert report.onnx_error is None, report.onnx_error
        assert report.onnx_max_diff <= 1e-2
