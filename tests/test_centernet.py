"""CenterNet (objects as points): targets (also from the mapper; explicit devices), decoding (also of non-finite
head outputs), the official test-time letterbox and its inverse, end-to-end training, renamed keys, export,
official-checkpoint conversion (res / resdcn / DLA layouts, refusals against --config-file)."""
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

from conftest import REPO_ROOT, load_cfg, tiny_cfg
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


def _resdcn_cfg(up_conv="dcn"):
    """The resdcn layout (resnet_dcn.py) at tiny widths: a 3×3 (deformable) conv before each deconv."""
    return _cfg(**{"MODEL.RESNET_DECONV.UP_CONV": up_conv, "MODEL.RESNET_DECONV.DECONV_CHANNELS": [32, 16, 16]})


def _dump(cfg, path):
    """``cfg`` written as a YAML file (what ``--config-file`` takes); returns the path as a string."""
    with open(path, "w") as f:
        f.write(cfg.dump())
    return str(path)


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


@pytest.mark.parametrize("variant", ["resnet", "resdcn", "dla"])
def test_converter_round_trip(tmp_path, variant):
    cfg = {"resnet": _cfg, "resdcn": _resdcn_cfg, "dla": _dla_cfg}[variant]()
    model = _randomise(build_model(cfg), 1).eval()
    official = segx_to_official(model.state_dict())
    # official key names: msra_resnet.py, resnet_dcn.py (DCN at deconv_layers.0/6/12, BN 1/4/7/10/13/16,
    # ConvTranspose 3/9/15), pose_dla_dcn.py
    expected = {
        "resnet": ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.1.weight",
                   "deconv_layers.0.weight", "deconv_layers.7.bias", "hm.0.weight", "hm.2.bias", "wh.2.weight", "reg.0.bias"],
        "resdcn": ["conv1.weight", "layer4.1.bn2.running_var", "deconv_layers.0.weight", "deconv_layers.0.bias",
                   "deconv_layers.0.conv_offset_mask.weight", "deconv_layers.0.conv_offset_mask.bias",
                   "deconv_layers.1.running_mean", "deconv_layers.3.weight", "deconv_layers.4.num_batches_tracked",
                   "deconv_layers.6.conv_offset_mask.weight", "deconv_layers.12.weight", "deconv_layers.15.weight",
                   "deconv_layers.16.running_var", "hm.0.weight", "wh.2.bias"],
        "dla": ["base.base_layer.0.weight", "base.level2.tree1.conv1.weight", "base.level3.tree2.root.conv.weight",
                "base.level5.project.1.weight", "dla_up.ida_0.proj_1.conv.conv_offset_mask.weight",
                "dla_up.ida_2.node_3.actf.0.running_var", "ida_up.up_2.weight", "hm.2.bias"],
    }[variant]
    if variant == "resdcn":
        assert not any(k.startswith("deconv_layers.") and k.split(".")[1] in ("2", "5", "18") for k in official)
        assert official["deconv_layers.0.weight"].shape[1:] == (cfg.MODEL.TV_RESNET.WIDTH * 8, 3, 3)
        # resdcn's DCN keeps DCNv2's own sigmoid mask: its weights are copied, not halved (DLA's are)
        assert torch.equal(official["deconv_layers.0.weight"], model.state_dict()["backbone.deconv_layers.0.weight"])
    missing = [k for k in expected if k not in official]
    assert not missing, f"official keys not produced: {missing}"
    assert not [k for k in official if k.startswith("backbone.") or "offset_conv" in k]
    # as the official file: {'epoch', 'state_dict'} with DataParallel's 'module.' prefix (+ DLA's unused fc)
    ckpt = {"epoch": 140, "state_dict": {"module." + k: v for k, v in official.items()}}
    if variant == "dla":
        ckpt["state_dict"]["module.base.fc.weight"] = torch.zeros(10, 512 // 4, 1, 1)
    src, dst = tmp_path / "official.pth", tmp_path / "segx.pth"
    torch.save(ckpt, src)
    config = _dump(cfg, tmp_path / "config.yaml")
    _converter().main([str(src), str(dst), "--config-file", config])
    fresh = _randomise(build_model(cfg), 2).eval()
    fresh.load_state_dict(torch.load(dst, weights_only=False)["model"])  # strict: every key, nothing extra
    x = [{"image": torch.rand(3, 64, 64) * 255}]
    with torch.no_grad():
        images = model.preprocess_image(x)
        a = model.predict(model.extract_features(images, x), images)["dla" if variant == "dla" else "deconv"]
        b = fresh.predict(fresh.extract_features(images, x), images)["dla" if variant == "dla" else "deconv"]
    assert set(a) == {"heatmap", "size", "offset"}
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert official_to_segx(official).keys() == model.state_dict().keys()
    back = tmp_path / "back.pth"
    _converter().main([str(dst), str(back), "--to-official", "--config-file", config])
    again = torch.load(back, weights_only=False)
    assert set(again) == {"epoch", "state_dict"} and again["state_dict"].keys() == official.keys()
    with pytest.raises(SystemExit, match="no such file"):
        _converter().main([str(tmp_path / "nope.pth"), str(dst), "--config-file", config])
    with pytest.raises(SystemExit):  # --config-file is required
        _converter().main([str(src), str(dst)])
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
    from segx.export import export_model, export_tolerances

    model = _randomise(build_model(_cfg()), 4).eval()
    image = torch.rand(3, 64, 64) * 255
    report = export_model(model, image, str(tmp_path))
    assert report.output_shapes[0][0] == model.detections_per_image
    assert not report.exceeds(export_tolerances(model)), report.summary()
    assert report.onnx_error is None, report.onnx_error


def test_export_parity_dla(tmp_path):
    """TorchScript for the deformable DLA; ONNX for the plain-conv up-path (the deformable DLA's ONNX, through the
    pure-PyTorch deformable conv: tests/test_export_any_size.py, slow)."""
    from segx.export import export_model, export_tolerances

    image = torch.rand(3, 64, 64) * 255
    model = _randomise(build_model(_dla_cfg("dcn")), 5).eval()
    report = export_model(model, image, str(tmp_path / "dcn"), formats=("torchscript",))
    assert not report.exceeds(export_tolerances(model)), report.summary()
    pytest.importorskip("onnxruntime")
    model = _randomise(build_model(_dla_cfg("conv")), 5).eval()
    report = export_model(model, image, str(tmp_path / "conv"))
    assert report.onnx_error is None, report.onnx_error
    assert not report.exceeds(export_tolerances(model)), report.summary()


def test_bad_options():
    with pytest.raises(ValueError, match="GAUSSIAN_RADIUS_VARIANT"):
        build_model(_cfg(**{"MODEL.CENTERNET.GAUSSIAN_RADIUS_VARIANT": "fixed"}))
    with pytest.raises(ValueError, match="not among the backbone's outputs"):
        build_model(_cfg(**{"MODEL.CENTERNET.IN_FEATURES": ["res5"]}))
    with pytest.raises(ValueError, match="UP_CONV"):
        build_model(_cfg(**{"MODEL.BACKBONE.NAME": "build_dla34_dcn_backbone", "MODEL.DLA.UP_CONV": "dcn2"}))
    assert isinstance(build_model(_cfg()), CenterNet)


# ---------------------------------------------------------------------------- official checkpoints (issue 18, 10)
def test_converter_refuses_a_checkpoint_of_another_layout_with_the_lists(tmp_path):
    """A resdcn_18 file against the plain-deconv res_18 config: the 27 unexpected and 9 mis-shaped tensors that
    used to load with warnings (a half-random model) are listed, and nothing is written."""
    resdcn = build_model(load_cfg("configs/CenterNet/centernet_R_18_dcn_512.yaml"))
    src, dst = tmp_path / "ctdet_coco_resdcn18.pth", tmp_path / "out.pth"
    torch.save({"epoch": 140, "state_dict": segx_to_official(resdcn.state_dict())}, src)
    with pytest.raises(SystemExit) as err:
        _converter().main([str(src), str(dst), "--config-file",
                           os.path.join(REPO_ROOT, "configs/CenterNet/centernet_R_18_512.yaml")])
    message = str(err.value)
    assert "27 unexpected" in message and "9 mis-shaped" in message and "missing" not in message
    assert "backbone.deconv_layers.0.offset_conv.weight" in message
    assert "backbone.deconv_layers.0.weight: (256, 512, 3, 3) vs (512, 256, 4, 4)" in message
    assert "hm.0.weight: (64, 64, 3, 3) vs (64, 256, 3, 3)" in message
    assert not dst.exists()
    # the right config takes it; a head of another class count is refused (mis-shaped hm.2), --opts fixes it
    ok = os.path.join(REPO_ROOT, "configs/CenterNet/centernet_R_18_dcn_512.yaml")
    _converter().main([str(src), str(dst), "--config-file", ok])
    assert dst.exists()
    with pytest.raises(SystemExit, match=r"2 mis-shaped.*hm\.2\.weight: \(80, 64, 1, 1\) vs \(20, 64, 1, 1\)"):
        _converter().main([str(src), str(dst), "--config-file", ok, "--opts", "MODEL.CENTERNET.NUM_CLASSES", "20"])
    # a missing tensor is named too (BN counters excepted: some releases lack them)
    sd = segx_to_official(resdcn.state_dict())
    del sd["layer1.0.bn1.num_batches_tracked"], sd["wh.2.bias"]
    torch.save({"state_dict": sd}, src)
    with pytest.raises(SystemExit, match=r"1 missing .*\['wh\.2\.bias'\]"):
        _converter().main([str(src), str(dst), "--config-file", ok])


def test_resdcn_up_path_layout_and_init():
    """resnet_dcn.py's up-stage: DCN (DCNv2 mask, bias) → BN → ReLU → ConvTranspose 4×4/2 (bilinear kernel into
    output channel 0) → BN → ReLU; channels from MODEL.RESNET_DECONV.DECONV_CHANNELS."""
    from torchvision.ops import deform_conv2d

    from segx.layers.deform_conv import DeformConvWithOffset

    model = build_model(_resdcn_cfg()).eval()
    layers = model.backbone.deconv_layers
    kinds = [type(m).__name__ for m in layers]
    assert kinds == ["DeformConvWithOffset", "BatchNorm2d", "ReLU", "ConvTranspose2d", "BatchNorm2d", "ReLU"] * 3
    assert [layers[i].weight.shape[0] for i in (0, 6, 12)] == [32, 16, 16]
    shape = model.backbone.output_shape()["deconv"]
    assert shape.channels == 16 and shape.stride == 4
    dcn = layers[0]
    assert isinstance(dcn, DeformConvWithOffset) and dcn.mask_scale == 1.0 and dcn.bias is not None
    # fill_up_weights for k = 4: f = 2, c = 0.75, 1 − |i/2 − 0.75| = (0.25, 0.75, 0.75, 0.25), outer product
    r = torch.tensor([0.25, 0.75, 0.75, 0.25])
    up = layers[3].weight
    for c in range(up.shape[0]):
        torch.testing.assert_close(up[c, 0], r[:, None] * r[None, :])
    assert not torch.allclose(up[:, 1], (r[:, None] * r[None, :]).expand_as(up[:, 1]))  # only output channel 0
    # DCNv2 semantics with random offsets/masks: offsets = first 2/3 of offset_conv's output, mask = sigmoid
    _randomise(model, 7)
    x = torch.randn(1, dcn.weight.shape[1], 6, 5)
    o1, o2, m = torch.chunk(dcn.offset_conv(x), 3, dim=1)
    ref = deform_conv2d(x, torch.cat([o1, o2], 1), dcn.weight, dcn.bias, padding=1, mask=torch.sigmoid(m))
    with torch.no_grad():
        torch.testing.assert_close(dcn(x), ref, rtol=1e-5, atol=1e-5)
    # the plain-conv variant (ONNX-exportable) and the msra layout are unchanged otherwise
    plain = build_model(_resdcn_cfg("conv")).backbone.deconv_layers
    assert [type(m).__name__ for m in plain][:4] == ["Conv2d", "BatchNorm2d", "ReLU", "ConvTranspose2d"]
    msra = build_model(_cfg()).backbone.deconv_layers
    assert [type(m).__name__ for m in msra] == ["ConvTranspose2d", "BatchNorm2d", "ReLU"] * 3
    with pytest.raises(ValueError, match="MODEL.RESNET_DECONV.UP_CONV"):
        build_model(_cfg(**{"MODEL.RESNET_DECONV.UP_CONV": "dcnv2"}))


# ------------------------------------------------------------------- official test input (issue 18, item 9)
def test_letterbox_of_a_640x427_image_is_the_official_affine():
    """xingyizhou/CenterNet's test pre_process on a 640×427 image: c = (320, 213.5), s = 640, 512² canvas:
    x' = 0.8·x, y' = 0.8·y + 85.2 (get_affine_transform), bilinear, black outside."""
    from segx.data.mappers.centernet import letterbox_affine, letterbox_image

    forward = letterbox_affine((320.0, 213.5), 640.0, (512, 512))
    backward = letterbox_affine((320.0, 213.5), 640.0, (512, 512), inverse=True)
    torch.testing.assert_close(torch.as_tensor(forward),
                               torch.tensor([[0.8, 0, 0], [0, 0.8, 85.2]], dtype=torch.float64))
    torch.testing.assert_close(torch.as_tensor(backward),
                               torch.tensor([[1.25, 0, 0], [0, 1.25, -106.5]], dtype=torch.float64))
    # a linear ramp I = 0.5x + 2y + 10 comes out as I(1.25j, 1.25i − 106.5) (bilinear is exact on it; the
    # sampling positions are multiples of 1/4 px, exact in cv2's 1/32-px table)
    ys, xs = torch.meshgrid(torch.arange(427.0), torch.arange(640.0), indexing="ij")
    ramp = (0.5 * xs + 2 * ys + 10)[..., None].expand(427, 640, 3).numpy().astype("float32")
    canvas, record = letterbox_image(ramp, 512)
    assert record == {"center": (320.0, 213.5), "scale": 640.0, "size": (512, 512)} and canvas.shape == (512, 512, 3)
    canvas = torch.from_numpy(canvas[..., 0])
    i, j = torch.meshgrid(torch.arange(86.0, 427.0), torch.arange(512.0), indexing="ij")
    torch.testing.assert_close(canvas[86:427], 0.5 * 1.25 * j + 2 * (1.25 * i - 106.5) + 10)
    assert (canvas[:85] == 0).all() and (canvas[427:] == 0).all()  # the black bands: rows 0-84, 427-511
    # row 85 samples y = −0.25: ¾ of image row 0, ¼ of the black border
    torch.testing.assert_close(canvas[85], 0.75 * (0.5 * 1.25 * torch.arange(512.0) + 10))


def test_mapper_letterboxes_the_file_and_the_model_normalises_with_the_coco_statistics(tmp_path):
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    path = str(tmp_path / "640x427.png")
    cv2.imwrite(path, np.full((427, 640, 3), 200, dtype=np.uint8))
    cfg = load_cfg("configs/CenterNet/centernet_R_18_dcn_512.yaml")
    assert cfg.MODEL.CENTERNET.TEST_INPUT == "letterbox" and cfg.MODEL.CENTERNET.TEST_INPUT_SIZE == 512
    # the COCO dataset's exact statistics (datasets/dataset/coco.py), × 255, BGR
    torch.testing.assert_close(torch.tensor(cfg.MODEL.PIXEL_MEAN),
                               255 * torch.tensor([0.40789654, 0.44719302, 0.47026115]))
    torch.testing.assert_close(torch.tensor(cfg.MODEL.PIXEL_STD),
                               255 * torch.tensor([0.28863828, 0.27408164, 0.27809835]))
    x = build_mapper(cfg, is_train=False)({"file_name": path, "height": 427, "width": 640, "image_id": 3,
                                           "annotations": []})
    assert x["image"].shape == (3, 512, 512) and x["image"].dtype == torch.uint8
    assert (x["height"], x["width"]) == (427, 640) and "annotations" not in x
    assert x["letterbox"] == {"center": (320.0, 213.5), "scale": 640.0, "size": (512, 512)}
    col = x["image"][0, :, 100].int()
    assert (col[:85] == 0).all() and col[85] == 150 and (col[86:427] == 200).all() and (col[427:] == 0).all()
    model = build_model(_cfg(**{"MODEL.PIXEL_MEAN": cfg.MODEL.PIXEL_MEAN, "MODEL.PIXEL_STD": cfg.MODEL.PIXEL_STD}))
    net = model.preprocess_image([x]).tensor[0]
    assert net.shape == (3, 512, 512)  # no extra padding: 512 is a multiple of 32
    for c, (m, s) in enumerate(zip((0.40789654, 0.44719302, 0.47026115), (0.28863828, 0.27408164, 0.27809835))):
        assert float(net[c, 0, 0]) == pytest.approx((0 / 255 - m) / s, abs=1e-5)  # black padding, normalised
        assert float(net[c, 200, 100]) == pytest.approx((200 / 255 - m) / s, abs=1e-5)
    # "resize" keeps DatasetMapper's input (the shapes configs' choice)
    resize = load_cfg("configs/CenterNet/centernet_R_18_dcn_512.yaml", **{"MODEL.CENTERNET.TEST_INPUT": "resize"})
    y = build_mapper(resize, is_train=False)({"file_name": path, "height": 427, "width": 640, "image_id": 3})
    assert y["image"].shape == (3, 342, 512) and "letterbox" not in y
    assert load_cfg(CONFIG).MODEL.CENTERNET.TEST_INPUT == "resize"
    with pytest.raises(ValueError, match="MODEL.CENTERNET.TEST_INPUT"):
        build_mapper(load_cfg(CONFIG, **{"MODEL.CENTERNET.TEST_INPUT": "pad"}), is_train=False)


def test_letterboxed_boxes_map_back_by_the_inverse_affine():
    """An 80×50 image letterboxed into 64²: c = (40, 25), s = 80, so x = 1.25·x', y = 1.25·y' − 15; boxes are not
    clipped (official ctdet_post_process)."""
    cfg = _cfg(**{"MODEL.CENTERNET.NUM_CLASSES": 2, "MODEL.CENTERNET.SCORE_THRESH_TEST": 0.5,
                  "MODEL.CENTERNET.TEST_INPUT": "letterbox"})
    model = build_model(cfg).eval()
    heat = torch.zeros(1, 2, 16, 16)
    heat[0, 1, 6, 9] = 0.95
    heat[0, 0, 1, 1] = 0.9
    wh, off = torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16)
    wh[0, :, 6, 9] = torch.tensor([5.0, 3.0])
    off[0, :, 6, 9] = torch.tensor([0.5, 0.25])
    wh[0, :, 1, 1] = torch.tensor([6.0, 6.0])  # reaches above the image: y0 < 0 after the inverse
    planted = {"heatmap": torch.logit(heat), "size": wh, "offset": off}
    model.predict = lambda features, images: {"deconv": planted}
    record = {"center": (40.0, 25.0), "scale": 80.0, "size": (64, 64)}
    x = {"image": torch.zeros(3, 64, 64), "height": 50, "width": 80, "letterbox": record}
    out = model([x])[0]["instances"]
    assert out.image_size == (50, 80) and out.pred_classes.tolist() == [1, 0]
    # input px: (9.5 ± 2.5, 6.25 ± 1.5) × 4 = (28, 19, 48, 31); (1 ± 3) × 4 = (−8, −8, 16, 16)
    expected = torch.tensor([[28.0, 19.0, 48.0, 31.0], [-8.0, -8.0, 16.0, 16.0]]) * 1.25
    expected -= torch.tensor([0, 15.0, 0, 15.0])
    torch.testing.assert_close(out.pred_boxes.tensor, expected)  # (35, 8.75, 60, 23.75), (−10, −25, 20, 5)
    # without the record (DefaultPredictor, hand-made inputs) the input is used as given, with one warning
    plain = model([{"image": torch.zeros(3, 64, 64), "height": 128, "width": 128}])[0]["instances"]
    torch.testing.assert_close(plain.pred_boxes.tensor[0], torch.tensor([7.0, 4.75, 12.0, 7.75]) * 8)
    assert model._warned_no_letterbox


