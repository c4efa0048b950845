"""CPU time of ``segx.engine.Predictor`` per architecture: batch 1 and batch 4, per image, split into pre / net /
post, all architectures in one process.

    OMP_NUM_THREADS=1 python benchmarks/predictor.py --num-images 8 --rounds 2 [--threads 1] [--arch YOLACT ...]

Each architecture runs its small CPU config (``ARCHITECTURES``; the configs the README's results come from) with
random weights and its score thresholds at 0, capped at 100 detections, so postprocessing handles a full set of
detections as a trained model's low-threshold evaluation does (DESIGN.md §6's setting). The images are the first
``--num-images`` of the config's test set (the embedded synthetic data, 128×128), held in memory as BGR arrays, so
``pre`` is the architecture's test mapper (resize / letterbox + tensor) without reading files. ``net`` is the model
up to its detections at the network input's resolution, ``post`` is ``postprocess`` (back to the image's size:
boxes, masks pasted, panoptic merge) + the copy to the CPU (``Predictor.last_timing``).

Architectures are interleaved call by call (round by round, one batch of each architecture in turn), so load on a
shared machine hits all alike. Per architecture and batch size: the median over calls of each phase's seconds per
image (a batch-4 call's time divided by 4), and the mean number of output instances (or panoptic segments) per
image. ``--video`` adds YolactEdge through ``VideoPredictor`` (key frame every ``KEY_FRAME_INTERVAL``).
"""
import argparse
import os
import statistics
import sys

import torch

from common import dataset_images

# name -> (config, overrides): thresholds at 0, 100 detections per image
RCNN_OPTS = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "100"]
ARCHITECTURES = {
    "Mask R-CNN R-18 (d2)": ("configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml", RCNN_OPTS),
    "Faster R-CNN R-18 (d2)": ("configs/MaskRCNN/faster_rcnn_R_18_FPN_scratch.yaml", RCNN_OPTS),
    "PanopticFPN R-18 (d2)": ("configs/PanopticFPN/panoptic_fpn_R_18_FPN_scratch.yaml", RCNN_OPTS),
    "YOLACT R-18": ("configs/YOLACT/yolact_R_18_FPN_scratch.yaml", ["MODEL.YOLACT.SCORE_THRESH_TEST", "0.0"]),
    "YolactEdge R-18 (images)": ("configs/YolactEdge/yolact_edge_R_18_shapes_video.yaml",
                                 ["MODEL.YOLACT.SCORE_THRESH_TEST", "0.0"]),
    "CornerNet HG-small": ("configs/CornerNet/cornernet_hg_small_shapes.yaml",
                           ["MODEL.CORNERNET.SCORE_THRESH_TEST", "0.0"]),
    "CenterNetTriplets HG-small": ("configs/CenterNetTriplets/centernet_triplets_hg_small_shapes.yaml",
                                   ["MODEL.CORNERNET.SCORE_THRESH_TEST", "0.0"]),
    "CenterNet R-18": ("configs/CenterNet/centernet_R_18_shapes.yaml", ["MODEL.CENTERNET.SCORE_THRESH_TEST", "0.0"]),
    "StackedHourglass 2-stack": ("configs/Hourglass/hg2_gaussian_figures.yaml", []),
    "RetinaFace MNet-0.25": ("configs/RetinaFace/retinaface_mnet025_synthetic.yaml",
                             ["MODEL.RETINAFACE.SCORE_THRESH_TEST", "0.0", "MODEL.RETINAFACE.DETECTIONS_PER_IMAGE",
                              "100"]),
    "UPSNet R-18": ("configs/UPSNet/upsnet_R_18_FPN_scratch.yaml",
                    RCNN_OPTS + ["MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST", "0.0"]),
    "VPSNet R-18 (images)": ("configs/VPSNet/vpsnet_R_18_FPN_shapes.yaml",
                             RCNN_OPTS + ["MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST", "0.0", "MODEL.WEIGHTS", ""]),
    "DensePose R-CNN R-18": ("configs/DensePose/densepose_rcnn_R_18_FPN_synthetic.yaml", RCNN_OPTS),
}
PHASES = ("pre", "net", "post")


def count_outputs(out):
    if "instances" in out:
        return len(out["instances"])
    if "panoptic_seg" in out and out["panoptic_seg"][1] is not None:
        return len(out["panoptic_seg"][1])
    return 0


