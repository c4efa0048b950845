"""CenterNet (objects as points): targets (also from the mapper), decoding, end-to-end training, renamed keys,
export, official-checkpoint conversion."""
import copy
import importlib.util
import math
import os

import pytest
import torch

from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from conftest import REPO_ROOT, tiny_cfg
from segx.checkpoint.centernet import official_to_segx, segx_to_official
from segx.config.centernet import RENAMED_KEYS
from segx.data import ensure_builtin_dataset
from segx.data.mappers import build_mapper
from segx.data.mappers.centernet import CenterNetMapper
from segx.modeling.keypoints import CenterTargets, centernet_decode, gaussian_radius
from segx.modeling.meta_arch.centernet import CenterNet
from test_cornernet import assert_old_key_names_the_new_key

CONFIG = "configs/CenterNet/centernet_R_18_shapes.yaml"


def _cfg(**overrides):
    """A tiny CPU model: ResNet-18 at width 8, deconvs 16, head channels 16 (unless overridden)."""
    return tiny_cfg("centernet", **overrides)


def _batch(cfg, n=4, mapper=None):
    ensure_builtin_dataset("segx_shapes_train")
    mapper = mapper or DatasetMapper(cfg, is_train=True)
    return [mapper(copy.deepcopy(d)) for d in DatasetCatalog.get("segx_shapes_train")[:n]]


def _targets(boxes, classes, num_classes=3, image_size=(64, 80), stride=4, **kw):
    """One image's ``CenterTargets`` and their collation alone (flat index into its own map)."""
    builder = CenterTargets(num_classes, stride, **kw)
    t = builder(boxes, classes, image_size)
    return t, builder.collate([t], t["map_size"])


def test_targets_of_one_box():
    # input box 40x24 px at (10,20); stride 4 → output box (2.5, 5)-(12.5, 11): w 10, h 6, centre (7.5, 8)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 44.0], [60.0, 60.0, 60.0, 70.0]])  # the second has zero width
    t, batch = _targets(boxes, torch.tensor([2, 0]))
    heat = t["heatmap"]
    assert t["map_size"] == (16, 20) and heat.shape == (3, 16, 20) and heat[0].sum() == 0 and heat[1].sum() == 0
    assert heat[2, 8, 7] == 1 and (heat[2] == 1).sum() == 1
    assert t["points"].tolist() == [[7, 8]] and batch["index"].tolist() == [8 * 20 + 7]
    assert batch["batch"].tolist() == [0]
    torch.testing.assert_close(t["size"], torch.tensor([[10.0, 6.0]]))
    torch.testing.assert_close(t["offset"], torch.tensor([[0.5, 0.0]]))
    r = max(0, int(gaussian_radius(math.ceil(6.0), math.ceil(10.0), 0.7, "original")))  # 2.8 × 0.736 = 2.06 → 2
    assert r == 2 and (heat[2] > 0).sum() == (2 * r + 1) ** 2
    r_c = max(0, int(gaussian_radius(6, 10, 0.7, "corrected")))  # min(0.69, 0.61, 0.74) → 0: one pixel
    t_c, _ = _targets(boxes, torch.tensor([2, 0]), radius_variant="corrected")
    assert r_c == 0 and (t_c["heatmap"][2] > 0).sum() == 1
    # boxes are clipped to the map (official: to W-1 / H-1 in output pixels)
    t2, _ = _targets(torch.tensor([[-8.0, -8.0, 200.0, 12.0]]), torch.tensor([0]), 1)
    torch.testing.assert_close(t2["size"], torch.tensor([[19.0, 3.0]]))
    empty, batch = _targets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert empty["heatmap"].sum() == 0 and empty["points"].shape == (0, 2) and batch["index"].numel() == 0
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        _targets(boxes[:1], torch.tensor([3]))


def test_targets_of_a_padded_batch():
    """Each image's map is its size padded to the model's divisibility / stride; the batch pads and indexes them."""
    builder = CenterTargets(1, 4, 32)
    small = builder(torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.tensor([0]), (60, 90))
    large = builder(torch.tensor([[4.0, 4.0, 20.0, 20.0]]), torch.tensor([0]), (128, 160))
    assert small["map_size"] == (16, 24) and large["map_size"] == (32, 40)
    batch = builder.collate([small, large], (32, 40))
    assert batch["heatmap"].shape == (2, 1, 32, 40) and batch["heatmap"][0, :, 16:].sum() == 0
    assert batch["index"].tolist() == [6 * 40 + 6, 3 * 40 + 3] and batch["batch"].tolist() == [0, 1]


