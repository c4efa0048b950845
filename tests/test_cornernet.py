"""CornerNet: hourglass backbone, embedding losses on a hand-computed case, targets (per image, collated, from the
mapper), decoding of planted heatmaps, soft-NMS, training on the synthetic shapes (every loss falls, empty ground
truth), renamed config keys and export parity."""
import copy
import math
import re

import pytest
import torch

from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from conftest import load_cfg, tiny_cfg
from segx.config.cornernet import RENAMED_KEYS as CORNERNET_RENAMES
from segx.data.mappers import build_mapper
from segx.data.mappers.cornernet import CornerNetMapper
from segx.modeling.backbone.hourglass import HourglassNet
from segx.modeling.keypoints import CornerTargets, associative_embedding_loss, gaussian_radius, soft_nms_gaussian

# A random model pairs nothing (its corner maps peak in different classes, its embeddings drift): one class
# and a loose embedding threshold keep detections flowing through the exported graph.
EXPORT_OVERRIDES = {"MODEL.CORNERNET.NUM_CLASSES": 1, "MODEL.CORNERNET.EMBEDDING_THRESH_TEST": 1e3}


def test_hourglass_returns_one_feature_per_stack():
    net = HourglassNet(dims=[8, 12, 16], modules=[1, 1, 2], num_stacks=3, stem_channels=4, out_channels=10)
    assert net.size_divisibility == 16
    out = net(torch.randn(2, 3, 32, 48))
    assert list(out) == ["hg0", "hg1", "hg2"]
    for v in out.values():
        assert v.shape == (2, 10, 8, 12)
    assert {s.stride for s in net.output_shape().values()} == {4}
    with pytest.raises(ValueError, match="DIMS and MODULES"):
        HourglassNet(dims=[8, 12], modules=[1], num_stacks=1)


def test_pull_push_hand_computed():
    # image 0: three objects (pad slot masked out), image 1: two far-apart objects, image 2: one object
    tl = torch.tensor([[0.0, 1.0, 0.2, 5.0], [0.5, -1.0, 9.0, 9.0], [3.0, 0.0, 0.0, 0.0]], requires_grad=True)
    br = torch.tensor([[0.4, 1.2, 0.2, -5.0], [0.7, -1.0, 9.0, 9.0], [2.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    pull, push = associative_embedding_loss(tl, br, mask, margin=1.0)
    # means: (0.2, 1.1, 0.2), (0.6, -1.0), (2.5)
    pull_expected = (0.2**2 * 2 + 0.1**2 * 2) / 3 + (0.1**2 * 2) / 2 + (0.5**2 * 2) / 1
    # image 0 ordered pairs: |0.2-1.1| = 0.9 -> 0.1 (x2), |0.2-0.2| = 0 -> 1 (x2), |1.1-0.2| -> 0.1 (x2); / (3*2)
    push_expected = (2 * 0.1 + 2 * 1.0 + 2 * 0.1) / 6 + 0.0 + 0.0
    assert pull.item() == pytest.approx(pull_expected, abs=1e-6)
    assert push.item() == pytest.approx(push_expected, abs=1e-6)
    (pull + push).backward()
    assert torch.isfinite(tl.grad).all()
    assert tl.grad[0, 3] == 0 and tl.grad[1, 2:].abs().sum() == 0  # padding gets no gradient


def test_corner_targets_positions_offsets_and_radius():
    builder = CornerTargets(3, 4, min_overlap=0.3, radius_variant="corrected")
    per_image = [
        builder(torch.tensor([[10.0, 18.0, 70.0, 101.0]]), torch.tensor([2]), (128, 128)),
        builder(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), (128, 128)),
    ]
    assert per_image[0]["map_size"] == (32, 32) and per_image[0]["tl"]["points"].tolist() == [[2, 4]]
    t = builder.collate(per_image, (32, 32))
    heat, index, offset = t["tl"]
    assert heat.shape == (2, 3, 32, 32) and heat[1].sum() == 0 and t["mask"].tolist() == [[True], [False]]
    assert heat[0, 2, 4, 2] == 1 and (heat[0, 2] == 1).sum() == 1  # (10/4, 18/4) -> (2, 4)
    assert index[0, 0] == 4 * 32 + 2
    torch.testing.assert_close(offset[0, 0], torch.tensor([0.5, 0.5]))
    br_heat, br_index, br_offset = t["br"]
    assert br_heat[0, 2, 25, 17] == 1 and br_index[0, 0] == 25 * 32 + 17
    torch.testing.assert_close(br_offset[0, 0], torch.tensor([0.5, 0.25]))
    r = max(0, int(gaussian_radius(math.ceil(83 / 4), math.ceil(60 / 4), 0.3, "corrected")))
    assert r > 0
    nonzero_cols = (heat[0, 2, 4] > 0).nonzero().flatten()
    assert nonzero_cols.max().item() == 2 + r  # the Gaussian's extent is the radius
    with pytest.raises(ValueError, match="class 5"):
        builder(torch.tensor([[10.0, 18.0, 70.0, 101.0]]), torch.tensor([5]), (128, 128))


def test_corner_targets_of_a_padded_batch():
    """Per-image maps follow the model's padding; a smaller image's maps are zero-padded to the batch's map and its
    indices use the batch's width."""
    builder = CornerTargets(1, 4, 32, min_overlap=0.3, radius_variant="corrected")
    small = builder(torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.tensor([0]), (60, 90))  # padded to 64 x 96
    large_boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0], [50.0, 60.0, 120.0, 100.0]])
    large = builder(large_boxes, torch.tensor([0, 0]), (128, 160))
    assert small["map_size"] == (16, 24) and large["map_size"] == (32, 40)
    t = builder.collate([small, large], (32, 40))
    heat, index, _ = t["br"]
    assert heat.shape == (2, 1, 32, 40)
    torch.testing.assert_close(heat[0, :, :16, :24], small["br"]["heatmap"])
    assert heat[0, :, 16:].sum() == 0 and heat[0, :, :, 24:].sum() == 0
    assert index[0].tolist() == [10 * 40 + 10, 0] and t["mask"].tolist() == [[True, False], [True, True]]
    with pytest.raises(ValueError, match="do not fit"):
        builder.collate([large], (16, 24))


