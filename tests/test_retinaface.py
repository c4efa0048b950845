"""RetinaFace: priors, SSD coding, the −1 landmark rule, named steps, training, inference, export, checkpoint
conversion, renamed config keys."""
import os

import numpy as np
import pytest
import torch

from detectron2.data import DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, Keypoints

from conftest import REPO_ROOT, load_cfg, tiny_cfg
from segx.checkpoint.retinaface import official_to_segx, segx_to_official
from segx.data.synthetic_faces import FaceSpec, render_face_scene
from segx.modeling.retinaface import retinaface_priors
from segx.modeling.ssd_coding import decode_boxes, decode_landmarks, encode_boxes, encode_landmarks

MNET_SYN = "configs/RetinaFace/retinaface_mnet025_synthetic.yaml"
R18_SYN = "configs/RetinaFace/retinaface_R_18_synthetic.yaml"
OFFICIAL_SIZES = [[16, 32], [64, 128], [256, 512]]


def make_cfg(config=MNET_SYN, **overrides):
    """``TINY["retinaface"]`` (the MobileNet synthetic config), or another RetinaFace config, with ``overrides``."""
    return tiny_cfg("retinaface", config=config, **overrides)


def run_steps(model, inputs):
    """The named steps of inference up to the raw network outputs: ``(images, features, predictions)``."""
    images = model.preprocess_image(inputs)
    features = model.extract_features(images, inputs)
    return images, features, model.predict(features, images)


def face_dicts(n, seed=5, spec=None):
    """Dataset dicts (in memory) of ``n`` synthetic face scenes, as detectron2's loaders produce them."""
    spec = spec or FaceSpec(num_images=n, seed=seed)
    out = []
    for i in range(n):
        s = render_face_scene(spec, i)
        anns = []
        for box, pts, has in zip(s.boxes, s.landmarks, s.has_landmarks):
            kp = np.concatenate([pts, np.full((5, 1), 2.0)], 1) if has else np.zeros((5, 3))
            anns.append({"bbox": box.tolist(), "bbox_mode": 0, "category_id": 0, "iscrowd": 0,
                         "keypoints": kp.flatten().tolist()})
        out.append({"image": s.image, "image_id": i, "height": spec.height, "width": spec.width,
                    "annotations": anns})
    return out


def to_inputs(dicts, is_train=True):
    """Mapper-like conversion (no augmentation): BGR CHW float image + Instances with boxes and keypoints."""
    inputs = []
    for d in dicts:
        img = torch.from_numpy(np.ascontiguousarray(d["image"][:, :, ::-1])).permute(2, 0, 1).float()
        x = {"image": img, "image_id": d["image_id"], "height": d["height"], "width": d["width"]}
        if is_train:
            inst = Instances(img.shape[-2:])
            boxes = [a["bbox"] for a in d["annotations"]]
            inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            inst.gt_classes = torch.zeros(len(boxes), dtype=torch.long)
            kps = [a["keypoints"] for a in d["annotations"]]
            inst.gt_keypoints = Keypoints(torch.tensor(kps, dtype=torch.float32).reshape(-1, 5, 3))
            x["instances"] = inst
        inputs.append(x)
    return inputs


# ---------------------------------------------------------------- priors and coding


def test_prior_count_and_order_640():
    priors = retinaface_priors((640, 640), OFFICIAL_SIZES, [8, 16, 32])
    assert priors.shape == (16800, 4)  # 2·(80² + 40² + 20²)
    px = priors * 640
    # level 1: row-major over the 80×80 grid, the two sizes of a location next to each other
    torch.testing.assert_close(px[0], torch.tensor([4.0, 4.0, 16.0, 16.0]))
    torch.testing.assert_close(px[1], torch.tensor([4.0, 4.0, 32.0, 32.0]))
    torch.testing.assert_close(px[2], torch.tensor([12.0, 4.0, 16.0, 16.0]))  # next column
    torch.testing.assert_close(px[160], torch.tensor([4.0, 12.0, 16.0, 16.0]))  # next row
    # level 2 starts after 12800 priors, level 3 after 16000
    torch.testing.assert_close(px[12800], torch.tensor([8.0, 8.0, 64.0, 64.0]))
    torch.testing.assert_close(px[12801], torch.tensor([8.0, 8.0, 128.0, 128.0]))
    torch.testing.assert_close(px[16000], torch.tensor([16.0, 16.0, 256.0, 256.0]))
    torch.testing.assert_close(px[-1], torch.tensor([624.0, 624.0, 512.0, 512.0]))


