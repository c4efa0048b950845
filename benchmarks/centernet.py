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

import torch

from common import dataset_images, predictor, print_table, time_predictors


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
    models = {"Faster R-CNN": predictor(args.faster_config, args.faster), "CenterNet": predictor(args.centernet_config, args.centernet)}
    images = dataset_images(args.dataset, args.num_images)
    med, _ = time_predictors(models, images)
    h, w = images[0].shape[:2]
    header = f"{len(images)} images of {args.dataset} ({h}x{w}), batch 1, CPU, {torch.get_num_threads()} threads"
    print_table(med, "median ms / image", "Faster R-CNN", header)
    return med


if __name__ == "__main__":
    main()