# ----------------------------------------------------------------- no non-finite boxes (issue 18, item 7)
def test_decoding_clamps_non_finite_and_huge_regressions():
    """Sizes and offsets read at the peaks: NaN → 0, ±inf and huge values → ±REGRESSION_CLAMP (1e4 map px)."""
    from segx.modeling.keypoints.decoding import REGRESSION_CLAMP

    heat = torch.zeros(1, 1, 8, 8)
    wh, off = torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)
    cases = [((1, 1), (float("inf"), 2.0), (0.0, 0.0)), ((5, 1), (float("nan"), -float("inf")), (0.5, 0.0)),
             ((1, 5), (1e30, 4.0), (float("nan"), 1e38)), ((5, 5), (3.0, 3.0), (-float("inf"), 0.25))]
    for n, ((x, y), size, offset) in enumerate(cases):
        heat[0, 0, y, x] = 0.9 - 0.1 * n
        wh[0, :, y, x] = torch.tensor(size)
        off[0, :, y, x] = torch.tensor(offset)
    boxes, scores, _ = centernet_decode(heat, wh, off, k=4)
    assert torch.isfinite(boxes).all()
    b = REGRESSION_CLAMP
    expected = torch.tensor([
        [1 - b / 2, 1 - 1, 1 + b / 2, 1 + 1],  # w = inf → 1e4
        [5.5, 1 + b / 2, 5.5, 1 - b / 2],  # w = NaN → 0, h = −inf → −1e4 (inverted, as the official keeps it)
        [1 - b / 2, 5 + b - 2, 1 + b / 2, 5 + b + 2],  # w = 1e30 → 1e4, dx = NaN → 0, dy = 1e38 → 1e4
        [5 - b - 1.5, 5.25 - 1.5, 5 - b + 1.5, 5.25 + 1.5],  # dx = −inf → −1e4
    ])
    torch.testing.assert_close(boxes[0], expected)


