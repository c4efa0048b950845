#!/usr/bin/env python
"""Export VPSNet's per-frame path (first frame, and next frames with the previous frame's image and FPN levels as
inputs) to TorchScript and ONNX, checked against eager at the traced size and a second one (``segx.export.vpsnet``).
Traces on frames 0 and 1 of the first video of the config's test set, through the test mapper.

    python tools/export_vpsnet.py --config-file configs/VPSNet/vpsnet_R_18_FPN_shapes_video.yaml \
        --output output/export_vpsnet MODEL.WEIGHTS output/vpsnet_R_18_FPN_shapes_video/model_final.pth
"""
import sys

import segx  # noqa: F401
from segx.export.graphs import export_video_cli
from segx.export.vpsnet import export_vpsnet

if __name__ == "__main__":
    sys.exit(export_video_cli("VPSNet", export_vpsnet, doc=__doc__))
