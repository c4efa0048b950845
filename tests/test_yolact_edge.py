"""YolactEdge: flow warping of shifted features, FeatFlowNet, the key / non-key frame paths and the stream state,
the three training stages, the synthetic videos with known motion, YouTube-VIS registration and evaluation, bad
inputs, the official-checkpoint converter and the export of both paths."""
import json
import math
import os
import runpy
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from conftest import REPO_ROOT, TINY, tiny_cfg
from segx.checkpoint.yolact_edge import (
    IMAGE_ONLY_PREFIXES,
    YolactEdgeConversionError,
    convert_official_state_dict,
    to_official_state_dict,
)
from segx.data.datasets.coco import DatasetValidationError
from segx.data.datasets.youtube_vis import register_youtube_vis, validate_youtube_vis_json
from segx.data.mappers import build_mapper
from segx.data.mappers.yolact_edge import _FixedFlip, pick_reference_frame
from segx.data.synthetic_video import VideoSpec, known_flow, render_video
from segx.evaluation.video import FrameTimeEvaluator
from segx.layers import flow_warp, flow_warp_reference
from segx.modeling.flow import FeatFlowNet, pixels_to_units, units_to_pixels, warp_features
from segx.modeling.yolact.edge import key_frame_features, partial_feature_transform


def _model(**overrides):
    torch.manual_seed(0)
    model = build_model(tiny_cfg("yolact_edge", **{"MODEL.YOLACT_EDGE.TRAIN_MODULES": [], **overrides}))
    with torch.no_grad():  # random weights saturate the softmax (all scores 1.0, ties): keep the logits small
        model.head.conf_layer.weight.mul_(0.01)
    return model.eval()


def _frames(n=12, size=128, seed=0):
    """``n`` frames of one synthetic video as model inputs (``image`` [3,S,S] float, BGR like the config)."""
    video = render_video(VideoSpec(num_videos=1, num_frames=n, seed=seed, height=size, width=size), 0)
    return [{"image": torch.from_numpy(f[:, :, ::-1].copy()).permute(2, 0, 1).float(), "height": size, "width": size,
             "video_id": 7, "frame_index": i} for i, f in enumerate(video.frames)]


# ------------------------------------------------------------------------------------------------ flow warp
def _smooth_image(xs, ys, channels=3, seed=0):
    """A smooth field evaluated at real coordinates: sums of low-frequency sines."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(channels):
        v = np.zeros_like(xs)
        for _ in range(4):
            a, b, c = g.uniform(-0.35, 0.35), g.uniform(-0.35, 0.35), g.uniform(0, 2 * np.pi)
            v = v + np.sin(a * xs + b * ys + c)
        out.append(v)
    return torch.tensor(np.stack(out), dtype=torch.float64)[None]


@pytest.mark.parametrize("warp", [flow_warp, flow_warp_reference], ids=["kernel", "reference"])
def test_flow_warp_of_shifted_features_equals_shift(warp):
    """Features of a frame translated by a sub-pixel (dx, dy): warping the first frame's features with the flow
    −(dx, dy) gives the second frame's features away from the border, up to bilinear interpolation error."""
    H = W = 48
    dx, dy = 2.3, -1.6
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    frame_a = _smooth_image(xs, ys)
    frame_b = _smooth_image(xs - dx, ys - dy)  # content moved by (+dx, +dy)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).double()  # stride-1 features: translation-equivariant
    with torch.no_grad():
        feat_a, feat_b = conv(frame_a), conv(frame_b)
        flow = torch.empty(1, 2, H, W, dtype=torch.float64)
        flow[:, 0], flow[:, 1] = -dx, -dy  # frame_b(p) = frame_a(p + flow)
        warped = warp(feat_a, flow)
    inner = (slice(None), slice(None), slice(5, H - 5), slice(5, W - 5))
    err = (warped - feat_b)[inner].abs().max().item()
    unwarped = (feat_a - feat_b)[inner].abs().max().item()
    # bilinear error on a field whose second derivatives are ≤ 4·0.35²·|w|: h²/8 per axis, h = 1 px
    assert err < 0.025 * unwarped and err < 0.05, (err, unwarped)
    # an integer shift is exact
    flow_int = torch.zeros(1, 2, H, W, dtype=torch.float64)
    flow_int[:, 0], flow_int[:, 1] = 2.0, -3.0
    out = warp(feat_a, flow_int)
    torch.testing.assert_close(out[:, :, 3:, : W - 2], feat_a[:, :, : H - 3, 2:], rtol=0, atol=1e-12)
    # the same warp through YolactEdge's flow units (u = 16·d/(W−1) at the map's size)
    units = flow / flow.new_tensor([(W - 1) / 16, (H - 1) / 16]).view(1, 2, 1, 1)
    torch.testing.assert_close(units_to_pixels(units), flow)
    if warp is flow_warp:
        torch.testing.assert_close(warp_features(feat_a, units), warped)


