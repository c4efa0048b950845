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

from conftest import REPO_ROOT, TINY, load_cfg, tiny_cfg
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
    from segx.export import export_model, export_tolerances

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
    assert report.onnx_error is None, report.onnx_error
    assert not report.exceeds(export_tolerances(scaled)), report.summary()


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
    from segx.export import export_model, export_tolerances

    torch.manual_seed(0)
    model = build_model(tiny_cfg("yolact", **{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0})).eval()
    image = (torch.rand(3, 128, 128) * 255).round()
    report = export_model(model, image, str(tmp_path))
    assert report.output_shapes[0][0] > 0
    assert report.onnx_error is None, report.onnx_error
    assert not report.exceeds(export_tolerances(model)), report.summary()


def test_export_yolact_plus_torchscript(tmp_path):
    """YOLACT++ traces to TorchScript (its ONNX, through the pure-PyTorch deformable conv, at two sizes:
    tests/test_export_any_size.py, slow)."""
    from segx.export import export_model, export_tolerances

    torch.manual_seed(0)
    over = {"MODEL.YOLACT.MASKIOU_ON": True, "MODEL.YOLACT.INPUT_SIZE": 256, "MODEL.YOLACT.SCORE_THRESH_TEST": 0.0,
            "MODEL.TV_RESNET.DCN_LAYERS": [0, 2, 2, 2], "MODEL.TV_RESNET.DCN_INTERVAL": 1}
    model = build_model(tiny_cfg("yolact", **over)).eval()
    report = export_model(model, (torch.rand(3, 128, 128) * 255).round(), str(tmp_path), formats=("torchscript",))
    assert report.output_shapes[0][0] > 0
    assert not report.exceeds(export_tolerances(model)), report.summary()


# ---------------------------------------------------------------- issue 18: devices, official behaviour
def _mapped_batch(cfg, n=2, crowd=True):
    """Mapped training records (``YolactMapper``: polygons, as COCO gives them), the first with a crowd box."""
    mapper = build_mapper(cfg, is_train=True)
    mapper.flip = None
    batch = [mapper(d) for d in DatasetCatalog.get("segx_shapes_train")[:n]]
    if crowd:
        inst = batch[0]["instances"]
        inst.gt_is_crowd = torch.zeros(len(inst), dtype=torch.bool)
        inst.gt_is_crowd[0] = True
    return batch


@pytest.mark.parametrize("plus", [False, True])
def test_targets_losses_and_inference_stay_on_the_model_device(plus):
    """A GPU stopped at the first step: matching indexed the CPU-rasterised polygon masks with device indices.
    ``tests/_fake_device.py`` replays that on the CPU (a fake device checked as CUDA checks devices): YOLACT and
    YOLACT++ targets, losses and inference with polygon GT, a crowd box and an image without objects."""
    from _fake_device import FAKE, OnFake, fake_device

    torch.manual_seed(0)
    cfg = tiny_cfg("yolact", **(PLUS if plus else {}))
    batch = _mapped_batch(cfg)
    S = cfg.MODEL.YOLACT.INPUT_SIZE
    batch.append({"image": batch[1]["image"], "instances": Instances(
        (S, S), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long),
        gt_masks=BitMasks(torch.zeros(0, S, S)))})
    model = build_model(cfg)
    with fake_device():
        model.to(FAKE).train()
        losses = model(batch)
        assert all(isinstance(v, OnFake) for v in losses.values())
        assert all(torch.isfinite(v).item() for v in losses.values())
        model.eval()
        with torch.no_grad():
            inst = model([{"image": batch[0]["image"], "height": 100, "width": 150}])[0]["instances"]
        assert len(inst) > 0 and isinstance(inst.pred_masks, OnFake)
        if plus:
            assert isinstance(inst.mask_scores, OnFake)


def test_fake_device_catches_the_cpu_mask_indexing(monkeypatch):
    """The check would have caught the GPU crash: with the masks left on the CPU (the old code) it raises."""
    from _fake_device import FAKE, DeviceMixError, fake_device

    import segx.modeling.yolact.matching as matching

    cfg = tiny_cfg("yolact")
    batch = _mapped_batch(cfg)
    original = matching.gt_mask_tensor
    monkeypatch.setattr(matching, "gt_mask_tensor", lambda inst, h, w, i, device=None: original(inst, h, w, i))
    model = build_model(cfg)
    with pytest.raises(DeviceMixError), fake_device():
        model.to(FAKE).train()
        model(batch)


