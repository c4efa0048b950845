"""Inference and training time of UPSNet vs detectron2's PanopticFPN (same R-18 settings), in one process.

    python benchmarks/upsnet.py --num-images 30 --train-iters 5 \
        --upsnet output/upsnet_R_18_FPN_scratch/model_final.pth \
        --panoptic-fpn output/panoptic_fpn_R_18_FPN_scratch/model_final.pth

Both run on the same synthetic panoptic validation images, interleaved image by image (load on a shared
machine hits both alike), through detectron2's ``DefaultPredictor`` (resize + model + panoptic merge, batch 1).
Prints median ms per image and the ratio UPSNet / PanopticFPN; ``--train-iters N`` also times N training steps
of each on the same batches (``benchmarks/rcnn_baselines.train_step_times``). ``--dcn`` adds the UPSNet
variant with the paper's deformable semantic head (random weights unless ``--upsnet-dcn``). ``--chance``
only prints the PQ of trivial predictions (every pixel one stuff class), the chance level of the model card.
``--two-pass`` adds UPSNet with the inference cost it had before its ROI heads ran single-pass (issue 12): the
Mask R-CNN detections from ``StandardROIHeads.forward``, then the box and mask heads again for the panoptic
instances (same weights as "UPSNet"). ``--open-thresholds`` sets the score thresholds to 0, so a random-weight
model sends every detection through the heads and the panoptic merge (as the anchors of DESIGN.md §6).
"""
import argparse

import torch

import segx  # noqa: F401
from detectron2.data import DatasetCatalog
from detectron2.modeling.roi_heads import StandardROIHeads

from common import dataset_images, predictor, print_table, time_predictors, train_step_times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upsnet-config", default="configs/UPSNet/upsnet_R_18_FPN_scratch.yaml")
    p.add_argument("--panoptic-fpn-config", default="configs/PanopticFPN/panoptic_fpn_R_18_FPN_scratch.yaml")
    p.add_argument("--upsnet", default="", help="UPSNet weights (default: random init)")
    p.add_argument("--panoptic-fpn", default="", help="PanopticFPN weights (default: random init)")
    p.add_argument("--dcn", action="store_true", help="also time UPSNet with the deformable semantic head")
    p.add_argument("--upsnet-dcn", default="", help="weights of the deformable variant")
    p.add_argument("--dataset", default="segx_shapes_panoptic_val_separated")
    p.add_argument("--num-images", type=int, default=30)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--train-iters", type=int, default=0)
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--chance", action="store_true", help="only print the PQ of one-stuff-class predictions")
    p.add_argument("--two-pass", action="store_true", help="also time UPSNet with the pre-issue-12 two-pass ROI heads")
    p.add_argument("--open-thresholds", action="store_true", help="score thresholds 0 (random weights: full load)")
    args = p.parse_args(argv)
    if args.chance:
        return chance_pq(args.dataset)
    if args.threads:
        torch.set_num_threads(args.threads)
    ups_opts, pfpn_opts = [], []
    if args.open_thresholds:
        ups_opts = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST", "0.0"]
        pfpn_opts = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
                     "0.0"]
    models = {"PanopticFPN": predictor(args.panoptic_fpn_config, args.panoptic_fpn, pfpn_opts),
              "UPSNet": predictor(args.upsnet_config, args.upsnet, ups_opts)}
    if args.two_pass:
        models["UPSNet (two-pass ROI heads)"] = two_pass(predictor(args.upsnet_config, args.upsnet, ups_opts),
                                                         models["UPSNet"])
    if args.dcn:
        models["UPSNet (deformable)"] = predictor(args.upsnet_config.replace(".yaml", "_dcn.yaml"), args.upsnet_dcn,
                                                  ups_opts)
    images = dataset_images(args.dataset, args.num_images)
    med, _ = time_predictors(models, images, warmup=2)
    header = f"{len(images)} images of {args.dataset}, batch 1, CPU, {torch.get_num_threads()} threads"
    print_table(med, "median ms / image", "PanopticFPN", header)
    if args.train_iters:
        train = train_step_times({k: v.cfg for k, v in models.items()}, args.train_iters, args.train_batch)
        header = f"\ntraining step, batch {args.train_batch}, {args.train_iters} steps each (after 2 warm-up)"
        print_table(train, "median s / iteration", "PanopticFPN", header)
    return med


def two_pass(pred, like):
    """``pred`` (an UPSNet ``DefaultPredictor``) with ``like``'s weights, running its ROI heads as before issue 12:
    ``StandardROIHeads.forward`` (box head + mask head for the Mask R-CNN detections), then ``predict`` (both heads
    again, for the panoptic instances)."""
    pred.model.load_state_dict(like.model.state_dict())
    rh = pred.model.roi_heads
    single = rh.predict

    def predict(features, proposals, select=None):
        StandardROIHeads.forward(rh, None, features, proposals)
        return single(features, proposals, select)

    rh.predict = predict
    return pred


def chance_pq(dataset, output_dir="output/upsnet_chance"):
    """PQ (COCOPanopticEvaluator) of predicting every pixel as one stuff class, for each stuff class."""
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import COCOPanopticEvaluator

    dicts = DatasetCatalog.get(dataset)
    labels = sorted(v for v in MetadataCatalog.get(dataset).stuff_dataset_id_to_contiguous_id.values() if v > 0)
    out = {}
    for label in labels:
        ev = COCOPanopticEvaluator(dataset, output_dir)
        ev.reset()
        for d in dicts:
            seg = torch.ones((d["height"], d["width"]), dtype=torch.int32)
            ev.process([{"file_name": d["file_name"], "image_id": d["image_id"]}],
                       [{"panoptic_seg": (seg, [{"id": 1, "isthing": False, "category_id": label}])}])
        out[label] = ev.evaluate()["panoptic_seg"]
        print(f"all pixels stuff label {label}: PQ {out[label]['PQ']:.2f}  PQ_th {out[label]['PQ_th']:.2f}  "
              f"PQ_st {out[label]['PQ_st']:.2f}")
    return out


if __name__ == "__main__":
    main()