def test_prior_grid_is_ceil_of_size_over_step_and_matches_model():
    priors = retinaface_priors((100, 130), OFFICIAL_SIZES, [8, 16, 32])
    expected = 2 * (13 * 17 + 7 * 9 + 4 * 5)
    assert priors.shape[0] == expected
    model = build_model(make_cfg()).eval()
    with torch.no_grad():
        _, features, pred = run_steps(model, [{"image": torch.zeros(3, 100, 130)}])
    assert sorted(features) == ["p3", "p4", "p5"] and features["p4"].shape == (1, 64, 7, 9)
    assert sorted(pred) == ["box_deltas", "landmark_deltas", "logits", "priors"]
    assert pred["logits"].shape == (1, expected, 2) and pred["box_deltas"].shape == (1, expected, 4)
    assert pred["landmark_deltas"].shape == (1, expected, 10)
    torch.testing.assert_close(pred["priors"] / torch.tensor([130.0, 100.0, 130.0, 100.0]), priors)


def test_box_and_landmark_coding_round_trip():
    g = torch.Generator().manual_seed(0)
    priors = retinaface_priors((64, 96), OFFICIAL_SIZES, [8, 16, 32]) * torch.tensor([96.0, 64.0, 96.0, 64.0])
    p = priors.shape[0]
    xy = torch.rand(p, 2, generator=g) * 80
    wh = torch.rand(p, 2, generator=g) * 60 + 2
    boxes = torch.cat([xy, xy + wh], 1)
    pts = torch.rand(p, 5, 2, generator=g) * 90
    deltas = encode_boxes(boxes, priors, (0.1, 0.2))
    torch.testing.assert_close(decode_boxes(deltas, priors, (0.1, 0.2)), boxes, rtol=1e-5, atol=1e-3)
    ldeltas = encode_landmarks(pts, priors, (0.1, 0.2))
    torch.testing.assert_close(decode_landmarks(ldeltas, priors, (0.1, 0.2)), pts, rtol=1e-5, atol=1e-3)
    # the coding is unit-free: normalised priors and boxes give the same deltas (the official code normalises)
    scale = torch.tensor([96.0, 64.0, 96.0, 64.0])
    torch.testing.assert_close(encode_boxes(boxes / scale, priors / scale), deltas, rtol=1e-4, atol=1e-4)
    # SSD's variance convention: a box equal to its prior codes to zero, a centre shift of 0.1·w codes to 1
    shifted = torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)
    shifted[:, [0, 2]] += 0.1 * priors[:, 2:3]
    torch.testing.assert_close(encode_boxes(shifted, priors)[:, 0], torch.ones(p), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(encode_boxes(shifted, priors)[:, 1:], torch.zeros(p, 3), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- losses


def _one_face_inputs(with_landmarks):
    img = torch.rand(3, 128, 128) * 255
    inst = Instances((128, 128))
    inst.gt_boxes = Boxes(torch.tensor([[30.0, 30.0, 70.0, 80.0]]))
    inst.gt_classes = torch.zeros(1, dtype=torch.long)
    pts = torch.tensor([[40.0, 45.0, 2.0], [60.0, 45.0, 2.0], [50.0, 55.0, 2.0], [42.0, 68.0, 2.0], [58.0, 68.0, 2.0]])
    inst.gt_keypoints = Keypoints((pts if with_landmarks else torch.zeros(5, 3))[None])
    return [{"image": img, "instances": inst}]


def test_faces_without_landmarks_are_left_out_of_the_landmark_loss_only():
    torch.manual_seed(0)
    model = build_model(make_cfg())
    model.train()
    inputs = _one_face_inputs(with_landmarks=False)
    losses = model(inputs)
    assert losses["loss_landmark"].item() == 0.0
    assert losses["loss_box_reg"].item() > 0 and losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
    assert all(h.weight.grad is None or h.weight.grad.abs().sum() == 0 for h in model.landmark_head)
    assert any(h.weight.grad.abs().sum() > 0 for h in model.bbox_head)

    # the same face with landmarks: same positives (box/cls loss unchanged), landmark loss on them
    model.zero_grad()
    with_ldm = model(_one_face_inputs(with_landmarks=True))
    assert with_ldm["loss_landmark"].item() > 0
    priors = model.priors((128, 128), [(16, 16), (8, 8), (4, 4)])
    matched, _, _, ldm_valid = model.label_priors(priors, [inputs[0]["instances"]])
    assert (matched >= 0).sum() > 0 and ldm_valid.sum() == 0
    matched2, _, _, ldm_valid2 = model.label_priors(priors, [_one_face_inputs(True)[0]["instances"]])
    assert torch.equal(matched, matched2) and torch.equal(ldm_valid2, matched2 >= 0)


def test_matching_thresholds_and_hard_negative_ratio():
    model = build_model(make_cfg())
    priors = model.priors((128, 128), [(16, 16), (8, 8), (4, 4)])
    inst = _one_face_inputs(True)[0]["instances"]
    matched, box_t, ldm_t, _ = model.label_priors(priors, [inst])
    from segx.modeling.ssd_coding import priors_to_xyxy
    from torchvision.ops import box_iou

    iou = box_iou(inst.gt_boxes.tensor, priors_to_xyxy(priors))[0]
    pos = matched[0] >= 0
    assert torch.all(iou[iou >= 0.35] >= 0) and torch.equal(pos, (iou >= 0.35) | (torch.arange(len(iou)) == iou.argmax()))
    # box targets decode back to the face
    dec = decode_boxes(box_t[0][pos], priors[pos])
    torch.testing.assert_close(dec, inst.gt_boxes.tensor.expand_as(dec), atol=1e-3, rtol=1e-4)
    dec_l = decode_landmarks(ldm_t[0][pos].view(-1, 5, 2), priors[pos])
    torch.testing.assert_close(dec_l, inst.gt_keypoints.tensor[:, :, :2].expand_as(dec_l), atol=1e-3, rtol=1e-4)


def test_empty_ground_truth_trains_and_infers():
    torch.manual_seed(0)
    model = build_model(make_cfg())
    model.train()
    img = torch.rand(3, 96, 128) * 255
    empty = Instances((96, 128), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))
    losses = model([{"image": img, "instances": empty}])
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_landmark"}
    assert all(torch.isfinite(v) and v.item() == 0 for v in losses.values())
    sum(losses.values()).backward()
    # mixed batch: the face image drives the loss, the empty one adds nothing
    mixed = model(_one_face_inputs(True) + [{"image": torch.rand(3, 128, 128) * 255, "instances": Instances(
        (128, 128), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))}])
    assert all(torch.isfinite(v) and v.item() > 0 for v in mixed.values())
    model.eval()
    with torch.no_grad():
        out = model([{"image": img, "height": 192, "width": 256}])
    inst = out[0]["instances"]
    assert inst.image_size == (192, 256)
    assert inst.pred_keypoints.shape[1:] == (5, 3) and len(inst) == len(inst.scores) == len(inst.pred_classes)
    assert (inst.pred_classes == 0).all() and (inst.scores > 0.02).all()


