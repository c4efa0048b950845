"""Stacked Hourglass: heatmap encodings, decoding, the network (a backbone), the mapper's targets, training,
inference, export, renamed config keys and checkpoint names."""
import copy
import math

import numpy as np
import pytest
import torch

from detectron2.modeling import build_backbone, build_model
from detectron2.structures import Boxes, Instances, Keypoints

from conftest import REPO_ROOT, load_cfg, tiny_cfg
from segx.modeling.backbone.stacked_hourglass import Hourglass, PreActResidual, StackedHourglassNet
from segx.modeling.keypoints.heatmaps import argmax_decode, landmark_heatmaps
from segx.modeling.landmarks import CropTargets, crop_grid, crop_to_image, image_to_crop, square_crops

REGRESSION = "configs/Hourglass/hg2_regression_figures.yaml"


def _seed_maps(point, size, sigma, kind):
    """The seed's definitions, pixel by pixel: centre = rounded point; on the (6σ+1)² window
    Gaussian exp(−d²/2σ²), Cauchy σ/(d²+σ²)^1.5; 0 elsewhere."""
    h, w = size
    cx, cy = math.floor(point[0] + 0.5), math.floor(point[1] + 0.5)
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            if abs(j - cx) <= 3 * sigma and abs(i - cy) <= 3 * sigma:
                d2 = (j - cx) ** 2 + (i - cy) ** 2
                out[i, j] = math.exp(-d2 / (2 * sigma**2)) if kind == "gaussian" else sigma / (d2 + sigma**2) ** 1.5
    return out


@pytest.mark.parametrize("kind", ["gaussian", "cauchy"])
@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_heatmap_formulas_match_the_seed(kind, sigma):
    points = torch.tensor([[7.4, 9.6], [1.0, 2.0], [15.2, 0.4]])  # the last two clip at the borders
    maps = landmark_heatmaps(points, (16, 18), sigma, kind=kind)
    assert maps.shape == (3, 16, 18)
    for k in range(3):
        np.testing.assert_allclose(maps[k].numpy(), _seed_maps(points[k].tolist(), (16, 18), sigma, kind), rtol=1e-5, atol=1e-7)
    # the full window, away from borders, has (6σ+1)² non-zero pixels; peak 1 (Gaussian) or 1/σ² (Cauchy)
    centred = landmark_heatmaps(torch.tensor([[12.0, 12.0]]), (25, 25), sigma, kind=kind)[0]
    assert int((centred > 0).sum()) == int(6 * sigma + 1) ** 2
    assert centred.max().item() == pytest.approx(1.0 if kind == "gaussian" else 1 / sigma**2)
    assert maps[0, 10, 7] == maps[0].max()  # (7.4, 9.6) is drawn around the rounded point (7, 10)


def test_heatmaps_are_empty_for_invisible_or_outside_points():
    maps = landmark_heatmaps(torch.tensor([[3.0, 3.0], [3.0, 3.0], [-2.0, 3.0]]), (8, 8), 1.0, visible=torch.tensor([1, 0, 1]))
    assert maps[0].sum() > 0 and maps[1].sum() == 0 and maps[2].sum() == 0
    with pytest.raises(ValueError, match="kind"):
        landmark_heatmaps(torch.zeros(1, 2), (8, 8), 1.0, kind="laplace")


def test_argmax_decode_quarter_pixel_shift():
    hm = torch.zeros(1, 3, 10, 12)
    hm[0, 0, 7, 5] = 1.0  # peak at x=5, y=7; right and upper neighbours larger
    hm[0, 0, 7, 6], hm[0, 0, 7, 4] = 0.5, 0.2
    hm[0, 0, 6, 5], hm[0, 0, 8, 5] = 0.4, 0.1
    hm[0, 1, 2, 3] = 2.0  # symmetric neighbourhood: no shift
    hm[0, 2, 0, 11] = 0.7  # corner: no shift at the border
    hm[0, 2, 1, 11] = 0.6
    coords, maxvals = argmax_decode(hm)
    assert coords[0, 0].tolist() == [5.25, 6.75]
    assert coords[0, 1].tolist() == [3.0, 2.0]
    assert coords[0, 2].tolist() == [11.0, 0.0]
    assert maxvals[0].tolist() == pytest.approx([1.0, 2.0, 0.7])
    plain, _ = argmax_decode(hm, quarter_offset=False)
    assert plain[0, 0].tolist() == [5.0, 7.0]


