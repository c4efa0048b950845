"""YOLACT / YOLACT++: anchors, FPN phases, matching, Fast NMS, losses, the model's steps, the square-resize
mapper, renamed config keys, converter, training, export (CPU, tiny models)."""
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import nms

from detectron2.data import DatasetCatalog, DatasetMapper, detection_utils
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import BitMasks, Boxes, Instances

from conftest import REPO_ROOT, load_cfg, tiny_cfg
from segx.checkpoint.yolact import ConversionError, convert_official_state_dict, to_official_state_dict
from segx.data.mappers import build_mapper
from segx.data.mappers.yolact import YolactMapper
from segx.modeling.backbone.resnet import dcn_block_flags
from segx.modeling.fast_nms import fast_nms_keep, multiclass_fast_nms
from segx.modeling.meta_arch.yolact import YOLACT
from segx.modeling.ssd_coding import decode_boxes
from segx.modeling.yolact import crop_boxes, make_priors, normalized_mask_loss, ohem_classification_loss

SMALL = "configs/YOLACT/yolact_R_18_FPN_scratch.yaml"
PLUS = {  # YOLACT++ parts on the tiny model: DCN blocks, 3×3 anchors, mask re-scoring (needs ≥ 63² prototypes)
    "MODEL.YOLACT.MASKIOU_ON": True, "MODEL.YOLACT.INPUT_SIZE": 256, "MODEL.TV_RESNET.DCN_LAYERS": [0, 2, 2, 2],
    "MODEL.TV_RESNET.DCN_INTERVAL": 1, "MODEL.YOLACT.SQUARE_ANCHORS": False,
    "MODEL.YOLACT.ANCHOR_SCALES": [[s, s * 1.26, s * 1.587] for s in (8.0, 16.0, 32.0, 64.0, 128.0)],
}


def _instances(boxes, classes, size):
    h, w = size
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    masks = torch.zeros(len(classes), h, w, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, int(y0):int(y1), int(x0):int(x1)] = True
    inst.gt_masks = BitMasks(masks)
    return inst


def _run_steps(model, inputs):
    """The model's steps by hand: images, features, predictions."""
    images = model.preprocess_image(inputs)
    features = model.extract_features(images, inputs)
    return images, features, model.predict(features, images)


