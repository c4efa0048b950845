"""Inference time per image of the Mask R-CNN vs Faster R-CNN baselines, measured in one process.

    python benchmarks/rcnn_baselines.py --num-images 50 \
        --mask  output/mask_rcnn_R_18_FPN_scratch/model_final.pth \
        --faster output/faster_rcnn_R_18_FPN_scratch/model_final.pth

Both models run on the same synthetic validation images, interleaved image by image (so load on a shared
machine hits both alike), through detectron2's ``DefaultPredictor`` (resize + model + postprocess, batch 1).
Prints median ms per image for each and the ratio Mask / Faster. With ``--train-iters N`` it also times N
training steps (forward + backward + SGD step, batch ``--train-batch``) of each model on the same batches,
interleaved step by step.
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
    p.add_argument("--mask-config", default="configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml")
    p.add_argument("--faster-config", default="configs/MaskRCNN/faster_rcnn_R_18_FPN_scratch.yaml")
    p.add_argument("--mask", default="", help="Mask R-CNN weights (default: random init)")
    p.add_argument("--faster", default="", help="Faster R-CNN weights (default: random init)")
    p.add_argument("--dataset", default="segx_shapes_val")
    p.add_argument("--num-images", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--train-iters", type=int, default=0, help="also time this many training steps per model")
    p.add_argument("--train-batch", type=int, default=8)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {"Mask R-CNN": _predictor(args.mask_config, args.mask), "Faster R-CNN": _predictor(args.faster_config, args.faster)}
    images = [detection_utils.read_image(d["file_name"], format="BGR") for d in DatasetCatalog.get(args.dataset)[: args.num_images]]
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
    print(f"{len(images)} images of {args.dataset}, batch 1, CPU, {torch.get_num_threads()} threads")
    print("| model | median ms / image |")
    print("|---|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} |")
    print(f"ratio Mask / Faster: {med['Mask R-CNN'] / med['Faster R-CNN']:.2f}")
    if args.train_iters:
        train = train_step_times({k: v.cfg for k, v in models.items()}, args.train_iters, args.train_batch)
        print(f"\ntraining step, batch {args.train_batch}, {args.train_iters} steps each (after 2 warm-up)")
        print("| model | median s / iteration |")
        print("|---|---:|")
        for k, v in train.items():
            print(f"| {k} | {v:.2f} |")
        print(f"ratio Mask / Faster: {train['Mask R-CNN'] / train['Faster R-CNN']:.2f}")
    return med


def train_step_times(cfgs, iters, batch):
    """Median seconds per training step of each model (built from its cfg), on the same batches."""
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    cfg0 = next(iter(cfgs.values())).clone()
    cfg0.defrost()
    cfg0.SOLVER.IMS_PER_BATCH = batch
    cfg0.DATALOADER.NUM_WORKERS = 0
    loader = iter(build_detection_train_loader(cfg0))
    batches = [next(loader) for _ in range(iters + 2)]
    models = {k: build_model(c).train() for k, c in cfgs.items()}
    optims = {k: build_optimizer(c, models[k]) for k, c in cfgs.items()}
    times = {k: [] for k in models}
    with EventStorage(0):
        for i, data in enumerate(batches):
            for k, model in models.items():
                t0 = time.perf_counter()
                loss = sum(model(data).values())
                optims[k].zero_grad()
                loss.backward()
                optims[k].step()
                if i >= 2:
                    times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    main()