def test_inference_limits_and_rescaling():
    torch.manual_seed(0)
    cfg = make_cfg(**{"MODEL.RETINAFACE.DETECTIONS_PER_IMAGE": 7, "MODEL.RETINAFACE.SCORE_THRESH_TEST": 0.0})
    model = build_model(cfg).eval()
    x = to_inputs(face_dicts(1), is_train=False)[0]
    with torch.no_grad():
        raw = model.inference([x], do_postprocess=False)[0]
        big = model([dict(x, height=256, width=256)])[0]["instances"]
    assert len(raw) == 7 and len(big) == 7
    torch.testing.assert_close(big.pred_boxes.tensor, raw.pred_boxes.tensor * 2)  # official: scaled, not clipped
    torch.testing.assert_close(big.pred_keypoints[:, :, :2], raw.pred_keypoints[:, :, :2] * 2)
    torch.testing.assert_close(raw.pred_keypoints[:, :, 2], raw.scores[:, None].expand(-1, 5))
    model.clip_boxes = True  # MODEL.RETINAFACE.CLIP_BOXES_TEST: detector_postprocess clips boxes to the image
    with torch.no_grad():
        big = model([dict(x, height=256, width=256)])[0]["instances"]
    clipped = raw.pred_boxes.clone()
    clipped.clip((128, 128))
    keep = clipped.nonempty()
    torch.testing.assert_close(big.pred_boxes.tensor, clipped.tensor[keep] * 2)


