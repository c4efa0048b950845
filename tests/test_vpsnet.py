"""VPSNet: the fuse module (zero flow + identical frames, a known translation), the track head (targets, loss, the
official match score and assignment worked by hand, the stream memory), the meta-architecture (training stages,
streams with track ids reset between videos, a new fusion equal to UPSNet), the data (Cityscapes-VPS registration,
mapper targets, the flow convention) with errors that name file, video and frame, and export of the per-frame path."""
import copy
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from conftest import load_cfg, tiny_cfg
from segx.data.datasets.cityscapes_vps import load_cityscapes_vps_json
from segx.data.datasets.coco import DatasetValidationError
from segx.data.mappers import build_mapper
from segx.data.synthetic_video_panoptic import VideoPanopticSpec, write_video_panoptic_dataset
from segx.layers import flow_warp
from segx.modeling.meta_arch.base import StreamState
from segx.modeling.panoptic.fusion import FeatureFusion, TemporalSpatialAttention, gather_levels, scatter_levels
from segx.modeling.panoptic.track_head import (
    TrackMatcher,
    assign_tracks,
    match_scores,
    track_affinity,
    track_loss,
    track_targets,
)

VAL = "segx_vps_shapes_val"


def _levels(seed=0, C=8, size=32, n=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, C, size >> i, size >> i, generator=g) for i in range(n)]


# ------------------------------------------------------------------------------------------------ fuse
def test_fuse_zero_flow_identical_frames_leaves_features_unchanged_up_to_the_fusion_weights():
    torch.manual_seed(0)
    feats = _levels()
    flow = torch.zeros(1, 2, 32, 32)
    # a new module (ZERO_INIT): aligned reference == target exactly, and the output is the input
    fusion = FeatureFusion(8, 5, 0, refine_flow=True, search_range=2, zero_init=True)
    out, aux = fusion(feats, [f.clone() for f in feats], flow, return_aligned=True)
    assert torch.equal(aux["aligned"], aux["target"]) and torch.equal(aux["residual_flow"], torch.zeros(1, 2, 32, 32))
    assert all(torch.equal(o, f) for o, f in zip(out, feats))
    # with trained (here random) fusion weights, the change is exactly what the fusion makes of two copies of the target
    with torch.no_grad():
        fusion.gate.fill_(0.7)
    out = fusion(feats, [f.clone() for f in feats], flow)
    target = gather_levels(feats, 0)
    fused = fusion.refine(fusion.attention(torch.stack([target, target], 1))) * 0.7
    for o, f, r in zip(out, feats, scatter_levels(fused, feats, 0)):
        torch.testing.assert_close(o, f + r)


def test_fuse_known_translation_lines_up_the_warped_reference():
    # the reference shows the target's content moved 3 px right and 2 px down: reference(x, y) = target(x - 3, y - 2),
    # so target(p) = reference(p + d) with d = (3, 2): the flow is d everywhere
    torch.manual_seed(0)
    target = torch.randn(1, 8, 24, 24)
    reference = torch.zeros_like(target)
    reference[..., 2:, 3:] = target[..., :-2, :-3]
    flow = torch.tensor([3.0, 2.0]).view(1, 2, 1, 1).expand(1, 2, 24, 24).contiguous()
    fusion = FeatureFusion(8, 1, 0, refine_flow=True, search_range=2, zero_init=True)
    _, aux = fusion([target], [reference], flow, return_aligned=True)
    torch.testing.assert_close(aux["aligned"][..., :-2, :-3], target[..., :-2, :-3], rtol=0, atol=1e-6)
    # and the same through segx.layers.flow_warp directly, with a fractional shift on a smooth map (bilinear exact
    # for a linear ramp)
    ramp = torch.arange(24.0).view(1, 1, 1, 24).expand(1, 1, 24, 24).contiguous()
    half = flow_warp(ramp, torch.full((1, 2, 24, 24), 0.5))
    torch.testing.assert_close(half[..., :-1, :-1], ramp[..., :-1, :-1] + 0.5)