def test_yolact_plus_anchor_scales_at_full_precision():
    """s·2^(j/3) in double precision. The configs listed rounded values, three of them off in the third decimal:
    76.196, 304.783, 609.565 for 48·2^(2/3) = 76.19525, 192·2^(2/3) = 304.78100, 384·2^(2/3) = 609.56200."""
    from segx.modeling.yolact import octave_scales

    expect = [[s * 2 ** (j / 3.0) for j in range(3)] for s in (24, 48, 96, 192, 384)]
    for config in ("configs/YOLACT/yolact_plus_R_50_FPN_550.yaml", "configs/YOLACT/yolact_plus_R_101_FPN_550.yaml"):
        cfg = tiny_cfg("yolact", config=config)
        model = build_model(cfg)
        assert model.priors.scales == [tuple(level) for level in expect]  # exact equality of doubles
        assert [model.priors.scales[i][2] for i in (1, 3, 4)] == pytest.approx([76.19525049, 304.78100198,
                                                                                609.56200396], abs=1e-8)
        # the anchors at P3 location (0, 0): scale-major, ratios 1, 1/2, 2, not square
        feats = [torch.zeros(1, 1, s, s) for s in (69, 35, 18, 9, 5)]
        pri = model.priors(feats)
        want = torch.tensor([[24 * 2 ** (1 / 3) * math.sqrt(r), 24 * 2 ** (1 / 3) / math.sqrt(r)] for r in (1, .5, 2)])
        assert torch.equal(pri[3:6, 2:], want.float())
    assert octave_scales([[24.0], [48.0]], 1) == [[24.0], [48.0]]
    with pytest.raises(ValueError, match="ANCHOR_SCALES_PER_OCTAVE"):
        octave_scales([[24.0]], 0)