@pytest.mark.slow
def test_training_lowers_every_loss():
    torch.manual_seed(0)
    cfg = make_cfg()
    model = build_model(cfg)
    model.train()
    batch = to_inputs(face_dicts(4, seed=3))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    first = last = None
    for it in range(30):
        losses = model(batch)
        if first is None:
            first = {k: v.item() for k, v in losses.items()}
        last = {k: v.item() for k, v in losses.items()}
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    for k in first:
        assert last[k] < 0.7 * first[k], (k, first[k], last[k])


def test_dataset_mapper_flip_swaps_left_and_right_landmarks():
    from detectron2.data import MetadataCatalog
    from detectron2.data import transforms as T

    d = face_dicts(2, seed=9)[1]
    d = dict(d, file_name="unused.jpg")
    cfg = make_cfg()
    assert MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).keypoint_flip_map  # registered on import
    mapper = DatasetMapper(cfg, is_train=True)
    mapper.augmentations = T.AugmentationList([T.RandomFlip(prob=1.0, horizontal=True)])
    img = d["image"][:, :, ::-1].copy()

    import detectron2.data.detection_utils as utils

    orig = utils.read_image
    utils.read_image = lambda *a, **k: img
    try:
        out = mapper(dict(d))
    finally:
        utils.read_image = orig
    kp = out["instances"].gt_keypoints.tensor
    src = torch.tensor([a["keypoints"] for a in d["annotations"]], dtype=torch.float32).view(-1, 5, 3)
    has = (src[:, :, 2] > 0).all(1)
    assert has.any()
    w = d["width"]
    # after the flip, "left_eye" is the mirror of the source "right_eye" (and the mouth corners likewise)
    torch.testing.assert_close(kp[has][:, 0, 0], w - src[has][:, 1, 0])
    torch.testing.assert_close(kp[has][:, 3, 0], w - src[has][:, 4, 0])
    torch.testing.assert_close(kp[has][:, 2, 0], w - src[has][:, 2, 0])
    assert (kp[has][:, 0, 0] < kp[has][:, 1, 0]).all()  # left eye stays on the image's left
    assert (kp[~has][:, :, 2] == 0).all()


# ---------------------------------------------------------------- export and conversion


def _calibrated_model(config=MNET_SYN):
    """A random model whose norm statistics come from a real image (random BN stats give tied scores that make
    NMS order, and so the export comparison, arbitrary)."""
    torch.manual_seed(0)
    model = build_model(make_cfg(config))
    x = to_inputs(face_dicts(1, seed=4), is_train=False)[0]
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        run_steps(model, [x])
    return model.eval(), x["image"]


def test_export_torchscript_and_onnx_match_eager(tmp_path):
    pytest.importorskip("onnxruntime")
    from segx.export import export_model, export_tolerances

    model, image = _calibrated_model()
    report = export_model(model, image, str(tmp_path))
    assert report.output_shapes[0][0] > 0
    assert report.onnx_error is None, report.onnx_error
    assert not report.exceeds(export_tolerances(model)), report.summary()  # ONNX 1e-2: pixels, boxes up to 128 px