def test_soft_nms_gaussian_decays_same_class_only():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [0.0, 0, 10, 10], [50.0, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.0005])
    classes = torch.tensor([0, 0, 1, 0])
    keep, kept = soft_nms_gaussian(boxes, scores, classes, sigma=0.5, score_threshold=0.001, max_detections=10)
    iou = 90.0 / 110.0
    assert keep.tolist() == [0, 2, 1]  # box 3 is below the threshold
    torch.testing.assert_close(kept, torch.tensor([0.9, 0.7, 0.8 * math.exp(-iou * iou / 0.5)]))
    keep, _ = soft_nms_gaussian(boxes, scores, classes, max_detections=1)
    assert keep.tolist() == [0]


def _logit(p):
    return math.log(p / (1 - p))


def plant(model, num_classes, size, objects, background_emb=100.0):
    """``model.predict``'s output (the last stack) with one peak per planted keypoint: ``objects`` are (class,
    {kind: (x, y)} in map pixels (float: integer part = peak, fraction = offset), embedding, score)."""
    h, w = size
    out = {}
    for kind in model.keypoint_kinds:
        heat = torch.full((1, num_classes, h, w), -12.0)
        off = torch.zeros(1, 2, h, w)
        emb = torch.full((1, 1, h, w), background_emb)
        for cls, points, e, score in objects:
            if kind not in points:
                continue
            x, y = points[kind]
            xi, yi = int(x), int(y)
            heat[0, cls, yi, xi] = _logit(score)
            off[0, :, yi, xi] = torch.tensor([x - xi, y - yi])
            emb[0, 0, yi, xi] = e
        out[kind] = {"heatmap": heat, "offset": off}
        if kind in ("tl", "br"):
            out[kind]["embedding"] = emb
    return {model.in_features[-1]: out}