class _FixedIoU(torch.nn.Module):
    """Stand-in mask-IoU net: class c's predicted IoU is (c + 1) / 10 for every mask."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, masks):
        return ((torch.arange(self.num_classes) + 1) / 10.0).expand(masks.shape[0], -1)


def test_yolact_plus_rescoring_keeps_box_and_mask_scores_apart():
    """Official default (``RESCORE_BOX False``): ``scores`` are Fast NMS's box scores, ``mask_scores`` = score ×
    predicted IoU of the detection's class; ``RESCORE_BOX True`` puts the product in ``scores`` (no
    ``mask_scores``)."""
    torch.manual_seed(0)
    cfg = tiny_cfg("yolact", **dict(PLUS, **{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0}))
    model = build_model(cfg).eval()
    model.maskiou_net = _FixedIoU(model.num_classes)
    inputs = [{"image": (torch.rand(3, 256, 256) * 255).round()}]
    with torch.no_grad():
        _, _, pred = _run_steps(model, inputs)
        inst = model(inputs)[0]["instances"]
        model.rescore_box = True
        both = model(inputs)[0]["instances"]
    boxes = decode_boxes(pred["box_deltas"][0], pred["priors_relative"], model.box_variances)
    _, classes, nms_scores = multiclass_fast_nms(boxes, pred["logits"][0].softmax(-1)[:, 1:], 0.0, 0.5, 200,
                                                 model.max_detections_per_image)
    assert len(inst) == len(nms_scores) > 0
    assert torch.equal(inst.scores, nms_scores) and torch.equal(inst.pred_classes, classes)
    # e.g. a class-2 detection of score 0.3 → mask score 0.3 · 0.3 = 0.09
    torch.testing.assert_close(inst.mask_scores, nms_scores * (classes + 1) / 10.0, rtol=0, atol=1e-7)
    assert not both.has("mask_scores")
    torch.testing.assert_close(both.scores, nms_scores * (classes + 1) / 10.0, rtol=0, atol=1e-7)


def _register_one_object_coco(tmp_path, name):
    """A COCO file with one 100×100 image and one object: the square (10, 10)–(50, 50)."""
    import json

    from detectron2.data.datasets import register_coco_instances

    poly = [10.0, 10.0, 50.0, 10.0, 50.0, 50.0, 10.0, 50.0]
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 100, "width": 100}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600.0,
                             "segmentation": [poly], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "square"}]}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(coco))
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        from detectron2.data import MetadataCatalog

        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(path), str(tmp_path))
    DatasetCatalog.get(name)  # sets the category id mapping in the metadata
    import pycocotools.mask as mask_util

    return torch.as_tensor(mask_util.decode(mask_util.merge(mask_util.frPyObjects([poly], 100, 100)))).bool()


def test_coco_evaluator_ranks_segm_by_mask_scores(tmp_path):
    """Hand-worked AP. One object; detection A has the exact box but a mask elsewhere (mask IoU 0), B the exact
    mask but a box elsewhere (box IoU 0). Box scores A 0.9, B 0.6; mask scores A 0.3, B 0.8.
    bbox: A ranks first and is right → AP 100. segm by mask scores: B first and right → AP 100. segm by the box
    scores (plain COCOEvaluator): A first and wrong, then B → precision 1/2 at recall 1 → AP 50."""
    from detectron2.evaluation import COCOEvaluator

    from segx.evaluation import build_evaluator_by_type
    from segx.evaluation.coco import SegxCOCOEvaluator

    name = "segx_test_one_square"
    gt_mask = _register_one_object_coco(tmp_path, name)
    elsewhere = torch.zeros(100, 100, dtype=torch.bool)
    elsewhere[60:90, 60:90] = True
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 90.0, 90.0]]))
    inst.pred_classes = torch.tensor([0, 0])
    inst.scores = torch.tensor([0.9, 0.6])
    inst.pred_masks = torch.stack([elsewhere, gt_mask])
    with_mask_scores = Instances((100, 100), **inst.get_fields())
    with_mask_scores.mask_scores = torch.tensor([0.3, 0.8])
    inputs = [{"image_id": 1, "height": 100, "width": 100}]

    def run(evaluator, instances):
        evaluator.reset()
        evaluator.process(inputs, [{"instances": instances}])
        return evaluator.evaluate()

    ev = build_evaluator_by_type("coco", None, name, str(tmp_path / "segx"))[0]
    assert isinstance(ev, SegxCOCOEvaluator)
    res = run(ev, with_mask_scores)
    assert res["bbox"]["AP"] == pytest.approx(100.0) and res["segm"]["AP"] == pytest.approx(100.0)
    import json

    saved = json.loads((tmp_path / "segx" / "coco_instances_results.json").read_text())
    assert [(r["score"], r["mask_score"], r["category_id"]) for r in saved] == [
        (pytest.approx(0.9), pytest.approx(0.3), 1), (pytest.approx(0.6), pytest.approx(0.8), 1)]
    # one score for both tasks (no mask_scores, or detectron2's evaluator): segm ranked by the box scores
    assert run(ev, inst)["segm"]["AP"] == pytest.approx(50.0)
    plain = run(COCOEvaluator(name, output_dir=str(tmp_path / "d2")), with_mask_scores)
    assert plain["bbox"]["AP"] == pytest.approx(100.0) and plain["segm"]["AP"] == pytest.approx(50.0)


def test_official_output_boxes_hand_worked():
    """Boxes in fractions of the input → a 50 (h) × 200 (w) image: x × 200, y × 50. Official: corners ordered,
    x0, y0 ≥ 0, x1 ≤ 200, y1 ≤ 50, truncated; "float": scaled and clipped, corners as they came."""
    from segx.modeling.yolact import detections_to_instances, official_output_boxes

    det = {"boxes": torch.tensor([[0.306, 0.4, 0.102, 0.905], [-0.05, 0.99, 1.2, 1.3]]),
           "scores": torch.tensor([0.9, 0.8]), "classes": torch.tensor([1, 2]), "masks": torch.rand(2, 8, 8)}
    official = detections_to_instances(det, 50, 200, box_mode="official").pred_boxes.tensor
    # box 0: x 61.2, 20.4 → 20, 61; y 20.0, 45.25 → 20, 45
    # box 1: x −10 → 0, 240 → 200; y 49.5 → 49, 65 → 50
    assert official.tolist() == [[20.0, 20.0, 61.0, 45.0], [0.0, 49.0, 200.0, 50.0]]
    floats = detections_to_instances(det, 50, 200, box_mode="float").pred_boxes.tensor
    torch.testing.assert_close(floats, torch.tensor([[61.2, 20.0, 20.4, 45.25], [0.0, 49.5, 200.0, 50.0]]))
    # one-sided clamps and truncation toward zero, as the official sanitize_coordinates + .long()
    assert official_output_boxes(torch.tensor([[-30.0, 5.9, -20.5, 7.2]]), 10, 10).tolist() == [[0.0, 5.0, -20.0, 7.0]]
    with pytest.raises(ValueError, match="BOX_OUTPUT_MODE"):
        detections_to_instances(det, 50, 200, box_mode="round")


def test_decoded_box_sizes_are_clamped():
    """log(size / prior size) ≤ log(1000/16): a prior of 10×20 with size deltas +1e4 / −1e4 (v1 = 0.2) decodes to
    width 10·62.5 = 625 and height 20·e^(−2000) = 0, centre unchanged; without the clamp the width is inf."""
    from segx.modeling.ssd_coding import DEFAULT_SCALE_CLAMP

    prior = torch.tensor([[50.0, 50.0, 10.0, 20.0]])
    deltas = torch.tensor([[0.0, 0.0, 1e4, -1e4]])
    assert DEFAULT_SCALE_CLAMP == pytest.approx(math.log(62.5))
    torch.testing.assert_close(decode_boxes(deltas, prior), torch.tensor([[50 - 312.5, 50.0, 50 + 312.5, 50.0]]))
    assert torch.isinf(decode_boxes(deltas, prior, scale_clamp=None)).any()
    small = torch.tensor([[0.5, -0.5, 1.0, -1.0]])  # ordinary deltas are untouched
    assert torch.equal(decode_boxes(small, prior), decode_boxes(small, prior, scale_clamp=None))


def test_random_r101_with_scaled_up_box_head_gives_finite_boxes():
    """Randomly initialised R-101 YOLACT (the 550 config at a 192² input to keep it quick) whose box-head weights
    are scaled ×1e4: the raw deltas overflow exp (inf boxes), yet every output box is finite in both box modes."""
    torch.manual_seed(0)
    cfg = load_cfg("configs/YOLACT/yolact_R_101_FPN_550.yaml", **{"MODEL.YOLACT.INPUT_SIZE": 192,
                                                                    "MODEL.YOLACT.SCORE_THRESH_TEST": 0.0})
    model = build_model(cfg).eval()
    assert len(model.backbone.bottom_up.layer3) == 23
    with torch.no_grad():
        model.head.bbox_layer.weight.mul_(1e4)
        model.head.bbox_layer.bias.uniform_(-50, 50)
        inputs = [{"image": torch.rand(3, 160, 240) * 255, "height": 160, "width": 240}]
        _, _, pred = _run_steps(model, inputs)
        assert torch.isinf(decode_boxes(pred["box_deltas"], pred["priors"], scale_clamp=None)).any()
        for mode in ("official", "float"):
            model.box_output_mode = mode
            inst = model(inputs)[0]["instances"]
            assert len(inst) == 100 and torch.isfinite(inst.pred_boxes.tensor).all()
            raw = model.inference(inputs, do_postprocess=False)[0]
            assert torch.isfinite(raw.pred_boxes.tensor).all()


def _yolact_configs():
    import glob

    return sorted(os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, "configs/YOLACT/*.yaml"))
                  if not os.path.basename(p).startswith("Base-"))


class _Captured(Exception):
    pass


@pytest.mark.parametrize("config", _yolact_configs())
def test_every_test_path_feeds_one_resize_of_the_original(config, tmp_path):
    """DefaultPredictor (demo, benchmarks), the Trainer's test loader (evaluation) and the export sample all hand
    the network the original image resized once, straight to S×S: equal to square_resize of the file's pixels.
    (Before: INPUT.MIN_SIZE_TEST resized the short side first and the model squared that again.)"""
    from detectron2.engine import DefaultPredictor

    from segx.engine.train_net import Trainer
    from segx.export.export_model import sample_input
    from segx.modeling.yolact import square_resize

    cfg = tiny_cfg("yolact", config=config, **{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0})
    assert cfg.INPUT.MIN_SIZE_TEST == 0
    S = cfg.MODEL.YOLACT.INPUT_SIZE
    record = _image_file(tmp_path, h=90, w=170)
    name = f"segx_test_one_image_{os.path.basename(config)}"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(record)])
    loaded = detection_utils.read_image(record["file_name"], format=cfg.INPUT.FORMAT)
    original = torch.as_tensor(np.ascontiguousarray(loaded.transpose(2, 0, 1))).float()
    mean, std = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1), torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    expect = (square_resize(original, S) - mean) / std

    def capture(model):
        def extract(images, *a, **k):
            raise _Captured(images.tensor)
        model.extract_features = extract
        return model

    seen = []
    predictor = DefaultPredictor(cfg)
    capture(predictor.model)
    with pytest.raises(_Captured) as c:
        predictor(detection_utils.read_image(record["file_name"], format="BGR"))
    seen.append(("DefaultPredictor", c.value.args[0]))
    model = capture(build_model(cfg).eval())
    try:
        batch = next(iter(Trainer.build_test_loader(cfg, name)))
    finally:
        DatasetCatalog.remove(name)
    with pytest.raises(_Captured) as c:
        model(batch)
    seen.append(("Trainer test loader", c.value.args[0]))
    with pytest.raises(_Captured) as c:
        model([{"image": sample_input(cfg, record["file_name"])}])
    seen.append(("export sample", c.value.args[0]))
    for path, x in seen:
        assert x.shape == (1, 3, S, S), path
        torch.testing.assert_close(x[0], expect, rtol=0, atol=1e-4, msg=path)


def _official_layout_keys(depth_blocks=(3, 4, 6, 3), num_downsample=2):
    """The key names of dbolya/yolact's ``Yolact.state_dict()`` for a ResNet (Bottleneck) YOLACT without DCN,
    written out from the official module structure: ``backbone.{conv1,bn1}``, ``backbone.layers.i.j.*`` with the
    projection in ``downsample.{0,1}`` of each stage's first block, C5-first ``fpn.lat_layers`` /
    ``fpn.pred_layers``, ``fpn.downsample_layers``, ``proto_net`` (make_net indices: convs at 0, 2, 4, 8, 10),
    the shared ``prediction_layers.0`` and ``semantic_seg_conv``."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["backbone.conv1.weight", *(f"backbone.bn1.{b}" for b in bn)]
    for i, n in enumerate(depth_blocks):
        for j in range(n):
            p = f"backbone.layers.{i}.{j}"
            for c in (1, 2, 3):
                keys += [f"{p}.conv{c}.weight", *(f"{p}.bn{c}.{b}" for b in bn)]
            if j == 0:
                keys += [f"{p}.downsample.0.weight", *(f"{p}.downsample.1.{b}" for b in bn)]
    for i in range(3):
        keys += [f"fpn.lat_layers.{i}.weight", f"fpn.lat_layers.{i}.bias",
                 f"fpn.pred_layers.{i}.weight", f"fpn.pred_layers.{i}.bias"]
    for i in range(num_downsample):
        keys += [f"fpn.downsample_layers.{i}.weight", f"fpn.downsample_layers.{i}.bias"]
    for i in (0, 2, 4, 8, 10):
        keys += [f"proto_net.{i}.weight", f"proto_net.{i}.bias"]
    for m in ("upfeature.0", "bbox_layer", "conf_layer", "mask_layer"):
        keys += [f"prediction_layers.0.{m}.weight", f"prediction_layers.0.{m}.bias"]
    return keys + ["semantic_seg_conv.weight", "semantic_seg_conv.bias"]