@pytest.mark.parametrize("config", [MNET_SYN, R18_SYN])
def test_converter_round_trip_gives_equal_outputs(config, tmp_path):
    model, image = _calibrated_model(config)
    for m in model.modules():  # non-trivial affine parameters everywhere
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    official = segx_to_official(model.state_dict())
    assert any(k.startswith("body.") for k in official) and "ClassHead.0.conv1x1.weight" in official
    assert "ssh1.conv3X3.0.weight" in official and "fpn.output1.1.weight" in official
    # through the CLI, with DataParallel's prefix as in the released files
    import importlib.util

    spec = importlib.util.spec_from_file_location("conv", os.path.join(REPO_ROOT, "tools", "convert_retinaface_to_d2.py"))
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    src = tmp_path / "official.pth"
    torch.save({"module." + k: v for k, v in official.items()}, src)
    conv.main([str(src), str(tmp_path / "d2.pth"), "--config-file", os.path.join(REPO_ROOT, config)])
    fresh = build_model(make_cfg(config)).eval()
    from detectron2.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(fresh).load(str(tmp_path / "d2.pth"))
    loaded = torch.load(tmp_path / "d2.pth", weights_only=False)["model"]
    assert set(loaded) == set(model.state_dict())
    with torch.no_grad():
        a = model.inference([{"image": image}], do_postprocess=False)[0]
        b = fresh.inference([{"image": image}], do_postprocess=False)[0]
    assert len(a) > 0
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
    torch.testing.assert_close(a.pred_keypoints, b.pred_keypoints)


def test_converter_key_layout_and_errors():
    sd = {
        "module.body.stage1.0.0.weight": torch.zeros(1),
        "module.body.stage1.0.1.running_var": torch.zeros(1),
        "module.body.stage2.3.3.weight": torch.zeros(1),
        "module.body.stage3.1.4.bias": torch.zeros(1),
        "module.body.layer2.0.downsample.1.weight": torch.zeros(1),
        "module.body.layer4.2.bn3.running_mean": torch.zeros(1),
        "module.body.bn1.weight": torch.zeros(1),
        "module.fpn.merge2.1.num_batches_tracked": torch.zeros(1),
        "module.ssh3.conv7x7_3.0.weight": torch.zeros(1),
        "module.LandmarkHead.2.conv1x1.bias": torch.zeros(1),
    }
    out = official_to_segx(sd)
    assert sorted(out) == sorted([
        "backbone.stage1.0.weight", "backbone.stage1.0.norm.running_var", "backbone.stage2.3.pw.weight",
        "backbone.stage3.1.pw.norm.bias", "backbone.res3.0.shortcut.norm.weight",
        "backbone.res5.2.conv3.norm.running_mean", "backbone.stem.conv1.norm.weight",
        "fpn.merge2.norm.num_batches_tracked", "ssh3.conv7x7_3.weight", "landmark_head.2.bias",
    ])
    assert sorted(segx_to_official(out)) == sorted(k[len("module."):] for k in sd)
    with pytest.raises(ValueError, match="roi_heads"):
        official_to_segx({"roi_heads.box_predictor.weight": torch.zeros(1)})