def test_decoding_planted_heatmaps_returns_the_planted_boxes():
    model = build_model(tiny_cfg("cornernet")).eval()
    objects = [
        (1, {"tl": (8.5, 12.25), "br": (20.0, 28.75)}, 0.0, 0.9),
        (3, {"tl": (2.25, 3.5), "br": (30.5, 15.0)}, 3.0, 0.8),
        (1, {"tl": (5.0, 5.0)}, 10.0, 0.95),  # lonely corner: its embedding matches no bottom-right corner
    ]
    planted = plant(model, 4, (32, 32), objects)
    model.predict = lambda features, images: planted
    image = torch.zeros(3, 128, 128)
    inst = model([{"image": image, "height": 256, "width": 256}])[0]["instances"]
    assert len(inst) == 2, inst
    # boxes in input pixels x 2 (the requested 256x256 output size)
    torch.testing.assert_close(
        inst.pred_boxes.tensor, torch.tensor([[8.5, 12.25, 20.0, 28.75], [2.25, 3.5, 30.5, 15.0]]) * 4 * 2
    )
    torch.testing.assert_close(inst.scores, torch.tensor([0.9, 0.8]), atol=1e-5, rtol=0)
    assert inst.pred_classes.tolist() == [1, 3]


def test_predict_returns_named_outputs_per_stack():
    cfg = tiny_cfg("cornernet")
    model = build_model(cfg)
    images = model.preprocess_image([{"image": torch.rand(3, 64, 64) * 255}])
    features = model.extract_features(images, None)
    out = model.predict(features, images)
    assert list(out) == ["hg0", "hg1"] and set(out["hg1"]) == {"tl", "br"}
    assert set(out["hg1"]["tl"]) == {"heatmap", "offset", "embedding"}
    assert out["hg1"]["br"]["heatmap"].shape == (1, 4, 16, 16) and out["hg1"]["br"]["embedding"].shape == (1, 1, 16, 16)
    assert list(model.eval().predict(features, images)) == ["hg1"]  # inference decodes the last stack only


def _mapper_batch(cfg, n, empty_index=None, mapper=None):
    mapper = mapper or DatasetMapper(cfg, is_train=True)
    batch = [mapper(copy.deepcopy(d)) for d in DatasetCatalog.get("segx_shapes_train")[:n]]
    if empty_index is not None:
        batch[empty_index]["instances"] = Instances(batch[empty_index]["instances"].image_size)
        batch[empty_index]["instances"].gt_boxes = Boxes(torch.zeros(0, 4))
        batch[empty_index]["instances"].gt_classes = torch.zeros(0, dtype=torch.long)
        batch[empty_index].pop("targets", None)
    return batch


def assert_mapper_targets_equal_model_targets(cfg):
    """The mapper's per-image targets (built in the loader) equal the model's own, and so do the losses."""
    mapper = build_mapper(cfg, is_train=True)
    assert isinstance(mapper, CornerNetMapper)
    torch.manual_seed(0)
    batch = _mapper_batch(cfg, 3, mapper=mapper)
    model = build_model(cfg).train()
    assert all("targets" in x for x in batch)
    for x in batch:
        inst = x["instances"]
        own = model.target_builder(inst.gt_boxes.tensor, inst.gt_classes, tuple(x["image"].shape[-2:]))
        assert x["targets"]["map_size"] == own["map_size"]
        for kind in model.keypoint_kinds:
            for key in ("heatmap", "points", "offset"):
                assert torch.equal(x["targets"][kind][key], own[kind][key]), (kind, key)
    torch.manual_seed(0)
    with_targets = model(batch)
    without = [{k: v for k, v in x.items() if k != "targets"} for x in batch]
    torch.manual_seed(0)
    built_here = model(without)
    assert set(with_targets) == set(built_here)
    for k in with_targets:
        assert float(with_targets[k]) == float(built_here[k]), k
    # a mapper of another model geometry is caught, not silently used
    wrong = copy.deepcopy(batch[0])
    wrong["targets"]["map_size"] = (1, 1)
    with pytest.raises(ValueError, match="mapper's config"):
        model([wrong])


def test_mapper_targets_equal_model_targets():
    assert_mapper_targets_equal_model_targets(tiny_cfg("cornernet"))


def test_mapper_without_training_adds_no_targets():
    cfg = tiny_cfg("cornernet")
    mapper = build_mapper(cfg, is_train=False)
    x = mapper(copy.deepcopy(DatasetCatalog.get("segx_shapes_val")[0]))
    assert "targets" not in x and mapper.target_builder is None