def test_flow_units():
    d = torch.tensor([[[[8.0]], [[-4.0]]]]).expand(1, 2, 64, 32)
    u = pixels_to_units(d)
    torch.testing.assert_close(u[0, :, 0, 0], torch.tensor([16 * 8 / 32, -16 * 4 / 64]))
    # the same displacement is the same number of units at any resolution
    torch.testing.assert_close(pixels_to_units(d * 2, (128, 64)), u)


def test_featflownet_levels_and_identity_init():
    net = FeatFlowNet(32, 24, reduce_channels=(16,), encode_channels=8)
    out = net(torch.randn(2, 32, 69, 69), torch.randn(2, 32, 69, 69), levels=("p3", "p4", "p5"))
    assert {k: tuple(v[0].shape) for k, v in out.items()} == {"p3": (2, 2, 69, 69), "p4": (2, 2, 35, 35),
                                                             "p5": (2, 2, 18, 18)}
    assert tuple(out["p4"][1].shape) == (2, 24, 35, 35)  # per-channel scale at the P4 size
    for p in (net.predict4, net.predict5):  # zero weights: flow 0, scale 1, bias 0
        for m in (p.flow, p.scale, p.bias):
            torch.nn.init.zeros_(m.weight)
    out = net(torch.randn(1, 32, 16, 16), torch.randn(1, 32, 16, 16))
    assert set(out) == {"p4", "p5"}
    assert torch.equal(out["p5"][0], torch.zeros(1, 2, 4, 4)) and torch.equal(out["p5"][1], torch.ones(1, 24, 4, 4))
    with pytest.raises(ValueError, match="levels"):
        net(torch.randn(1, 32, 16, 16), torch.randn(1, 32, 16, 16), levels=("p6",))


# ------------------------------------------------------------------------------------------------ data
def test_synthetic_video_known_flow_aligns_frames():
    video = render_video(VideoSpec(num_videos=1, num_frames=8, seed=3), 0)
    again = render_video(VideoSpec(num_videos=1, num_frames=8, seed=3), 0)
    assert np.array_equal(video.frames, again.frames)  # deterministic
    t, s = 6, 2
    flow = known_flow(video.layer_ids[t], video.positions[t], video.positions[s])
    src = torch.from_numpy(video.frames[s]).permute(2, 0, 1)[None].float()
    warped = flow_warp(src, torch.from_numpy(flow)[None])[0].permute(1, 2, 0).numpy()
    H, W = flow.shape[1:]
    yy, xx = np.mgrid[0:H, 0:W]
    tx, ty = xx + flow[0], yy + flow[1]
    inside = (tx > 1) & (tx < W - 2) & (ty > 1) & (ty < H - 2)
    same = video.layer_ids[s][np.clip(np.round(ty).astype(int), 0, H - 1), np.clip(np.round(tx).astype(int), 0, W - 1)]
    ok = inside & (same == video.layer_ids[t])  # not occluded / disoccluded
    err = np.abs(warped - video.frames[t]).mean(-1)[ok].mean()
    unwarped = np.abs(video.frames[s].astype(float) - video.frames[t]).mean(-1)[ok].mean()
    assert ok.mean() > 0.8 and err < 0.6 * unwarped, (err, unwarped)


def test_pick_reference_frame():
    rng = np.random.RandomState(0)
    assert {pick_reference_frame(10, 20, (2, 5), rng) for _ in range(200)} == {5, 6, 7, 8}
    assert {pick_reference_frame(0, 20, (2, 5), rng) for _ in range(200)} == {2, 3, 4, 5}  # none before: after
    assert pick_reference_frame(1, 2, (2, 5), rng) == 0  # none in range: nearest other
    assert pick_reference_frame(0, 1, (2, 5), rng) == 0


