"""Inference for users (issue 17): ``segx.engine.Predictor`` / ``VideoPredictor``, drawing every output type, and
``tools/predict.py`` (PNGs, annotated video, COCO results JSON, bad inputs skipped with one line each)."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from conftest import tiny_cfg
from segx.engine import Predictor, VideoPredictor
from segx.engine.visualize import draw_outputs


def _records(cfg, n):
    return DatasetCatalog.get(cfg.DATASETS.TEST[0])[:n]


def _assert_same(a, b, atol=1e-4):
    assert set(a) == set(b)
    ia, ib = a["instances"], b["instances"]
    assert ia.image_size == ib.image_size and len(ia) == len(ib) > 0
    for k, v in ia.get_fields().items():
        w = ib.get(k)
        v, w = (v.tensor, w.tensor) if isinstance(v, Boxes) else (v, w)
        if v.dtype == torch.bool:
            assert (v != w).float().mean() < 1e-3, k  # a mask pixel on the threshold may flip
        else:
            torch.testing.assert_close(v.float(), w.float(), rtol=0, atol=atol, msg=k)


@pytest.fixture(scope="module")
def yolact_files(tmp_path_factory):
    """A tiny YOLACT as a user has it: a config file and a checkpoint."""
    root = tmp_path_factory.mktemp("yolact")
    cfg = tiny_cfg("yolact", **{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.05})
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, root / "model.pth")
    (root / "config.yaml").write_text(cfg.dump())
    return str(root / "config.yaml"), str(root / "model.pth"), cfg


# ------------------------------------------------------------------------------------------------ Predictor
def test_list_of_three_images_equals_three_single_calls(yolact_files):
    config, weights, cfg = yolact_files
    predictor = Predictor(config, weights, device="cpu")
    paths = [r["file_name"] for r in _records(cfg, 3)]
    bgr = cv2.imread(paths[2])
    inputs = [paths[0], cv2.imread(paths[1]), cv2.resize(bgr, (160, 96))]  # a path, an array, another size
    batch = predictor(inputs)
    assert predictor.last_timing["images"] == 3 and predictor.last_timing["net"] > 0
    singles = [predictor(x) for x in inputs]
    assert len(batch) == 3
    for a, b in zip(batch, singles):
        _assert_same(a, b)
    assert batch[2]["instances"].image_size == (96, 160)
    assert batch[2]["instances"].pred_masks.shape[-2:] == (96, 160)
    # a [3,H,W] tensor in the model's INPUT.FORMAT gives what the file gives
    chw = torch.as_tensor(cv2.imread(paths[0]) if cfg.INPUT.FORMAT == "BGR" else cv2.imread(paths[0])[:, :, ::-1].copy())
    _assert_same(predictor(chw.permute(2, 0, 1)), batch[0])


def test_detectron2_meta_arch_batches_too():
    """Generic over detectron2's own meta-architectures (GeneralizedRCNN): batch of 3 = 3 single calls."""
    cfg = tiny_cfg("mask_rcnn", **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})
    torch.manual_seed(0)
    predictor = Predictor(cfg, weights="", device="cpu")
    paths = [r["file_name"] for r in _records(cfg, 3)]  # one size: the same padding alone and in the batch
    batch = predictor(paths)
    for path, a in zip(paths, batch):
        _assert_same(a, predictor(path))
    assert predictor.last_timing["post"] > 0


def test_predictor_errors_name_the_input(yolact_files, tmp_path):
    config, weights, _ = yolact_files
    with pytest.raises(FileNotFoundError, match="weights file .*nope.pth"):
        Predictor(config, str(tmp_path / "nope.pth"), device="cpu")
    with pytest.raises(FileNotFoundError, match="config file"):
        Predictor(str(tmp_path / "none.yaml"))
    predictor = Predictor(config, weights, device="cpu")
    with pytest.raises(FileNotFoundError, match="missing.jpg: no such file"):
        predictor(str(tmp_path / "missing.jpg"))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match="bad.png: not a readable image"):
        predictor(str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match=r"\[3,H,W\]"):
        predictor(torch.zeros(4, 8, 8))
    with pytest.raises(TypeError, match="input 0 is a int"):
        predictor(3)


