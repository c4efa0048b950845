"""VPSNet on the synthetic videos: VPQ / per-frame PQ / ID switches beside UPSNet and chance levels, and the time of
a streamed frame and of a training step beside UPSNet, in one process.

    # the model card's VPQ table (segx_vps_shapes_val: 10 videos x 16 frames)
    python benchmarks/vpsnet.py --evaluate \
        --vpsnet output/vpsnet_R_18_FPN_shapes_video/model_final.pth \
        --upsnet output/vpsnet_R_18_FPN_shapes_image/model_final.pth
    # end-point error of the flow network on consecutive frames, against zero flow
    python benchmarks/vpsnet.py --flow --vpsnet output/vpsnet_R_18_FPN_shapes_flow/model_final.pth
    # time per frame (streamed, interleaved frame by frame with UPSNet on the same frames) and per training step
    python benchmarks/vpsnet.py --speed --threads 1 --train-iters 3 --vpsnet ... --upsnet ...

``--evaluate`` rows (each through ``segx.evaluation.vpq.VPQEvaluator`` on the same frames):

* ground truth as prediction (sanity: 100) and the ground-truth segmentation with new ids in every frame (what a
  perfect image model without tracking scores: things count only at k = 0);
* every pixel one stuff class (the best of the 3): the chance level of PQ;
* UPSNet: the image stage's weights in ``UPSNet`` (no fusion, no tracking: its things are tubes of one frame);
* VPSNet, and VPSNet's segmentation with new ids in every frame (what its tracking adds);
* ``--random-init``: VPSNet with random weights (seed 0), the chance level of a model;
* ``--ablate``: VPSNet matching by the embedding affinity alone (``MATCH_COEFFS_TEST []``), and VPSNet with the fusion
  off (the video stage's weights, the fused map's gate at 0).
"""
import argparse
import copy
import statistics
import time

import numpy as np
import torch

import segx  # noqa: F401
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from segx.checkpoint import CheckedDetectionCheckpointer
from segx.config import add_segx_config
from segx.data.datasets.cityscapes_vps import read_panoptic_ids
from segx.data.mappers import build_mapper
from segx.evaluation.vpq import VPQEvaluator

from common import print_table, train_step_times

CONFIG = "configs/VPSNet/vpsnet_R_18_FPN_shapes.yaml"
ROWS = ("VPQ", "VPQ@0", "VPQ@5", "VPQ@10", "VPQ@15", "VPQ_th", "VPQ_st", "PQ", "PQ_th", "PQ_st", "IDSW")


def _cfg(config, opts=()):
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def load_model(config, weights, opts=()):
    cfg = _cfg(config, opts)
    model = build_model(cfg).eval()
    if weights:
        CheckedDetectionCheckpointer(model).load(weights)
    return cfg, model


def frames_of(dataset, cfg, num_videos=None):
    """Mapped test inputs of ``dataset`` in order (first ``num_videos`` videos) and their records."""
    records = DatasetCatalog.get(dataset)
    if num_videos:
        keep = sorted({r["video_id"] for r in records})[:num_videos]
        records = [r for r in records if r["video_id"] in keep]
    mapper = build_mapper(cfg, is_train=False)
    return [mapper(copy.deepcopy(r)) for r in records], records


def evaluate(dataset, records, outputs):
    ev = VPQEvaluator(dataset, distributed=False)
    ev.reset()
    for r, o in zip(records, outputs):
        ev.process([r], [o])
    return ev.evaluate()["vpq"]


def run_model(model, inputs):
    """Outputs of ``model`` on ``inputs`` (a VPSNet streams them: one stream per video)."""
    with torch.no_grad():
        return [model([x])[0] for x in inputs]


def without_tracking(outputs):
    """The same segmentation, each thing a new id in every frame."""
    out, n = [], 0
    for o in outputs:
        pan, infos = o["panoptic_seg"]
        infos = copy.deepcopy(infos)
        for s in infos:
            if s["isthing"]:
                s["track_id"] = 10 ** 6 + n
                n += 1
        out.append({"panoptic_seg": (pan, infos)})
    return out


