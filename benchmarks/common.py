"""What every same-process speed comparison in benchmarks/ shares: predictors from configs, the images, the
interleaved timing loop (so load on a shared machine hits every model alike) and the printed tables."""
import statistics
import time

import numpy as np
import torch

import segx  # noqa: F401
from detectron2.data import DatasetCatalog, detection_utils
from detectron2.engine import DefaultPredictor

from segx.config import load_config
from segx.data import SYNTHETIC_SPECS, ensure_builtin_dataset

__all__ = ["predictor", "dataset_images", "random_images", "time_predictors", "print_table", "train_step_times",
           "compare_with_faster_rcnn"]


def predictor(config, weights="", opts=(), test_size=None):
    """detectron2 ``DefaultPredictor`` (resize + model + postprocess, batch 1) on the CPU for a config file;
    random init when ``weights`` is empty. ``test_size`` overrides the test resize (shortest edge)."""
    cfg = load_config(config, opts, device="cpu", who="benchmark")
    cfg.MODEL.WEIGHTS = weights or ""
    if test_size:
        cfg.INPUT.MIN_SIZE_TEST = test_size
        cfg.INPUT.MAX_SIZE_TEST = max(test_size, cfg.INPUT.MAX_SIZE_TEST)
    cfg.freeze()
    return DefaultPredictor(cfg)


def dataset_images(dataset, num_images):
    """The first ``num_images`` images (BGR uint8 HWC) of a registered dataset."""
    if dataset in SYNTHETIC_SPECS:
        ensure_builtin_dataset(dataset)
    records = DatasetCatalog.get(dataset)[:num_images]
    if not records:
        raise SystemExit(f"dataset {dataset} has no images")
    return [detection_utils.read_image(d["file_name"], format="BGR") for d in records]


def random_images(size, num_images, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(num_images)]


def time_predictors(models, images, warmup=3):
    """Runs every predictor of ``models`` (name → callable(image)) on each image in turn, image by image.

    Returns (median ms per image by name, mean number of output instances per image by name; None for
    outputs without ``instances``)."""
    times = {k: [] for k in models}
    counts = {k: [] for k in models}
    with torch.no_grad():
        for img in images[:warmup]:
            for pred in models.values():
                pred(img)
        for img in images:
            for name, pred in models.items():
                t0 = time.perf_counter()
                out = pred(img)
                times[name].append((time.perf_counter() - t0) * 1000)
                if isinstance(out, dict) and "instances" in out:
                    counts[name].append(len(out["instances"]))
    med = {k: statistics.median(v) for k, v in times.items()}
    dets = {k: (sum(v) / len(v) if v else None) for k, v in counts.items()}
    return med, dets


def print_table(values, unit, reference, header=None):
    """Markdown table of ``values`` (name → number) with each one's ratio to ``values[reference]``."""
    if header:
        print(header)
    print(f"| model | {unit} | ratio to {reference} |")
    print("|---|---:|---:|")
    for k, v in values.items():
        print(f"| {k} | {v:.2f} | {v / values[reference]:.2f} |")


def train_step_times(cfgs, iters, batch, mapper=None):
    """Median seconds per training step (forward + backward + SGD step) of each model built from ``cfgs``
    (name → cfg), all on the same ``batch``-image batches of the first cfg's training set, step by step.
    ``mapper``: a callable cfg → dataset mapper for those batches (default: detectron2's)."""
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    cfg0 = next(iter(cfgs.values())).clone()
    cfg0.defrost()
    cfg0.SOLVER.IMS_PER_BATCH = batch
    cfg0.DATALOADER.NUM_WORKERS = 0
    loader = iter(build_detection_train_loader(cfg0, mapper=mapper(cfg0) if mapper is not None else None))
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


def compare_with_faster_rcnn(argv, doc, name, flag, config, faster_config, dataset, num_images, mapper=None):
    """The command line of a "``name`` vs the same detector without its branch (Faster R-CNN)" benchmark:
    ``--<flag>-config`` / ``--<flag>`` (weights; default random init), ``--faster-config`` / ``--faster``,
    ``--dataset``, ``--num-images``, ``--threads``, ``--train-iters`` (also time training steps; the batches come
    from ``name``'s config, through ``mapper``, a callable cfg → mapper, default detectron2's) and ``--train-batch``.
    Prints the inference table (and the training one) with the ratio to Faster R-CNN; returns the inference
    medians."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(f"--{flag}-config", default=config)
    p.add_argument("--faster-config", default=faster_config)
    p.add_argument(f"--{flag}", default="", help=f"{name} weights (default: random init)")
    p.add_argument("--faster", default="", help="Faster R-CNN weights (default: random init)")
    p.add_argument("--dataset", default=dataset)
    p.add_argument("--num-images", type=int, default=num_images)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--train-iters", type=int, default=0, help="also time this many training steps per model")
    p.add_argument("--train-batch", type=int, default=8)
    args = vars(p.parse_args(argv))
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    models = {"Faster R-CNN": predictor(args["faster_config"], args["faster"]),
              name: predictor(args[f"{flag}_config"], args[flag])}
    images = dataset_images(args["dataset"], args["num_images"])
    med, dets = time_predictors(models, images)
    header = (f"{len(images)} images of {args['dataset']}, batch 1, CPU, {torch.get_num_threads()} threads; "
              "detections per image: " + ", ".join(f"{k} {v:.1f}" for k, v in dets.items() if v is not None))
    print_table(med, "median ms / image", "Faster R-CNN", header)
    if args["train_iters"]:
        # name's config first: its training set and annotations (a superset of what Faster R-CNN reads)
        cfgs = {name: models[name].cfg, "Faster R-CNN": models["Faster R-CNN"].cfg}
        train = train_step_times(cfgs, args["train_iters"], args["train_batch"], mapper=mapper)
        header = f"\ntraining step, batch {args['train_batch']}, {args['train_iters']} steps each (after 2 warm-up)"
        print_table({k: train[k] for k in ("Faster R-CNN", name)}, "median s / iteration", "Faster R-CNN", header)
    return med
