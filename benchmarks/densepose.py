"""DensePose R-CNN vs the same detector without the DensePose branch (Faster R-CNN), measured in one process.

    python benchmarks/densepose.py --num-images 30 --train-iters 6 \
        --densepose output/densepose_rcnn_R_18_FPN_synthetic/model_final.pth \
        --faster output/faster_rcnn_R_18_FPN_synthetic/model_final.pth

Inference: detectron2's ``DefaultPredictor`` (resize + model + postprocess, batch 1) on the synthetic dense
validation images, both models interleaved image by image (so load on a shared machine hits both alike); median ms
per image and the ratio. Training (``--train-iters N``): forward + backward + SGD step of each model on the same
DensePose-mapped batches, interleaved step by step.
"""
from common import compare_with_faster_rcnn


def main(argv=None):
    from segx.data.mappers import build_mapper

    return compare_with_faster_rcnn(argv, __doc__, "DensePose R-CNN", "densepose",
                                    "configs/DensePose/densepose_rcnn_R_18_FPN_synthetic.yaml",
                                    "configs/DensePose/faster_rcnn_R_18_FPN_synthetic.yaml", "segx_densepose_val", 30,
                                    mapper=lambda cfg: build_mapper(cfg, is_train=True))


if __name__ == "__main__":
    main()
