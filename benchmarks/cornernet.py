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

import torch

from common import dataset_images, predictor, print_table, time_predictors


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
    models = {
        "Faster R-CNN R-18-FPN": predictor(args.faster_config, args.faster),
        "CornerNet": predictor(args.cornernet_config, args.cornernet),
        "CenterNet triplets": predictor(args.triplets_config, args.triplets),
    }
    images = dataset_images(args.dataset, args.num_images)
    med, _ = time_predictors(models, images)
    h, w = images[0].shape[:2]
    header = f"{len(images)} images of {args.dataset} ({w}x{h}), batch 1, CPU, {torch.get_num_threads()} threads"
    print_table(med, "median ms / image", "Faster R-CNN R-18-FPN", header)
    return med


if __name__ == "__main__":
    main()
