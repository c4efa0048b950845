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

import torch

from common import dataset_images, predictor, print_table, time_predictors, train_step_times


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
    models = {"Faster R-CNN": predictor(args.faster_config, args.faster), "Mask R-CNN": predictor(args.mask_config, args.mask)}
    images = dataset_images(args.dataset, args.num_images)
    med, _ = time_predictors(models, images)
    header = f"{len(images)} images of {args.dataset}, batch 1, CPU, {torch.get_num_threads()} threads"
    print_table(med, "median ms / image", "Faster R-CNN", header)
    if args.train_iters:
        train = train_step_times({k: v.cfg for k, v in models.items()}, args.train_iters, args.train_batch)
        header = f"\ntraining step, batch {args.train_batch}, {args.train_iters} steps each (after 2 warm-up)"
        print_table(train, "median s / iteration", "Faster R-CNN", header)
    return med


if __name__ == "__main__":
    main()
