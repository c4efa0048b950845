#!/usr/bin/env python
"""Export YolactEdge's key-frame and non-key-frame paths to TorchScript and ONNX, checked against eager
(``segx.export.yolact_edge``). Traces on frames 0 (key) and 1 (non-key) of the first video of the config's test
set, through the test mapper.

    python tools/export_yolact_edge.py --config-file configs/YolactEdge/yolact_edge_R_18_shapes_video.yaml \
        --output output/export_yolact_edge MODEL.WEIGHTS output/yolact_edge_R_18_shapes_video/model_final.pth
"""
import argparse
import json
import logging
import os
import sys

import segx  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from segx.config import add_segx_config
from segx.data.mappers import build_mapper
from segx.export.yolact_edge import export_yolact_edge


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", default="output/export_yolact_edge")
    parser.add_argument("--format", default="torchscript,onnx", help="comma-separated: torchscript, onnx")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config_file):
        raise SystemExit(f"export_yolact_edge: config file {args.config_file} does not exist")
    logging.basicConfig(level=logging.INFO)
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.META_ARCHITECTURE != "YolactEdge":
        raise SystemExit(f"export_yolact_edge: {args.config_file} is not a YolactEdge config")
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if not cfg.DATASETS.TEST:
        raise SystemExit("export_yolact_edge: cfg.DATASETS.TEST is empty: no frames to trace on")
    records = DatasetCatalog.get(cfg.DATASETS.TEST[0])
    frames = [r for r in records if r.get("video_id") == records[0].get("video_id")][:2]
    if len(frames) < 2:
        raise SystemExit(f"export_yolact_edge: the first video of {cfg.DATASETS.TEST[0]} has fewer than 2 frames")
    mapper = build_mapper(cfg, is_train=False)
    key, nonkey = (mapper(dict(r))["image"].float() for r in frames)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    report = export_yolact_edge(model, key, nonkey, args.output, formats)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
