"""End to end against xingyizhou/CenterNet itself: official-layout random weights → segx's converter → the same
network input and the same 100 detections as the official test (``pre_process`` + network + ``ctdet_decode`` +
``ctdet_post_process`` + ``merge_outputs``) on a 640×427 image.

Needs the official source beside the checkout, git-ignored (nothing of it is in segx): its ``src/lib`` at
``output/official/CenterNet/src/lib`` (or ``$SEGX_OFFICIAL_CENTERNET/src/lib``), e.g.
``git clone https://github.com/xingyizhou/CenterNet output/official/CenterNet``. The official pieces run in a
subprocess (``tests/_official_centernet.py``), with DCNv2's CUDA layer replaced by ``torchvision``'s
``deform_conv2d`` (same formula). Skipped without the checkout; ``slow`` (three 512² networks on the CPU).
"""
import importlib.util
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from conftest import REPO_ROOT, load_cfg
from segx.data.mappers import build_mapper

OFFICIAL = os.environ.get("SEGX_OFFICIAL_CENTERNET") or os.path.join(REPO_ROOT, "output", "official", "CenterNet")
SRC_LIB = os.path.join(OFFICIAL, "src", "lib")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isfile(os.path.join(SRC_LIB, "detectors", "ctdet.py")),
                       reason=f"xingyizhou/CenterNet not found at {OFFICIAL} (set SEGX_OFFICIAL_CENTERNET)"),
]

# official arch → the segx paper config of that layout
CONFIGS = {
    "resdcn_18": "configs/CenterNet/centernet_R_18_dcn_512.yaml",
    "res_18": "configs/CenterNet/centernet_R_18_512.yaml",
    "dla_34": "configs/CenterNet/centernet_DLA_34_512.yaml",
}


def _image():
    """A 640×427 BGR image with structure at several scales (seeded)."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (427, 640, 3), dtype=np.uint8), (0, 0), 3)
    cv2.rectangle(img, (60, 80), (300, 330), (20, 200, 240), -1)
    cv2.circle(img, (470, 220), 110, (230, 40, 90), -1)
    return img


def _converter():
    spec = importlib.util.spec_from_file_location("convert_centernet_to_d2",
                                                  os.path.join(REPO_ROOT, "tools", "convert_centernet_to_d2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _match(official, segx, box_tol=2e-3, score_tol=1e-5):
    """Pairs every official detection (x0, y0, x1, y1, score, class) with a segx one of the same class, box within
    ``box_tol`` pixels and score within ``score_tol``, one to one; returns the unmatched official rows."""
    free = list(range(len(segx)))
    unmatched = []
    for row in official:
        best = None
        for j in free:
            s = segx[j]
            if s[5] == row[5] and abs(s[4] - row[4]) <= score_tol and np.abs(s[:4] - row[:4]).max() <= box_tol:
                best = j
                break
        if best is None:
            unmatched.append(row)
        else:
            free.remove(best)
    return unmatched


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_converted_official_weights_give_the_official_detections(arch, tmp_path):
    image = _image()
    np.save(tmp_path / "image.npy", image)
    official_file, result = tmp_path / f"{arch}_official.pth", tmp_path / "official_result.pth"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tests", "_official_centernet.py"), SRC_LIB, arch,
         str(official_file), str(tmp_path / "image.npy"), str(result)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    official = torch.load(result, weights_only=False)

    # the converter, checked against the paper config of that layout
    converted = tmp_path / f"{arch}_segx.pth"
    config = CONFIGS[arch]
    _converter().main([str(official_file), str(converted), "--config-file", os.path.join(REPO_ROOT, config)])
    cfg = load_cfg(config)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(str(converted))

    # segx's test input: the mapper's letterbox from the file, the model's normalisation
    path = str(tmp_path / "image.png")
    cv2.imwrite(path, image)
    mapped = build_mapper(cfg, is_train=False)({"file_name": path, "height": 427, "width": 640, "image_id": 0})
    assert mapped["letterbox"] == {"center": (320.0, 213.5), "scale": 640.0, "size": (512, 512)}
    with torch.no_grad():
        net_input = model.preprocess_image([mapped]).tensor
        torch.testing.assert_close(net_input, official["input"], rtol=0, atol=2e-5)
        instances = model([mapped])[0]["instances"]

    assert instances.image_size == (427, 640)
    ours = torch.cat([instances.pred_boxes.tensor, instances.scores[:, None],
                      instances.pred_classes[:, None].float()], dim=1).numpy()
    theirs = official["detections"].numpy()
    assert len(theirs) == 100 and len(ours) == 100
    cx, cy = (theirs[:, 0] + theirs[:, 2]) / 2, (theirs[:, 1] + theirs[:, 3]) / 2
    inside = ((cx >= 0) & (cx < 640) & (cy >= 0) & (cy < 427)).sum()
    assert len(np.unique(theirs[:, 5])) > 1 and inside > 0  # several classes, centres inside the image too
    unmatched = _match(theirs, ours)
    assert not unmatched, f"{len(unmatched)} of 100 official detections have no segx counterpart: {unmatched[:5]}"
