"""CPU inference time per image of CornerNet and CenterNet (keypoint triplets) vs the Faster R-CNN baseline,
measured in one process.

    python benchmarks/cornernet.py --num-images 50 \
        --cornernet output/cornernet_hg_small_shapes/model_final.pth \
        --triplets  output/centernet_triplets_hg_small_shapes/model_final.pth \
        --faster    output/faster_rcnn_R_18_FPN_scratch/model_final.pth

All models run on the same synthetic validation images (128×128), interleaved image by image so load on a
shared machine hits them alike, through detectron2's ``DefaultPredictor`` (resize + model + decoding +
postprocess, batch 1). Prints the median ms per image of each and the ratio to Faster R-CNN.
"""
import argparse
import statistics
import time

import torch

import segx  # noqa: F401
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, detection_utils
from detectron2.engine import DefaultPredictor

from segx.config import add_segx_config
from segx.data import ensure_builtin_dataset


def _predictor(config, weights):
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(config)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = weights or ""
    cfg.freeze()
    return DefaultPredictor(cfg)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cornernet-config", default="configs/CornerNet/cornernet_hg_small_shapes.yaml")
    p.add_argument("--triplets-config", default="configs/CenterNetTriplets/centernet_triplets_hg_small_shapes.yaml")
    p.add_argument("--faster-config", default="configs/MaskRCNN/faster_rcnn_R_18_FPN_scratch.yaml")
    p.add_argument("--cornernet", default="", help="CornerNet weights (default: random init)")
    p.add_argument("--triplets", default="", help="CenterNet-triplets weights (default: random init)")
    p.add_argument("--faster", default="", help="Faster R-CNN weights (default: random init)")
    p.add_argument("--dataset", default="segx_shapes_val")
    p.add_argument("--num-images", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ensure_builtin_dataset(args.dataset)
    models = {
        "Faster R-CNN R-18-FPN": _predictor(args.faster_config, args.faster),
        "CornerNet": _predictor(args.cornernet_config, args.cornernet),
        "CenterNet triplets": _predictor(args.triplets_config, args.triplets),
    }
    records = DatasetCatalog.get(args.dataset)[: args.num_images]
    images = [detection_utils.read_image(d["file_name"], format="BGR") for d in records]
    times = {k: [] for k in models}
    with torch.no_grad():
        for img in images[:3]:  # warm-up
            for pred in models.values():
                pred(img)
        for img in images:
            for name, pred in models.items():
                t0 = time.perf_counter()
                pred(img)
                times[name].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["Faster R-CNN R-18-FPN"]
    h, w = images[0].shape[:2]
    print(f"{len(images)} images of {args.dataset} ({w}x{h}), batch 1, CPU, {torch.get_num_threads()} threads")
    print("| model | median ms / image | ratio to Faster R-CNN |")
    print("|---|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} | {v / base:.2f} |")
    return med


if __name__ == "__main__":
    main()
