#!/usr/bin/env python
"""Train or evaluate a segx / detectron2 model from a config (detectron2's tools/train_net.py, with segx's plugins).

    python tools/train_net.py --config-file configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml [--num-gpus N] [--resume]
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
"""
from segx.engine.train_net import Trainer, cli, main, setup  # noqa: F401

if __name__ == "__main__":
    cli()
