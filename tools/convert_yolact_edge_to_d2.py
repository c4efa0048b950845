#!/usr/bin/env python
"""Convert an official YolactEdge checkpoint (haotian-liu/yolact_edge, e.g. ``yolact_edge_vid_847_50000.pth``) to a
detectron2 checkpoint for segx's ``YolactEdge`` meta-architecture.

    python tools/convert_yolact_edge_to_d2.py --config-file configs/YolactEdge/yolact_edge_R_101_FPN_550.yaml \
        yolact_edge_vid_847_50000.pth output/yolact_edge_vid_847_50000_d2.pth

The config must describe the same network (depth, classes, flow-net widths, refinement). Every checkpoint key must
find its place and every model key must be filled, otherwise nothing is written and the unmatched keys are listed.
``--image-only`` accepts checkpoints without a flow net and refinement (the official image models
``yolact_edge_*_800000.pth``, or YOLACT's): those parts keep their initial values (train them with the flow and video
stages). Evaluate with ``python tools/train_net.py --config-file <same config> --eval-only MODEL.WEIGHTS <output>``.
"""
import argparse
import os
import sys

import torch

import segx  # noqa: F401
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from segx.checkpoint.yolact_edge import IMAGE_ONLY_PREFIXES, YolactEdgeConversionError, convert_official_state_dict
from segx.config import add_segx_config


def _load(path):
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise SystemExit(f"convert_yolact_edge_to_d2: {path}: expected a state_dict of tensors "
                         "(haotian-liu/yolact_edge's save_weights format)")
    return obj


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="segx YolactEdge config describing the same network")
    parser.add_argument("--image-only", action="store_true",
                        help="the checkpoint has no flow net / refinement (official image model or YOLACT)")
    parser.add_argument("input", help="official .pth (plain state_dict)")
    parser.add_argument("output", help="detectron2 checkpoint to write ({'model': state_dict})")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    for path in (args.config_file, args.input):
        if not os.path.isfile(path):
            raise SystemExit(f"convert_yolact_edge_to_d2: {path} does not exist")
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.META_ARCHITECTURE != "YolactEdge":
        raise SystemExit(f"convert_yolact_edge_to_d2: {args.config_file} is not a YolactEdge config")
    model = build_model(cfg)
    try:
        state = convert_official_state_dict(_load(args.input), model.state_dict(),
                                            len(cfg.MODEL.YOLACT.FPN.IN_FEATURES),
                                            allow_missing=IMAGE_ONLY_PREFIXES if args.image_only else ())
    except YolactEdgeConversionError as e:
        print(f"convert_yolact_edge_to_d2: refusing to write {args.output}\n{e}", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save({"model": state, "__author__": "haotian-liu/yolact_edge (converted by segx)",
                "matching_heuristics": False}, args.output)
    print(f"wrote {args.output}: {len(state)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
