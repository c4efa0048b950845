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
from common import compare_with_faster_rcnn


def main(argv=None):
    return compare_with_faster_rcnn(argv, __doc__, "Mask R-CNN", "mask", "configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml",
                                    "configs/MaskRCNN/faster_rcnn_R_18_FPN_scratch.yaml", "segx_shapes_val", 50)


if __name__ == "__main__":
    main()