@pytest.mark.parametrize("scale", [1e3, 1e20, 1e38])
@pytest.mark.parametrize("test_input", ["resize", "letterbox"])
def test_scaled_up_head_weights_give_finite_boxes(scale, test_input):
    """A random model whose size / offset heads are scaled up (×1e38 overflows to ±inf and NaN in the head; before
    the clamp detectron2's Boxes.clip raised 'Box tensor contains infinite or NaN!')."""
    model = build_model(_cfg(**{"MODEL.CENTERNET.TEST_INPUT": test_input})).eval()
    with torch.no_grad():
        for head in (model.wh, model.reg):
            for m in head.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.weight.mul_(scale)
    x = {"image": torch.rand(3, 64, 80) * 255, "height": 128, "width": 160}
    if test_input == "letterbox":
        x["letterbox"] = {"center": (80.0, 64.0), "scale": 160.0, "size": (64, 80)}
    with torch.no_grad():
        raw = model.inference([x], do_postprocess=False)[0]
        out = model([x])[0]["instances"]
    assert len(raw) > 0 and torch.isfinite(raw.pred_boxes.tensor).all()
    assert torch.isfinite(out.pred_boxes.tensor).all() and torch.isfinite(out.scores).all()


# ---------------------------------------------------------------------------- device audit (issue 18)
def test_targets_create_every_tensor_on_an_explicit_device():
    """With the default device set to "meta", a tensor created without ``device=`` would land there: the per-image
    targets must still be on the CPU and the collated batch on the requested device."""
    boxes, classes = torch.tensor([[10.0, 20.0, 50.0, 44.0], [0.0, 0.0, 30.0, 30.0]]), torch.tensor([2, 0])
    empty_boxes, empty_classes = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    builder = CenterTargets(3, 4, 32)
    previous = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        per_image = [builder(boxes, classes, (64, 80)), builder(empty_boxes, empty_classes, (40, 40))]
        batch = builder.collate(per_image, (16, 24), torch.device("cpu"))
    finally:
        torch.set_default_device(previous)
    for t in per_image:
        assert all(v.device.type == "cpu" for v in t.values() if torch.is_tensor(v))
    assert all(v.device.type == "cpu" for v in batch.values())
    assert batch["index"].tolist() == [8 * 24 + 7, 3 * 24 + 3] and batch["batch"].tolist() == [0, 0]
    # a training step with the model on another device (meta stands in for an accelerator here): CPU targets
    # never meet device tensors in arithmetic (the CUDA training test covers indexing)
    cfg = _cfg()
    model = build_model(cfg).to("meta").train()
    with EventStorage(0):
        losses = model(_batch(cfg, 2))
    assert {v.device.type for v in losses.values()} == {"meta"}