# ---------------------------------------------------------------- anchors, FPN
def test_anchor_count_and_layout_at_550():
    fpn = build_backbone(tiny_cfg("yolact", **{"MODEL.YOLACT.FPN.OUT_CHANNELS": 8})).eval()
    with torch.no_grad():
        feats = fpn(torch.zeros(1, 3, 550, 550))
    sizes = [tuple(feats[f].shape[-2:]) for f in ["p3", "p4", "p5", "p6", "p7"]]
    assert sizes == [(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]
    scales = [[24.0], [48.0], [96.0], [192.0], [384.0]]
    priors = make_priors(sizes, 550, scales, (1.0, 0.5, 2.0), square=True)
    assert priors.shape == (19248, 4)
    # location (0, 0) of P3: three square anchors 24·√r around the centre 0.5·550/69
    c = 0.5 * 550 / 69
    expect = torch.tensor([[c, c, 24 * math.sqrt(r), 24 * math.sqrt(r)] for r in (1.0, 0.5, 2.0)])
    torch.testing.assert_close(priors[:3], expect)
    # next location is one column to the right; P4 starts after 69·69·3 anchors with scale 48
    torch.testing.assert_close(priors[3, :2], torch.tensor([1.5 * 550 / 69, c]))
    assert priors[69 * 3, 1] == pytest.approx(1.5 * 550 / 69)  # second row
    assert priors[69 * 69 * 3, 2] == pytest.approx(48.0)
    assert priors[-1, 0] == pytest.approx(4.5 * 550 / 5) and priors[-1, 2] == pytest.approx(384 * math.sqrt(2))
    # YOLACT++: 3 scales × 3 ratios, not square, scale-major at each location
    pp = make_priors(sizes, 550, [[s * 2 ** (j / 3) for j in range(3)] for s in (24, 48, 96, 192, 384)],
                     (1.0, 0.5, 2.0), square=False)
    assert pp.shape == (19248 * 3, 4)
    torch.testing.assert_close(pp[1, 2:], torch.tensor([24 * math.sqrt(0.5), 24 / math.sqrt(0.5)]))
    assert pp[3, 2] == pytest.approx(24 * 2 ** (1 / 3))


def test_fpn_phases_compose_to_forward():
    """bottom-up → phase 1 (laterals + top-down) → phase 2 (output convs, P6/P7) is ``forward``; the model's
    ``extract_features`` returns the bottom-up maps and the FPN levels in one dict."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg("yolact")).eval()
    fpn, x = model.backbone, torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        c = fpn.bottom_up(x)
        phase1 = fpn.forward_phase1(c)
        p = fpn.forward_phase2(phase1)
        full = fpn(x)
        inputs = [{"image": torch.rand(3, 128, 128) * 255}]
        images = model.preprocess_image(inputs)
        features = model.extract_features(images, inputs)
    assert sorted(phase1) == ["p3", "p4", "p5"] and sorted(p) == ["p3", "p4", "p5", "p6", "p7"]
    for k in full:
        assert torch.equal(full[k], p[k])
    assert torch.equal(p["p5"], torch.relu(fpn.output_convs[2](phase1["p5"])))
    assert {"res3", "res4", "res5", "p3", "p4", "p5", "p6", "p7"} <= set(features)
    assert features["res3"].shape[-1] == 16 and features["p7"].shape[-1] == 1


def test_dcn_blocks_every_third():
    assert dcn_block_flags(23, 23, 3) == [True] + [i % 3 == 0 for i in range(1, 23)]
    assert dcn_block_flags(4, 4, 3) == [True, False, False, True]
    assert dcn_block_flags(3, 3, 3) == [True, False, False]
    assert dcn_block_flags(6, 0, 1) == [False] * 6


# ---------------------------------------------------------------- matching
def test_matching_and_encoding_round_trip():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("yolact"))
    boxes = [[10, 12, 50, 60], [70, 20, 110, 40], [30, 80, 40, 92]]
    inst = _instances(boxes, [0, 3, 2], (128, 128))
    feats = [torch.zeros(1, 1, s, s) for s in (16, 8, 4, 2, 1)]
    priors = model.priors(feats)
    labels, targets, matched, per_image = model.match([inst], [(128, 128)], priors, (32, 32), (16, 16))
    pos = labels[0] > 0
    # every GT is forced onto (at least) one anchor, and positives carry class + 1
    assert set(matched[0][pos].tolist()) == {0, 1, 2}
    assert torch.equal(labels[0][pos], torch.tensor([0, 3, 2])[matched[0][pos]] + 1)
    # neutral band → ignored, never background
    from torchvision.ops import box_iou

    from segx.modeling.ssd_coding import priors_to_xyxy

    best = box_iou(torch.tensor(boxes, dtype=torch.float32), priors_to_xyxy(priors)).max(0).values
    band = (best >= 0.4) & (best < 0.5) & ~pos
    assert band.any() and (labels[0][band] < 0).all()
    assert (labels[0][(best < 0.4) & ~pos] == 0).all()
    # decoding the targets gives back the matched GT boxes
    decoded = decode_boxes(targets[0][pos], priors[pos], model.box_variances)
    torch.testing.assert_close(decoded, torch.tensor(boxes, dtype=torch.float32)[matched[0][pos]], atol=1e-4, rtol=0)
    assert per_image[0]["masks_proto"].shape == (3, 32, 32) and per_image[0]["masks_segm"].shape == (3, 16, 16)
    # GT of an image given at 64×64 is scaled by S/w, S/h onto the 128² input
    half = _instances([[b / 2 for b in box] for box in boxes], [0, 3, 2], (64, 64))
    labels2, targets2, _, _ = model.match([half], [(64, 64)], priors, (32, 32))
    assert torch.equal(labels2, labels)
    torch.testing.assert_close(targets2, targets)


def test_crop_modes():
    boxes = torch.tensor([[2.2, 3.0, 5.6, 7.0]])
    c = crop_boxes(boxes, 10, 10, "official")
    # official: j ≥ x0 − 1 (1.2 → first j = 2) and j < x1 + 1 (6.6 → last j = 6)
    cols = torch.arange(10) + 0.5
    inside = (cols >= c[0, 0]) & (cols < c[0, 2])
    assert inside.nonzero()[:, 0].tolist() == [2, 3, 4, 5, 6]
    assert torch.equal(crop_boxes(boxes, 10, 10, "center"), boxes)
    with pytest.raises(ValueError, match="official"):
        crop_boxes(boxes, 10, 10, "nope")


# ---------------------------------------------------------------- Fast NMS
def _random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 80
    wh = torch.rand(n, 2, generator=g) * 40 + 4
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_nms_matches_definition_and_is_subset_of_nms(seed):
    from torchvision.ops import box_iou

    boxes, scores = _random_boxes(150, seed)
    order = scores.argsort(descending=True)
    sb = boxes[order]
    keep = fast_nms_keep(sb, 0.5)
    iou = box_iou(sb, sb)
    loop = torch.tensor([all(iou[i, j] <= 0.5 for i in range(j)) for j in range(len(sb))])
    assert torch.equal(keep, loop)
    standard = set(nms(boxes, scores, 0.5).tolist())
    fast = set(order[keep].tolist())
    assert fast <= standard and 0 < len(fast)


def test_multiclass_fast_nms_equals_official_procedure():
    from torchvision.ops import box_iou

    g = torch.Generator().manual_seed(3)
    boxes, _ = _random_boxes(300, 3)
    scores = torch.rand(300, 4, generator=g) ** 3
    idx, cls, sc = multiclass_fast_nms(boxes, scores, 0.05, 0.5, top_k=50, max_detections=40)
    # official Detect: filter by class max, then per class the top-k among those, Fast NMS, top overall
    cand = (scores.max(1).values > 0.05).nonzero()[:, 0]
    ref = []
    for c in range(4):
        s, o = scores[cand, c].sort(descending=True)
        s, o = s[:50], cand[o[:50]]
        iou = box_iou(boxes[o], boxes[o]).triu(1)
        k = iou.max(0).values <= 0.5
        ref += [(float(v), int(p), c) for v, p in zip(s[k], o[k])]
    ref.sort(key=lambda t: -t[0])
    ref = ref[:40]
    assert [(int(p), c) for _, p, c in ref] == list(zip(idx.tolist(), cls.tolist()))
    torch.testing.assert_close(sc, torch.tensor([v for v, _, _ in ref]))


# ---------------------------------------------------------------- losses
def test_ohem_keeps_three_negatives_per_positive():
    torch.manual_seed(0)
    logits = torch.randn(2, 500, 5)
    labels = torch.zeros(2, 500, dtype=torch.long)
    labels[0, :7] = 2
    labels[1, 10:15] = 4
    labels[:, 100:150] = -1  # neutral
    loss, neg = ohem_classification_loss(logits, labels, 3)
    assert neg.sum(1).tolist() == [21, 15]
    assert not neg[:, 100:150].any() and not (neg & (labels > 0)).any()
    bg = torch.logsumexp(logits, -1) - logits[..., 0]
    for b in range(2):
        cand = bg[b][labels[b] == 0]
        assert bg[b][neg[b]].min() >= cand.topk(int(neg[b].sum())).values.min()
    sel = (labels > 0) | neg
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[sel], labels[sel], reduction="sum"))


def test_mask_loss_is_normalised_by_box_area():
    # a mask predicting p inside a box of a×b proto pixels, target 1 there: loss = a·b·(−log p) / (a·b) = −log p
    for a, b in [(4, 6), (10, 12)]:
        pred = torch.zeros(1, 16, 16)
        pred[0, :b, :a] = 0.8
        gt = (pred > 0).float()
        loss = normalized_mask_loss(pred, gt, torch.tensor([[0.0, 0.0, a, b]]))
        assert loss.item() == pytest.approx(-math.log(0.8), rel=1e-5)


def test_model_mask_loss_weight_and_positive_normalisation():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("yolact", **{"MODEL.YOLACT.SEMANTIC_SEG_LOSS": False})).train()
    inst = _instances([[16, 16, 80, 64]], [1], (128, 128))
    inputs = [{"image": torch.zeros(3, 128, 128), "instances": inst}]
    images, _, predictions = _run_steps(model, inputs)
    assert "sem_seg" not in predictions
    losses = model.losses(predictions, inputs, images)
    assert set(losses) == {"loss_box_reg", "loss_cls", "loss_mask"}
    protos, coeffs = predictions["protos"], predictions["coeffs"]
    labels, _, matched, per_image = model.match([inst], [(128, 128)], predictions["priors"], protos.shape[-2:])
    pos = labels[0] > 0
    boxes = per_image[0]["boxes"][matched[0][pos]] * 0.25
    from segx.layers import assemble_masks

    pred = assemble_masks(protos[0], coeffs[0][pos], crop_boxes(boxes, 32, 32, "official"))
    expect = normalized_mask_loss(pred, per_image[0]["masks_proto"][matched[0][pos]], boxes).sum() * 6.125 / pos.sum()
    torch.testing.assert_close(losses["loss_mask"], expect)


# ---------------------------------------------------------------- end to end
def _batch(n=2, with_empty=True):
    cfg = tiny_cfg("yolact")
    mapper = DatasetMapper(cfg, is_train=True)
    batch = [mapper(d) for d in DatasetCatalog.get("segx_shapes_train")[:n]]
    if with_empty:
        batch.append({"image": batch[0]["image"], "instances": Instances((128, 128), gt_boxes=Boxes(torch.zeros(0, 4)),
                      gt_classes=torch.zeros(0, dtype=torch.long), gt_masks=BitMasks(torch.zeros(0, 128, 128)))})
    return batch


@pytest.mark.parametrize("plus", [False, True])
def test_e2e_train_step_and_inference_with_empty_gt(plus):
    torch.manual_seed(0)
    model = build_model(tiny_cfg("yolact", **(PLUS if plus else {}))).train()
    batch = _batch()
    losses = model(batch)
    expected = {"loss_box_reg", "loss_cls", "loss_mask", "loss_sem_seg"} | ({"loss_maskiou"} if plus else set())
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.head.mask_layer.weight.grad.abs().sum() > 0
    assert model.proto_net[0].weight.grad.abs().sum() > 0
    # only empty GT: finite, zero box/mask loss, still a graph
    empty = model(batch[-1:])
    assert empty["loss_box_reg"] == 0 and empty["loss_mask"] == 0 and torch.isfinite(sum(empty.values()))
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"], "height": 64, "width": 96}])
    inst = out[0]["instances"]
    assert inst.image_size == (64, 96) and inst.pred_masks.shape[1:] == (64, 96)
    assert inst.pred_masks.dtype == torch.bool and len(inst) <= model.max_detections_per_image
    assert (inst.pred_boxes.tensor[:, 2] <= 96).all() and (inst.scores >= 0).all()
    assert not inst.has("_detections") and "_detections" not in vars(inst)
    # a stream: stateless YOLACT counts the frames and returns the same results
    state = model.new_state()
    with torch.no_grad():
        again, state = model.inference([{"image": batch[0]["image"], "height": 64, "width": 96}], state=state)
    assert state.frame_index == 1 and torch.equal(again[0]["instances"].pred_masks, inst.pred_masks)
    model.test_score_thresh = 1.0  # no detections at all
    with torch.no_grad():
        none = model([{"image": batch[0]["image"]}])[0]["instances"]
    assert len(none) == 0 and none.pred_masks.shape == (0, 128, 128)


def test_bad_inputs_are_named():
    model = build_model(tiny_cfg("yolact")).eval()
    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['image'\]"):
        model([{"image": torch.zeros(128, 128)}])
    model.train()
    inst = _instances([[1, 1, 20, 20]], [0], (128, 128))
    inst.remove("gt_masks")
    with pytest.raises(ValueError, match="gt_masks.*MASK_ON"):
        model([{"image": torch.zeros(3, 128, 128), "instances": inst}])
    with pytest.raises(ValueError, match="instances"):
        model([{"image": torch.zeros(3, 128, 128)}])


@pytest.mark.slow
def test_training_lowers_every_loss():
    """SGD on a fixed batch of 4 mapped synthetic images: every loss term falls."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg("yolact")).train()
    batch = _batch(4, with_empty=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    history = []
    for it in range(30):
        for g in opt.param_groups:
            g["lr"] = 0.01 * min(1.0, (it + 1) / 5)
        losses = model(batch)
        history.append({k: float(v.detach()) for k, v in losses.items()})
        opt.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
    for key in history[0]:
        first = sum(h[key] for h in history[:3]) / 3
        last = sum(h[key] for h in history[-3:]) / 3
        assert last < 0.7 * first, f"{key} did not fall: {first:.3f} → {last:.3f}"


# ---------------------------------------------------------------- the feature seam
class _ScaledP5(YOLACT):
    """YOLACT whose ``extract_features`` doubles the P5 level (what a video architecture's warped features do)."""

    def extract_features(self, images, batched_inputs, state=None):
        features = dict(super().extract_features(images, batched_inputs, state))
        features["p5"] = features["p5"] * 2.0
        return features


def test_extract_features_override_changes_outputs_trains_and_exports(tmp_path):
    pytest.importorskip("onnxruntime")
    from segx.export import export_model

    torch.manual_seed(0)
    cfg = tiny_cfg("yolact", **{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0})
    model = build_model(cfg).eval()
    scaled = _ScaledP5(cfg).eval()
    scaled.load_state_dict(model.state_dict())
    inputs = [{"image": (torch.rand(3, 128, 128) * 255).round()}]
    with torch.no_grad():
        _, feats, ref = _run_steps(model, inputs)
        _, feats2, out = _run_steps(scaled, inputs)
        head_p5 = model.head([2.0 * feats["p5"]])
    torch.testing.assert_close(feats2["p5"], 2.0 * feats["p5"])
    assert torch.equal(out["protos"], ref["protos"])  # prototypes come from P3
    # anchors of P3, P4 and P6, P7 see the same maps; P5's are the head on the doubled map
    A = model.priors.num_anchors
    n = [f.shape[-2] * f.shape[-1] * A for f in (feats[k] for k in model.in_features)]
    lo, hi = sum(n[:2]), sum(n[:3])
    for key in ("box_deltas", "logits", "coeffs"):
        assert torch.equal(out[key][:, :lo], ref[key][:, :lo]) and torch.equal(out[key][:, hi:], ref[key][:, hi:])
        assert not torch.allclose(out[key][:, lo:hi], ref[key][:, lo:hi])
        torch.testing.assert_close(out[key][:, lo:hi], head_p5[key])
    # still trains a step
    scaled.train()
    losses = scaled(_batch(1, with_empty=False))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert scaled.backbone.output_convs[2].weight.grad.abs().sum() > 0
    # and exports
    report = export_model(scaled.eval(), inputs[0]["image"], str(tmp_path))
    assert report.output_shapes[0][0] > 0
    assert report.torchscript_max_diff <= 1e-4
    assert report.onnx_error is None, report.onnx_error
    assert report.onnx_max_diff <= 1e-3


# ---------------------------------------------------------------- the mapper
def _image_file(tmp_path, h=100, w=150, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = str(tmp_path / "img.png")
    Image.fromarray(arr).save(path)
    return {"file_name": path, "height": h, "width": w, "image_id": 0}


def test_mapper_square_resize_plus_model_equals_model_resize(tmp_path, monkeypatch):
    """The same file through YolactMapper (resized once, in the loader) and through the model's own resize
    (DefaultPredictor-style input) gives the same detections at the original resolution."""
    torch.manual_seed(0)
    cfg = tiny_cfg("yolact", **{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0})
    model = build_model(cfg).eval()
    record = _image_file(tmp_path)
    mapper = build_mapper(cfg, is_train=False)
    assert isinstance(mapper, YolactMapper)
    mapped = mapper(record)
    assert mapped["image"].shape == (3, 128, 128) and mapped["image"].dtype == torch.float32
    assert "instances" not in mapped and (mapped["height"], mapped["width"]) == (100, 150)
    loaded = detection_utils.read_image(record["file_name"], "BGR")
    raw = torch.as_tensor(np.ascontiguousarray(loaded.transpose(2, 0, 1)))
    import segx.modeling.meta_arch.yolact as meta_arch_module

    calls = []
    resize = meta_arch_module.square_resize
    monkeypatch.setattr(meta_arch_module, "square_resize", lambda *a: calls.append(a[0].shape) or resize(*a))
    with torch.no_grad():
        a = model([mapped])[0]["instances"]
        assert calls == []  # the mapper's S×S image is not resized again
        b = model([{"image": raw, "height": 100, "width": 150}])[0]["instances"]
        assert len(calls) == 1  # the model resizes a non-square input once
    assert len(a) > 0 and a.image_size == b.image_size == (100, 150)
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor) and torch.equal(a.scores, b.scores)
    assert torch.equal(a.pred_classes, b.pred_classes) and torch.equal(a.pred_masks, b.pred_masks)
    # decode (do_postprocess=False) stays at the given image's own size
    with torch.no_grad():
        assert model.inference([mapped], do_postprocess=False)[0].image_size == (128, 128)
        assert model.inference([{"image": raw}], do_postprocess=False)[0].image_size == (100, 150)


def test_mapper_transforms_annotations_with_the_resize_and_flip(tmp_path):
    cfg = tiny_cfg("yolact")
    record = _image_file(tmp_path)
    poly = [20.0, 10.0, 80.0, 10.0, 80.0, 50.0, 20.0, 50.0]
    record["annotations"] = [
        {"bbox": [20.0, 10.0, 60.0, 40.0], "bbox_mode": 1, "category_id": 2, "segmentation": [poly], "iscrowd": 0},
        {"bbox": [0.0, 0.0, 10.0, 10.0], "bbox_mode": 1, "category_id": 1, "segmentation": [[0, 0, 10, 0, 10, 10]],
         "iscrowd": 1},
    ]
    mapper = YolactMapper(cfg, is_train=True)
    mapper.flip = None
    plain = mapper(record)
    inst = plain["instances"]
    sx, sy = 128 / 150, 128 / 100
    assert len(inst) == 1 and inst.gt_classes.tolist() == [2]  # crowd dropped, as DatasetMapper does
    torch.testing.assert_close(inst.gt_boxes.tensor, torch.tensor([[20 * sx, 10 * sy, 80 * sx, 50 * sy]]))
    np.testing.assert_allclose(inst.gt_masks.polygons[0][0][:4], [20 * sx, 10 * sy, 80 * sx, 10 * sy], rtol=1e-5)
    from detectron2.data import transforms as T

    mapper.flip = T.RandomFlip(prob=1.0, horizontal=True, vertical=False)
    flipped = mapper(record)
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    torch.testing.assert_close(flipped["instances"].gt_boxes.tensor,
                               torch.tensor([[128 - 80 * sx, 10 * sy, 128 - 20 * sx, 50 * sy]]))
    # the model trains on the mapped S×S record (GT already at the input's scale)
    model = build_model(cfg).train()
    losses = model([flipped, plain])
    assert all(torch.isfinite(v) for v in losses.values())


# ---------------------------------------------------------------- config vocabulary
@pytest.mark.parametrize("old,new", [
    ("NMS_THRESH", "NMS_THRESH_TEST"), ("NMS_TOP_K", "NMS_TOPK_TEST"), ("MAX_DETECTIONS", "DETECTIONS_PER_IMAGE"),
    ("MASK_THRESHOLD", "MASK_THRESH_TEST"),
])
def test_old_config_key_names_the_new_one(old, new, tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(f'_BASE_: "{os.path.join(REPO_ROOT, SMALL)}"\nMODEL:\n  YOLACT:\n    {old}: 0.3\n')
    with pytest.raises(KeyError, match=f"MODEL.YOLACT.{new}"):
        load_cfg(str(path))
    y = load_cfg(SMALL).MODEL.YOLACT
    assert new in y and old not in y


# ---------------------------------------------------------------- converter
def _plus_r50_tiny():
    return tiny_cfg("yolact", config="configs/YOLACT/yolact_plus_R_50_FPN_550.yaml", **{
        "MODEL.YOLACT.INPUT_SIZE": 256, "MODEL.YOLACT.NUM_CLASSES": 3, "MODEL.TV_RESNET.DCN_LAYERS": [0, 4, 6, 3],
        "MODEL.TV_RESNET.DCN_INTERVAL": 3, "MODEL.YOLACT.SCORE_THRESH_TEST": 0.0})


def test_converter_round_trip_equal_outputs():
    torch.manual_seed(0)
    cfg = _plus_r50_tiny()
    model = build_model(cfg).eval()
    with torch.no_grad():  # non-trivial BN statistics and offsets so a wrong mapping shows
        for name, p in model.named_parameters():
            if "offset_conv" in name:
                p.normal_(0, 0.01)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    official = to_official_state_dict(model.state_dict())
    # the official layout: C5-first laterals, prediction_layers.0, DCN conv_offset_mask, maskiou_net.maskiou_net
    assert official["fpn.lat_layers.0.weight"].shape[1] == model.backbone.bottom_up.output_shape()["res5"].channels
    for key in ("backbone.layers.2.3.conv2.conv_offset_mask.weight", "backbone.layers.0.0.downsample.1.running_var",
                "proto_net.10.weight", "prediction_layers.0.upfeature.0.weight", "prediction_layers.0.conf_layer.bias",
                "semantic_seg_conv.weight", "maskiou_net.maskiou_net.10.weight", "fpn.downsample_layers.1.weight"):
        assert key in official, key
    assert "backbone.layers.2.1.conv2.conv_offset_mask.weight" not in official  # interval 3
    official = {k: v for k, v in official.items() if not k.endswith("num_batches_tracked")}  # old PyTorch files
    torch.manual_seed(1)
    fresh = build_model(cfg).eval()
    fresh.load_state_dict(convert_official_state_dict(official, fresh.state_dict()))
    image = torch.rand(3, 96, 128) * 255
    with torch.no_grad():
        a = model.inference([{"image": image}], do_postprocess=False)[0]
        b = fresh.inference([{"image": image}], do_postprocess=False)[0]
    assert len(a) > 0
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
    torch.testing.assert_close(a.scores, b.scores)
    assert torch.equal(a.pred_masks, b.pred_masks)


def test_converter_refuses_with_a_list(tmp_path):
    cfg = tiny_cfg("yolact")
    model = build_model(cfg)
    official = to_official_state_dict(model.state_dict())
    official["class_existence_fc.weight"] = torch.zeros(3)
    del official["proto_net.0.weight"]
    official["prediction_layers.0.conf_layer.bias"] = torch.zeros(7)
    with pytest.raises(ConversionError) as e:
        convert_official_state_dict(official, model.state_dict())
    msg = str(e.value)
    assert "class_existence_fc.weight" in msg and "proto_net.0.weight" in msg and "conf_layer.bias" in msg
    # the CLI writes nothing and exits non-zero
    import runpy
    import sys

    src = tmp_path / "official.pth"
    torch.save(official, src)
    argv = sys.argv
    sys.argv = ["convert", "--config-file", os.path.join(REPO_ROOT, SMALL), str(src), str(tmp_path / "out.pth"),
                "MODEL.TV_RESNET.WIDTH", "8", "MODEL.YOLACT.FPN.OUT_CHANNELS", "32", "MODEL.YOLACT.PROTO_CHANNELS",
                "32", "MODEL.YOLACT.HEAD_CHANNELS", "32", "MODEL.YOLACT.NUM_PROTOTYPES", "8"]
    try:
        with pytest.raises(SystemExit) as ex:
            runpy.run_path(os.path.join(REPO_ROOT, "tools", "convert_yolact_to_d2.py"), run_name="__main__")
        assert ex.value.code == 1
        assert not (tmp_path / "out.pth").exists()
        torch.save(to_official_state_dict(model.state_dict()), src)
        with pytest.raises(SystemExit) as ex:
            runpy.run_path(os.path.join(REPO_ROOT, "tools", "convert_yolact_to_d2.py"), run_name="__main__")
        assert ex.value.code == 0 and (tmp_path / "out.pth").exists()
    finally:
        sys.argv = argv


# ---------------------------------------------------------------- export
def test_export_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    from segx.export import export_model

    torch.manual_seed(0)
    model = build_model(tiny_cfg("yolact", **{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0})).eval()
    image = (torch.rand(3, 128, 128) * 255).round()
    report = export_model(model, image, str(tmp_path))
    assert report.output_shapes[0][0] > 0
    assert report.torchscript_max_diff <= 1e-4
    assert report.onnx_error is None, report.onnx_error
    assert report.onnx_max_diff <= 1e-3


def test_export_yolact_plus_torchscript(tmp_path):
    """YOLACT++ traces to TorchScript; ONNX is unavailable (torchvision's deform_conv2d has no ONNX symbolic)."""
    from segx.export import export_model

    torch.manual_seed(0)
    over = {"MODEL.YOLACT.MASKIOU_ON": True, "MODEL.YOLACT.INPUT_SIZE": 256, "MODEL.YOLACT.SCORE_THRESH_TEST": 0.0,
            "MODEL.TV_RESNET.DCN_LAYERS": [0, 2, 2, 2], "MODEL.TV_RESNET.DCN_INTERVAL": 1}
    model = build_model(tiny_cfg("yolact", **over)).eval()
    report = export_model(model, (torch.rand(3, 128, 128) * 255).round(), str(tmp_path), formats=("torchscript",))
    assert report.output_shapes[0][0] > 0
    assert report.torchscript_max_diff <= 1e-4
