#!/usr/bin/env python
"""Export YolactEdge's key-frame and non-key-frame paths to TorchScript and ONNX, checked against eager at the traced
size and a second one (``segx.export.yolact_edge``). Traces on frames 0 (key) and 1 (non-key) of the first video of
the config's test set, through the test mapper.

    python tools/export_yolact_edge.py --config-file configs/YolactEdge/yolact_edge_R_18_shapes_video.yaml \
        --output output/export_yolact_edge MODEL.WEIGHTS output/yolact_edge_R_18_shapes_video/model_final.pth
"""
import sys

import segx  # noqa: F401
from segx.export.graphs import export_video_cli
from segx.export.yolact_edge import export_yolact_edge


def main(argv=None):
    return export_video_cli("YolactEdge", export_yolact_edge, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
