"""CPU inference (and optionally training-step) time of YOLACT vs the Mask R-CNN baseline, in one process.

    python benchmarks/yolact.py --num-images 50 \
        --yolact output/yolact_R_18_FPN_scratch/model_final.pth \
        --mask   output/mask_rcnn_R_18_FPN_scratch/model_final.pth [--train-iters 10]

Both models run on the same synthetic validation images (128×128, so both see a 128×128 input), interleaved
image by image so that load on a shared machine hits both alike, through detectron2's ``DefaultPredictor``
(resize + model + postprocess to full-image masks, batch 1; the YOLACT configs set INPUT.MIN_SIZE_TEST 0, so
the predictor hands over the original image and the model resizes it once, straight to MODEL.YOLACT.INPUT_SIZE
squared, as the official code; a no-op for the 128×128 synthetic images). Prints the median ms per image of
each and the ratio YOLACT / Mask R-CNN. ``--train-iters N`` also times N training steps of each on the same batches
(``benchmarks/rcnn_baselines.py``'s ``train_step_times``).

The postprocess mask upsampling alone (100 detections, detections as channels vs as a batch, same process):

    python benchmarks/yolact.py --mask-upsample --threads 1

The DESIGN.md §6 setting (550² input, random weights, thresholds at 0 so postprocessing handles 100 detections,
against detectron2's own Mask R-CNN R50-FPN config from its model zoo):

    python benchmarks/yolact.py --num-images 8 --size 550 \
        --yolact-config configs/YOLACT/yolact_R_50_FPN_550.yaml --yolact-opts MODEL.YOLACT.SCORE_THRESH_TEST 0.0 \
        --mask-config .venv/lib/python3.11/site-packages/detectron2/model_zoo/configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml \
        --mask-opts MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.0 TEST.DETECTIONS_PER_IMAGE 100 INPUT.MIN_SIZE_TEST 550 \
        INPUT.MAX_SIZE_TEST 550
"""
import argparse
import statistics
import time

import torch

from common import dataset_images, predictor, random_images, time_predictors, train_step_times


def mask_upsample_times(num_dets=100, proto=138, size=(550, 550), repeats=30, mask_thresh=0.5):
    """Median ms of the postprocess mask step (soft masks ``[N,proto,proto]`` → bilinear to ``size`` → threshold)
    with the detections as channels (``[1,N,h,w]``, segx's default since issue 18, as the official postprocess) and
    as a batch (``[N,1,h,w]``, before), interleaved in this process; and whether the outputs are equal."""
    from segx.modeling.yolact import upsample_masks

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(num_dets, proto, proto, generator=g)
    times = {"channels": [], "batch": []}
    outs = {}
    with torch.no_grad():
        for i in range(repeats + 2):
            for layout in times:
                t0 = time.perf_counter()
                outs[layout] = upsample_masks(masks, *size, layout=layout) > mask_thresh
                if i >= 2:
                    times[layout].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}, torch.equal(outs["channels"], outs["batch"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--yolact-config", default="configs/YOLACT/yolact_R_18_FPN_scratch.yaml")
    p.add_argument("--mask-config", default="configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml")
    p.add_argument("--yolact", default="", help="YOLACT weights (default: random init)")
    p.add_argument("--mask", default="", help="Mask R-CNN weights (default: random init)")
    p.add_argument("--dataset", default="segx_shapes_val")
    p.add_argument("--num-images", type=int, default=50)
    p.add_argument("--size", type=int, default=0, help="time on random size×size images instead of the dataset's")
    p.add_argument("--yolact-opts", nargs="*", default=[], help="config overrides KEY VALUE for YOLACT")
    p.add_argument("--mask-opts", nargs="*", default=[], help="config overrides KEY VALUE for Mask R-CNN")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--train-iters", type=int, default=0, help="also time this many training steps per model")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--mask-upsample", action="store_true", help="only time the postprocess mask upsampling, "
                   "detections as channels vs as a batch (100 detections, 138² prototypes, to --size or 550²)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mask_upsample:
        sizes = [(args.size, args.size)] if args.size else [(550, 550), (480, 640)]
        print(f"mask upsampling + threshold, 100 detections from 138x138, CPU, {torch.get_num_threads()} threads")
        print("| output size | channels [1,N,h,w] ms | batch [N,1,h,w] ms | ratio channels / batch | equal |")
        print("|---|---:|---:|---:|---|")
        for size in sizes:
            med, equal = mask_upsample_times(size=size)
            print(f"| {size[0]}x{size[1]} | {med['channels']:.1f} | {med['batch']:.1f} | "
                  f"{med['channels'] / med['batch']:.2f} | {equal} |")
        return med
    models = {"YOLACT": predictor(args.yolact_config, args.yolact, args.yolact_opts),
              "Mask R-CNN": predictor(args.mask_config, args.mask, args.mask_opts)}
    images = random_images(args.size, args.num_images) if args.size else dataset_images(args.dataset, args.num_images)
    med, dets = time_predictors(models, images)
    source = f"random {args.size}x{args.size}" if args.size else args.dataset
    print(f"{len(images)} images of {source}, batch 1, CPU, {torch.get_num_threads()} threads")
    print("| model | median ms / image | mean detections / image |")
    print("|---|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} | {dets[k]:.1f} |")
    print(f"ratio YOLACT / Mask R-CNN: {med['YOLACT'] / med['Mask R-CNN']:.2f}")
    if args.train_iters:
        train = train_step_times({k: v.cfg for k, v in models.items()}, args.train_iters, args.train_batch)
        print(f"\ntraining step, batch {args.train_batch}, {args.train_iters} steps each (after 2 warm-up)")
        print("| model | median s / iteration |")
        print("|---|---:|")
        for k, v in train.items():
            print(f"| {k} | {v:.2f} |")
        print(f"ratio YOLACT / Mask R-CNN: {train['YOLACT'] / train['Mask R-CNN']:.2f}")
    return med


if __name__ == "__main__":
    main()