def test_decode_recovers_a_subpixel_landmark_from_a_smooth_peak():
    # a peak at x = 5.3 sampled on the grid: its right neighbour is larger, so the decode says 5.25
    xs = torch.arange(16.0)
    hm = torch.exp(-((xs[None, :] - 5.3) ** 2 + (xs[:, None] - 8.0) ** 2) / 2)[None, None]
    coords, _ = argmax_decode(hm)
    assert coords[0, 0].tolist() == [5.25, 8.0]


def test_hourglass_network_shapes_and_recursion():
    hg = Hourglass(4, 16)
    x = torch.randn(2, 16, 32, 32)
    assert hg(x).shape == x.shape
    depth, node = 0, hg
    while isinstance(node, Hourglass):
        depth, node = depth + 1, node.low2
    assert depth == 4
    res = PreActResidual(8, 16)
    assert isinstance(res.bn1, torch.nn.BatchNorm2d) and res.skip is not None  # BN-ReLU before each conv
    net = StackedHourglassNet(num_stacks=3, num_features=32, num_keypoints=5, depth=3)
    out = net(torch.randn(2, 3, 64, 64))
    assert sorted(out) == ["heatmap0", "heatmap1", "heatmap2", "hg0", "hg1", "hg2"]
    assert all(out[f"heatmap{i}"].shape == (2, 5, 16, 16) and out[f"hg{i}"].shape == (2, 32, 16, 16) for i in range(3))
    assert len(net.merge_preds) == 2 and len(net.merge_features) == 2
    shapes = net.output_shape()
    assert shapes["hg1"].channels == 32 and shapes["heatmap1"].channels == 5 and shapes["hg0"].stride == 4
    no_heads = StackedHourglassNet(num_stacks=2, num_features=16, num_keypoints=5, depth=2, predict_heatmaps=False)
    assert sorted(no_heads(torch.randn(1, 3, 32, 32))) == ["hg0", "hg1"] and no_heads.merge_preds is None


def test_network_is_built_through_build_backbone_from_its_own_node():
    cfg = tiny_cfg("hourglass", **{"MODEL.STACKED_HOURGLASS_NET.NUM_STACKS": 3})
    assert cfg.MODEL.BACKBONE.NAME == "build_stacked_hourglass_backbone"
    net = build_backbone(cfg)
    assert isinstance(net, StackedHourglassNet) and net.num_stacks == 3 and net.num_keypoints == 4
    model = build_model(cfg)
    assert isinstance(model.backbone, StackedHourglassNet) and not hasattr(model, "net")


def test_crop_geometry_round_trip():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 64.0, 64.0]])
    centres, half = square_crops(boxes, 1.25)
    assert centres.tolist() == [[30.0, 60.0], [32.0, 32.0]] and half.tolist() == [50.0, 40.0]
    pts = torch.tensor([[[30.0, 60.0], [80.0, 110.0]], [[0.0, 0.0], [64.0, 64.0]]])
    angle = torch.tensor([0.3, -1.0])
    u = image_to_crop(pts, centres, half, torch.cos(angle), torch.sin(angle))
    assert u[0, 0].abs().max() < 1e-6
    assert torch.allclose(u.norm(dim=-1), ((pts - centres[:, None]) / half[:, None, None]).norm(dim=-1), atol=1e-6)
    u0 = image_to_crop(pts, centres, half)
    assert torch.allclose(crop_to_image(u0, centres, half), pts, atol=1e-5)
    # a crop of the whole image at its own size reproduces the image exactly
    img = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)
    grid = crop_grid(torch.tensor([[32.0, 32.0]]), torch.tensor([32.0]), (64, 64), 64)
    out = torch.nn.functional.grid_sample(img, grid, align_corners=False)
    assert torch.allclose(out, img, atol=1e-3)


def hg_cfg(head="heatmap", **overrides):
    """The tiny model (``TINY["hourglass"]``) with the heatmap or regression head and ``MODEL.STACKED_HOURGLASS``
    ``overrides``."""
    return tiny_cfg("hourglass", config=REGRESSION if head == "regression" else None,
                    **{f"MODEL.STACKED_HOURGLASS.{k}": v for k, v in overrides.items()})


def _inputs(n_images=3, k=4, size=64, empty=()):
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n_images):
        inst = Instances((size, size))
        n = 0 if i in empty else 1 + i % 2
        x0 = torch.rand(n, 2, generator=g) * size * 0.3
        boxes = torch.cat([x0, x0 + size * 0.5], dim=1)
        kp = boxes[:, None, :2] + torch.rand(n, k, 2, generator=g) * size * 0.5
        vis = torch.ones(n, k, 1) * 2
        if n:
            vis[0, -1] = 0
        inst.gt_boxes = Boxes(boxes)
        inst.gt_keypoints = Keypoints(torch.cat([kp, vis], dim=-1))
        image = torch.rand(3, size, size, generator=g) * 255
        if n:  # paint the keypoints so there is something to learn
            for p in kp.reshape(-1, 2).long().clamp(0, size - 2):
                image[:, p[1] : p[1] + 2, p[0] : p[0] + 2] = 0
        out.append({"image": image, "instances": inst, "height": size, "width": size})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("head,kind", [("heatmap", "gaussian"), ("heatmap", "cauchy"), ("regression", "gaussian")])