def test_mapper_targets_equal_model_targets():
    cfg = _cfg()
    mapper = build_mapper(cfg, is_train=True)
    assert isinstance(mapper, CenterNetMapper)
    batch = _batch(cfg, 3, mapper=mapper)
    model = build_model(cfg).train()
    for x in batch:
        inst = x["instances"]
        own = model.target_builder(inst.gt_boxes.tensor, inst.gt_classes, tuple(x["image"].shape[-2:]))
        assert x["targets"]["map_size"] == own["map_size"]
        for key in ("heatmap", "points", "size", "offset"):
            assert torch.equal(x["targets"][key], own[key]), key
    with EventStorage(0):
        with_targets = model(batch)
        built_here = model([{k: v for k, v in x.items() if k != "targets"} for x in batch])
    assert {k: float(v) for k, v in with_targets.items()} == {k: float(v) for k, v in built_here.items()}


@pytest.mark.parametrize("old", sorted(RENAMED_KEYS))
def test_old_config_key_names_the_new_key(old, tmp_path):
    assert_old_key_names_the_new_key(old, RENAMED_KEYS[old], CONFIG, tmp_path)


def test_decode_planted_heatmap_returns_planted_boxes():
    # two objects: class 1 at (5, 3) with offset (0.25, 0.5), size 4x2; class 0 at (10, 8), offset 0, size 6x6
    heat = torch.zeros(1, 3, 12, 16)
    wh, off = torch.zeros(1, 2, 12, 16), torch.zeros(1, 2, 12, 16)
    planted = [(1, 5, 3, 0.25, 0.5, 4.0, 2.0, 0.9), (0, 10, 8, 0.0, 0.0, 6.0, 6.0, 0.6)]
    for c, x, y, dx, dy, w, h, s in planted:
        heat[0, c, y - 1 : y + 2, x - 1 : x + 2] = s * 0.5  # a blob around the peak: only the peak survives
        heat[0, c, y, x] = s
        off[0, :, y, x] = torch.tensor([dx, dy])
        wh[0, :, y, x] = torch.tensor([w, h])
    boxes, scores, classes = centernet_decode(heat, wh, off, k=5)
    assert scores.shape == (1, 5)
    torch.testing.assert_close(scores[0, :2], torch.tensor([0.9, 0.6]))
    assert classes[0, :2].tolist() == [1, 0] and (scores[0, 2:] == 0).all()
    torch.testing.assert_close(boxes[0, 0], torch.tensor([5.25 - 2, 3.5 - 1, 5.25 + 2, 3.5 + 1]))
    torch.testing.assert_close(boxes[0, 1], torch.tensor([7.0, 5.0, 13.0, 11.0]))


def test_model_inference_scales_planted_peaks_to_input_pixels():
    cfg = _cfg(**{"MODEL.CENTERNET.NUM_CLASSES": 2, "MODEL.CENTERNET.SCORE_THRESH_TEST": 0.5})
    model = build_model(cfg).eval()
    heat = torch.zeros(1, 2, 16, 16)
    heat[0, 1, 6, 9] = 0.95
    wh, off = torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16)
    wh[0, :, 6, 9] = torch.tensor([5.0, 3.0])
    off[0, :, 6, 9] = torch.tensor([0.5, 0.25])
    planted = {"heatmap": torch.logit(heat), "size": wh, "offset": off}
    model.predict = lambda features, images: {"deconv": planted}
    out = model([{"image": torch.zeros(3, 64, 64), "height": 128, "width": 128}])[0]["instances"]
    assert len(out) == 1 and out.pred_classes.tolist() == [1] and float(out.scores) == pytest.approx(0.95)
    # centre (9.5, 6.25) ± (2.5, 1.5) output px, ×4 → input px, ×2 → the requested 128×128
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor([[7.0, 4.75, 12.0, 7.75]]) * 8)


@pytest.mark.slow
def test_training_on_synthetic_data_lowers_every_loss():
    torch.manual_seed(0)
    cfg = _cfg()
    model = build_model(cfg).train()
    batch = _batch(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    with EventStorage(0):
        for _ in range(40):
            losses = model(batch)
            assert set(losses) == {"loss_heatmap", "loss_size", "loss_offset"}
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            history.append({k: float(v) for k, v in losses.items()})
    for k in history[0]:
        first = sum(h[k] for h in history[:3]) / 3
        last = sum(h[k] for h in history[-3:]) / 3
        assert last < 0.7 * first, f"{k} did not fall: {first:.3f} → {last:.3f}"


def test_empty_ground_truth_and_missing_instances():
    cfg = _cfg()
    model = build_model(cfg).train()
    empty = Instances((64, 64), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))
    with EventStorage(0):
        losses = model([{"image": torch.rand(3, 64, 64) * 255, "instances": empty}])
        assert float(losses["loss_size"]) == 0 and float(losses["loss_offset"]) == 0
        assert torch.isfinite(losses["loss_heatmap"]) and float(losses["loss_heatmap"]) > 0
        sum(losses.values()).backward()
        assert model.hm[-1].bias.grad is not None
        with pytest.raises(ValueError, match="input 0 .* has no \\['instances'\\]"):
            model([{"image": torch.zeros(3, 64, 64)}])


