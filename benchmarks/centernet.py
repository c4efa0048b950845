"""CPU inference time per image of CenterNet vs the Faster R-CNN R-18 baseline, measured in one process.

    OMP_NUM_THREADS=1 python benchmarks/centernet.py --num-images 50 \
        --centernet output/centernet_R_18_shapes/model_final.pth \
        --faster output/faster_rcnn_R_18_FPN_scratch/model_final.pth

Both models run on the same synthetic validation images at the same size (128×128), interleaved image by
image (so load on a shared machine hits both alike), through detectron2's ``DefaultPredictor`` (resize +
model + decoding/postprocess, batch 1). Prints the median ms per image of each and the ratio
CenterNet / Faster R-CNN.
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
    p.add_argument("--centernet-config", default="configs/CenterNet/centernet_R_18_shapes.yaml")
    p.add_argument("--faster-config", default="configs/MaskRCNN/faster_rcnn_R_18_FPN_scratch.yaml")
    p.add_argument("--centernet", default="", help="CenterNet weights (default: random init)")
    p.add_argument("--faster", default="", help="Faster R-CNN weights (default: random init)")
    p.add_argument("--dataset", default="segx_shapes_val")
    p.add_argument("--num-images", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ensure_builtin_dataset(args.dataset)
    models = {"CenterNet": _predictor(args.centernet_config, args.centernet), "Faster R-CNN": _predictor(args.faster_config, args.faster)}
    records = DatasetCatalog.get(args.dataset)[: args.num_images]
    if not records:
        raise SystemExit(f"benchmarks/centernet.py: dataset {args.dataset} has no images")
    images = [detection_utils.read_image(d["file_name"], format="BGR") for d in records]
    times = {k: [] for k in models}
    for img in images[:3]:  # warm-up
        for pred in models.values():
            pred(img)
    for img in images:
        for name, pred in models.items():
            t0 = time.perf_counter()
            pred(img)
            times[name].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    h, w = images[0].shape[:2]
    print(f"{len(images)} images of {args.dataset} ({h}x{w}), batch 1, CPU, {torch.get_num_threads()} threads")
    print("| model | median ms / image |")
    print("|---|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} |")
    print(f"ratio CenterNet / Faster R-CNN: {med['CenterNet'] / med['Faster R-CNN']:.2f}")
    return med


if __name__ == "__main__":
    main()
