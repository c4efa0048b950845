"""The command-line tools as a user runs them: segx-train / tools/train_net.py, and the demo's drawing."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, small_rcnn_cfg

CONFIG = "configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml"


def _run(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env=env, **kw)


def test_console_script_and_argument_errors():
    script = os.path.join(os.path.dirname(sys.executable), "segx-train")
    assert os.path.isfile(script), "segx-train console script not installed (pip install -e .)"
    res = _run([script, "--help"])
    assert res.returncode == 0 and "--config-file" in res.stdout and "--num-gpus" in res.stdout
    res = _run([script, "--config-file", "configs/none.yaml"])
    assert res.returncode != 0 and "configs/none.yaml does not exist" in res.stderr
    res = _run([script])
    assert res.returncode != 0 and "--config-file is required" in res.stderr


@pytest.mark.slow
def test_train_net_trains_evaluates_and_eval_only(tmp_path):
    common = [sys.executable, "tools/train_net.py", "--config-file", CONFIG]
    opts = ["OUTPUT_DIR", str(tmp_path), "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
            "TEST.DETECTIONS_PER_IMAGE", "20"]
    res = _run(common + opts + ["SOLVER.MAX_ITER", "2"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "model_final.pth").is_file()
    assert "copypaste: Task: segm" in res.stdout + res.stderr  # evaluated at the end of training
    res = _run(common + ["--eval-only", "MODEL.WEIGHTS", str(tmp_path / "model_final.pth")] + opts)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "copypaste: Task: bbox" in res.stdout + res.stderr


def test_demo_draws_ground_truth_and_predictions(tmp_path):
    from detectron2.engine import DefaultPredictor

    from segx.engine.demo import draw_predictions

    cfg = small_rcnn_cfg(CONFIG)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    paths = draw_predictions(cfg, DefaultPredictor(cfg), "segx_shapes_val", str(tmp_path), num_images=2, score_threshold=0.0)
    assert len(paths) == 2
    import cv2

    img = cv2.imread(paths[0])
    assert img.shape[0] == 3 * 128 and img.shape[1] == 2 * 3 * 128 + 8  # ground truth | prediction at scale 3