# ------------------------------------------------------------------------------------------------ VideoPredictor
def test_two_frame_video_of_one_image_gives_the_same_outputs_per_frame(yolact_files):
    config, weights, cfg = yolact_files
    predictor = Predictor(config, weights, device="cpu")
    frame = cv2.imread(_records(cfg, 1)[0]["file_name"])
    video = VideoPredictor(predictor)
    outs = [video(frame), video(frame)]
    assert [o["frame_info"]["frame_index"] for o in outs] == [0, 1]
    assert video.state.frame_index == 2
    image = predictor(frame)
    for o in outs:
        _assert_same({"instances": o["instances"]}, image)
    video.reset()
    assert video(frame)["frame_info"]["frame_index"] == 0


def test_yolact_edge_reuses_key_frames_in_a_stream():
    """YolactEdge through VideoPredictor: the first frame is a key frame, the next ones warp its features (until
    the k-th); the stream's state holds the key features."""
    cfg = tiny_cfg("yolact_edge", **{"MODEL.YOLACT_EDGE.KEY_FRAME_INTERVAL": 3})
    torch.manual_seed(0)
    video = VideoPredictor(cfg, weights="", device="cpu")
    frames = [cv2.imread(r["file_name"]) for r in _records(cfg, 4)]
    outs = [video(f) for f in frames]
    assert [o["frame_info"]["key_frame"] for o in outs] == [True, False, False, True]
    assert video.state.key_features is not None and video.state.key_frame_index == 3
    assert all("instances" in o for o in outs)


