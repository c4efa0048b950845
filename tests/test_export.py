"""Export round trip through detectron2's TracingAdapter: TorchScript and ONNX (onnxruntime) equal eager."""
import os

import pytest
import torch

from detectron2.modeling import build_model

from conftest import small_rcnn_cfg
from segx.export import export_model, export_tolerances, sample_input


@pytest.mark.parametrize("config", ["configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml", "configs/MaskRCNN/faster_rcnn_R_18_FPN_scratch.yaml"])
def test_export_round_trip_matches_eager(tmp_path, config):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    cfg = small_rcnn_cfg(config)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # keep detections flowing out of a random model
    model = build_model(cfg).eval()
    image = sample_input(cfg)
    report = export_model(model, image, str(tmp_path))
    assert os.path.isfile(tmp_path / "model.ts") and os.path.isfile(tmp_path / "model.onnx")
    assert report.output_shapes[0][0] > 0, "no detections: the round trip would compare empty tensors"
    assert report.onnx_error is None, report.onnx_error
    assert not report.exceeds(export_tolerances(model)), report.summary()


def test_export_cli_reports_differences(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from segx.export.export_model import cli

    cli([
        "--config-file", "configs/MaskRCNN/faster_rcnn_R_18_FPN_scratch.yaml", "--output", str(tmp_path),
        "--format", "torchscript", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "DATALOADER.NUM_WORKERS", "0",
    ])
    out = capsys.readouterr().out
    assert "TorchScript" in out and "max |diff| to eager" in out
    with pytest.raises(SystemExit, match="does not exist"):
        cli(["--config-file", "configs/nope.yaml"])
