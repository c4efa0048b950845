#!/usr/bin/env python
"""Reference levels for DensePose AP over GPS thresholds (projects/DensePose/README.md), measured with segx's
``DensePoseEvaluator`` on a DensePose dataset:

- ``model``: a model's own ``pred_densepose`` (as ``tools/train_net.py --eval-only`` reports it);
- ``model, mean UV``: the same detections and part logits, every part's U and V replaced by the training set's
  mean U and V of that part (what the surface-coordinate regression adds over "right part, chart centre");
- ``oracle boxes + parts, mean UV``: one detection per annotated person with its ground-truth box (score 1), the
  annotated part at every point and the training set's per-part mean U / V: the best any prediction can reach
  without knowing where on a part a point lies.

    python tools/densepose_baselines.py --config-file configs/DensePose/densepose_rcnn_R_18_FPN_synthetic.yaml \\
        MODEL.WEIGHTS output/densepose_rcnn_R_18_FPN_synthetic/model_final.pth

Without MODEL.WEIGHTS only the oracle row is computed.
"""
import argparse
import json

import numpy as np
import torch


def part_mean_uv(dataset_name, num_parts):
    """``[num_parts + 1, 2]`` mean (U, V) per part over the dataset's annotated points (0.5 for absent parts)."""
    from detectron2.data import DatasetCatalog

    sums, counts = np.zeros((num_parts + 1, 2)), np.zeros(num_parts + 1)
    for rec in DatasetCatalog.get(dataset_name):
        for a in rec.get("annotations", []):
            if "dp_I" not in a:
                continue
            parts = np.asarray(a["dp_I"], np.int64)
            np.add.at(sums, parts, np.stack([a["dp_U"], a["dp_V"]], 1))
            np.add.at(counts, parts, 1)
    out = np.full((num_parts + 1, 2), 0.5)
    seen = counts > 0
    out[seen] = sums[seen] / counts[seen, None]
    return out


def with_mean_uv(instances, mean_uv):
    """``instances`` with each part channel of ``pred_densepose.u`` / ``.v`` set to that part's mean."""
    from segx.modeling.roi_heads.densepose import DensePoseOutput

    dp = instances.pred_densepose
    mean = torch.as_tensor(mean_uv, dtype=dp.u.dtype)
    u = mean[:, 0].view(1, -1, 1, 1).expand_as(dp.u).clone()
    v = mean[:, 1].view(1, -1, 1, 1).expand_as(dp.v).clone()
    instances.pred_densepose = DensePoseOutput(dp.coarse_segm, dp.fine_segm, u, v, image_size=dp.image_size)
    return instances


def oracle_records(evaluator, mean_uv):
    """Evaluator records of the oracle (see the module doc)."""
    from segx.evaluation.densepose import _box_iou, gps_values

    records = []
    for image_id, people in evaluator._ground_truth().items():
        keep = [g for g, p in enumerate(people) if not p["ignore"]]
        boxes = np.stack([people[g]["box"] for g in keep]) if keep else np.zeros((0, 4))
        gps = np.zeros((len(keep), len(people)))
        errors = []
        for d, g in enumerate(keep):
            p = people[g]
            pred_uv = mean_uv[p["parts"]]
            dist = evaluator._distance(p["parts"], p["uv"], p["parts"], pred_uv)
            gps[d, g] = gps_values(dist, evaluator._kappa).mean()
            errors.append(np.stack([p["parts"], p["parts"], np.abs(pred_uv[:, 0] - p["uv"][:, 0]),
                                    np.abs(pred_uv[:, 1] - p["uv"][:, 1])], 1))
        records.append({
            "image_id": image_id, "scores": np.ones(len(keep)), "gps": gps,
            "box_iou": _box_iou(boxes, np.stack([p["box"] for p in people]) if people else np.zeros((0, 4)),
                                [p["crowd"] for p in people]),
            "gt_ignore": np.array([p["ignore"] for p in people], bool),
            "gt_area": np.array([np.prod(p["box"][2:] - p["box"][:2]) for p in people], np.float64),
            "det_area": np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) if len(boxes) else np.zeros(0),
            "point_errors": np.concatenate(errors) if errors else np.zeros((0, 4)),
        })
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--dataset", help="evaluation set (default: DATASETS.TEST[0])")
    parser.add_argument("--train-dataset", help="set the mean U/V come from (default: DATASETS.TRAIN[0])")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    import segx  # noqa: F401
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_test_loader
    from detectron2.modeling import build_model

    from segx.config import load_config
    from segx.data.mappers import build_mapper
    from segx.evaluation.densepose import DensePoseEvaluator

    cfg = load_config(args.config_file, args.opts, device="cpu", who="densepose_baselines")
    cfg.freeze()
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    mean_uv = part_mean_uv(args.train_dataset or cfg.DATASETS.TRAIN[0], cfg.MODEL.ROI_DENSEPOSE_HEAD.NUM_PARTS)
    results = {}
    oracle = DensePoseEvaluator(dataset, distributed=False)
    results["oracle boxes + parts, mean UV"] = oracle.compute(oracle_records(oracle, mean_uv))
    if cfg.MODEL.WEIGHTS:
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        plain, mean = DensePoseEvaluator(dataset, distributed=False), DensePoseEvaluator(dataset, distributed=False)
        loader = build_detection_test_loader(cfg, dataset, mapper=build_mapper(cfg, is_train=False))
        with torch.no_grad():
            for inputs in loader:
                outputs = model(inputs)
                plain.process(inputs, outputs)
                mean.process(inputs, [{"instances": with_mean_uv(o["instances"].to("cpu"), mean_uv)} for o in outputs])
        results["model"] = plain.evaluate()["densepose_gps"]
        results["model, mean UV"] = mean.evaluate()["densepose_gps"]
    keys = ("AP", "AP50", "AP75", "mean_best_GPS", "part_acc", "U_err", "V_err")
    print("| reference | " + " | ".join(keys) + " |")
    for name, res in results.items():
        print(f"| {name} | " + " | ".join(f"{res.get(k, float('nan')):.3f}" for k in keys) + " |")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
