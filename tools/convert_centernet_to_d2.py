#!/usr/bin/env python
"""Convert xingyizhou/CenterNet ``ctdet`` checkpoints (``res_18``, ``res_101``, ``resdcn_18``, ``resdcn_101``,
``dla_34``) to segx.

    python tools/convert_centernet_to_d2.py ctdet_coco_resdcn18.pth output/centernet_resdcn18_official.pth \\
        --config-file configs/CenterNet/centernet_R_18_dcn_512.yaml
    python tools/train_net.py --config-file configs/CenterNet/centernet_R_18_dcn_512.yaml --eval-only \\
        MODEL.WEIGHTS output/centernet_resdcn18_official.pth

``--config-file`` (required) names the segx config the weights are for: the converted keys and shapes must equal
that model's exactly, else the converter refuses and lists every missing, unexpected and mis-shaped key (e.g. a
``resdcn_18`` file against ``centernet_R_18_512.yaml``, the plain-deconv ``res_18`` layout). ``--opts KEY VALUE
...`` overrides that config (e.g. ``MODEL.CENTERNET.NUM_CLASSES 20`` for the Pascal models).

The input is the official ``{'epoch', 'state_dict'}`` (a raw state_dict, or one under ``model``, also works;
``module.`` prefixes are dropped). The output is ``{"model": state_dict}`` as detectron2's checkpointer
expects. ``--to-official`` converts the other way (segx checkpoint → ``{'epoch': 0, 'state_dict'}``).
"""
import sys

from segx.checkpoint.centernet import official_to_segx, segx_to_official
from segx.checkpoint.convert_cli import convert_cli


def main(argv=None):
    convert_cli(
        argv if argv is not None else sys.argv[1:],
        __doc__,
        official_to_segx,
        segx_to_official,
        source="xingyizhou/CenterNet",
        official_container=lambda sd: {"epoch": 0, "state_dict": sd},
        config_required=True,
    )


if __name__ == "__main__":
    main()