@pytest.mark.slow
def test_trainer_trains_and_evaluates_on_a_written_face_set(tmp_path):
    """detectron2's loader + DatasetMapper (KEYPOINT_ON, flips) + segx's Trainer + the "face" evaluator."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from segx.data.datasets.faces import register_face_keypoints_coco
    from segx.data.synthetic_faces import write_faces_dataset
    from segx.engine.train_net import Trainer

    root = write_faces_dataset(FaceSpec(num_images=6, seed=21), str(tmp_path / "faces"))
    names = ("_test_rf_train", "_test_rf_val")
    for n in names:
        register_face_keypoints_coco(n, os.path.join(root, "faces.json"), os.path.join(root, "images"))
    try:
        cfg = make_cfg(**{"DATASETS.TRAIN": (names[0],), "DATASETS.TEST": (names[1],), "SOLVER.IMS_PER_BATCH": 2,
                          "SOLVER.MAX_ITER": 2, "SOLVER.WARMUP_ITERS": 1, "OUTPUT_DIR": str(tmp_path / "out")})
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        res = Trainer.test(cfg, trainer.model)["face"]  # one test set: detectron2 returns its dict directly
        assert {"AP", "AP50", "AP75", "NME", "NME_io"} <= set(res)
        assert os.path.isfile(tmp_path / "out" / "model_final.pth")
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


# ---------------------------------------------------------------- steps, config keys


def test_extract_features_is_the_seam_for_other_features():
    """A subclass (a video architecture, say) that scales the stride-32 level sees predictions change on that
    level's priors only."""
    torch.manual_seed(0)
    model, image = _calibrated_model()
    x = [{"image": image}]
    with torch.no_grad():
        _, features, pred = run_steps(model, x)
        scaled = dict(features, p5=features["p5"] * 3.0)
        pred2 = model.predict(scaled, model.preprocess_image(x))
    n5 = 2 * 4 * 4  # 128² input: 2 priors × 4 × 4 locations at stride 32, the last ones
    torch.testing.assert_close(pred2["logits"][:, :-n5], pred["logits"][:, :-n5])
    assert not torch.allclose(pred2["logits"][:, -n5:], pred["logits"][:, -n5:])
    raw = model.decode(pred, model.preprocess_image(x), x)[0]
    torch.testing.assert_close(raw.pred_boxes.tensor, model.inference(x, do_postprocess=False)[0].pred_boxes.tensor)


@pytest.mark.parametrize("old,new", [
    ("MODEL.RETINAFACE.BOX_WEIGHT", "MODEL.RETINAFACE.BOX_LOSS_WEIGHT"),
    ("MODEL.RETINAFACE.CLS_WEIGHT", "MODEL.RETINAFACE.CLS_LOSS_WEIGHT"),
    ("MODEL.RETINAFACE.LANDMARK_WEIGHT", "MODEL.RETINAFACE.LANDMARK_LOSS_WEIGHT"),
])
def test_old_config_keys_raise_an_error_naming_the_new_key(old, new, tmp_path):
    from segx.config import RENAMED_KEYS

    assert RENAMED_KEYS[old] == new
    with pytest.raises(KeyError, match=new.replace(".", r"\.")):
        make_cfg().merge_from_list([old, "3.0"])
    path = tmp_path / "old.yaml"
    path.write_text(f'_BASE_: "{REPO_ROOT}/{MNET_SYN}"\nMODEL:\n  RETINAFACE:\n    {old.split(".")[-1]}: 3.0\n')
    with pytest.raises(KeyError, match=new.replace(".", r"\.")):
        load_cfg(str(path))
    # the new key is what the loss uses
    assert sorted(build_model(make_cfg(**{new: 3.0})).loss_weights.values()).count(3.0) == 1


# ---------------------------------------------------------------- issue 18: official NMS, clipping, finite boxes
def test_official_nms_counts_plus_one_pixel_hand_worked():
    from segx.modeling.retinaface import face_nms

    scores = torch.tensor([0.9, 0.8])
    # A = [0,0,9,9], B = [3,0,12,9]. Continuous: inter 6·9 = 54, areas 81 → IoU 54/108 = 0.500.
    # +1 px (py_cpu_nms): inter (9−3+1)·(9−0+1) = 70, areas 10·10 = 100 → IoU 70/130 = 0.538.
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [3.0, 0.0, 12.0, 9.0]])
    assert face_nms(boxes, scores, 0.52, "official").tolist() == [0]
    assert face_nms(boxes, scores, 0.52, "torchvision").tolist() == [0, 1]
    assert face_nms(boxes, scores, 0.55, "official").tolist() == [0, 1]
    # Small faces differ far from the threshold: A = [0,0,4,4], B = [2,0,6,4]. Continuous IoU 8/24 = 0.333;
    # +1 px: inter 3·5 = 15, areas 25 → 15/35 = 0.429, above the 0.4 of the official test code.
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 0.0, 6.0, 4.0]])
    assert face_nms(boxes, scores, 0.4, "official").tolist() == [0]
    assert face_nms(boxes, scores, 0.4, "torchvision").tolist() == [0, 1]
    # Touching boxes overlap by one pixel column in the +1 convention: A = [0,0,4,4], B = [4,0,8,4] →
    # inter 1·5 = 5, IoU 5/45 = 0.111 (continuous: 0).
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [4.0, 0.0, 8.0, 4.0]])
    assert face_nms(boxes, scores, 0.1, "official").tolist() == [0]
    assert face_nms(boxes, scores, 0.1, "torchvision").tolist() == [0, 1]
    assert face_nms(boxes, scores, 0.12, "official").tolist() == [0, 1]
    with pytest.raises(ValueError, match="nms_mode|mode"):
        face_nms(boxes, scores, 0.4, "soft")