def build(names, num_images):
    """name -> (Predictor, images); an architecture that does not build is reported and left out."""
    from segx.engine import Predictor

    built = {}
    for name in names:
        config, opts = ARCHITECTURES[name]
        if not os.path.isfile(config):
            print(f"# {name}: {config} not found, left out", file=sys.stderr)
            continue
        try:
            torch.manual_seed(0)
            pred = Predictor(config, weights="", device="cpu", opts=opts)
            images = dataset_images(pred.cfg.DATASETS.TEST[0], num_images)
            pred(images[0])  # warm-up (and a check that it runs)
        except Exception as e:  # report and go on: one architecture must not hide the others' numbers
            print(f"# {name}: left out, {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                  file=sys.stderr)
            continue
        built[name] = (pred, images)
    return built


def measure(built, batch_sizes, rounds):
    """{(name, batch): {"pre"/"net"/"post"/"total": [seconds per image per call], "count": [outputs per image]}}."""
    rec = {(n, b): {k: [] for k in PHASES + ("total", "count")} for n in built for b in batch_sizes}
    for _ in range(rounds):
        for b in batch_sizes:
            starts = range(0, max(len(im) for _, im in built.values()) - b + 1, b)
            for s in starts:
                for name, (pred, images) in built.items():
                    batch = images[s:s + b]
                    if len(batch) < b:
                        continue
                    outs = pred(batch)
                    t, r = pred.last_timing, rec[(name, b)]
                    for k in PHASES:
                        r[k].append(t[k] / b)
                    r["total"].append(sum(t[k] for k in PHASES) / b)
                    r["count"].append(sum(count_outputs(o) for o in outs) / b)
    return rec


def measure_video(num_frames, rounds):
    """YolactEdge through VideoPredictor: per-frame times of key and non-key frames, one stream per round."""
    from segx.engine import Predictor, VideoPredictor

    config, opts = ARCHITECTURES["YolactEdge R-18 (images)"]
    pred = Predictor(config, weights="", device="cpu", opts=opts)
    frames = dataset_images(pred.cfg.DATASETS.TEST[0], num_frames)  # consecutive frames of the first video
    video = VideoPredictor(pred)
    rec = {True: {k: [] for k in PHASES + ("total", "count")}, False: {k: [] for k in PHASES + ("total", "count")}}
    for _ in range(rounds):
        video.reset()
        for f in frames:
            out = video(f)
            r = rec[bool(out["frame_info"]["key_frame"])]
            for k in PHASES:
                r[k].append(video.last_timing[k])
            r["total"].append(sum(video.last_timing[k] for k in PHASES))
            r["count"].append(count_outputs(out))
    interval = pred.cfg.MODEL.YOLACT_EDGE.KEY_FRAME_INTERVAL
    return {(f"YolactEdge R-18, VideoPredictor, {'key' if k else 'non-key'} frames (k={interval})", 1): v
            for k, v in rec.items() if v["total"]}


def print_table(rec):
    print("| architecture (CPU config) | batch | ms / image | pre | net | post | outputs / image | calls |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, b), r in rec.items():
        if not r["total"]:
            continue
        ms = {k: 1000 * statistics.median(r[k]) for k in PHASES + ("total",)}
        print(f"| {name} | {b} | {ms['total']:.1f} | {ms['pre']:.1f} | {ms['net']:.1f} | {ms['post']:.1f} | "
              f"{statistics.mean(r['count']):.0f} | {len(r['total'])} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", nargs="*", default=None, help=f"names of ARCHITECTURES (default: all): {list(ARCHITECTURES)}")
    p.add_argument("--num-images", type=int, default=8, help="images per architecture (a multiple of 4)")
    p.add_argument("--rounds", type=int, default=2, help="passes over the images")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, OMP_NUM_THREADS)")
    p.add_argument("--video", action="store_true", help="add YolactEdge key / non-key frames through VideoPredictor")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.arch or list(ARCHITECTURES)
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown:
        raise SystemExit(f"--arch: unknown {unknown}; choose from {list(ARCHITECTURES)}")
    import logging

    logging.getLogger("segx").setLevel(logging.ERROR)  # "no weights: randomly initialised", once per model
    built = build(names, args.num_images)
    rec = measure(built, (1, 4), args.rounds)
    if args.video:
        rec.update(measure_video(args.num_images, args.rounds))
    print(f"Predictor on the CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}; random weights, "
          f"thresholds 0, <= 100 detections; {args.num_images} images x {args.rounds} rounds; median ms per image")
    print_table(rec)


if __name__ == "__main__":
    main()
