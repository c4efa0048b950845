"""Stacked Hourglass reference figures.

    python benchmarks/hourglass.py chance      # PCK of the mean pose on segx_figures_val (the 'chance' row)
    python benchmarks/hourglass.py speed       # CPU time of HG-2 / HG-8 at 256² vs detectron2 Mask R-CNN R50-FPN
    python benchmarks/hourglass.py train       # training step time of the CPU configs, interleaved

``chance``: every validation figure gets the training set's mean pose, placed in the image the way the model
places its crop at test time (the whole image); a model must beat this to have learnt anything.
``speed``: random weights, batch 1, interleaved image by image in one process; prints seconds per image and
the ratio to Mask R-CNN R50-FPN at 550² (DESIGN.md §6 lists the official code's ratios: 0.045 / 0.16).
"""
import argparse
import os
import time

import numpy as np
import torch

import segx  # noqa: F401
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from segx.config import add_segx_config
from segx.evaluation.pck import PCKEvaluator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _people(dicts):
    for d in dicts:
        for a in d["annotations"]:
            yield d, np.reshape(a["keypoints"], (-1, 3)), BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)


def chance(train="segx_figures_train", val="segx_figures_val"):
    sums, counts = 0, 0
    for d, kp, _ in _people(DatasetCatalog.get(train)):
        half = np.array([d["width"], d["height"]]) / 2
        u = (kp[:, :2] - half) / half.max()
        vis = kp[:, 2:3] > 0
        sums, counts = sums + u * vis, counts + vis
    mean = sums / np.maximum(counts, 1)
    preds, gt = [], {}
    for d in DatasetCatalog.get(val):
        people = []
        half = np.array([d["width"], d["height"]]) / 2
        for _, kp, box in _people([d]):
            people.append({"box": np.array(box), "keypoints": kp, "head_box": None})
        gt[d["image_id"]] = people
        pts = half + mean * half.max()
        preds.append({"image_id": d["image_id"], "boxes": np.array([[0, 0, d["width"], d["height"]]], np.float64),
                      "keypoints": np.concatenate([pts, np.ones((len(pts), 1))], 1)[None]})
    res = PCKEvaluator(val, distributed=False).compute(preds, gt)["keypoints_pck"]
    print("mean-pose baseline on", val, {k: round(float(v), 2) for k, v in res.items() if "/" not in k})
    return res


def speed(iters=5):
    from detectron2.modeling import build_model

    def cfg_of(path, **kv):
        cfg = get_cfg()
        add_segx_config(cfg)
        cfg.merge_from_file(os.path.join(REPO, path))
        cfg.MODEL.DEVICE = "cpu"
        for k, v in kv.items():
            node = cfg
            *parents, leaf = k.split(".")
            for p in parents:
                node = getattr(node, p)
            setattr(node, leaf, v)
        return cfg

    models = {
        "HG-2 256": build_model(cfg_of("configs/Hourglass/hg2_256_paper.yaml")).eval(),
        "HG-8 256": build_model(cfg_of("configs/Hourglass/hg8_256_paper.yaml")).eval(),
        "Mask R-CNN R50-FPN 550": build_model(cfg_of("configs/MaskRCNN/mask_rcnn_R_50_FPN_scratch.yaml",
                                                     **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})).eval(),
    }
    inputs = {"HG-2 256": (256, 256), "HG-8 256": (256, 256), "Mask R-CNN R50-FPN 550": (550, 550)}
    times = {k: [] for k in models}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i in range(iters + 1):
            for name, model in models.items():
                h, w = inputs[name]
                x = [{"image": torch.rand(3, h, w, generator=g) * 255}]
                t = time.perf_counter()
                model(x)
                if i:  # the first round warms up
                    times[name].append(time.perf_counter() - t)
    ref = np.median(times["Mask R-CNN R50-FPN 550"])
    for name, ts in times.items():
        print(f"{name:24s} {np.median(ts):.3f} s/image  ratio to Mask R-CNN R50-FPN: {np.median(ts) / ref:.3f}")


def train_steps(iters=5):
    """Seconds per training step (forward + backward + SGD, batch of 16 figures, targets built beforehand as the
    loader's mapper does) of each CPU config."""
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model

    names = ["hg2_gaussian_figures", "hg2_cauchy_figures", "hg2_regression_figures", "hg4_gaussian_figures"]
    runs = {}
    for n in names:
        cfg = get_cfg()
        add_segx_config(cfg)
        cfg.merge_from_file(os.path.join(REPO, "configs/Hourglass", n + ".yaml"))
        cfg.MODEL.DEVICE, cfg.DATALOADER.NUM_WORKERS = "cpu", 0
        model = build_model(cfg).train()
        runs[n] = (model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
    batches = list(zip(range(iters + 1), build_detection_train_loader(cfg)))
    times = {n: [] for n in names}
    for i, batch in batches:
        for n, (model, opt) in runs.items():
            # each model's own crop targets, built outside the timed step as StackedHourglassMapper does in the loader
            inputs = [dict(x, targets=model.crop_targets(x["instances"])) for x in batch]
            t = time.perf_counter()
            loss = sum(model(inputs).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:
                times[n].append(time.perf_counter() - t)
    ref = np.median(times[names[0]])
    for n in names:
        print(f"{n:24s} {np.median(times[n]):.3f} s/step  ratio to {names[0]}: {np.median(times[n]) / ref:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["chance", "speed", "train"])
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    {"chance": chance, "speed": lambda: speed(args.iters), "train": lambda: train_steps(args.iters)}[args.what]()