# ------------------------------------------------------------------------------------------------ drawing
class _FakeDensePose:
    """``pred_densepose`` as the DensePose head gives it, reduced to what drawing uses (``paste_iuv``)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        return _FakeDensePose(len(range(self.n)[item]) if isinstance(item, slice) else int(torch.as_tensor(item).sum()))

    def paste_iuv(self, boxes, image_size, order=None):
        h, w = image_size
        iuv = torch.zeros(3, h, w)
        for b in boxes.round().long().tolist():
            iuv[0, b[1]:b[3], b[0]:b[2]] = 3
            iuv[1, b[1]:b[3], b[0]:b[2]] = torch.linspace(0, 1, b[2] - b[0])[None]
            iuv[2, b[1]:b[3], b[0]:b[2]] = torch.linspace(0, 1, b[3] - b[1])[:, None]
        return iuv


def test_draw_every_output_type():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    inst = Instances((64, 80))
    inst.pred_boxes = Boxes(torch.tensor([[4.0, 4, 40, 30], [30, 20, 70, 60]]))
    inst.scores = torch.tensor([0.9, 0.8])
    inst.pred_classes = torch.tensor([0, 1])
    masks = torch.zeros(2, 64, 80, dtype=torch.bool)
    masks[0, 5:28, 5:38], masks[1, 22:58, 32:68] = True, True
    kps = torch.tensor([[[10.0, 10, 1], [20, 12, 1], [15, 18, 1], [11, 24, 1], [19, 25, 1]]] * 2)  # 5 face points
    cases = {
        "masks": {"pred_masks": masks},
        "keypoints": {"pred_keypoints": kps},
        "track_ids": {"pred_masks": masks, "track_ids": torch.tensor([7, 3])},
        "densepose": {"pred_densepose": _FakeDensePose(2)},
    }
    plain = draw_outputs(image, {"instances": inst})
    for name, fields in cases.items():
        x = Instances(inst.image_size, **inst.get_fields(), **fields)
        out = draw_outputs(image, {"instances": x}, scale=2.0, header="frame 3")
        assert out.shape == (128, 160, 3) and out.dtype == np.uint8, name
        assert np.abs(out[::2, ::2].astype(int) - plain.astype(int)).mean() > 0.5, name  # something drawn
    # panoptic segments, with and without track ids (VPSNet on a video)
    pan = torch.zeros(64, 80, dtype=torch.int32)
    pan[:, 40:] = 1
    pan[10:30, 10:30] = 2
    info = [{"id": 1, "category_id": 0, "isthing": False}, {"id": 2, "category_id": 1, "isthing": True, "score": 0.9}]
    a = draw_outputs(image, {"panoptic_seg": (pan, info)})
    b = draw_outputs(image, {"panoptic_seg": (pan, [dict(info[0]), dict(info[1], track_id=5)])})
    assert a.shape == b.shape == image.shape and np.abs(a.astype(int) - b.astype(int)).sum() > 0


# ------------------------------------------------------------------------------------------------ tools/predict.py
def _predict(argv):
    from segx.engine.predict import cli

    return cli(argv + ["--no-progress"])


def test_predict_writes_one_png_per_input_and_coco_json(yolact_files, tmp_path, capsys):
    from pycocotools.coco import COCO

    config, weights, cfg = yolact_files
    records = _records(cfg, 3)
    folder = tmp_path / "in"
    folder.mkdir()
    for r in records[:2]:
        os.symlink(r["file_name"], folder / os.path.basename(r["file_name"]))
    single = tmp_path / "other.png"
    cv2.imwrite(str(single), cv2.resize(cv2.imread(records[2]["file_name"]), (160, 96)))
    out = tmp_path / "out"
    rc = _predict(["--config-file", config, "--weights", weights, "--input", str(folder), str(single), "--output",
                   str(out), "--json", "--batch-size", "2", "--score-threshold", "0.05"])
    assert rc == 0
    pngs = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert pngs == sorted([os.path.splitext(os.path.basename(r["file_name"]))[0] + ".png" for r in records[:2]]
                          + ["other.png"])
    assert cv2.imread(str(out / "other.png")).shape == (96, 160, 3)
    gt = COCO(str(out / "coco_images.json"))
    dt = gt.loadRes(str(out / "coco_instances_results.json"))
    assert len(gt.getImgIds()) == 3 and len(dt.getAnnIds()) > 0
    assert {gt.imgs[i]["file_name"] for i in gt.getImgIds()} >= {str(single)}
    ann = dt.anns[dt.getAnnIds()[0]]
    assert {"bbox", "score", "category_id", "segmentation"} <= set(ann)
    assert {c["id"] for c in gt.dataset["categories"]} >= {a["category_id"] for a in dt.anns.values()}
    text = capsys.readouterr().out
    assert "predicted 3 images and 0 video frames" in text and "ms per image" in text and "net" in text
    assert "skipped 0 inputs" in text


def test_predict_video_file_writes_an_annotated_video(yolact_files, tmp_path, capsys):
    config, weights, cfg = yolact_files
    video = str(tmp_path / "clip.mp4")
    frames = [cv2.imread(r["file_name"]) for r in _records(cfg, 3)]
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 10, frames[0].shape[1::-1])
    if not writer.isOpened():
        pytest.skip("this OpenCV has no mp4v encoder")
    for f in frames:
        writer.write(f)
    writer.release()
    out = tmp_path / "out"
    assert _predict(["--config-file", config, "--weights", weights, "--input", video, "--output", str(out)]) == 0
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert "predicted 0 images and 3 video frames" in capsys.readouterr().out


def test_bad_inputs_are_skipped_with_one_line_each(yolact_files, tmp_path, capsys):
    config, weights, cfg = yolact_files
    good = _records(cfg, 1)[0]["file_name"]
    (tmp_path / "unreadable.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("x")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    bad = [str(tmp_path / "missing.jpg"), str(tmp_path / "unreadable.jpg"), str(tmp_path / "no_images"),
           str(tmp_path / "broken.mp4")]
    rc = _predict(["--config-file", config, "--weights", weights, "--input", good, *bad, "--output",
                   str(tmp_path / "out")])
    assert rc == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("skipped ")]
    assert len(lines) == 4
    expected = {"missing.jpg": "no such file", "unreadable.jpg": "not a readable image",
                "no_images": "folder with no images", "broken.mp4": "cannot be opened as a video"}
    for name, why in expected.items():
        assert sum(name in line and why in line for line in lines) == 1, (name, lines)
    assert "predicted 1 images" in captured.out and "skipped 4 inputs" in captured.out
    assert os.listdir(tmp_path / "out") == [os.path.splitext(os.path.basename(good))[0] + ".png"]
    # nothing usable: exit status 1
    assert _predict(["--config-file", config, "--weights", weights, "--input", bad[0], "--output",
                     str(tmp_path / "out2")]) == 1


# ------------------------------------------------------------------------------------------------ every architecture
CORNERS = {"MODEL.CORNERNET.NUM_CLASSES": 1, "MODEL.CORNERNET.EMBEDDING_THRESH_TEST": 1e3}
# name -> (tiny_cfg architecture, overrides, what its output holds); thresholds low so a random model gives some
ARCH_OUTPUTS = {
    "hourglass": ("hourglass", {}, ("instances", "pred_keypoints")),
    "retinaface": ("retinaface", {"MODEL.RETINAFACE.SCORE_THRESH_TEST": 0.0,
                                  "MODEL.RETINAFACE.DETECTIONS_PER_IMAGE": 20}, ("instances", "pred_keypoints")),
    "upsnet": ("upsnet", {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0, "MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 0.0},
               ("panoptic_seg", None)),
    "densepose": ("densepose", {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0}, ("instances", "pred_densepose")),
    "cornernet": ("cornernet", CORNERS, ("instances", "pred_boxes")),
    "centernet": ("centernet", {}, ("instances", "pred_boxes")),
}


@pytest.mark.parametrize("name", list(ARCH_OUTPUTS))
def test_predictor_and_drawing_for_each_output_type(name):
    """Predictor on a batch of two for each kind of output (heatmap keypoints, 5 face landmarks, panoptic, DensePose,
    corner / center boxes), each drawn by predict.py's drawing: something is drawn on the image."""
    arch, overrides, (key, field) = ARCH_OUTPUTS[name]
    cfg = tiny_cfg(arch, **overrides)
    torch.manual_seed(0)
    predictor = Predictor(cfg, weights="", device="cpu")
    images = [cv2.imread(r["file_name"]) for r in _records(cfg, 2)]
    outs = predictor(images)
    assert len(outs) == 2 and set(predictor.last_timing) == {"pre", "net", "post", "images"}
    for bgr, out in zip(images, outs):
        assert key in out, (name, list(out))
        if field is not None:
            inst = out["instances"]
            assert inst.image_size == bgr.shape[:2] and len(inst) > 0 and inst.has(field), (name, inst)
        else:
            assert out[key][0].shape == bgr.shape[:2] and len(out[key][1]) > 0
        drawn = draw_outputs(bgr[:, :, ::-1], out, predictor.metadata, score_threshold=0.0)
        assert drawn.shape == bgr.shape and np.abs(drawn.astype(int) - bgr[:, :, ::-1].astype(int)).mean() > 1.0