def test_fusion_attention_weighs_frames_and_keeps_shapes():
    att = TemporalSpatialAttention(8, 2)
    x = torch.randn(2, 2, 8, 9, 7)  # odd sizes: the spatial pyramid comes back to H x W
    assert att(x).shape == (2, 8, 9, 7)
    with pytest.raises(ValueError, match="flow must be \\[B,2,h,w\\] at level 0"):
        FeatureFusion(8, 5)(_levels(), _levels(1), torch.zeros(1, 2, 16, 16))


# ------------------------------------------------------------------------------------------------ track head
def test_track_targets_and_loss_by_hand():
    # current identities 5, 7, 9; the reference frame holds 9 then 5 -> entries 1 + index, 0 = new object
    assert track_targets(torch.tensor([5, 7, 9]), torch.tensor([9, 5])).tolist() == [2, 0, 1]
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ref = torch.tensor([[2.0, 0.0]])
    aff = track_affinity(emb, ref)  # rows [0 | 2], [0 | 0]
    assert aff.tolist() == [[0.0, 2.0], [0.0, 0.0]]
    # row 0 target 1: -log(e^2 / (1 + e^2)); row 1 target 0: -log(1/2); summed over rows / 2 rows
    expected = (-np.log(np.exp(2) / (1 + np.exp(2))) + np.log(2)) / 2
    assert float(track_loss([aff], [torch.tensor([1, 0])])) == pytest.approx(expected, rel=1e-6)
    # an image without foreground rows counts 0 in the mean over images
    empty = track_affinity(torch.zeros(0, 2), ref)
    assert float(track_loss([aff, empty], [torch.tensor([1, 0]), torch.zeros(0, dtype=torch.long)])) == \
        pytest.approx(expected / 2, rel=1e-6)