def ground_truth(records, fresh_ids=False):
    out, n = [], 0
    for r in records:
        ids = read_panoptic_ids(r["pan_seg_file_name"])
        infos = []
        for s in r["segments_info"]:
            info = {"id": s["id"], "isthing": s["isthing"], "category_id": s["category_id"]}
            if s["isthing"]:
                info["track_id"] = (10 ** 6 + n) if fresh_ids else s["id"]
                n += 1
            infos.append(info)
        out.append({"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)), infos)})
    return out


def one_stuff_class(records, label):
    return [{"panoptic_seg": (torch.ones((r["height"], r["width"]), dtype=torch.int32),
                              [{"id": 1, "isthing": False, "category_id": label}])} for r in records]


def print_rows(rows):
    print("| prediction | " + " | ".join(ROWS) + " |")
    print("|---|" + "---:|" * len(ROWS))
    for name, res in rows.items():
        print(f"| {name} | " + " | ".join(f"{res[k]:.1f}" if k != "IDSW" else f"{int(res[k])}" for k in ROWS) + " |")


def main_evaluate(args):
    cfg, vps = load_model(args.config, args.vpsnet)
    inputs, records = frames_of(args.dataset, cfg, args.num_videos)
    annotated = [i for i, r in enumerate(records) if "pan_seg_file_name" in r]
    recs = [records[i] for i in annotated]
    rows = {"ground truth": evaluate(args.dataset, recs, ground_truth(recs)),
            "ground truth, new ids every frame": evaluate(args.dataset, recs, ground_truth(recs, True))}
    stuff = [evaluate(args.dataset, recs, one_stuff_class(recs, label)) for label in range(1, 4)]
    rows["chance: every pixel one stuff class (best of 3)"] = max(stuff, key=lambda r: r["VPQ"])
    if args.random_init:
        torch.manual_seed(0)
        _, rnd = load_model(args.config, "")
        rows["chance: VPSNet, random init (seed 0)"] = evaluate(args.dataset, recs,
                                                                [run_model(rnd, inputs)[i] for i in annotated])
    if args.upsnet:
        _, ups = load_model(args.config, args.upsnet, ["MODEL.META_ARCHITECTURE", "UPSNet"])
        t0 = time.perf_counter()
        outs = run_model(ups, inputs)
        print(f"UPSNet: {len(inputs)} frames in {time.perf_counter() - t0:.0f} s")
        rows["UPSNet (image stage)"] = evaluate(args.dataset, recs, [outs[i] for i in annotated])
    t0 = time.perf_counter()
    outs = run_model(vps, inputs)
    print(f"VPSNet: {len(inputs)} frames in {time.perf_counter() - t0:.0f} s")
    outs = [outs[i] for i in annotated]
    rows["VPSNet"] = evaluate(args.dataset, recs, outs)
    rows["VPSNet, new ids every frame (no tracking)"] = evaluate(args.dataset, recs, without_tracking(outs))
    if args.ablate:
        _, aff = load_model(args.config, args.vpsnet, ["MODEL.VPSNET.TRACK.MATCH_COEFFS_TEST", "[]"])
        aff_outs = run_model(aff, inputs)  # every frame once (streams), then the annotated ones scored
        rows["VPSNet, matched by embedding affinity alone"] = evaluate(args.dataset, recs,
                                                                       [aff_outs[i] for i in annotated])
        _, nofuse = load_model(args.config, args.vpsnet)
        with torch.no_grad():
            nofuse.fusion.gate.zero_()
        nofuse_outs = run_model(nofuse, inputs)
        rows["VPSNet, fusion off (gate 0)"] = evaluate(args.dataset, recs, [nofuse_outs[i] for i in annotated])
    print(f"\n{args.dataset}: {len({r['video_id'] for r in recs})} videos, {len(recs)} annotated frames")
    print_rows(rows)
    return rows


def main_speed(args):
    cfg, vps = load_model(args.config, args.vpsnet)
    _, ups = load_model(args.config, args.upsnet or args.vpsnet, ["MODEL.META_ARCHITECTURE", "UPSNet"])
    inputs, _ = frames_of(args.dataset, cfg, args.num_videos)
    models = {"UPSNet": lambda x: ups([x])[0], "VPSNet (streamed)": lambda x: vps([x])[0]}
    times = {k: [] for k in models}
    with torch.no_grad():
        for x in inputs[:2]:
            for m in models.values():
                m(x)
        for x in inputs:
            for name, m in models.items():
                t0 = time.perf_counter()
                m(x)
                times[name].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print_table(med, "median ms / frame", "UPSNet",
                f"{len(inputs)} frames of {args.dataset} in video order, batch 1, CPU, {torch.get_num_threads()} threads")
    if args.train_iters:
        c_img = _cfg(args.config, ["MODEL.VPSNET.TRAIN_STAGE", "image"])
        c_vid = _cfg(args.config, ["MODEL.VPSNET.TRAIN_STAGE", "video"])
        train = train_step_times({"UPSNet (image stage)": c_img, "VPSNet (video stage)": c_vid}, args.train_iters,
                                 args.train_batch)
        print_table(train, "median s / iteration", "UPSNet (image stage)",
                    f"\ntraining step, batch {args.train_batch}, {args.train_iters} steps each (after 2 warm-up)")
    return med


def main_flow(args):
    """End-point error (input pixels, at the fusion level's stride) of the flow network on consecutive val frames
    (reference = previous frame, as at test time), against zero flow."""
    from segx.data.synthetic_video import known_flow, load_motion
    from segx.modeling.flow import resize_flow

    cfg, vps = load_model(args.config, args.vpsnet)
    records = [r for r in DatasetCatalog.get(args.dataset) if r["frame_index"] > 0]
    mapper = build_mapper(cfg, is_train=False)
    epe, zero, motion = [], [], {}
    with torch.no_grad():
        for r in records:
            prev = next(f for f in r["video_frames"] if f["frame_index"] == r["frame_index"] - 1)
            x, y = mapper(copy.deepcopy(r)), mapper(dict(r, file_name=prev["file_name"]))
            images = vps.preprocess_image([x])
            refs = vps.preprocess_image([y])
            size = [s // vps.flow_stride for s in images.tensor.shape[-2:]]
            pred = resize_flow(vps.flow_net(images.tensor, refs.tensor)[0], size, 1.0)[0]  # input pixels
            if r["motion_file"] not in motion:
                motion[r["motion_file"]] = load_motion(r["motion_file"])
            layers, pos = motion[r["motion_file"]]
            f = r["frame_index"]
            gt = torch.from_numpy(known_flow(layers[f], pos[f], pos[f - 1]))
            gt = torch.nn.functional.interpolate(gt[None], size=size, mode="nearest")[0]
            epe.append(float(torch.linalg.vector_norm(pred - gt, dim=0).mean()))
            zero.append(float(torch.linalg.vector_norm(gt, dim=0).mean()))
    print(f"\nflow from each frame to the previous one, {len(records)} pairs of {args.dataset}, at stride "
          f"{vps.flow_stride}: mean end-point error (input pixels)")
    print("| flow | EPE |\n|---|---:|")
    print(f"| zero flow | {np.mean(zero):.2f} |\n| {cfg.MODEL.VPSNET.FLOW.NAME} (flow stage) | {np.mean(epe):.2f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--vpsnet", default="", help="VPSNet weights (video stage)")
    p.add_argument("--upsnet", default="", help="UPSNet weights (the image stage's)")
    p.add_argument("--dataset", default="segx_vps_shapes_val")
    p.add_argument("--num-videos", type=int, default=0, help="first N videos only (0: all)")
    p.add_argument("--evaluate", action="store_true")
    p.add_argument("--ablate", action="store_true", help="with --evaluate: affinity-only matching, fusion off")
    p.add_argument("--random-init", action="store_true", help="with --evaluate: a randomly initialised VPSNet row")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--flow", action="store_true", help="end-point error of the flow network on consecutive frames")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--train-iters", type=int, default=0)
    p.add_argument("--train-batch", type=int, default=2)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.evaluate or args.speed or args.flow):
        p.error("choose --evaluate, --speed and/or --flow")
    if args.flow:
        main_flow(args)
    if args.evaluate:
        main_evaluate(args)
    if args.speed:
        main_speed(args)


if __name__ == "__main__":
    main()