def test_converter_drops_what_the_official_loader_drops(tmp_path, capsys):
    """An official-layout R-50 state dict (official key names) plus what ``Yolact.load_weights`` deletes before
    loading: a third ``fpn.downsample_layers.2`` (the config has 2) and old-style ``backbone.layer1.*`` keys.
    They are dropped and reported; everything else lands in the model and the CLI writes the file."""
    from segx.checkpoint.yolact import legacy_keys, official_to_segx_key

    cfg = tiny_cfg("yolact", config="configs/YOLACT/yolact_R_50_FPN_550.yaml")
    model = build_model(cfg)
    state = model.state_dict()
    names = _official_layout_keys()
    mapped = {official_to_segx_key(k): k for k in names}
    assert set(mapped) == set(state)  # the official names cover the model exactly
    g = torch.Generator().manual_seed(0)
    official = {}
    for k in names:
        like = state[official_to_segx_key(k)]
        official[k] = torch.randn(like.shape, generator=g) if like.dtype.is_floating_point else like.clone()
    extra = {"fpn.downsample_layers.2.weight": torch.zeros(32, 32, 3, 3),
             "fpn.downsample_layers.2.bias": torch.zeros(32),
             "backbone.layer1.0.conv1.weight": torch.zeros(8, 32, 1, 1),
             "backbone.layer4.2.bn3.running_var": torch.ones(3)}
    assert sorted(legacy_keys({**official, **extra}, 2)) == sorted(extra)
    assert legacy_keys({**official, **extra}, 3) == ["backbone.layer1.0.conv1.weight",
                                                     "backbone.layer4.2.bn3.running_var"]
    converted = convert_official_state_dict({**official, **extra}, state)
    model.load_state_dict(converted)
    for segx_key, off_key in mapped.items():
        assert torch.equal(model.state_dict()[segx_key], official[off_key]), segx_key
    # the CLI lists them and writes the checkpoint
    import runpy
    import sys

    src, dst = tmp_path / "official.pth", tmp_path / "out.pth"
    torch.save({**official, **extra}, src)
    argv = sys.argv
    sys.argv = ["convert", "--config-file", os.path.join(REPO_ROOT, "configs/YOLACT/yolact_R_50_FPN_550.yaml"),
                str(src), str(dst), *[str(x) for kv in TINY["yolact"][1].items() for x in kv]]
    try:
        with pytest.raises(SystemExit) as ex:
            runpy.run_path(os.path.join(REPO_ROOT, "tools", "convert_yolact_to_d2.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert ex.value.code == 0 and dst.exists()
    out = capsys.readouterr().out
    assert "dropping 4 keys" in out and all(k in out for k in extra)


def test_mask_upsampling_layouts_are_equal():
    """Detections as channels ([1,N,h,w], as the official postprocess) and as a batch ([N,1,h,w]) give the same
    values; no detections still works."""
    from segx.modeling.yolact import upsample_masks

    m = torch.rand(7, 20, 24)
    a = upsample_masks(m, 45, 61, layout="channels")
    assert a.shape == (7, 45, 61) and torch.equal(a, upsample_masks(m, 45, 61, layout="batch"))
    assert upsample_masks(m[:0], 45, 61).shape == (0, 45, 61)


def test_multiclass_fast_nms_ties_come_out_in_the_official_order():
    """With many exactly equal scores (constant features give them), the order equals dbolya/yolact's
    ``Detect.fast_nms`` run step by step (its sorts on the same tensors), not only the set."""
    from torchvision.ops import box_iou

    g = torch.Generator().manual_seed(5)
    boxes, _ = _random_boxes(400, 5)
    scores = (torch.randint(1, 6, (400, 3), generator=g) / 10.0)  # 0.1 .. 0.5: ties everywhere
    idx, cls, sc = multiclass_fast_nms(boxes, scores, 0.15, 0.5, top_k=60, max_detections=50)
    keep = scores.max(1).values > 0.15
    s, o = scores.t()[:, keep].sort(1, descending=True)
    s, o = s[:, :60], o[:, :60]
    prior = keep.nonzero()[:, 0][o]
    b = boxes[prior.reshape(-1)].reshape(3, 60, 4)
    iou = torch.stack([box_iou(x, x) for x in b]).triu(1)
    k = iou.max(1).values <= 0.5
    classes = torch.arange(3)[:, None].expand_as(k)[k]
    s2, o2 = s[k].sort(0, descending=True)
    assert torch.equal(idx, prior[k][o2[:50]]) and torch.equal(cls, classes[o2[:50]]) and torch.equal(sc, s2[:50])
    assert len(set(sc.tolist())) < len(sc)  # there were ties to order


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SEGX_YOLACT_OFFICIAL"),
                    reason="set SEGX_YOLACT_OFFICIAL to a dbolya/yolact checkout (e.g. output/official/yolact)")
@pytest.mark.parametrize("plus", [False, True])
def test_detections_equal_the_official_code(plus, tmp_path):
    """scripts/compare_yolact_official.py: the official network + Detect + postprocess on the CPU and segx on a
    checkpoint converted from the same random official-layout weights give the same 100 detections, in the same
    order, on a real 640×427 COCO image (or a synthetic 427×640 one), through DefaultPredictor and YolactMapper."""
    import subprocess
    import sys

    from conftest import real_data_dir

    real = real_data_dir()
    image = os.path.join(real, "coco_panoptic_sample", "images", "000000142238.jpg") if real else None
    if not image or not os.path.isfile(image):
        image = _image_file(tmp_path, h=427, w=640)["file_name"]
    cmd = [sys.executable, os.path.join(REPO_ROOT, "scripts", "compare_yolact_official.py"), "--official",
           os.environ["SEGX_YOLACT_OFFICIAL"], "--image", image, "--work-dir", str(tmp_path), "--score-thresh", "0.0",
           *(["--plus"] if plus else [])]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0 and "AGREE" in run.stdout, run.stdout + run.stderr[-3000:]