def test_inference_output_fields_and_topk():
    cfg = _cfg(**{"MODEL.CENTERNET.DETECTIONS_PER_IMAGE": 7})
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255, "height": 32, "width": 48}])
    inst = out[0]["instances"]
    assert inst.image_size == (32, 48) and len(inst) == 7
    assert {"pred_boxes", "scores", "pred_classes"} <= set(inst.get_fields())
    assert (inst.scores[:-1] >= inst.scores[1:]).all()
    raw = model.inference([{"image": torch.rand(3, 64, 96) * 255}], do_postprocess=False)[0]
    assert isinstance(raw, Instances) and raw.image_size == (64, 96)


def test_hourglass_backbone_heads_per_stack():
    cfg = _cfg(**{
        "MODEL.BACKBONE.NAME": "build_hourglass_net_backbone", "MODEL.CENTERNET.IN_FEATURES": ["hg0", "hg1"],
        "MODEL.HOURGLASS_NET.STEM_CHANNELS": 8, "MODEL.HOURGLASS_NET.DIMS": [16, 16, 24], "MODEL.HOURGLASS_NET.MODULES": [1, 1, 1],
        "MODEL.HOURGLASS_NET.OUT_CHANNELS": 16,
    })
    model = build_model(cfg)
    keys = set(model.state_dict())
    assert {"hm.0.0.weight", "hm.1.2.bias", "wh.1.2.weight", "reg.0.0.weight"} <= keys
    assert float(model.hm[1][2].bias[0]) == pytest.approx(-2.19)
    with EventStorage(0):
        losses = model(_batch(cfg, 2))
    assert all(torch.isfinite(v) for v in losses.values())
    fresh = build_model(cfg).eval()
    with torch.no_grad():
        inst = fresh([{"image": torch.rand(3, 64, 64) * 255}])[0]["instances"]
    # peaks of the last stack's heatmap (zero-score non-peaks are dropped by SCORE_THRESH_TEST = 0)
    assert 0 < len(inst) <= cfg.MODEL.CENTERNET.DETECTIONS_PER_IMAGE and (inst.scores > 0).all()


def _dla_cfg(up_conv="dcn"):
    return _cfg(**{"MODEL.BACKBONE.NAME": "build_dla34_dcn_backbone", "MODEL.CENTERNET.IN_FEATURES": ["dla"],
                   "MODEL.DLA.WIDTH_DIV": 4, "MODEL.DLA.UP_CONV": up_conv})


