#!/usr/bin/env python
"""End-point error of YolactEdge's flow net on frame pairs with known flow (the flow stage's metric), against zero flow.

    python tools/yolact_edge_flow_epe.py --config-file configs/YolactEdge/yolact_edge_R_18_shapes_flow.yaml \
        MODEL.WEIGHTS output/yolact_edge_R_18_shapes_flow/model_final.pth

Pairs: every frame of ``--dataset`` (default: the config's test set, which must carry the known motion:
segx_videos_val) with a key frame ``MODEL.YOLACT_EDGE.REF_FRAME_OFFSET`` frames earlier (seeded), through the flow
stage's mapper without flips. Prints, per level (the C3 = P3, P4 and P5 sizes), the mean EPE in pixels of the S×S
input of the net's flow and of zero flow (the target bilinearly resized to the level, as the training loss).
"""
import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

import segx  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from segx.config import load_config
from segx.data.mappers import build_mapper
from segx.modeling.flow import FLOW_LEVELS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--dataset", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts, device="cpu", who="yolact_edge_flow_epe")
    cfg.MODEL.YOLACT_EDGE.TRAIN_STAGE = "flow"
    cfg.INPUT.RANDOM_FLIP = "none"
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    mapper = build_mapper(cfg, is_train=True)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    np.random.seed(args.seed)
    S = cfg.MODEL.YOLACT.INPUT_SIZE
    sums = {lv: [0.0, 0.0] for lv in FLOW_LEVELS}
    n = 0
    first = model.backbone.in_features[0]
    with torch.no_grad():
        for record in DatasetCatalog.get(dataset):
            x = mapper(dict(record))
            images = model.preprocess_image([x])
            refs = model.preprocess_image([{"image": x["ref_image"]}])
            lat, ref_lat = (model.backbone.lateral_convs[0](
                model.backbone.bottom_up.stages(t, last=first)[first]) for t in (images.tensor, refs.tensor))
            flows = model.flow_net(lat, ref_lat, levels=FLOW_LEVELS)
            target = model.flow_target(x, 0)[None] * (S / 16.0)  # units → pixels of the S×S input
            for lv, (flow, _, _) in flows.items():
                gt = F.interpolate(target, size=flow.shape[-2:], mode="bilinear", align_corners=False)
                sums[lv][0] += float(torch.linalg.vector_norm(flow * (S / 16.0) - gt, dim=1).mean())
                sums[lv][1] += float(torch.linalg.vector_norm(gt, dim=1).mean())
            n += 1
    print(f"{dataset}: {n} pairs, key frame {list(cfg.MODEL.YOLACT_EDGE.REF_FRAME_OFFSET)} frames earlier, "
          f"EPE in pixels of the {S}x{S} input")
    print("| level | flow net | zero flow |")
    print("|---|---:|---:|")
    for lv, (net, zero) in sums.items():
        print(f"| {lv} | {net / n:.2f} | {zero / n:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
