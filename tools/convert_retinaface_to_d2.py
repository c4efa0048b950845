#!/usr/bin/env python
"""Convert biubug6/Pytorch_Retinaface checkpoints (``mobilenet0.25_Final.pth``, ``Resnet50_Final.pth``) to segx.

    python tools/convert_retinaface_to_d2.py mobilenet0.25_Final.pth output/retinaface_mnet025_official.pth \\
        --config-file configs/RetinaFace/retinaface_mnet025_640.yaml
    python tools/train_net.py --config-file configs/RetinaFace/retinaface_mnet025_640.yaml --eval-only \\
        MODEL.WEIGHTS output/retinaface_mnet025_official.pth

The input is a raw ``state_dict`` (keys may start with ``module.``; a dict holding it under ``state_dict`` or
``model`` also works). The output is ``{"model": state_dict}`` as detectron2's checkpointer expects.
``--config-file`` (required) names the segx config the weights are for: the converted keys and shapes must equal
that model's exactly, else nothing is written and every missing, unexpected and mis-shaped key is listed (e.g.
``Resnet50_Final.pth`` against the MobileNet config). A file that is not an official RetinaFace checkpoint is
refused with the keys it does not know. ``--opts KEY VALUE ...`` overrides the config.
``--to-official`` converts the other way (a segx checkpoint → the official key layout).
"""
import sys

from segx.checkpoint.retinaface import official_to_segx, segx_to_official
from segx.checkpoint.convert_cli import convert_cli


def main(argv=None):
    convert_cli(
        argv if argv is not None else sys.argv[1:],
        __doc__,
        official_to_segx,
        segx_to_official,
        source="biubug6/Pytorch_Retinaface",
        config_required=True,
    )


if __name__ == "__main__":
    main()
