"""Export at any input size (issue 17): every architecture traced at one size and run at another of a different
aspect ratio; TorchScript and onnxruntime within the tolerance of ``segx.export.EXPORT_TOLERANCES`` (what the README
states) of eager at both sizes. The deformable variants export to ONNX through the pure-PyTorch deformable conv."""
import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from conftest import tiny_cfg
from segx.data.mappers import build_mapper
from segx.export import export_model, export_tolerances, make_tracing_adapter, sample_input, second_size_image

YOLACT_PP = {"MODEL.YOLACT.MASKIOU_ON": True, "MODEL.YOLACT.INPUT_SIZE": 256,
             "MODEL.TV_RESNET.DCN_LAYERS": [0, 2, 2, 2], "MODEL.TV_RESNET.DCN_INTERVAL": 1}
CORNERS = {"MODEL.CORNERNET.NUM_CLASSES": 1, "MODEL.CORNERNET.EMBEDDING_THRESH_TEST": 1e3}
# name -> (tiny_cfg architecture, config or None, overrides); thresholds at 0 keep detections flowing
CASES = {
    "mask_rcnn": ("mask_rcnn", None, {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0}),
    "faster_rcnn": ("mask_rcnn", "configs/MaskRCNN/faster_rcnn_R_18_FPN_scratch.yaml",
                    {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0}),
    "panoptic_fpn": ("mask_rcnn", "configs/PanopticFPN/panoptic_fpn_R_18_FPN_scratch.yaml",
                     {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0}),
    "yolact": ("yolact", None, {"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0}),
    "yolact_plus_dcn": ("yolact", None, dict(YOLACT_PP, **{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0})),
    "cornernet": ("cornernet", None, CORNERS),
    "centernet_triplets": ("cornernet", "configs/CenterNetTriplets/centernet_triplets_hg_small_shapes.yaml", CORNERS),
    "centernet_r18": ("centernet", None, {}),
    "centernet_resnet_dcn": ("centernet", None, {"MODEL.RESNET_DECONV.UP_CONV": "dcn",
                                                 "MODEL.RESNET_DECONV.DECONV_CHANNELS": [32, 16, 16]}),
    "centernet_dla34_dcn": ("centernet", None, {"MODEL.BACKBONE.NAME": "build_dla34_dcn_backbone",
                                                "MODEL.CENTERNET.IN_FEATURES": ["dla"], "MODEL.DLA.WIDTH_DIV": 4,
                                                "MODEL.DLA.UP_CONV": "dcn"}),
    "hourglass_heatmap": ("hourglass", None, {}),
    "hourglass_regression": ("hourglass", None, {"MODEL.STACKED_HOURGLASS.HEAD": "regression",
                                                 "MODEL.STACKED_HOURGLASS_NET.PREDICT_HEATMAPS": False}),
    "retinaface": ("retinaface", None, {}),
    "upsnet": ("upsnet", None, {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
                                "MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 0.0}),
    "upsnet_dcn_head": ("upsnet", None, {"MODEL.UPSNET.SEM_DEFORMABLE": True, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
                                         "MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 0.0}),
    "densepose": ("densepose", None, {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0}),
}


def calibrated_model(cfg, image):
    """A random model whose BatchNorm statistics come from ``image`` (fresh BN statistics make near-equal scores
    whose order onnxruntime's float rounding may swap; normalised activations spread them)."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        with torch.no_grad():
            model.inference([{"image": image}], do_postprocess=False)
    except ValueError:  # a 1×1 map in training-mode BN (the tiny hourglass): keep the fresh statistics
        for m in bns:
            m.reset_running_stats()
    for m in bns:
        m.eval()
    return model


def check_any_size(name, tmp_path):
    arch, config, overrides = CASES[name]
    cfg = tiny_cfg(arch, config=config, **overrides)
    image = sample_input(cfg)  # the test mapper's input: what a user's runtime feeds
    second = second_size_image(image)
    assert second.shape[-2] / second.shape[-1] != image.shape[-2] / image.shape[-1]
    model = calibrated_model(cfg, image)
    report = export_model(model, image, str(tmp_path), second_image=second)
    assert report.onnx_error is None, report.onnx_error
    assert not report.errors(), report.summary()
    assert [s["size"] for s in report.sizes] == [list(image.shape[-2:]), list(second.shape[-2:])]
    for s in report.sizes:  # something to compare at both sizes
        assert s["output_shapes"][0][0] > 0, (name, s)
    tolerances = export_tolerances(model)
    assert not report.exceeds(tolerances), report.summary(tolerances)
    return report


def test_yolact_traced_at_128_runs_at_96x160(tmp_path):
    """The issue's case: a TorchScript file traced at 128² gave 128² masks (and wrong boxes) on a 96×160 image."""
    cfg = tiny_cfg("yolact", **{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    a, b = (torch.rand(3, 128, 128) * 255).round(), (torch.rand(3, 96, 160) * 255).round()
    adapter = make_tracing_adapter(model, a)
    with torch.no_grad():
        traced = torch.jit.trace(adapter, (a,), check_trace=False)
        eager, out = adapter(b), traced(b)
    names = [f for f in ("pred_boxes", "pred_classes", "pred_masks", "scores")]  # Instances fields, sorted
    assert out[names.index("pred_masks")].shape[-2:] == (96, 160)
    assert out[-1].tolist() == [96, 160]  # image_size
    for e, o in zip(eager, out):
        torch.testing.assert_close(o, e, rtol=0, atol=0)
    assert not model.training  # export leaves the model as it found it


def test_yolact_any_size(tmp_path):
    report = check_any_size("yolact", tmp_path)
    assert report.sizes[1]["output_shapes"][2][-2:] == report.sizes[1]["size"]  # masks at the second size


def test_export_leaves_the_model_in_eval_mode(tmp_path):
    """torch.onnx.export restores the adapter's mode recursively: a training-mode adapter switched the model to
    training (BatchNorm on batch statistics) after every export."""
    cfg = tiny_cfg("centernet")
    model = build_model(cfg).eval()
    export_model(model, sample_input(cfg), str(tmp_path), formats=("onnx",))
    assert not any(m.training for m in model.modules())


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CASES if n != "yolact"])
def test_every_architecture_any_size(name, tmp_path):
    check_any_size(name, tmp_path)


@pytest.mark.slow
def test_yolact_edge_both_paths_any_size(tmp_path):
    pytest.importorskip("onnxruntime")
    from segx.export.yolact_edge import export_yolact_edge

    cfg = tiny_cfg("yolact_edge", **{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0})
    mapper = build_mapper(cfg, is_train=False)
    key, nonkey = (mapper(dict(r))["image"].float() for r in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:2])
    model = calibrated_model(cfg, key)
    report = export_yolact_edge(model, key, nonkey, str(tmp_path),
                                second_images=(second_size_image(key), second_size_image(nonkey)))
    ts_tol, onnx_tol = export_tolerances(model)
    for name, r in report.items():
        for where in (r, r["second_size"]):
            assert where["num_detections"] > 0
            assert where["torchscript_max_diff"] <= ts_tol and where["onnx_max_diff"] <= onnx_tol, (name, where)
        assert r["second_size"]["size"] != list(key.shape[-2:])


def test_export_cli_checks_a_second_size(tmp_path, capsys):
    """tools/export_model.py: eager vs TorchScript vs onnxruntime at the traced size and at a second size."""
    from segx.export.export_model import cli

    cfg = tiny_cfg("centernet")
    model = calibrated_model(cfg, sample_input(cfg))
    torch.save({"model": model.state_dict()}, tmp_path / "model.pth")
    (tmp_path / "config.yaml").write_text(cfg.dump())
    cli(["--config-file", str(tmp_path / "config.yaml"), "--output", str(tmp_path / "export"),
         "MODEL.WEIGHTS", str(tmp_path / "model.pth")])
    out = capsys.readouterr().out
    assert "128x128 (traced size)" in out and "96x160 (second size)" in out and "onnxruntime" in out
    assert "tolerance: TorchScript 0.0001, ONNX 0.001 (within)" in out
    with pytest.raises(SystemExit, match="--second-size"):
        cli(["--config-file", str(tmp_path / "config.yaml"), "--second-size", "96by160"])


@pytest.mark.parametrize("arch, tiny, graphs", [("YolactEdge", "yolact_edge", ("key_frame", "nonkey_frame")),
                                                ("VPSNet", "vpsnet", ("first_frame", "next_frame"))])
def test_video_export_cli(arch, tiny, graphs, tmp_path, capsys):
    """tools/export_{yolact_edge,vpsnet}.py (``segx.export.graphs.export_video_cli``): both per-frame graphs written
    and checked at the traced size and a second size; a config of another architecture is refused by name."""
    pytest.importorskip("onnxruntime")
    import json

    from segx.export.graphs import export_video_cli
    from segx.export.vpsnet import export_vpsnet
    from segx.export.yolact_edge import export_yolact_edge

    fn = {"YolactEdge": export_yolact_edge, "VPSNet": export_vpsnet}[arch]
    cfg = tiny_cfg(tiny)
    (tmp_path / "config.yaml").write_text(cfg.dump())
    assert export_video_cli(arch, fn, ["--config-file", str(tmp_path / "config.yaml"),
                                       "--output", str(tmp_path / "export")]) == 0
    report = json.loads(capsys.readouterr().out)
    for g in graphs:
        assert (tmp_path / "export" / f"{g}.ts").is_file() and (tmp_path / "export" / f"{g}.onnx").is_file()
        assert "onnx_error" not in report[g], report[g]["onnx_error"]
        assert report[g]["second_size"]["onnx_max_diff"] is not None
    other = tiny_cfg("centernet")
    (tmp_path / "other.yaml").write_text(other.dump())
    with pytest.raises(SystemExit, match=f"is not a {arch} config"):
        export_video_cli(arch, fn, ["--config-file", str(tmp_path / "other.yaml")])