def test_mapper_pairs_with_flow_and_flip():
    cfg = tiny_cfg("yolact_edge", **{"MODEL.YOLACT_EDGE.TRAIN_STAGE": "flow"})
    mapper = build_mapper(cfg, is_train=True)
    record = DatasetCatalog.get("segx_videos_train")[10]
    mapper.flip = _FixedFlip(T.HFlipTransform(128))
    out = mapper(record)
    assert out["image"].shape == out["ref_image"].shape == (3, 128, 128) and out["flow"].shape == (2, 128, 128)
    assert record["frame_index"] - out["ref_frame_index"] in (2, 3, 4, 5)
    # flipped image, flipped reference and flipped (negated-x) flow stay consistent: ref warped ≈ image
    warped = flow_warp(out["ref_image"][None], out["flow"][None])[0]
    err = (warped - out["image"]).abs()[:, 8:-8, 8:-8].mean()
    unwarped = (out["ref_image"] - out["image"]).abs()[:, 8:-8, 8:-8].mean()
    assert err < 0.6 * unwarped, (err, unwarped)
    # the annotations went through the same flip: the masks cover the flipped image's objects
    assert len(out["instances"]) > 0


# ------------------------------------------------------------------------------------------------ model
def test_stream_key_frames_state_and_partial_backbone():
    model = _model()
    calls = []
    model.backbone.bottom_up.layer3.register_forward_hook(lambda *a: calls.append(1))
    frames = _frames(12)
    state = model.new_state()
    keys, seen_keys = [], []
    with torch.no_grad():
        for x in frames:
            before = len(calls)
            (out,), state = model.inference([x], state=state)
            keys.append(out["frame_info"]["key_frame"])
            seen_keys.append(len(calls) > before)
            assert state.key_frame_index == (x["frame_index"] // 5) * 5
    assert keys == [i % 5 == 0 for i in range(12)]
    assert seen_keys == keys  # non-key frames stop the backbone at C3
    assert set(state.key_features) == {"lateral", "p4", "p5"} and state.frame_index == 12 and state.stream_id == 7
    assert len(model.frame_times["key"]) == 3 and len(model.frame_times["nonkey"]) == 9


def test_interval_one_is_yolact():
    from segx.modeling.meta_arch.yolact import YOLACT

    model = _model(**{"MODEL.YOLACT_EDGE.KEY_FRAME_INTERVAL": 1})
    yolact = YOLACT(tiny_cfg("yolact_edge", **{"MODEL.META_ARCHITECTURE": "YOLACT"})).eval()
    missing = yolact.load_state_dict(model.state_dict(), strict=False)
    assert not missing.missing_keys
    frames = _frames(3)
    with torch.no_grad():
        ours = model.inference_on_video(frames, video_id=7)
        ref = yolact.inference([dict(x) for x in frames])
    for a, b in zip(ours, ref):
        assert a["frame_info"]["key_frame"]
        torch.testing.assert_close(a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor)
        torch.testing.assert_close(a["instances"].scores, b["instances"].scores)


@pytest.mark.parametrize("protos", ["compute", "warp"])
def test_identity_transform_reproduces_the_key_frame(protos):
    """With zero flow, scale 1, bias 0 and no refinement, a non-key frame of the key frame's own image has the
    key frame's features (P3 = ↑P4 + lateral is the phase-1 rule) and outputs, with computed or warped
    prototypes."""
    model = _model(**{"MODEL.YOLACT_EDGE.REFINEMENT": False, "MODEL.YOLACT_EDGE.NONKEY_PROTOTYPES": protos})
    with torch.no_grad():
        for p in (model.flow_net.predict4, model.flow_net.predict5):
            for m in (p.flow, p.scale, p.bias):
                m.weight.zero_()
        x = _frames(1)[0]
        images = model.preprocess_image([x])
        full, key, _ = key_frame_features(model.backbone, images.tensor)
        warped, _, flows = partial_feature_transform(model.backbone, model.flow_net, None, images.tensor, key)
        for n in ("p3", "p4", "p5", "p6", "p7"):
            torch.testing.assert_close(warped[n], full[n], rtol=1e-5, atol=1e-5)
        state = model.new_state()
        (a,), _ = model.inference([x], state=state)
        (b,), _ = model.inference([{**x, "frame_index": 1}], state=state)
    assert not b["frame_info"]["key_frame"]
    torch.testing.assert_close(a["instances"].scores, b["instances"].scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a["instances"].pred_masks, b["instances"].pred_masks)


def test_warped_prototypes_skip_the_protonet_and_follow_the_motion():
    """NONKEY_PROTOTYPES "warp": non-key frames do not run the protonet; their prototypes are the key frame's
    moved along the P4 flow, so with a flow net that predicts a uniform shift they equal the shifted key
    prototypes away from the border."""
    model = _model(**{"MODEL.YOLACT_EDGE.NONKEY_PROTOTYPES": "warp"})
    calls, protos = [], []
    model.proto_net.register_forward_hook(lambda *a: calls.append(1))
    orig = model.predict

    def spy(features, images):
        out = orig(features, images)
        protos.append(out["protos"])
        return out

    model.predict = spy
    frames = _frames(6)
    with torch.no_grad():
        outs = model.inference_on_video(frames, video_id=7)
    assert [o["frame_info"]["key_frame"] for o in outs] == [True, False, False, False, False, True]
    assert len(calls) == 2  # the two key frames
    # a uniform flow of (dx, dy) prototype pixels: units are relative to the map's size
    k, Hp, Wp = protos[0].shape[1:]
    dx, dy = 2.0, 1.0
    flow = pixels_to_units(torch.tensor([dx, dy]).view(1, 2, 1, 1).expand(1, 2, Hp, Wp), (Hp - 1, Wp - 1))
    from segx.modeling.yolact.edge import warp_prototypes

    coarse = torch.nn.functional.interpolate(flow, size=(Hp // 4, Wp // 4), mode="bilinear", align_corners=False)
    moved = warp_prototypes(protos[0], coarse)
    torch.testing.assert_close(moved[..., 2:-3, 2:-3], protos[0][..., 3:-2, 4:-1], rtol=1e-5, atol=1e-5)


def _training_losses(stage, **overrides):
    """A tiny YolactEdge in training mode for ``stage`` and its losses on two mapped records of the synthetic videos."""
    cfg = tiny_cfg("yolact_edge", **{"MODEL.YOLACT_EDGE.TRAIN_STAGE": stage, **overrides})
    torch.manual_seed(0)
    np.random.seed(0)  # the mapper's flip and key-frame offset: the same pairs whatever ran before
    model = build_model(cfg).train()
    mapper = build_mapper(cfg, is_train=True)
    records = DatasetCatalog.get("segx_videos_train")
    return model, model([mapper(records[i]) for i in (3, 31)])


@pytest.mark.parametrize("stage", ["image", "flow", "video"])
def test_training_stage_step(stage):
    modules = {"image": [], "flow": [], "video": ["flow_net", "refinement", "backbone.output_convs",
                                                             "backbone.downsample_convs", "proto_net", "head",
                                                             "semantic_seg_conv"]}[stage]
    model, losses = _training_losses(stage, **{"MODEL.YOLACT_EDGE.TRAIN_MODULES": modules})
    expected = {"image": {"loss_box_reg", "loss_cls", "loss_mask", "loss_sem_seg"}, "flow": {"loss_flow"},
                "video": {"loss_box_reg", "loss_cls", "loss_mask", "loss_sem_seg", "loss_box_reg_full",
                          "loss_cls_full", "loss_mask_full", "loss_sem_seg_full", "loss_feature_matching"}}[stage]
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    if stage == "flow":
        assert grads and all(n.startswith("flow_net.") for n in grads)
        assert not model.backbone.bottom_up.bn1.training  # frozen BN stays in eval mode
    if stage == "video":
        assert any(n.startswith("flow_net.") for n in grads) and any(n.startswith("refinement.") for n in grads)
        assert not any(n.startswith("backbone.bottom_up.") or n.startswith("backbone.lateral_convs") for n in grads)
    if stage == "image":  # the default of the image stage: all but the flow net and the refinement
        assert any(n.startswith("backbone.bottom_up.") for n in grads)
        assert not any(p.requires_grad for p in [*model.flow_net.parameters(), *model.refinement.parameters()])


@pytest.mark.parametrize("protos", ["compute", "warp"])
def test_video_stage_warped_path_mask_loss(protos):
    """The warped path's mask loss trains the protonet with computed prototypes; with warped ones it does not (they
    are the key frame's, computed without gradients) and reaches the flow net through the prototype warp."""
    model, losses = _training_losses("video", **{"MODEL.YOLACT_EDGE.NONKEY_PROTOTYPES": protos})
    assert losses["loss_mask"] > 0  # the seeded pairs have matched objects (some flips/offsets leave none)
    losses["loss_mask"].backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("flow_net.") for n in grads)
    assert any(n.startswith("proto_net.") for n in grads) == (protos == "compute")


def test_bad_config_values():
    with pytest.raises(ValueError, match="NONKEY_PROTOTYPES"):
        build_model(tiny_cfg("yolact_edge", **{"MODEL.YOLACT_EDGE.NONKEY_PROTOTYPES": "reuse"}))
    with pytest.raises(ValueError, match="TRAIN_MODULES entry 'flownet'"):
        build_model(tiny_cfg("yolact_edge", **{"MODEL.YOLACT_EDGE.TRAIN_MODULES": ["flownet"]}))
    with pytest.raises(ValueError, match="KEY_FRAME_INTERVAL"):
        build_model(tiny_cfg("yolact_edge", **{"MODEL.YOLACT_EDGE.KEY_FRAME_INTERVAL": 0}))
    with pytest.raises(ValueError, match="TRAIN_STAGE"):
        build_model(tiny_cfg("yolact_edge", **{"MODEL.YOLACT_EDGE.TRAIN_STAGE": "joint"}))


# ------------------------------------------------------------------------------------------------ bad stream input
def test_bad_stream_inputs_name_video_and_frame():
    model = _model()
    frames = _frames(4)
    with torch.no_grad():
        state = model.new_state()
        model.inference(frames[:2], state=state)
        with pytest.raises(ValueError, match=r"video 7, frame 3: frame 2 is missing"):
            model.inference([frames[3]], state=state)
        small = {**frames[2], "image": F.interpolate(frames[2]["image"][None], size=(96, 128))[0], "height": 96}
        with pytest.raises(ValueError, match=r"video 7, frame 2 is 96x128 .* earlier frames are 128x128"):
            model.inference([small], state=state)
        with pytest.raises(ValueError, match="video 8, frame 2 was given the stream state of video 7"):
            model.inference([{**frames[2], "video_id": 8}], state=state)
        with pytest.raises(ValueError, match="video 'clip_3' has no frames"):
            model.inference_on_video([], video_id="clip_3")
        model.inference([frames[2]], state=state)  # the right next frame still works
        state.reset()
        (out,), _ = model.inference([{**frames[0], "video_id": 8}], state=state)  # a reset state takes a new video
        assert out["frame_info"]["key_frame"] and state.stream_id == 8


# ------------------------------------------------------------------------------------------------ YouTube-VIS
def _write_ytvis(root, sizes=((96, 128), (128, 128)), num_frames=7, corrupt=None):
    """Two generated videos as JPEG frames + a YouTube-VIS JSON (uncompressed RLE in video 1, polygons in video 2)."""
    from pycocotools import mask as mask_util

    from segx.data.synthetic import mask_to_polygons

    videos, annotations = [], []
    for v, (h, w) in enumerate(sizes):
        video = render_video(VideoSpec(num_videos=1, num_frames=num_frames, seed=40 + v, height=h, width=w,
                                       min_objects=2, max_objects=2), 0)
        names = []
        for t, frame in enumerate(video.frames):
            names.append(f"vid{v}/{t:05d}.jpg")
            os.makedirs(os.path.join(root, "JPEGImages", f"vid{v}"), exist_ok=True)
            cv2.imwrite(os.path.join(root, "JPEGImages", names[-1]), frame[:, :, ::-1])
        videos.append({"id": v + 1, "height": h, "width": w, "length": num_frames, "file_names": names})
        for i, cls in enumerate(video.classes):
            segs = []
            for t in range(num_frames):
                m = video.object_mask(t, i)
                if m.sum() < 30:
                    segs.append(None)
                elif v == 0:  # uncompressed RLE, as the official YouTube-VIS files
                    counts, prev, run = [], 0, 0
                    for px in m.flatten(order="F").astype(np.uint8):
                        if px != prev:
                            counts.append(run)
                            prev, run = px, 0
                        run += 1
                    counts.append(run)
                    segs.append({"size": [h, w], "counts": counts})
                    assert mask_util.area(mask_util.frPyObjects(segs[-1], h, w)) == m.sum()
                else:
                    segs.append(mask_to_polygons(m))
            annotations.append({"id": len(annotations) + 1, "video_id": v + 1, "category_id": cls + 1,
                                "iscrowd": 0, "segmentations": segs, "bboxes": None, "areas": None})
    for a in annotations:
        a.pop("bboxes")
    data = {"videos": videos, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(("circle", "square", "triangle", "star"))]}
    if corrupt:
        corrupt(data, root)
    path = os.path.join(root, "train.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def test_youtube_vis_stream_and_evaluation(tmp_path):
    """A real format on real frames: register_youtube_vis on a small YouTube-VIS JSON of generated frames; the model
    streams each video with its own state (reset at the second video) and the "coco_video" evaluator gives per-frame
    mask AP over all frames and key / non-key frame times."""
    from detectron2.evaluation import inference_on_dataset

    from segx.engine.train_net import build_evaluators_for

    json_file = _write_ytvis(str(tmp_path))
    name = "test_ytvis_stream"
    register_youtube_vis(name, json_file, str(tmp_path / "JPEGImages"))
    records = DatasetCatalog.get(name)
    assert [(r["video_id"], r["frame_index"]) for r in records] == [(v, f) for v in (1, 2) for f in range(7)]
    assert records[0]["height"] == 96 and records[7]["height"] == 128
    assert {a["instance_id"] for r in records[:7] for a in r["annotations"]} == {1, 2}
    assert MetadataCatalog.get(name).evaluator_type == "coco_video"
    cfg = tiny_cfg("yolact_edge", output_dir=str(tmp_path), **{"DATASETS.TEST": (name,),
                                                                "MODEL.YOLACT.NUM_CLASSES": 4})
    model = _model()
    mapper = build_mapper(cfg, is_train=False)
    outs = []
    with torch.no_grad():
        for r in records:
            outs.append(model([mapper(dict(r))])[0])
    info = [o["frame_info"] for o in outs]
    assert [i["key_frame"] for i in info] == [f % 5 == 0 for f in range(7)] * 2  # the state resets per video
    assert [i["video_id"] for i in info] == [1] * 7 + [2] * 7
    assert outs[0]["instances"].image_size == (96, 128) and outs[7]["instances"].image_size == (128, 128)
    # the evaluation path (detectron2's loader + inference_on_dataset), frames in order
    from detectron2.data import build_detection_test_loader

    loader = build_detection_test_loader(cfg, name, mapper=mapper)
    results = inference_on_dataset(model, loader, build_evaluators_for(cfg, name, str(tmp_path / "eval")))
    assert "segm" in results and "bbox" in results and math.isfinite(results["segm"]["AP"])
    assert results["frame_time"]["key_frames"] == 4 and results["frame_time"]["nonkey_frames"] == 10


@pytest.mark.parametrize("case,pattern", [
    ("missing_frame", r"video id 1, frame 3: image file .*vid0/00003.jpg does not exist \(missing frame\)"),
    ("frame_size", r"video id 2, frame 4: image .*vid1/00004.jpg is 64x64, the video is 128x128"),
    ("empty_video", r"video id 3: the video is empty"),
    ("segm_length", r"annotation \(instance\) id 1 \(video id 1\): 'segmentations' has 6 entries, the video has 7"),
    ("bad_polygon", r"annotation \(instance\) id 3 \(video id 2\), frame 1: polygon 0 has 2 points"),
    ("rle_sum", r"annotation \(instance\) id 1 \(video id 1\), frame 2: uncompressed RLE counts add up to 105 "
                r"pixels, its size 96x128 has 12288"),
    ("rle_corrupt", r"annotation \(instance\) id 1 \(video id 1\), frame 2: compressed RLE counts are corrupt"),
])
def test_youtube_vis_validation_names_file_video_and_frame(tmp_path, case, pattern):
    def corrupt(data, root):
        if case == "missing_frame":
            os.remove(os.path.join(root, "JPEGImages", "vid0", "00003.jpg"))
        elif case == "frame_size":
            cv2.imwrite(os.path.join(root, "JPEGImages", "vid1", "00004.jpg"), np.zeros((64, 64, 3), np.uint8))
        elif case == "empty_video":
            data["videos"].append({"id": 3, "height": 128, "width": 128, "length": 0, "file_names": []})
        elif case == "segm_length":
            data["annotations"][0]["segmentations"].pop()
        elif case == "bad_polygon":
            data["annotations"][2]["segmentations"][1] = [[1.0, 2.0, 3.0, 4.0]]
        elif case == "rle_sum":  # pycocotools would decode past the mask's end
            data["annotations"][0]["segmentations"][2] = {"size": [96, 128], "counts": [100, 5]}
        elif case == "rle_corrupt":
            data["annotations"][0]["segmentations"][2] = {"size": [96, 128], "counts": "~~~~"}

    json_file = _write_ytvis(str(tmp_path), corrupt=corrupt)
    with pytest.raises(DatasetValidationError, match=pattern) as e:
        validate_youtube_vis_json(json_file, str(tmp_path / "JPEGImages"))
    assert json_file in str(e.value)
    name = f"test_ytvis_bad_{case}"
    register_youtube_vis(name, json_file, str(tmp_path / "JPEGImages"))
    with pytest.raises(DatasetValidationError, match=pattern):
        DatasetCatalog.get(name)


def test_frame_time_evaluator():
    ev = FrameTimeEvaluator()
    ev.reset()
    ev.process([{}] * 3, [{"frame_info": {"key_frame": k, "seconds": s}} for k, s in
                          ((True, 0.3), (False, 0.1), (False, 0.2))])
    ev.process([{}], [{"instances": None}])  # a model without frame_info
    res = ev.evaluate()["frame_time"]
    assert res["key_frames"] == 1 and res["nonkey_frames"] == 2
    assert res["key_ms"] == pytest.approx(300) and res["nonkey_ms"] == pytest.approx(150)
    assert res["nonkey_speedup"] == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------------ checkpoints
def test_converter_round_trip_and_refusal(tmp_path):
    model = _model()
    official = to_official_state_dict(model.state_dict())
    for key in ("fpn_phase_1.lat_layers.0.weight", "fpn_phase_2.pred_layers.2.weight",
                "fpn_phase_2.downsample_layers.1.bias", "spa.refine_convs.1.0.weight",
                "flow_net_pre_convs.convs.0.0.weight", "flow_net.conv1.1.0.bias", "flow_net.conv3.0.0.weight",
                "flow_net.pred1.conv.weight", "flow_net.pred2.scale.bias", "flow_net.pred3.bias.weight",
                "flow_net.upfeat3.weight", "flow_net.upflow2.weight", "prediction_layers.0.conf_layer.weight",
                "backbone.layers.2.0.conv1.weight", "proto_net.0.weight", "semantic_seg_conv.weight"):
        assert key in official, key
    # C5 first in the official file
    assert torch.equal(official["fpn_phase_1.lat_layers.0.weight"],
                       model.state_dict()["backbone.lateral_convs.2.weight"])
    fresh = _model()
    fresh.load_state_dict(convert_official_state_dict(official, fresh.state_dict()))
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    # refusal lists every unmatched key
    bad = dict(official)
    bad.pop("flow_net.pred2.scale.weight")
    bad["flow_net.pred4.conv.weight"] = torch.zeros(1)
    bad["spa.refine_convs.0.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(YolactEdgeConversionError) as e:
        convert_official_state_dict(bad, fresh.state_dict())
    msg = str(e.value)
    assert "flow_net.pred4.conv.weight" in msg and "flow_net.predict4.scale.weight" in msg
    assert "spa.refine_convs.0.0.weight (3, 3)" in msg and "YolactEdge checkpoint" in msg
    # image-only checkpoints (no flow net, no SPA; YOLACT's fpn.* names) with allow_missing
    image_only = {k.replace("fpn_phase_1.", "fpn.").replace("fpn_phase_2.", "fpn."): v for k, v in official.items()
                  if not k.startswith(("flow_net", "spa."))}
    with pytest.raises(YolactEdgeConversionError, match="model keys are missing"):
        convert_official_state_dict(image_only, fresh.state_dict())
    out = convert_official_state_dict(image_only, fresh.state_dict(), allow_missing=IMAGE_ONLY_PREFIXES)
    assert torch.equal(out["proto_net.0.weight"], model.state_dict()["proto_net.0.weight"])
    # the command line refuses without writing, then converts
    src = tmp_path / "official.pth"
    torch.save(bad, src)
    tiny_config, tiny = TINY["yolact_edge"]
    opts = [str(x) for k, v in tiny.items() if k != "MODEL.WEIGHTS"
            for x in (k, json.dumps(v) if isinstance(v, list) else v)]
    argv = sys.argv
    try:
        for ckpt, code in ((bad, 1), (official, 0)):
            torch.save(ckpt, src)
            sys.argv = ["convert", "--config-file", os.path.join(REPO_ROOT, tiny_config), str(src),
                        str(tmp_path / "out.pth"), *opts]
            with pytest.raises(SystemExit) as ex:
                runpy.run_path(os.path.join(REPO_ROOT, "tools", "convert_yolact_edge_to_d2.py"), run_name="__main__")
            assert ex.value.code == code and (tmp_path / "out.pth").exists() == (code == 0)
    finally:
        sys.argv = argv



# ------------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("protos", ["compute", "warp"])
def test_export_both_paths(tmp_path, protos):
    pytest.importorskip("onnxruntime")
    from segx.export import export_tolerances
    from segx.export.yolact_edge import export_yolact_edge

    model = _model(**{"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0, "MODEL.YOLACT_EDGE.NONKEY_PROTOTYPES": protos})
    frames = _frames(2)
    second = [torch.nn.functional.interpolate(x["image"][None], size=(96, 160), mode="bilinear")[0] for x in frames]
    report = export_yolact_edge(model, frames[0]["image"], frames[1]["image"], str(tmp_path), second_images=second)
    ts_tol, onnx_tol = export_tolerances(model)
    for path in ("key_frame", "nonkey_frame"):
        r = report[path]
        assert r["num_detections"] > 0
        assert r["torchscript_max_diff"] <= ts_tol, (path, r)
        assert r["onnx_max_diff"] <= onnx_tol, (path, r)
        r2 = r["second_size"]
        assert r2["torchscript_max_diff"] <= ts_tol and r2["onnx_max_diff"] <= onnx_tol, (path, r2)
    assert report["key_frame"]["output_shapes"][4:] == [[1, 32, 16, 16], [1, 32, 8, 8], [1, 32, 4, 4]] + (
        [list(model.predict(*_features_of(model, frames[0]))["protos"].shape)] if protos == "warp" else [])
    # the exported non-key graph with the exported key features equals streaming in eager
    loaded_key = torch.jit.load(report["key_frame"]["torchscript"])
    loaded_nonkey = torch.jit.load(report["nonkey_frame"]["torchscript"])
    with torch.no_grad():
        key_out = loaded_key(frames[0]["image"])
        boxes = loaded_nonkey(frames[1]["image"], *key_out[4:])[0]
        _, state = model.inference([frames[0]], state=model.new_state())
        (res,), _ = model.inference([frames[1]], state=state, do_postprocess=False)
    torch.testing.assert_close(boxes, res.pred_boxes.tensor)


def _features_of(model, x):
    images = model.preprocess_image([x])
    return model.extract_features(images, [x]), images


# ------------------------------------------------------------------------------------------------ training (slow)
@pytest.mark.slow
@pytest.mark.parametrize("stage,watch", [("flow", ("loss_flow",)), ("video", ("loss_feature_matching", "loss_cls"))])
def test_stage_losses_fall(stage, watch):
    """30 SGD steps of a stage on one fixed batch of pairs lower its losses."""
    cfg = tiny_cfg("yolact_edge", **{"MODEL.YOLACT_EDGE.TRAIN_STAGE": stage, "MODEL.YOLACT_EDGE.TRAIN_MODULES": []})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    mapper = build_mapper(cfg, is_train=True)
    records = DatasetCatalog.get("segx_videos_train")
    np.random.seed(0)
    batch = [mapper(records[i]) for i in (3, 31, 62, 95)]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.005, momentum=0.9)
    history = []
    for _ in range(30):
        losses = model(batch)
        history.append({k: float(v) for k, v in losses.items()})
        opt.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
    for key in watch:
        first, last = np.mean([h[key] for h in history[:3]]), np.mean([h[key] for h in history[-3:]])
        assert last < 0.8 * first, (key, first, last)