def _randomise(model, seed):
    """Random values in every parameter and BN buffer, so a conversion error cannot hide behind an init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model


def _converter():
    spec = importlib.util.spec_from_file_location("convert_centernet_to_d2", os.path.join(REPO_ROOT, "tools", "convert_centernet_to_d2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("variant", ["resnet", "dla"])
def test_converter_round_trip(tmp_path, variant):
    cfg = _cfg() if variant == "resnet" else _dla_cfg()
    model = _randomise(build_model(cfg), 1).eval()
    official = segx_to_official(model.state_dict())
    expected = {
        "resnet": ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.1.weight",
                   "deconv_layers.0.weight", "deconv_layers.7.bias", "hm.0.weight", "hm.2.bias", "wh.2.weight", "reg.0.bias"],
        "dla": ["base.base_layer.0.weight", "base.level2.tree1.conv1.weight", "base.level3.tree2.root.conv.weight",
                "base.level5.project.1.weight", "dla_up.ida_0.proj_1.conv.conv_offset_mask.weight",
                "dla_up.ida_2.node_3.actf.0.running_var", "ida_up.up_2.weight", "hm.2.bias"],
    }[variant]
    missing = [k for k in expected if k not in official]
    assert not missing, f"official keys not produced: {missing}"
    assert not [k for k in official if k.startswith("backbone.") or "offset_conv" in k]
    # as the official file: {'epoch', 'state_dict'} with DataParallel's 'module.' prefix (+ DLA's unused fc)
    ckpt = {"epoch": 140, "state_dict": {"module." + k: v for k, v in official.items()}}
    if variant == "dla":
        ckpt["state_dict"]["module.base.fc.weight"] = torch.zeros(10, 512 // 4, 1, 1)
    src, dst = tmp_path / "official.pth", tmp_path / "segx.pth"
    torch.save(ckpt, src)
    _converter().main([str(src), str(dst)])
    fresh = _randomise(build_model(cfg), 2).eval()
    fresh.load_state_dict(torch.load(dst, weights_only=False)["model"])  # strict: every key, nothing extra
    x = [{"image": torch.rand(3, 64, 64) * 255}]
    with torch.no_grad():
        images = model.preprocess_image(x)
        a = model.predict(model.extract_features(images, x), images)["deconv" if variant == "resnet" else "dla"]
        b = fresh.predict(fresh.extract_features(images, x), images)["deconv" if variant == "resnet" else "dla"]
    assert set(a) == {"heatmap", "size", "offset"}
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert official_to_segx(official).keys() == model.state_dict().keys()
    back = tmp_path / "back.pth"
    _converter().main([str(dst), str(back), "--to-official"])
    again = torch.load(back, weights_only=False)
    assert set(again) == {"epoch", "state_dict"} and again["state_dict"].keys() == official.keys()
    with pytest.raises(SystemExit, match="no such file"):
        _converter().main([str(tmp_path / "nope.pth"), str(dst)])
    with pytest.raises(ValueError, match="not a CenterNet"):
        official_to_segx({"conv1.weight": torch.zeros(1)})


def test_converted_dcn_equals_dcnv2_semantics():
    """DCNv2's layer: offsets = first 2/3 of conv_offset_mask's output, mask = sigmoid(last third), no 2×."""
    from torchvision.ops import deform_conv2d

    model = _randomise(build_model(_dla_cfg()), 3).eval()
    official = segx_to_official(model.state_dict())
    layer = model.backbone.dla_up.ida_0.proj_1.conv
    p = "dla_up.ida_0.proj_1.conv."
    x = torch.randn(1, layer.weight.shape[1], 5, 6)
    out = torch.nn.functional.conv2d(x, official[p + "conv_offset_mask.weight"], official[p + "conv_offset_mask.bias"], padding=1)
    o1, o2, m = torch.chunk(out, 3, dim=1)
    ref = deform_conv2d(x, torch.cat([o1, o2], 1), official[p + "weight"], official[p + "bias"], padding=1, mask=torch.sigmoid(m))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)


def test_export_parity_resnet(tmp_path):
    pytest.importorskip("onnxruntime")
    from segx.export import export_model

    model = _randomise(build_model(_cfg()), 4).eval()
    image = torch.rand(3, 64, 64) * 255
    report = export_model(model, image, str(tmp_path))
    assert report.output_shapes[0][0] == model.detections_per_image
    assert report.torchscript_max_diff <= 1e-4
    assert report.onnx_error is None, report.onnx_error
    assert report.onnx_max_diff <= 1e-3


def test_export_parity_dla(tmp_path):
    """TorchScript for the deformable DLA (torchvision's deform_conv2d has no ONNX symbolic); ONNX for the
    plain-conv up-path."""
    from segx.export import export_model

    image = torch.rand(3, 64, 64) * 255
    model = _randomise(build_model(_dla_cfg("dcn")), 5).eval()
    report = export_model(model, image, str(tmp_path / "dcn"), formats=("torchscript",))
    assert report.torchscript_max_diff <= 1e-4
    pytest.importorskip("onnxruntime")
    model = _randomise(build_model(_dla_cfg("conv")), 5).eval()
    report = export_model(model, image, str(tmp_path / "conv"))
    assert report.torchscript_max_diff <= 1e-4
    assert report.onnx_error is None, report.onnx_error
    assert report.onnx_max_diff <= 1e-3


def test_bad_options():
    with pytest.raises(ValueError, match="GAUSSIAN_RADIUS_VARIANT"):
        build_model(_cfg(**{"MODEL.CENTERNET.GAUSSIAN_RADIUS_VARIANT": "fixed"}))
    with pytest.raises(ValueError, match="not among the backbone's outputs"):
        build_model(_cfg(**{"MODEL.CENTERNET.IN_FEATURES": ["res5"]}))
    with pytest.raises(ValueError, match="UP_CONV"):
        build_model(_cfg(**{"MODEL.BACKBONE.NAME": "build_dla34_dcn_backbone", "MODEL.DLA.UP_CONV": "dcn2"}))
    assert isinstance(build_model(_cfg()), CenterNet)