def test_training_lowers_every_loss(head, kind):
    torch.manual_seed(0)
    cfg = hg_cfg(head, HEATMAP_KIND=kind, AUG_SCALE=0.0, AUG_ROTATION=0.0)
    model = build_model(cfg).train()
    data = _inputs()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        losses = model(data)
        assert set(losses) == {"loss_stack0", "loss_stack1"}
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    for key in history[0]:
        first = np.mean([h[key] for h in history[:3]])
        last = np.mean([h[key] for h in history[-3:]])
        assert last < 0.7 * first, f"{head}/{kind} {key}: {first:.4f} -> {last:.4f}"


def test_empty_ground_truth_gives_zero_losses_with_gradients():
    model = build_model(hg_cfg()).train()
    data = _inputs(n_images=2, empty=(0, 1))
    losses = model(data)
    assert all(v.item() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # mixed batch: one image without people still trains on the others
    losses = model(_inputs(n_images=3, empty=(1,)))
    assert all(v.item() > 0 for v in losses.values())


def test_missing_keypoints_and_bad_options_are_named():
    model = build_model(hg_cfg()).train()
    data = _inputs(n_images=1)
    inst = Instances((64, 64))
    inst.gt_boxes = data[0]["instances"].gt_boxes
    data[0]["instances"] = inst
    with pytest.raises(ValueError, match="KEYPOINT_ON"):
        model(data)
    with pytest.raises(ValueError, match="head"):
        build_model(hg_cfg(HEAD="soft-argmax"))
    with pytest.raises(ValueError, match="divisible"):
        build_model(hg_cfg(INPUT_SIZE=40))
    # the head and the backbone's heatmap heads must agree (the error names the backbone key)
    with pytest.raises(ValueError, match="STACKED_HOURGLASS_NET.PREDICT_HEATMAPS"):
        build_model(hg_cfg(HEAD="regression"))
    with pytest.raises(ValueError, match="STACKED_HOURGLASS_NET.PREDICT_HEATMAPS"):
        build_model(hg_cfg("regression", HEAD="heatmap"))


@pytest.mark.parametrize("head", ["heatmap", "regression"])
def test_inference_outputs_keypoints_in_image_coordinates(head):
    model = build_model(hg_cfg(head)).eval()
    data = _inputs(n_images=2)
    data[1].pop("instances")  # no boxes: the whole image is the person crop
    data[1]["height"], data[1]["width"] = 128, 96  # resized back to the original image
    with torch.no_grad():
        out = model(data)
    a, b = out[0]["instances"], out[1]["instances"]
    assert a.pred_keypoints.shape == (1, 4, 3) and torch.equal(a.pred_boxes.tensor, data[0]["instances"].gt_boxes.tensor)
    assert b.image_size == (128, 96) and len(b) == 1
    assert b.pred_boxes.tensor.tolist() == [[0.0, 0.0, 96.0, 128.0]]
    assert set(b.get_fields()) >= {"pred_boxes", "scores", "pred_classes", "pred_keypoints"}
    if head == "heatmap":  # decoded points lie on the heatmap grid of the crop (+-0.25 px shifts)
        box = a.pred_boxes.tensor[0]
        half = (box[2:] - box[:2]).max() * model.box_padding / 2
        centre = (box[:2] + box[2:]) / 2
        hm = (a.pred_keypoints[0, :, :2] - centre + half) / (2 * half) * 8 - 0.5
        assert torch.allclose(hm * 4, (hm * 4).round(), atol=1e-3)


def test_export_torchscript_and_onnx_match_eager(tmp_path):
    pytest.importorskip("onnxruntime")
    from segx.export import export_model, export_tolerances

    torch.manual_seed(0)
    for head in ("heatmap", "regression"):
        model = build_model(hg_cfg(head)).eval()
        image = torch.rand(3, 64, 48) * 255
        report = export_model(model, image, str(tmp_path / head))
        assert report.output_shapes[0][0] == 1
        assert report.onnx_error is None, report.onnx_error
        assert not report.exceeds(export_tolerances(model)), (head, report.summary())


@pytest.mark.slow
def test_trainer_and_evaluator_on_the_synthetic_figures(tmp_path):
    """StackedHourglassMapper (DatasetMapper with KEYPOINT_ON + crop targets) → model → PCK evaluator, through
    segx's Trainer."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from segx.engine.train_net import Trainer

    name = "segx_figures_val_first6"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get("segx_figures_val")[:6])
        meta = MetadataCatalog.get("segx_figures_val").as_dict()
        meta.pop("name")
        MetadataCatalog.get(name).set(**meta)
    cfg = tiny_cfg("hourglass", **{"MODEL.STACKED_HOURGLASS_NET.NUM_KEYPOINTS": 16})
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATASETS.TEST = (name,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 3
    cfg.SOLVER.MAX_ITER = 2
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = str(tmp_path)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    res = Trainer.test(cfg, trainer.model)["keypoints_pck"]
    assert res["num_people"] == 6 and 0 <= res["PCK@0.2"] <= 100


# ---------------------------------------------------------------- mapper targets, config keys, checkpoints


def _mapped_figures(cfg, n=3):
    from detectron2.data import DatasetCatalog

    from segx.data.mappers import build_mapper

    mapper = build_mapper(cfg, is_train=True)
    return mapper, [mapper(copy.deepcopy(d)) for d in DatasetCatalog.get("segx_figures_train")[:n]]


def _without_targets(inputs):
    return [{k: v for k, v in x.items() if k != "targets"} for x in inputs]


@pytest.mark.parametrize("head", ["heatmap", "regression"])
def test_mapper_targets_equal_the_model_built_ones(head):
    from segx.data.mappers.hourglass import StackedHourglassMapper

    cfg = hg_cfg(head, AUG_SCALE=0.0, AUG_ROTATION=0.0)
    cfg.MODEL.STACKED_HOURGLASS_NET.NUM_KEYPOINTS = 16  # the figures' joints
    mapper, mapped = _mapped_figures(cfg)
    assert isinstance(mapper, StackedHourglassMapper)
    model = build_model(cfg).train()
    for x in mapped:
        built = model.crop_targets(x["instances"])
        assert set(x["targets"]) == set(built) and ("heatmaps" in built) == (head == "heatmap")
        for k, v in built.items():
            assert torch.equal(x["targets"][k], v), k
        if head == "heatmap":
            assert x["targets"]["heatmaps"].shape == (len(x["instances"]), 16, 8, 8)
    with_targets = model(mapped)
    without = model(_without_targets(mapped))
    assert {k: v.item() for k, v in with_targets.items()} == {k: v.item() for k, v in without.items()}
    # the test mapper adds no targets
    from detectron2.data import DatasetCatalog

    from segx.data.mappers import build_mapper

    record = copy.deepcopy(DatasetCatalog.get("segx_figures_val")[0])
    assert "targets" not in build_mapper(cfg, is_train=False)(record)


def test_jittered_mapper_targets_are_what_the_model_trains_on():
    cfg = hg_cfg(AUG_SCALE=0.3, AUG_ROTATION=30.0, AUG_ROTATION_PROB=1.0)
    cfg.MODEL.STACKED_HOURGLASS_NET.NUM_KEYPOINTS = 16
    mapper, mapped = _mapped_figures(cfg)
    torch.manual_seed(3)
    for x in mapped:  # the mapper's draws, in the order the model makes them
        x["targets"] = mapper.crop_targets(x["instances"])
    assert (mapped[0]["targets"]["half"] != square_crops(mapped[0]["instances"].gt_boxes.tensor, 1.35)[1]).all()
    assert (mapped[0]["targets"]["sin"] != 0).all()
    model = build_model(cfg).train()
    from_mapper = model(mapped)
    torch.manual_seed(3)
    from_model = model(_without_targets(mapped))
    torch.manual_seed(4)
    other_draws = model(_without_targets(mapped))
    assert {k: v.item() for k, v in from_mapper.items()} == {k: v.item() for k, v in from_model.items()}
    assert from_mapper["loss_stack0"].item() != other_draws["loss_stack0"].item()


@pytest.mark.parametrize("old,new", [
    ("MODEL.STACKED_HOURGLASS.NUM_STACKS", "MODEL.STACKED_HOURGLASS_NET.NUM_STACKS"),
    ("MODEL.STACKED_HOURGLASS.NUM_FEATURES", "MODEL.STACKED_HOURGLASS_NET.NUM_FEATURES"),
    ("MODEL.STACKED_HOURGLASS.NUM_KEYPOINTS", "MODEL.STACKED_HOURGLASS_NET.NUM_KEYPOINTS"),
    ("MODEL.STACKED_HOURGLASS.MERGE_PREDICTIONS", "MODEL.STACKED_HOURGLASS_NET.MERGE_PREDICTIONS"),
])
def test_old_config_keys_raise_an_error_naming_the_new_key(old, new, tmp_path):
    from segx.config import RENAMED_KEYS

    assert RENAMED_KEYS[old] == new
    with pytest.raises(KeyError, match=new.replace(".", r"\.")):
        tiny_cfg("hourglass").merge_from_list([old, "4"])
    *node, leaf = old.split(".")[1:]
    base = f"{REPO_ROOT}/configs/Hourglass/Base-Hourglass-figures.yaml"
    path = tmp_path / "old.yaml"
    path.write_text(f'_BASE_: "{base}"\nMODEL:\n  {node[0]}:\n    {leaf}: 4\n')
    with pytest.raises(KeyError, match=new.replace(".", r"\.")):
        load_cfg(str(path))


def test_checkpoints_with_the_pre_refactor_names_load():
    """Before issue 12 the network was the meta-arch's ``net``; ``CHECKPOINT_RENAMES`` maps it to ``backbone``."""
    model = build_model(hg_cfg())
    state = {k: (v + 1 if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    old = {("net." + k[len("backbone."):] if k.startswith("backbone.") else k): v for k, v in state.items()}
    assert any(k.startswith("net.heads.") for k in old)
    fresh = build_model(hg_cfg())
    fresh.load_state_dict(old)  # strict
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k


# ---------------------------------------------------------------- issue 18: official decoding, MPII truncation,
# converter of the official checkpoints, channels-last, device-clean targets
def _decode_one(hm):
    from segx.modeling.landmarks import official_heatmap_decode

    points, conf = official_heatmap_decode(torch.tensor(hm, dtype=torch.float32)[None, None])
    return points[0, 0].tolist(), float(conf[0, 0])


def test_official_decoding_hand_worked():
    """pytorch_stacked_hourglass's parser, worked by hand on 5×5 maps (points in continuous heatmap pixels)."""
    hm = np.zeros((5, 5))
    hm[2, 2], hm[2, 3], hm[2, 1], hm[1, 2], hm[3, 2] = 0.8, 0.5, 0.3, 0.4, 0.4
    # x: right 0.5 > left 0.3 → 2 + 0.25 + 0.5; y: down 0.4 = up 0.4, a tie → 2 − 0.25 + 0.5
    assert _decode_one(hm) == ([2.75, 2.25], pytest.approx(0.8))
    # segx's decoding: no shift at the tie; +0.5 is its pixel-centre convention (u = (2h + 1)/H − 1)
    coords, _ = argmax_decode(torch.tensor(hm, dtype=torch.float32)[None, None])
    assert (coords[0, 0] + 0.5).tolist() == [2.75, 2.5]
    # left border: the missing left neighbour is the peak itself, the right one is not larger → −0.25
    hm = np.zeros((5, 5))
    hm[1, 0], hm[1, 1] = 0.9, 0.2
    assert _decode_one(hm) == ([0.25, 1.25], pytest.approx(0.9))  # y: 0 = 0 → −0.25
    # right border: the missing right neighbour is the peak itself, larger than the left one → +0.25
    hm = np.zeros((5, 5))
    hm[3, 4], hm[3, 3] = 0.9, 0.2
    assert _decode_one(hm) == ([4.75, 3.25], pytest.approx(0.9))
    coords, _ = argmax_decode(torch.tensor(hm, dtype=torch.float32)[None, None])
    assert coords[0, 0].tolist() == [4.0, 3.0]  # segx: no shift at the border
    # maps are clamped at 1 first (test.py: np.minimum(det, 1)): the confidence is 1, not the raw 1.5
    hm = np.zeros((5, 5))
    hm[2, 2], hm[2, 3] = 1.5, 0.3
    assert _decode_one(hm) == ([2.75, 2.25], 1.0)  # x: 0.3 > 0 → +0.25; y: 0 = 0 → −0.25
    # no positive local maximum: the peak of the suppressed map is a 0 (a non-maximum pixel, here the first one
    # beside the −0.1 maximum at (x 1, y 3)), confidence 0, no shift and no +0.5
    hm = np.full((5, 5), -1.0)
    hm[3, 1] = -0.1
    assert _decode_one(hm) == ([0.0, 2.0], 0.0)


def test_official_decoding_is_the_default_and_segx_decoding_an_option():
    assert load_cfg("configs/Hourglass/Base-Hourglass.yaml").MODEL.STACKED_HOURGLASS.DECODING == "official"
    assert load_cfg("configs/Hourglass/hg2_gaussian_figures.yaml").MODEL.STACKED_HOURGLASS.DECODING == "segx"
    assert load_cfg("configs/Hourglass/hg8_256_paper.yaml").MODEL.STACKED_HOURGLASS.TRUNCATE_COORDS_TEST
    with pytest.raises(ValueError, match="decoding"):
        build_model(hg_cfg(DECODING="mean"))
    torch.manual_seed(0)
    model = build_model(hg_cfg(DECODING="official")).eval()
    data = _inputs(n_images=1)
    with torch.no_grad():
        images = model.preprocess_image(data)
        pred = model.predict(model.extract_features(images, data), images)
        out = model.decode(pred, images, data)[0]
    from segx.modeling.landmarks import official_heatmap_decode

    points, conf = official_heatmap_decode(pred["heatmaps"][-1])
    crops = pred["crops"]
    expected = crops["centres"][:, None] + (points * 2 / model.heatmap_size - 1) * crops["half"][:, None, None]
    torch.testing.assert_close(out.pred_keypoints[..., :2], expected)
    torch.testing.assert_close(out.pred_keypoints[..., 2], conf)


def test_mpii_truncation_hand_worked():
    from segx.modeling.landmarks import truncate_coordinates

    # pose-hg-train: trunc after the 1-based offsets → 1-based pixel trunc(x) + 1, i.e. 0-based pixel trunc(x),
    # whose centre in detectron2's coordinates is trunc(x) + 0.5; trunc, not floor, below 0
    pts = torch.tensor([[12.7, -0.3], [5.0, 99.99], [-1.5, 0.0]])
    assert truncate_coordinates(pts).tolist() == [[12.5, 0.5], [5.5, 99.5], [-0.5, 0.5]]
    torch.manual_seed(0)
    model = build_model(hg_cfg(TRUNCATE_COORDS_TEST=True)).eval()
    data = _inputs(n_images=2)
    with torch.no_grad():
        raw = model.inference(data, do_postprocess=False)
        out = model(data)
    for r, o in zip(raw, out):  # same size: rescaling is the identity, then truncation
        kp = o["instances"].pred_keypoints
        assert torch.equal(kp[..., :2], torch.trunc(r.pred_keypoints[..., :2]) + 0.5)
        assert torch.equal(kp[..., 2], r.pred_keypoints[..., 2])
        assert not torch.equal(kp[..., :2], r.pred_keypoints[..., :2])  # the traced decode stays continuous


def test_official_decoding_exports(tmp_path):
    pytest.importorskip("onnxruntime")
    from segx.export import export_model, export_tolerances

    torch.manual_seed(0)
    model = build_model(hg_cfg(DECODING="official")).eval()
    report = export_model(model, torch.rand(3, 64, 48) * 255, str(tmp_path))
    assert report.onnx_error is None, report.onnx_error
    assert not report.exceeds(export_tolerances(model)), report.summary()


def _official_residual(prefix, cin, cout, sd, g):
    """An official ``models/layers.py`` ``Residual(cin, cout)`` (its ``skip_layer`` is always there)."""
    mid = cout // 2
    for i, c in ((1, cin), (2, mid), (3, mid)):
        sd[f"{prefix}.bn{i}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[f"{prefix}.bn{i}.bias"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{prefix}.bn{i}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{prefix}.bn{i}.running_var"] = 0.5 + torch.rand(c, generator=g)
        sd[f"{prefix}.bn{i}.num_batches_tracked"] = torch.tensor(7)
    for name, (o, i_, k) in {"conv1": (mid, cin, 1), "conv2": (mid, mid, 3), "conv3": (cout, mid, 1),
                             "skip_layer": (cout, cin, 1)}.items():
        sd[f"{prefix}.{name}.conv.weight"] = torch.randn(o, i_, k, k, generator=g) / (i_ * k * k) ** 0.5
        sd[f"{prefix}.{name}.conv.bias"] = 0.1 * torch.randn(o, generator=g)


def _official_conv(prefix, cin, cout, k, sd, g, bn=False):
    sd[f"{prefix}.conv.weight"] = torch.randn(cout, cin, k, k, generator=g) / (cin * k * k) ** 0.5
    sd[f"{prefix}.conv.bias"] = 0.1 * torch.randn(cout, generator=g)
    if bn:
        sd[f"{prefix}.bn.weight"] = 1 + 0.1 * torch.randn(cout, generator=g)
        sd[f"{prefix}.bn.bias"] = 0.1 * torch.randn(cout, generator=g)
        sd[f"{prefix}.bn.running_mean"] = 0.1 * torch.randn(cout, generator=g)
        sd[f"{prefix}.bn.running_var"] = 0.5 + torch.rand(cout, generator=g)
        sd[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(7)


def official_posenet_state_dict(nstack, inp_dim, oup_dim, depth=4, seed=0):
    """A state_dict with the key names and shapes of pytorch_stacked_hourglass's ``PoseNet(nstack, inp_dim,
    oup_dim)`` (``models/posenet.py``; hourglass depth 4 there, ``depth`` here), as its ``train.py`` saves it:
    ``{'state_dict': Trainer(DataParallel(net)).state_dict()}``, keys prefixed ``model.module.``."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    _official_conv("pre.0", 3, 64, 7, sd, g, bn=True)
    _official_residual("pre.1", 64, 128, sd, g)
    _official_residual("pre.3", 128, 128, sd, g)
    _official_residual("pre.4", 128, inp_dim, sd, g)
    for i in range(nstack):
        prefix = f"hgs.{i}.0"
        for _ in range(depth):
            for name in ("up1", "low1", "low3"):
                _official_residual(f"{prefix}.{name}", inp_dim, inp_dim, sd, g)
            prefix = f"{prefix}.low2"
        _official_residual(prefix, inp_dim, inp_dim, sd, g)  # the innermost low2 is a residual
        _official_residual(f"features.{i}.0", inp_dim, inp_dim, sd, g)
        _official_conv(f"features.{i}.1", inp_dim, inp_dim, 1, sd, g, bn=True)
        _official_conv(f"outs.{i}", inp_dim, oup_dim, 1, sd, g)
    for i in range(nstack - 1):
        _official_conv(f"merge_features.{i}.conv", inp_dim, inp_dim, 1, sd, g)
        _official_conv(f"merge_preds.{i}.conv", oup_dim, inp_dim, 1, sd, g)
    return {"state_dict": {"model.module." + k: v for k, v in sd.items()}, "epoch": 3}


def _convert_tool():
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location("convert_hg", os.path.join(REPO_ROOT, "tools",
                                                                             "convert_hourglass_to_d2.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


OFFICIAL_TINY = ["MODEL.STACKED_HOURGLASS_NET.NUM_FEATURES", "32", "MODEL.STACKED_HOURGLASS_NET.DEPTH", "2",
                 "MODEL.STACKED_HOURGLASS.INPUT_SIZE", "32"]


def test_official_checkpoint_converts_round_trips_and_loads(tmp_path, capsys):
    from detectron2.checkpoint import DetectionCheckpointer

    from segx.checkpoint.hourglass import official_to_segx, segx_to_official

    ckpt = official_posenet_state_dict(2, 32, 16, depth=2)
    official = {k[len("model.module."):]: v for k, v in ckpt["state_dict"].items()}
    src, dst = tmp_path / "checkpoint.pt", tmp_path / "segx.pth"
    torch.save(ckpt, src)
    config = f"{REPO_ROOT}/configs/Hourglass/hg2_256_official.yaml"
    _convert_tool().main([str(src), str(dst), "--config-file", config, "--opts", *OFFICIAL_TINY])
    # unused skip_layer convs: every residual with equal widths (pre.3, the hourglasses', features.{i}.0)
    n_res_equal = 1 + 2 * (3 * 2 + 1) + 2
    assert f"dropped {2 * n_res_equal} unused skip_layer tensors" in capsys.readouterr().out
    converted = torch.load(dst, weights_only=False)["model"]
    # where the official tensors go (by name)
    assert torch.equal(converted["backbone.stem.0.weight"], official["pre.0.conv.weight"])
    assert torch.equal(converted["backbone.stem.1.running_var"], official["pre.0.bn.running_var"])
    assert torch.equal(converted["backbone.stem_res.0.skip.weight"], official["pre.1.skip_layer.conv.weight"])
    assert torch.equal(converted["backbone.stem_res.3.conv2.bias"], official["pre.4.conv2.conv.bias"])
    assert "backbone.stem_res.2.skip.weight" not in converted  # pre.3: 128 → 128, unused
    assert torch.equal(converted["backbone.hourglasses.1.low2.low2.0.bn3.weight"],
                       official["hgs.1.0.low2.low2.bn3.weight"])
    assert torch.equal(converted["backbone.hourglasses.0.low2.up1.0.conv1.weight"],
                       official["hgs.0.0.low2.up1.conv1.conv.weight"])
    assert torch.equal(converted["backbone.post.1.0.conv3.weight"], official["features.1.0.conv3.conv.weight"])
    assert torch.equal(converted["backbone.lin.0.1.running_mean"], official["features.0.1.bn.running_mean"])
    assert torch.equal(converted["backbone.heads.1.bias"], official["outs.1.conv.bias"])
    assert torch.equal(converted["backbone.merge_preds.0.weight"], official["merge_preds.0.conv.conv.weight"])
    # back: the official layout minus the unused skip_layer convs, tensor for tensor
    back = segx_to_official(converted)
    assert set(back) == {k for k in official if not (k.endswith(("skip_layer.conv.weight", "skip_layer.conv.bias"))
                                                     and k.split(".skip_layer")[0] not in ("pre.1", "pre.4"))}
    assert all(torch.equal(back[k], official[k]) for k in back)
    assert official_to_segx(ckpt["state_dict"]).keys() == converted.keys()
    # it loads into the model of that config with nothing missing or left over, and runs
    cfg = load_cfg("configs/Hourglass/hg2_256_official.yaml")
    cfg.merge_from_list(OFFICIAL_TINY)
    model = build_model(cfg).eval()
    incompatible = DetectionCheckpointer(model)._load_model({"model": converted})
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 40, 32) * 255}])[0]["instances"]
    assert out.pred_keypoints.shape == (1, 16, 3)


def test_hourglass_converter_refuses_foreign_files_and_other_layouts(tmp_path):
    tool = _convert_tool()
    config = f"{REPO_ROOT}/configs/Hourglass/hg2_256_official.yaml"
    foreign = tmp_path / "retinaface.pth"
    torch.save({"body.stage1.0.0.weight": torch.zeros(1), "ClassHead.0.conv1x1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(SystemExit) as e:
        tool.main([str(foreign), str(tmp_path / "out.pth"), "--config-file", config])
    assert "not a pytorch_stacked_hourglass PoseNet checkpoint" in str(e.value) and "ClassHead" in str(e.value)
    # an 8-stack checkpoint against the 2-stack config: the extra stacks are listed as unexpected
    src = tmp_path / "hg3.pt"
    torch.save(official_posenet_state_dict(3, 32, 16, depth=2), src)
    with pytest.raises(SystemExit, match=r"unexpected.*backbone\.heads\.2\.weight"):
        tool.main([str(src), str(tmp_path / "out.pth"), "--config-file", config, "--opts", *OFFICIAL_TINY])
    # segx's own stem rule at width 32 (16 → 16) does not fit the official stem (64 → 128): mis-shaped, listed
    with pytest.raises(SystemExit, match=r"mis-shaped.*backbone\.stem\.0\.weight: \(64, 3, 7, 7\) vs \(16, 3, 7, 7\)"):
        tool.main([str(src), str(tmp_path / "out.pth"), "--config-file", config, "--opts", *OFFICIAL_TINY,
                   "MODEL.STACKED_HOURGLASS_NET.NUM_STACKS", "3", "MODEL.STACKED_HOURGLASS_NET.STEM_CHANNELS", "[]"])
    assert not (tmp_path / "out.pth").exists()


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    net = StackedHourglassNet(num_stacks=2, num_features=32, num_keypoints=4, depth=2)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        fast = net(x)
        net.channels_last = False
        plain = net(x)
    assert fast["heatmap1"].is_contiguous(memory_format=torch.channels_last)
    assert plain["heatmap1"].is_contiguous()
    for k in plain:
        torch.testing.assert_close(fast[k], plain[k], rtol=1e-5, atol=1e-5)
    assert build_backbone(hg_cfg()).channels_last
    nchw = tiny_cfg("hourglass", **{"MODEL.STACKED_HOURGLASS_NET.CHANNELS_LAST": False})
    assert not build_backbone(nchw).channels_last


def test_targets_are_built_on_the_instances_device():
    """No tensor of the target building is created off the model's device (``tests/_fake_device.py``: a fake
    second device checked as CUDA checks devices), inside the model and in the mapper's call."""
    from _fake_device import FAKE, fake_device

    cfg = hg_cfg(AUG_ROTATION_PROB=1.0)
    model = build_model(cfg).train()
    data = _inputs(n_images=2)
    with fake_device():
        model.to(FAKE)
        losses = model(data)  # targets built inside the model (plain DatasetMapper inputs)
        assert all(v.device == FAKE and torch.isfinite(v).item() for v in losses.values())
        inst = data[0]["instances"].to(FAKE)
        targets = model.crop_targets(inst)  # the mapper's call
        assert all(v.device == FAKE for v in targets.values())