def test_vpsnet_video_gives_track_ids():
    """VPSNet through VideoPredictor: thing segments of every frame carry a track id (its per-stream state), and the
    drawing labels them."""
    cfg = tiny_cfg("vpsnet", **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
                                "MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 0.0})
    torch.manual_seed(0)
    video = VideoPredictor(cfg, weights="", device="cpu")
    frames = [cv2.imread(r["file_name"]) for r in _records(cfg, 2)]
    outs = [video(f) for f in frames]
    assert [o["frame_info"]["frame_index"] for o in outs] == [0, 1]
    for bgr, out in zip(frames, outs):
        things = [s for s in out["panoptic_seg"][1] if s["isthing"]]
        assert things and all(isinstance(s["track_id"], int) for s in things)
        assert draw_outputs(bgr[:, :, ::-1], out, video.metadata).shape == bgr.shape


# ------------------------------------------------------------------------------------------------ make demo
def test_demo_ends_with_predict_on_new_images(tmp_path):
    """``make demo`` runs tools/predict.py with the model it trained (the demo config's OUTPUT_DIR) on the fresh
    images ``tools/demo.py`` writes: 128×192 renders from a seed no split uses, so not in the training set."""
    import shlex

    from conftest import REPO_ROOT, load_cfg
    from segx.engine.demo import predict_command, write_new_images
    from segx.engine.predict import build_parser

    paths = write_new_images(str(tmp_path / "new"), 2)
    assert [cv2.imread(p).shape for p in paths] == [(128, 192, 3)] * 2
    train = DatasetCatalog.get("segx_shapes_train")
    assert cv2.imread(train[0]["file_name"]).shape[:2] == (128, 128)
    # the Makefile's demo recipe: tools/demo.py, then tools/predict.py on what the demo wrote
    with open(os.path.join(REPO_ROOT, "Makefile")) as f:
        text = f.read().replace("\\\n", " ")
    recipe = text.split("\ndemo:")[1].split("\n\n")[0].splitlines()[1:]
    assert "tools/demo.py" in recipe[0] and "tools/predict.py" in recipe[-1]
    config = text.split("DEMO_CONFIG := ")[1].split()[0]
    args = build_parser().parse_args(shlex.split(recipe[-1].replace("$(DEMO_CONFIG)", config))[2:])
    cfg = load_cfg(config)
    assert args.weights == os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    assert args.input == ["output/demo/new_images"] and "--output output/demo" in recipe[0]
    # and what tools/demo.py prints is the same command
    printed = build_parser().parse_args(predict_command(config, args.weights, "output/demo/new_images",
                                                        "output/demo/predict", 0.3)[1:])
    assert vars(printed) == vars(args)