def test_nms_mode_and_clipping_are_config_options_with_official_defaults():
    cfg = make_cfg()
    assert cfg.MODEL.RETINAFACE.NMS_MODE == "official" and cfg.MODEL.RETINAFACE.CLIP_BOXES_TEST is False
    model = build_model(make_cfg(**{"MODEL.RETINAFACE.NMS_MODE": "torchvision",
                                    "MODEL.RETINAFACE.CLIP_BOXES_TEST": True}))
    assert model.test_limits["nms_mode"] == "torchvision" and model.clip_boxes
    with pytest.raises(ValueError, match="nms_mode"):
        build_model(make_cfg(**{"MODEL.RETINAFACE.NMS_MODE": "greedy"}))


def test_rescale_without_and_with_clipping_hand_worked():
    from segx.modeling.retinaface import rescale_faces

    inst = Instances((64, 64))  # network input 64×64 → the input dict's 128 (height) × 96 (width)
    inst.pred_boxes = Boxes(torch.tensor([[-4.0, 10.0, 70.0, 20.0], [70.0, 70.0, 80.0, 80.0]]))
    inst.scores = torch.tensor([0.9, 0.8])
    inst.pred_classes = torch.zeros(2, dtype=torch.long)
    inst.pred_keypoints = torch.tensor([[[-2.0, 4.0, 0.9]] * 5, [[66.0, 70.0, 0.8]] * 5])
    x = [{"height": 128, "width": 96}]
    # scale x 96/64 = 1.5, y 128/64 = 2
    out = rescale_faces([inst], x, [(64, 64)], clip_boxes=False)[0]["instances"]
    assert out.image_size == (128, 96)
    assert out.pred_boxes.tensor.tolist() == [[-6.0, 20.0, 105.0, 40.0], [105.0, 140.0, 120.0, 160.0]]
    torch.testing.assert_close(out.pred_keypoints[:, 0], torch.tensor([[-3.0, 8.0, 0.9], [99.0, 140.0, 0.8]]))
    assert inst.pred_boxes.tensor[0, 0] == -4.0  # the decoded results are not modified in place
    clipped = rescale_faces([inst], x, [(64, 64)], clip_boxes=True)[0]["instances"]
    # detector_postprocess: [−6, 20, 105, 40] → [0, 20, 96, 40]; the second box clips to an empty one and is dropped
    assert clipped.pred_boxes.tensor.tolist() == [[0.0, 20.0, 96.0, 40.0]]


