#!/usr/bin/env python
"""Convert an official YOLACT / YOLACT++ checkpoint (dbolya/yolact, e.g. ``yolact_base_54_800000.pth``) to a
detectron2 checkpoint for segx's ``YOLACT`` meta-architecture.

    python tools/convert_yolact_to_d2.py --config-file configs/YOLACT/yolact_R_101_FPN_550.yaml \
        yolact_base_54_800000.pth output/yolact_base_54_800000_d2.pth

The config must describe the same network (depth, DCN layers for ++, classes, anchors): the model is built
from it and every checkpoint key must find its place. Keys the official loader drops for backward compatibility
(``backbone.layer*`` outside ``backbone.layers``, ``fpn.downsample_layers.i`` beyond the configured ones) are
dropped and listed. Otherwise nothing is written and the leftover, missing and mismatched keys are listed. Evaluate with
``python tools/train_net.py --config-file <same config> --eval-only MODEL.WEIGHTS output/..._d2.pth``.
"""
import argparse
import os
import sys

import torch

import segx  # noqa: F401
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from segx.checkpoint.yolact import (
    ConversionError,
    convert_official_state_dict,
    legacy_keys,
    load_official_checkpoint,
)
from segx.config import add_segx_config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="segx YOLACT config describing the same network")
    parser.add_argument("input", help="official .pth (plain state_dict)")
    parser.add_argument("output", help="detectron2 checkpoint to write ({'model': state_dict})")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    for path in (args.config_file, args.input):
        if not os.path.isfile(path):
            raise SystemExit(f"convert_yolact_to_d2: {path} does not exist")
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.META_ARCHITECTURE != "YOLACT":
        raise SystemExit(f"convert_yolact_to_d2: {args.config_file} is not a YOLACT config")
    model = build_model(cfg)
    official = load_official_checkpoint(args.input)
    num_downsample = cfg.MODEL.YOLACT.FPN.NUM_DOWNSAMPLE
    dropped = legacy_keys(official, num_downsample)
    if dropped:
        print(f"convert_yolact_to_d2: dropping {len(dropped)} keys the official loader drops too (older backbone "
              f"naming, downsample layers beyond FPN.NUM_DOWNSAMPLE={num_downsample}):\n  " + "\n  ".join(dropped))
    try:
        state = convert_official_state_dict(official, model.state_dict(), len(cfg.MODEL.YOLACT.FPN.IN_FEATURES),
                                            num_downsample=num_downsample)
    except ConversionError as e:
        print(f"convert_yolact_to_d2: refusing to write {args.output}\n{e}", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save({"model": state, "__author__": "dbolya/yolact (converted by segx)", "matching_heuristics": False},
               args.output)
    print(f"wrote {args.output}: {len(state)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
