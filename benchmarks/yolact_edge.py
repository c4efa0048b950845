"""CPU time of YolactEdge's key and non-key frames against a YOLACT frame of the same backbone, in one process.

    python benchmarks/yolact_edge.py --config configs/YolactEdge/yolact_edge_R_50_FPN_550.yaml --frames 10 \
        --opts MODEL.YOLACT.SCORE_THRESH_TEST 0.0                      # 550², R-50, random weights, 100 detections
    python benchmarks/yolact_edge.py --config configs/YolactEdge/yolact_edge_R_18_shapes_video.yaml --frames 40 \
        --weights output/yolact_edge_R_18_shapes_video/model_final.pth  # the CPU model, trained

YOLACT is the same network without the flow net (``MODEL.META_ARCHITECTURE YOLACT`` on the same config, loaded with
the same weights), so both share backbone, FPN, protonet and heads. The frames are the first video of
``--dataset`` (segx_videos_val), squared to the input size beforehand (outside the timing), batch 1. For each frame,
interleaved so machine load hits both alike: a YOLACT frame (``inference``, with postprocessing) and the next frame
of a YolactEdge stream (``inference(..., state=...)``: a key frame every k frames), and the next frame of a second
stream of the same model with ``NONKEY_PROTOTYPES "warp"`` (non-key frames warp the key frame's prototypes instead of
running the protonet; not the paper's). Prints the median ms of a YOLACT frame, a key frame, a non-key frame (both
ways), the ratios, and then a second pass with the per-part split (each part's median, run step by step with the
model's own functions; the steps are checked to give the stream's output), and last the same split in GFLOPs
on one non-key frame (torch's FlopCounterMode): the ratio a non-key frame reaches if every part ran at the same
speed per FLOP, i.e. what the method itself saves.
"""
import argparse
import copy
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import segx  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, detection_utils
from detectron2.modeling import build_model

from segx.config import add_segx_config
from segx.modeling.flow import warp_features
from segx.modeling.yolact.edge import bottom_up_until, warp_prototypes
from segx.modeling.yolact.inference import square_resize


def build(config, weights, opts, arch=None):
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    if arch:
        cfg.MODEL.META_ARCHITECTURE = arch
    model = build_model(cfg).eval()
    if weights:
        DetectionCheckpointer(model).load(weights)
    return cfg, model


def video_frames(cfg, dataset, num_frames):
    records = DatasetCatalog.get(dataset)
    records = [r for r in records if r["video_id"] == records[0]["video_id"]]
    S = cfg.MODEL.YOLACT.INPUT_SIZE
    frames = []
    for i in range(num_frames):  # a short video is played forward and backward
        r = records[i % (2 * len(records) - 2) if i % (2 * len(records) - 2) < len(records) else
                    2 * len(records) - 2 - i % (2 * len(records) - 2)]
        img = torch.from_numpy(detection_utils.read_image(r["file_name"], format=cfg.INPUT.FORMAT).copy())
        img = square_resize(img.permute(2, 0, 1).float(), S)
        frames.append({"image": img, "height": S, "width": S, "video_id": 0, "frame_index": i})
    return frames


class Parts:
    def __init__(self):
        self.times = defaultdict(list)

    @contextmanager
    def __call__(self, name):
        t0 = time.perf_counter()
        yield
        self.times[name].append((time.perf_counter() - t0) * 1000)

    def medians(self):
        return {k: statistics.median(v) for k, v in self.times.items()}


class FlopParts(Parts):
    """``Parts`` counting GFLOPs (torch's FlopCounterMode: convolutions and matrix products, 2 per
    multiply-add; sampling, interpolation and elementwise ops are not counted) instead of timing."""

    @contextmanager
    def __call__(self, name):
        with FlopCounterMode(display=False) as counter:
            yield
        self.times[name].append(counter.get_total_flops() / 1e9)


def yolact_parts(model, x, t):
    fpn = model.backbone
    with t("preprocess"):
        images = model.preprocess_image([x])
    with t("backbone C3-C5"):
        bottom_up = fpn.bottom_up(images.tensor)
    with t("FPN phases 1+2"):
        features = {**bottom_up, **fpn.forward_phase2(fpn.forward_phase1(bottom_up))}
    return heads_parts(model, x, images, features, t)