@pytest.mark.parametrize("clamp", [True, False])
def test_random_weights_with_scaled_up_box_head_give_finite_boxes(clamp):
    """The mnet-0.25 crash of issue 18 (``Box tensor contains infinite or NaN!`` in detector_postprocess): box-head
    weights ×1000 make exp(0.2·delta) overflow; the decoded sizes are clamped at SCALE_CLAMP."""
    torch.manual_seed(0)
    overrides = {"MODEL.RETINAFACE.CLIP_BOXES_TEST": True}  # clipping asserts finite boxes, as in the crash
    if not clamp:
        overrides["MODEL.RETINAFACE.SCALE_CLAMP"] = -1.0
    model, image = _calibrated_model(MNET_SYN)
    model.clip_boxes, model.scale_clamp = True, (model.scale_clamp if clamp else None)
    with torch.no_grad():
        for head in model.bbox_head:
            head.weight.mul_(1000.0)
            head.bias.mul_(1000.0)
        raw = model.inference([{"image": image}], do_postprocess=False)[0]
        if not clamp:  # the clamp is what keeps them finite
            assert not torch.isfinite(raw.pred_boxes.tensor).all()
            with pytest.raises(AssertionError, match="infinite or NaN"):
                model([{"image": image}])
            return
        out = model([{"image": image, "height": 256, "width": 256}])[0]["instances"]
    assert len(raw) > 0 and torch.isfinite(raw.pred_boxes.tensor).all()
    assert torch.isfinite(out.pred_boxes.tensor).all() and torch.isfinite(out.pred_keypoints).all()
    side = raw.pred_boxes.tensor[:, 2:] - raw.pred_boxes.tensor[:, :2]
    assert side.max() <= 512 * 1000 / 16 * (1 + 1e-5)  # at most 62.5 × the largest prior
    assert build_model(make_cfg(**overrides)).scale_clamp == (pytest.approx(np.log(1000 / 16)) if clamp else None)


def test_converter_refuses_foreign_files_and_mismatched_configs(tmp_path, capsys):
    import importlib.util

    tool = os.path.join(REPO_ROOT, "tools", "convert_retinaface_to_d2.py")
    spec = importlib.util.spec_from_file_location("conv", tool)
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    mnet = os.path.join(REPO_ROOT, MNET_SYN)
    model = build_model(make_cfg())
    official = {"module." + k: v for k, v in segx_to_official(model.state_dict()).items()}
    src = tmp_path / "official.pth"
    torch.save(official, src)
    # a foreign checkpoint (CenterNet's key layout): a one-line error naming the unknown keys, not a KeyError
    foreign = tmp_path / "centernet.pth"
    torch.save({"epoch": 1, "state_dict": {"hm.0.weight": torch.zeros(1), "base.conv1.weight": torch.zeros(1)}},
               foreign)
    with pytest.raises(SystemExit) as e:
        conv.main([str(foreign), str(tmp_path / "out.pth"), "--config-file", mnet])
    assert "not a RetinaFace" in str(e.value) and "hm.0.weight" in str(e.value)
    # not a checkpoint at all
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(SystemExit, match="junk.pth"):
        conv.main([str(junk), str(tmp_path / "out.pth"), "--config-file", mnet])
    # the config is required
    with pytest.raises(SystemExit):
        conv.main([str(src), str(tmp_path / "out.pth")])
    assert "--config-file" in capsys.readouterr().err
    # a model of another width: every FPN/SSH/head tensor is mis-shaped, listed, and nothing is written
    with pytest.raises(SystemExit) as e:
        conv.main([str(src), str(tmp_path / "out.pth"), "--config-file", mnet, "--opts",
                   "MODEL.RETINAFACE.OUT_CHANNELS", "32"])
    msg = str(e.value)
    assert "mis-shaped" in msg and "class_head.0.weight: (4, 64, 1, 1) vs (4, 32, 1, 1)" in msg
    assert not (tmp_path / "out.pth").exists()
    # the ResNet-18 config against MobileNet weights: missing and unexpected keys, listed
    with pytest.raises(SystemExit) as e:
        conv.main([str(src), str(tmp_path / "out.pth"), "--config-file", os.path.join(REPO_ROOT, R18_SYN)])
    msg = str(e.value)
    assert "missing" in msg and "backbone.res2.0.conv1.weight" in msg
    assert "unexpected" in msg and "backbone.stage1.0.weight" in msg
    # a checkpoint missing one tensor: refused, with its name
    partial = dict(official)
    del partial["module.BboxHead.1.conv1x1.weight"]
    torch.save(partial, src)
    with pytest.raises(SystemExit, match=r"1 missing.*bbox_head\.1\.weight"):
        conv.main([str(src), str(tmp_path / "out.pth"), "--config-file", mnet])
    assert not (tmp_path / "out.pth").exists()