def test_match_score_combines_affinity_score_iou_and_class_as_official():
    # one instance (score 0.8, class 2) against two memory entries: affinities 2 and 1; IoUs 0.1 and 0.6; classes
    # 2 (same) and 3. log softmax of [0, 2, 1] = [0, 2, 1] - log(1 + e^2 + e).
    aff = torch.tensor([[0.0, 2.0, 1.0]])
    scores = match_scores(aff, torch.tensor([0.8]), torch.tensor([[0.1, 0.6]]), torch.tensor([[True, False]]))
    lse = np.log(1 + np.exp(2) + np.exp(1))
    base = np.log(0.8)
    expected = [0 - lse + base + 2 * 0.0 + 10 * 1,   # new object: IoU 0 (dummy), class agreement 1
                2 - lse + base + 2 * 0.1 + 10 * 1,   # entry 0: same class
                1 - lse + base + 2 * 0.6 + 10 * 0]   # entry 1: other class
    assert scores[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert int(scores.argmax()) == 1  # the same-class entry wins despite the lower IoU
    # no coefficients: the affinity's log-probabilities alone
    assert match_scores(aff, torch.tensor([0.8]), torch.zeros(1, 2), torch.zeros(1, 2), None)[0].tolist() == \
        pytest.approx([0 - lse, 2 - lse, 1 - lse], rel=1e-6)


def test_assign_tracks_gives_a_contested_entry_to_the_higher_score():
    scores = torch.tensor([[0.0, 5.0, 1.0],    # row 0 -> entry 0 (5)
                           [0.0, 7.0, 1.0],    # row 1 -> entry 0 (7): takes it, row 0 becomes new
                           [9.0, 1.0, 1.0],    # row 2 -> new object
                           [0.0, 1.0, 3.0]])   # row 3 -> entry 1
    assert assign_tracks(scores).tolist() == [-1, 0, -1, 1]


def _frame(boxes, classes, emb, scores=None):
    inst = Instances((64, 64))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.pred_classes = torch.tensor(classes)
    inst.scores = torch.tensor(scores or [0.9] * len(classes))
    inst.track_embeddings = torch.tensor(emb, dtype=torch.float32)
    return inst


def test_stream_memory_keeps_ids_gives_new_ones_and_resets_between_videos():
    state = StreamState("v1")
    state.matcher = TrackMatcher()
    a, b = [0, 0, 10, 10], [30, 30, 50, 50]
    f0 = state.update(_frame([a, b], [0, 1], [[4, 0], [0, 4]]))
    assert f0.track_ids.tolist() == [0, 1]
    # next frame: the two objects swapped in order and moved a bit, plus a third one
    f1 = state.update(_frame([[31, 30, 51, 50], [1, 0, 11, 10], [5, 40, 20, 60]], [1, 0, 2],
                             [[0, 4], [4, 0], [-4, -4]]))
    assert f1.track_ids.tolist() == [1, 0, 2]
    assert state.tracks.track_ids.tolist() == [0, 1, 2] and state.tracks.pred_boxes.tensor[1].tolist() == [31, 30, 51, 50]
    # an empty frame keeps the memory
    state.update(_frame(np.zeros((0, 4)).tolist(), [], np.zeros((0, 2)).tolist()))
    assert len(state.tracks) == 3
    # a new video: memory and identities start over
    state.reset()
    assert state.tracks is None
    assert state.update(_frame([b], [1], [[0, 4]])).track_ids.tolist() == [0]


# ------------------------------------------------------------------------------------------------ model
@pytest.fixture(scope="module")
def val_video():
    """Frames 0-2 of video 1 and 0-1 of video 2 of the synthetic val set."""
    recs = DatasetCatalog.get(VAL)
    return [r for r in recs if r["video_id"] == 1][:3] + [r for r in recs if r["video_id"] == 2][:2]


def _mapped(cfg, records, is_train):
    mapper = build_mapper(cfg, is_train)
    return [mapper(copy.deepcopy(r)) for r in records]


@pytest.mark.parametrize("stage", ["image", "flow", "video"])
def test_training_stages_give_finite_losses_and_train_their_modules(stage, val_video):
    torch.manual_seed(0)
    cfg = tiny_cfg("vpsnet", **{"MODEL.VPSNET.TRAIN_STAGE": stage})
    model = build_model(cfg).train()
    batch = _mapped(cfg, val_video[:2], True)
    if stage == "video":  # an empty target frame trains too (no foreground row for the track loss)
        batch[1]["instances"] = batch[1]["instances"][:0]
    with EventStorage():
        losses = model(batch)
    expected = {"image": {"loss_sem_seg", "loss_panoptic", "loss_mask"}, "flow": {"loss_flow"},
                "video": {"loss_sem_seg", "loss_panoptic", "loss_track"}}[stage]
    assert expected <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    trained = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert {"image": "flow_net" not in trained and "track_head" not in trained, "flow": trained == {"flow_net"},
            "video": "flow_net" not in trained and {"fusion", "track_head", "backbone"} <= trained}[stage]
    if stage == "video":
        assert model.track_head.fcs[0].weight.grad is not None and model.fusion.gate.grad is not None


def test_streams_give_track_ids_per_video_and_reset_between_videos(val_video):
    torch.manual_seed(0)
    cfg = tiny_cfg("vpsnet", **{"MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 0.0, "MODEL.UPSNET.STUFF_AREA_LIMIT": 0})
    model = build_model(cfg).eval()
    inputs = _mapped(cfg, val_video[1:4], False)  # frames 1, 2 of video 1, frame 0 of video 2
    with torch.no_grad():
        outs = model(inputs)  # detectron2's evaluation: no state, frames carry video_id
    for out, x in zip(outs, inputs):
        pan, infos = out["panoptic_seg"]
        assert pan.shape == (x["height"], x["width"])
        things = [s for s in infos if s["isthing"]]
        assert things and all("track_id" in s for s in things)
        assert len({s["track_id"] for s in things}) == len(things)
    # the second video starts a new memory: the instances entering its first frame's panoptic head get new ids
    # 0..N-1 in score order; the merge may leave some without pixels (they keep their ids: the memory tracks every
    # instance that enters the panoptic head, as official), so the segments' ids increase with their instance index
    # and stay below N; the same ids as video 2 alone
    v2 = sorted((s["instance_id"], s["track_id"]) for s in outs[2]["panoptic_seg"][1] if s["isthing"])
    assert v2 and all(a[1] < b[1] for a, b in zip(v2, v2[1:])) and all(t >= i for i, t in v2)
    assert max(t for _, t in v2) < cfg.MODEL.UPSNET.PANOPTIC_TOPK_TEST
    with torch.no_grad():
        alone = model.inference_on_video(inputs[2:3])[0]
    ids = lambda out: [s.get("track_id") for s in out["panoptic_seg"][1]]  # noqa: E731
    assert ids(alone) == ids(outs[2])
    # an explicit state per video gives the same outputs; running video 1 again starts a new internal stream
    state = model.new_state()
    with torch.no_grad():
        again, state = model.inference(inputs[:2], state=state)
        third = model(inputs[:2])
    for x, y, z in zip(again, outs[:2], third):
        assert [s.get("track_id") for s in x["panoptic_seg"][1]] == [s.get("track_id") for s in y["panoptic_seg"][1]] \
            == [s.get("track_id") for s in z["panoptic_seg"][1]]
    assert state.frame_index == 2 and state.reference is not None and len(state.tracks) > 0


def test_new_fusion_gives_upsnets_output_from_upsnets_weights(val_video):
    # VPSNet built from UPSNet's weights (ZERO_INIT) outputs exactly what UPSNet does, frame by frame
    torch.manual_seed(0)
    open_ = {"MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 0.0, "MODEL.UPSNET.STUFF_AREA_LIMIT": 0}
    cfg = tiny_cfg("vpsnet", **open_)
    vps = build_model(cfg).eval()
    ucfg = tiny_cfg("vpsnet", **dict(open_, **{"MODEL.META_ARCHITECTURE": "UPSNet"}))
    ups = build_model(ucfg).eval()
    missing, unexpected = ups.load_state_dict(vps.state_dict(), strict=False)
    assert not missing and {k.split(".")[0] for k in unexpected} == {"flow_net", "fusion", "track_head"}
    inputs = _mapped(cfg, val_video[:2], False)
    with torch.no_grad():
        a = vps.inference_on_video(inputs)
        b = ups(inputs)
    for x, y in zip(a, b):
        assert torch.equal(x["panoptic_seg"][0], y["panoptic_seg"][0])


def test_small_config_shares_the_upsnet_cpu_baselines_backbone_and_heads():
    ours = load_cfg("configs/VPSNet/vpsnet_R_18_FPN_shapes.yaml")
    theirs = load_cfg("configs/UPSNet/upsnet_R_18_FPN_scratch.yaml")
    for key in ("MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "MODEL.RESNETS", "MODEL.FPN", "MODEL.ANCHOR_GENERATOR",
                "MODEL.RPN", "MODEL.ROI_BOX_HEAD", "MODEL.ROI_MASK_HEAD", "MODEL.ROI_HEADS.NUM_CLASSES",
                "MODEL.SEM_SEG_HEAD.CONVS_DIM", "MODEL.SEM_SEG_HEAD.NORM", "MODEL.UPSNET.SEM_NUM_CONVS",
                "MODEL.UPSNET.SEM_DEFORMABLE", "MODEL.UPSNET.STUFF_AREA_LIMIT", "INPUT.MIN_SIZE_TRAIN"):
        a, b = ours, theirs
        for part in key.split("."):
            a, b = a[part], b[part]
        assert a == b, key


# ------------------------------------------------------------------------------------------------ bad input
def test_frames_of_one_video_with_different_sizes_are_refused(val_video):
    cfg = tiny_cfg("vpsnet")
    model = build_model(cfg).eval()
    inputs = _mapped(cfg, val_video[:2], False)
    inputs[1]["image"] = F.interpolate(inputs[1]["image"][None].float(), size=(64, 96))[0]
    inputs[1]["height"], inputs[1]["width"] = 64, 96
    with pytest.raises(ValueError, match=r"video 1, frame 1 .* is 64x96 .* every frame of a video must have one size"):
        with torch.no_grad():
            model(inputs)


def test_a_reference_from_another_video_is_refused(val_video):
    cfg = tiny_cfg("vpsnet")
    model = build_model(cfg).eval()
    inputs = _mapped(cfg, val_video, False)
    state = model.new_state()
    with torch.no_grad():
        model.inference(inputs[:1], state=state)
        with pytest.raises(ValueError, match=r"video 2, frame 0 .*was given the stream state of video 1"):
            model.inference(inputs[3:4], state=state)
    # training: a pair whose reference comes from another video
    tcfg = tiny_cfg("vpsnet", **{"MODEL.VPSNET.TRAIN_STAGE": "video"})
    model = build_model(tcfg).train()
    batch = _mapped(tcfg, val_video[:1], True)
    batch[0]["ref_video_id"] = 2
    with pytest.raises(ValueError, match=r"video 1, frame 0 has a reference frame from video 2"):
        with EventStorage():
            model(batch)


@pytest.fixture
def tiny_vps(tmp_path):
    """A Cityscapes-VPS-format set of 2 videos x 3 frames written to a temporary folder."""
    root = write_video_panoptic_dataset(VideoPanopticSpec(2, 3, seed=5, height=64, width=64), str(tmp_path / "vps"))
    return root


def _load(root, **kwargs):
    return load_cityscapes_vps_json(os.path.join(root, "panoptic_video.json"), os.path.join(root, "panoptic"),
                                    os.path.join(root, "images"), **kwargs)


def test_a_png_with_ids_not_in_its_json_is_named_with_video_and_frame(tiny_vps):
    recs = _load(tiny_vps)
    assert [(r["video_id"], r["frame_index"]) for r in recs] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    bad = copy.deepcopy(recs[4])
    dropped = bad["segments_info"].pop(0)
    cfg = tiny_cfg("vpsnet", **{"MODEL.VPSNET.TRAIN_STAGE": "image"})
    with pytest.raises(ValueError, match=rf"video 2, frame 1\).*segment ids \[{dropped['id']}\].*does not list"):
        build_mapper(cfg, True)(bad)
    # the same file problem found at registration (check_png_ids reads every PNG)
    path = os.path.join(tiny_vps, "panoptic_video.json")
    data = json.load(open(path))
    data["annotations"][4]["segments_info"].pop(0)
    json.dump(data, open(path, "w"))
    with pytest.raises(DatasetValidationError, match=rf"video 2, frame 1 .*segment ids \[{dropped['id']}\]"):
        _load(tiny_vps, check_png_ids=True)


def test_registration_names_file_video_and_frame_of_every_problem(tiny_vps):
    path = os.path.join(tiny_vps, "panoptic_video.json")
    data = json.load(open(path))
    data["images"][1]["height"] = 32  # video 1, frame 1: another size
    data["images"].append(dict(data["images"][2]))  # video 1, frame 2 listed twice
    data["annotations"][3]["segments_info"][0]["category_id"] = 99  # video 2, frame 0: unknown category
    thing = next(s for s in data["annotations"][5]["segments_info"] if s["category_id"] < 10)
    thing["category_id"] = thing["category_id"] % 4 + 1  # video 2, frame 2: an id changes class
    os.remove(os.path.join(tiny_vps, "panoptic", data["annotations"][2]["file_name"]))  # video 1, frame 2: no PNG
    json.dump(data, open(path, "w"))
    with pytest.raises(DatasetValidationError) as e:
        _load(tiny_vps)
    msg = str(e.value)
    assert path in msg
    for needle in ("video 1, frame 2: listed twice", "video 1, frame 1 (0001_0001_shapes.jpg): 32x64",
                   "video 2, frame 0 (0002_0000_shapes.jpg): segment 11000 has unknown category id 99",
                   f"video 2, frame 2 (0002_0002_shapes.jpg): segment {thing['id']} is category",
                   "video 1, frame 2 (0001_0002_shapes.jpg): panoptic PNG"):
        assert needle in msg, needle


# ------------------------------------------------------------------------------------------------ data
def test_mapper_targets_ids_references_and_known_flow(val_video):
    cfg = tiny_cfg("vpsnet", **{"MODEL.VPSNET.TRAIN_STAGE": "video", "INPUT.MIN_SIZE_TRAIN": (128,),
                                "MODEL.VPSNET.REF_FRAME_OFFSETS": [1]})
    rec = val_video[0]
    x = build_mapper(cfg, True)(copy.deepcopy(rec))
    things = {s["id"]: s["category_id"] for s in rec["segments_info"] if s["isthing"] and not s["iscrowd"]}
    assert dict(zip(x["instances"].gt_ids.tolist(), x["instances"].gt_classes.tolist())) == things
    stuff = sorted(s["category_id"] for s in rec["segments_info"] if not s["isthing"])
    assert sorted(set(x["sem_seg"].unique().tolist()) - {0, 255}) == stuff
    assert x["ref_frame_index"] == 1 and x["ref_video_id"] == 1
    assert set(x["ref_instances"].gt_ids.tolist()) & set(things)  # identities kept across frames
    # flow stage: image(p) = ref_image(p + flow(p)) wherever the same layer shows in both frames
    fcfg = tiny_cfg("vpsnet", **{"MODEL.VPSNET.TRAIN_STAGE": "flow", "INPUT.MIN_SIZE_TRAIN": (128,),
                                 "MODEL.VPSNET.REF_FRAME_OFFSETS": [2]})
    y = build_mapper(fcfg, True)(copy.deepcopy(rec))
    img, ref, flow = y["image"].float()[None], y["ref_image"].float()[None], y["flow"][None]
    warped = flow_warp(ref, flow)
    err = (warped - img).abs().mean(1)[0]
    inside = (flow[0, 0].abs() < 100)
    inside[:6], inside[-6:], inside[:, :6], inside[:, -6:] = False, False, False, False
    assert float(err[inside].median()) < 8  # JPEG and sensor noise; a wrong sign or axis gives ~40
    wrong = (flow_warp(ref, -flow) - img).abs().mean(1)[0]
    assert float(wrong[inside].median()) > float(err[inside].median())


# ------------------------------------------------------------------------------------------------ export
def test_export_per_frame_path_torchscript_and_onnx(tmp_path, val_video):
    from segx.export import export_tolerances, second_size_image
    from segx.export.vpsnet import export_vpsnet

    torch.manual_seed(0)
    cfg = tiny_cfg("vpsnet", **{"MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 0.0, "MODEL.VPSNET.FUSE.ZERO_INIT": False})
    model = build_model(cfg).eval()
    first, second = (x["image"].float() for x in _mapped(cfg, val_video[:2], False))
    # traced at 128x128, run at 96x160 (another aspect ratio, not a multiple of P6's stride): no size is baked into
    # either graph (the fusion's pooling between levels once was)
    first, second = (second_size_image(x, (128, 128)) for x in (first, second))
    report = export_vpsnet(model, first, second, str(tmp_path),
                           second_images=(second_size_image(first, (96, 160)), second_size_image(second, (96, 160))))
    ts_tol, onnx_tol = export_tolerances(model)
    for name in ("first_frame", "next_frame"):
        r = report[name]
        assert "onnx_error" not in r, r.get("onnx_error")
        assert r["second_size"]["size"] != list(first.shape[-2:])
        for where in (r, r["second_size"]):
            assert where["num_instances"] > 0, (name, where)
            assert where["torchscript_max_diff"] <= ts_tol and where["onnx_max_diff"] <= onnx_tol, (name, where)


# ------------------------------------------------------------------------------------------- image flow networks
@pytest.mark.parametrize("name", ["ImageFlowNet", "PWCFlowNet"])
def test_image_flow_nets_predict_every_stride_finest_first_near_zero_at_init(name):
    from segx.modeling.flow.image_flownet import build_image_flow_net

    torch.manual_seed(0)
    net = build_image_flow_net(name, channels=(8, 16, 16, 24, 32), finest_stride=4)
    a, b = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    flows = net(a, b)
    assert net.strides == [4, 8, 16, 32] and len(flows) == 4
    for s, f in zip(net.strides, flows):
        assert tuple(f.shape) == (2, 2, 64 // s, 96 // s)
        assert float(f.abs().max()) < 1.0  # starts near zero flow (input pixels)
    with pytest.raises(ValueError, match="FINEST_STRIDE"):
        build_image_flow_net(name, channels=(8, 16), finest_stride=8)


def test_local_correlation_peaks_at_the_displacement():
    from segx.layers import local_correlation

    torch.manual_seed(0)
    a = torch.randn(1, 16, 20, 20)
    dx, dy, d = 2, -1, 3
    b = torch.roll(a, shifts=(dy, dx), dims=(2, 3))  # b(p + (dx, dy)) = a(p)
    corr = local_correlation(a, b, d)[0, :, 5:15, 5:15]  # away from the borders
    best = corr.mean((1, 2)).argmax().item()
    assert (best // (2 * d + 1) - d, best % (2 * d + 1) - d) == (dy, dx)


@pytest.mark.slow
def test_pwc_flow_net_learns_a_translation():
    """PWCFlowNet with AdamW (the flow stage's optimizer) on random smooth textures shifted by up to ±3 px: the
    end-point error at stride 4 falls below a third of zero flow's within 150 steps."""
    from segx.modeling.flow import flow_epe_loss
    from segx.modeling.flow.image_flownet import PWCFlowNet

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = PWCFlowNet(channels=(8, 16, 24, 32), finest_stride=4)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def pairs(n):
        tex = F.avg_pool2d(torch.randn(n, 3, 72, 72, generator=g), 5, 1, 2)[:, :, 4:68, 4:68] * 3
        shift = torch.randint(-3, 4, (n, 2), generator=g)
        ref = torch.stack([torch.roll(t, shifts=(int(s[1]), int(s[0])), dims=(1, 2)) for t, s in zip(tex, shift)])
        flow = shift.float().view(n, 2, 1, 1).expand(n, 2, 64, 64)  # target(p) = ref(p + shift)
        return tex, ref, flow

    def epe(flows, flow):
        return float(torch.linalg.vector_norm(flows[0] - F.avg_pool2d(flow, 4), dim=1)[:, 2:-2, 2:-2].mean())

    for _ in range(150):
        tex, ref, flow = pairs(8)
        loss = flow_epe_loss(net(tex, ref), flow)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tex, ref, flow = pairs(16)
    with torch.no_grad():
        zero = float(torch.linalg.vector_norm(flow, dim=1).mean())
        assert epe(net(tex, ref), flow) < zero / 3, (epe(net(tex, ref), flow), zero)


def test_trainer_builds_adamw_with_clipping_and_names_a_bad_optimizer():
    from segx.engine.train_net import Trainer

    cfg = tiny_cfg("vpsnet", **{"SEGX.SOLVER.OPTIMIZER": "AdamW", "SOLVER.CLIP_GRADIENTS.ENABLED": True})
    model = build_model(cfg)
    opt = Trainer.build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW) and type(opt).__name__ == "AdamWWithGradientClip"
    cfg.defrost()
    cfg.SEGX.SOLVER.OPTIMIZER = "Adagrad"
    with pytest.raises(ValueError, match="SEGX.SOLVER.OPTIMIZER"):
        Trainer.build_optimizer(cfg, model)