def heads_parts(model, x, images, features, t):
    if "protos" not in features:
        with t("(of which protonet)"):  # timed apart once more, left out of the sum
            model.proto_net(features[model.in_features[0]])
    with t("protonet + head"):
        predictions = model.predict(features, images)
    with t("decode (Fast NMS, masks)"):
        results = model.decode(predictions, images, [x])
    with t("postprocess"):
        return model.postprocess(results, [x], images)


def nonkey_parts(model, x, key, t):
    fpn = model.backbone
    first, names = fpn.in_features[0], fpn.phase1_features
    with t("preprocess"):
        images = model.preprocess_image([x])
    with t("backbone to C3"):
        c3 = bottom_up_until(fpn.bottom_up, images.tensor, first)[first]
    with t("C3 lateral"):
        lateral = fpn.lateral_convs[0](c3)
    with t("flow net"):
        flows = model.flow_net(lateral, key["lateral"], levels=tuple(names[1:]))
    with t("warp P4/P5"):
        warped = [warp_features(key[n], *flows[n]) for n in names[1:]]
    with t("P3 + refinement"):
        p3 = F.interpolate(warped[0], size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral
        if model.refinement is not None:
            warped = model.refinement(lateral, warped)
    with t("FPN phase 2"):
        features = {first: c3, **fpn.forward_phase2(dict(zip(names, [p3, *warped])))}
    if model.nonkey_prototypes == "warp":
        with t("warp prototypes"):
            features["protos"] = warp_prototypes(key["protos"], flows[names[1]][0])
    return heads_parts(model, x, images, features, t)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/YolactEdge/yolact_edge_R_18_shapes_video.yaml")
    p.add_argument("--weights", default="", help="YolactEdge weights (default: random init)")
    p.add_argument("--opts", nargs="*", default=[], help="config overrides KEY VALUE (both models)")
    p.add_argument("--dataset", default="segx_videos_val")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg, edge = build(args.config, args.weights, args.opts)
    _, yolact = build(args.config, "", args.opts, arch="YOLACT")
    yolact.load_state_dict({k: v for k, v in edge.state_dict().items() if k in yolact.state_dict()})
    edge.nonkey_prototypes = "compute"
    edge_warp = copy.deepcopy(edge)
    edge_warp.nonkey_prototypes = "warp"
    k = edge.key_frame_interval
    frames = video_frames(cfg, args.dataset, args.frames + args.warmup)
    names = ("YOLACT frame", "key frame", "non-key frame", "non-key frame, warped prototypes")
    times, dets = {n: [] for n in names}, {n: [] for n in names}
    state, warp_state = edge.new_state(), edge_warp.new_state()
    with torch.no_grad():
        for i, x in enumerate(frames):
            t0 = time.perf_counter()
            out = yolact.inference([x])[0]
            dt = (time.perf_counter() - t0) * 1000
            if i >= args.warmup:
                times["YOLACT frame"].append(dt)
                dets["YOLACT frame"].append(len(out["instances"]))
            key = edge.is_key_frame(state)
            t0 = time.perf_counter()
            (out,), state = edge.inference([x], state=state)
            dt = (time.perf_counter() - t0) * 1000
            if i >= args.warmup:
                name = "key frame" if key else "non-key frame"
                times[name].append(dt)
                dets[name].append(len(out["instances"]))
            t0 = time.perf_counter()
            (out,), warp_state = edge_warp.inference([x], state=warp_state)
            dt = (time.perf_counter() - t0) * 1000
            if i >= args.warmup and not key:
                times[names[3]].append(dt)
                dets[names[3]].append(len(out["instances"]))
    med = {n: statistics.median(v) for n, v in times.items() if v}
    S = cfg.MODEL.YOLACT.INPUT_SIZE
    print(f"{args.config}: {S}x{S}, k = {k}, {args.frames} frames (+{args.warmup} warm-up), batch 1, CPU, "
          f"{torch.get_num_threads()} thread(s), weights: {args.weights or 'random init'}")
    print("| frame | median ms | ratio YOLACT / this | mean detections |")
    print("|---|---:|---:|---:|")
    for n, v in med.items():
        print(f"| {n} | {v:.1f} | {med['YOLACT frame'] / v:.2f} | {sum(dets[n]) / len(dets[n]):.1f} |")
    for n in names[2:]:
        if "key frame" in med and n in med:
            avg = (med["key frame"] + (k - 1) * med[n]) / k
            print(f"| YolactEdge ({n[15:] or 'computed prototypes'}), mean over k = {k} frames | {avg:.1f} | "
                  f"{med['YOLACT frame'] / avg:.2f} | |")

    # per-part split, a second pass over the same frames
    parts = {"YOLACT": Parts(), "non-key": Parts(), "warp": Parts()}
    with torch.no_grad():
        streams = {"non-key": (edge, edge.new_state()), "warp": (edge_warp, edge_warp.new_state())}
        for i, x in enumerate(frames):
            out = yolact_parts(yolact, x, parts["YOLACT"] if i >= args.warmup else Parts())
            for name, (model, st) in streams.items():
                if model.is_key_frame(st):
                    model.inference([x], state=st)
                    continue
                mine = nonkey_parts(model, x, st.key_features, parts[name] if i >= args.warmup else Parts())[0]
                (ref,), _ = model.inference([x], state=st)
                assert torch.equal(mine["instances"].pred_boxes.tensor, ref["instances"].pred_boxes.tensor), \
                    "the step-by-step non-key path differs from the model's"
    y, n, w = (parts[name].medians() for name in ("YOLACT", "non-key", "warp"))
    print("\nper-part medians (ms), second pass")
    print("| part | YOLACT frame | non-key frame | non-key frame, warped prototypes |")
    print("|---|---:|---:|---:|")
    for name in dict.fromkeys([*y, *n, *w]):
        print(f"| {name} | {y.get(name, 0):.1f} | {n.get(name, 0):.1f} | {w.get(name, 0):.1f} |")
    total = lambda d: sum(v for name, v in d.items() if not name.startswith("("))  # noqa: E731
    print(f"| sum | {total(y):.1f} | {total(n):.1f} | {total(w):.1f} |")
    floor = sum(n.get(name, 0) for name in ("backbone to C3", "protonet + head", "decode (Fast NMS, masks)"))
    print(f"\nbackbone to C3 + protonet + head + decode alone (a non-key frame with free flow, warp and FPN): "
          f"{floor:.1f} ms, YOLACT / that = {total(y) / floor:.2f}")

    # the same split in GFLOPs, on one non-key frame: the ratio a non-key frame reaches when every part runs at
    # the same speed per FLOP (decode and sampling left out on both sides)
    flops = {"YOLACT": FlopParts(), "non-key": FlopParts(), "warp": FlopParts()}
    with torch.no_grad():
        for name, model in (("non-key", edge), ("warp", edge_warp)):
            st = model.new_state()
            model.inference([frames[0]], state=st)
            nonkey_parts(model, frames[1], st.key_features, flops[name])
        yolact_parts(yolact, frames[1], flops["YOLACT"])
    y, n, w = (flops[name].medians() for name in ("YOLACT", "non-key", "warp"))
    print("\nper-part GFLOPs (convolutions and matrix products; one frame)")
    print("| part | YOLACT frame | non-key frame | non-key frame, warped prototypes |")
    print("|---|---:|---:|---:|")
    for name in dict.fromkeys([*y, *n, *w]):
        if max(y.get(name, 0), n.get(name, 0), w.get(name, 0)) > 0:
            print(f"| {name} | {y.get(name, 0):.2f} | {n.get(name, 0):.2f} | {w.get(name, 0):.2f} |")
    print(f"| sum | {total(y):.2f} | {total(n):.2f} | {total(w):.2f} |")
    print(f"YOLACT / non-key in GFLOPs: {total(y) / total(n):.2f} (computed prototypes), "
          f"{total(y) / total(w):.2f} (warped prototypes)")


if __name__ == "__main__":
    main()