def train_steps(cfg, steps=40, batch_size=4):
    """Adam on a fixed batch of synthetic shapes; the loss dicts of every step."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = _mapper_batch(cfg, batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(steps):
        losses = model(batch)
        history.append({k: float(v) for k, v in losses.items()})
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    return history


def assert_every_loss_falls(history, n=5):
    """Mean of the last ``n`` steps below that of the first ``n``, for every loss; pull and push are taken
    together: at initialisation all embeddings are nearly equal, so pull starts near 0 and rises while push
    separates the objects (the official training curves do the same)."""
    history = [dict(h, loss_pull_push=h["loss_pull"] + h["loss_push"]) for h in history]
    for key in history[0]:
        if key in ("loss_pull", "loss_push"):
            continue
        first = sum(h[key] for h in history[:n]) / n
        last = sum(h[key] for h in history[-n:]) / n
        assert last < first, f"{key} did not fall: first {n} mean {first:.4f}, last {n} mean {last:.4f}"


@pytest.mark.slow
def test_training_lowers_every_loss():
    history = train_steps(tiny_cfg("cornernet"))
    assert set(history[0]) == {"loss_tl_heatmap", "loss_br_heatmap", "loss_pull", "loss_push", "loss_offset"}
    assert_every_loss_falls(history)


def test_end_to_end_with_empty_ground_truth():
    cfg = tiny_cfg("cornernet")
    model = build_model(cfg).train()
    batch = _mapper_batch(cfg, 2, empty_index=1)
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    empty = _mapper_batch(cfg, 1, empty_index=0)
    losses = model(empty)
    assert losses["loss_pull"] == 0 and losses["loss_push"] == 0 and losses["loss_offset"] == 0
    sum(losses.values()).backward()  # still connected to the graph
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"], "height": 64, "width": 64}])
    inst = out[0]["instances"]
    assert inst.image_size == (64, 64)
    assert {"pred_boxes", "scores", "pred_classes"} <= set(inst.get_fields())
    assert len(inst) <= cfg.MODEL.CORNERNET.DETECTIONS_PER_IMAGE
    with pytest.raises(ValueError, match="instances"):
        model.train()([{"image": batch[0]["image"]}])


def test_mixed_size_batch_trains_a_step():
    cfg = tiny_cfg("cornernet")
    model = build_model(cfg).train()
    boxes = Instances((100, 70), gt_boxes=Boxes(torch.tensor([[5.0, 6.0, 60.0, 90.0]])), gt_classes=torch.tensor([1]))
    batch = _mapper_batch(cfg, 1) + [{"image": torch.rand(3, 100, 70) * 255, "instances": boxes}]
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def assert_old_key_names_the_new_key(old, new, config, tmp_path):
    """``old`` in a YAML and on the command line fails with an error that names ``new``."""
    *parents, leaf = old.split(".")
    path = tmp_path / "old_key.yaml"
    path.write_text("".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parents)) + f"{'  ' * len(parents)}{leaf}: 1\n")
    with pytest.raises(KeyError, match=re.escape(new)):
        load_cfg(str(path))
    with pytest.raises(KeyError, match=re.escape(new)):
        load_cfg(config).merge_from_list([old, "1"])


@pytest.mark.parametrize("old", sorted(CORNERNET_RENAMES))
def test_old_config_key_names_the_new_key(old, tmp_path):
    assert_old_key_names_the_new_key(old, CORNERNET_RENAMES[old], "configs/CornerNet/cornernet_hg_small_shapes.yaml",
                                     tmp_path)


def test_export_round_trip_matches_eager(tmp_path):
    pytest.importorskip("onnxruntime")
    from segx.export import export_model, export_tolerances

    torch.manual_seed(0)
    model = build_model(tiny_cfg("cornernet", **EXPORT_OVERRIDES)).eval()
    image = torch.rand(3, 64, 64) * 255
    report = export_model(model, image, str(tmp_path))
    assert report.output_shapes[0][0] > 0, "no detections: the round trip would compare empty tensors"
    assert report.onnx_error is None, report.onnx_error
    assert not report.exceeds(export_tolerances(model)), report.summary()


# ----------------------------------------------------------------- no non-finite boxes (issue 18, item 7)
def test_corner_decoding_clamps_non_finite_offsets_and_rejects_nan_embeddings():
    """Corner offsets read at the peaks: NaN → 0, ±inf → ±REGRESSION_CLAMP (1e4 map px, then clipped to the image
    by ``decode``); a pair whose embeddings are NaN is rejected (NaN is not within the threshold)."""
    from segx.modeling.keypoints import decode_corner_pairs
    from segx.modeling.keypoints.decoding import REGRESSION_CLAMP

    h = w = 16
    tl_heat, br_heat = torch.zeros(1, 1, h, w), torch.zeros(1, 1, h, w)
    tl_off, br_off = torch.zeros(1, 2, h, w), torch.zeros(1, 2, h, w)
    tl_emb, br_emb = torch.zeros(1, 1, h, w), torch.zeros(1, 1, h, w)
    tl_heat[0, 0, 2, 2], br_heat[0, 0, 10, 12] = 0.9, 0.8  # pair A: offsets inf / NaN
    tl_off[0, :, 2, 2] = torch.tensor([float("nan"), -float("inf")])
    br_off[0, :, 10, 12] = torch.tensor([float("inf"), 0.5])
    tl_heat[0, 0, 4, 8], br_heat[0, 0, 14, 14] = 0.7, 0.6  # pair B: a NaN embedding
    tl_emb[0, 0, 4, 8] = float("nan")
    boxes, scores, _ = decode_corner_pairs(tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off, k=2, num_candidates=4)
    assert torch.isfinite(boxes).all()
    valid = scores[0] > 0
    # accepted: A (tl 2,2 + NaN→0, −inf→−1e4; br 12 + 1e4, 10.5) and A's tl with B's br; rejected: B's tl (NaN)
    assert valid.sum() == 2
    b = REGRESSION_CLAMP
    torch.testing.assert_close(boxes[0, 0], torch.tensor([2.0, 2.0 - b, 12.0 + b, 10.5]))
    torch.testing.assert_close(scores[0, 0], torch.tensor(0.85))


@pytest.mark.parametrize("scale", [1e3, 1e20, 1e38])
@pytest.mark.parametrize("config", ["configs/CornerNet/cornernet_hg_small_shapes.yaml",
                                    "configs/CenterNetTriplets/centernet_triplets_hg_small_shapes.yaml"])
def test_scaled_up_offset_heads_give_finite_boxes(config, scale):
    """A random model whose offset heads are scaled up (×1e38 overflows to ±inf / NaN; before the clamp the
    CornerNet case raised 'Box tensor contains infinite or NaN!' in detector_postprocess). One dominant class and
    a loose embedding threshold make the random model pair corners."""
    model = build_model(tiny_cfg("cornernet", config=config, **EXPORT_OVERRIDES)).eval()
    with torch.no_grad():
        for heads in model.offset_heads.values():
            for m in heads.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.weight.mul_(scale)
    x = {"image": torch.rand(3, 64, 80) * 255, "height": 128, "width": 160}
    with torch.no_grad():
        raw = model.inference([x], do_postprocess=False)[0]
        out = model([x])[0]["instances"]
    assert torch.isfinite(raw.pred_boxes.tensor).all()
    assert torch.isfinite(out.pred_boxes.tensor).all() and torch.isfinite(out.scores).all()


# ---------------------------------------------------------------------------- device audit (issue 18)
def test_corner_targets_create_every_tensor_on_an_explicit_device():
    """With the default device set to "meta", a tensor created without ``device=`` would land there: the per-image
    targets stay on the CPU and the collated batch is on the requested device."""
    boxes, classes = torch.tensor([[4.0, 8.0, 40.0, 30.0]]), torch.tensor([1])
    no_boxes, no_classes = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    builder = CornerTargets(2, 4, 16, kinds=("tl", "br", "ct"))
    previous = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        per_image = [builder(boxes, classes, (48, 48)), builder(no_boxes, no_classes, (32, 32))]
        batch = builder.collate(per_image, (12, 12), torch.device("cpu"))
    finally:
        torch.set_default_device(previous)
    for t in per_image:
        for kind in ("tl", "br", "ct"):
            assert all(v.device.type == "cpu" for v in t[kind].values())
    assert batch["mask"].device.type == "cpu" and batch["mask"].tolist() == [[True], [False]]
    for kind in ("tl", "br", "ct"):
        assert all(v.device.type == "cpu" for v in batch[kind])
    assert batch["tl"][1].tolist() == [[2 * 12 + 1], [0]] and batch["br"][1].tolist() == [[7 * 12 + 10], [0]]
    # a training step with the model on another device (meta stands in for an accelerator)
    cfg = tiny_cfg("cornernet")
    model = build_model(cfg).to("meta").train()
    losses = model(_mapper_batch(cfg, 2))
    assert {v.device.type for v in losses.values()} == {"meta"}
