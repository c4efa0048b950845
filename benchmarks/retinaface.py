"""CPU inference time per image of RetinaFace vs the Faster R-CNN R-18 baseline, measured in one process.

    python benchmarks/retinaface.py --num-images 30 --sizes 128 640 \
        --retinaface output/retinaface_mnet025_synthetic/model_final.pth \
        --faster output/faster_rcnn_R_18_FPN_scratch/model_final.pth

Both models run on the same synthetic face validation images (segx_faces_val), resized by both to the same
shortest edge (each ``--sizes`` entry; the images are square, so the input is size × size), interleaved image by
image so that load on a shared machine hits both alike, through detectron2's ``DefaultPredictor`` (resize +
model + decode + NMS + rescale, batch 1). Prints the median ms per image and the ratio RetinaFace / Faster
R-CNN per size. ``--retinaface-config`` picks the RetinaFace variant (e.g. the ResNet-50 paper config, random
weights unless given).
"""
import argparse

import torch

from common import dataset_images, predictor, time_predictors


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--retinaface-config", default="configs/RetinaFace/retinaface_mnet025_synthetic.yaml")
    p.add_argument("--faster-config", default="configs/MaskRCNN/faster_rcnn_R_18_FPN_scratch.yaml")
    p.add_argument("--retinaface", default="", help="RetinaFace weights (default: random init)")
    p.add_argument("--faster", default="", help="Faster R-CNN weights (default: random init)")
    p.add_argument("--dataset", default="segx_faces_val")
    p.add_argument("--num-images", type=int, default=30)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 640])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = dataset_images(args.dataset, args.num_images)
    print(f"{len(images)} images of {args.dataset}, batch 1, CPU, {torch.get_num_threads()} threads")
    print("| input | RetinaFace ms / image | Faster R-CNN R-18 ms / image | ratio RetinaFace / Faster R-CNN |")
    print("|---|---:|---:|---:|")
    ratios = {}
    for size in args.sizes:
        models = {
            "retinaface": predictor(args.retinaface_config, args.retinaface, test_size=size),
            "faster": predictor(args.faster_config, args.faster, test_size=size),
        }
        med, _ = time_predictors(models, images)
        ratios[size] = med["retinaface"] / med["faster"]
        print(f"| {size}×{size} | {med['retinaface']:.1f} | {med['faster']:.1f} | {ratios[size]:.2f} |")
    return ratios


if __name__ == "__main__":
    main()
