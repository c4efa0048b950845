#!/usr/bin/env python
"""Convert xingyizhou/CenterNet ``ctdet`` checkpoints (``res_18``, ``res_101``, ``dla_34``) to segx.

    python tools/convert_centernet_to_d2.py ctdet_coco_dla_2x.pth output/centernet_dla34_official.pth
    python tools/train_net.py --config-file configs/CenterNet/centernet_DLA_34_512.yaml --eval-only \\
        MODEL.WEIGHTS output/centernet_dla34_official.pth

The input is the official ``{'epoch', 'state_dict'}`` (a raw state_dict, or one under ``model``, also works;
``module.`` prefixes are dropped). The output is ``{"model": state_dict}`` as detectron2's checkpointer
expects. ``--to-official`` converts the other way (segx checkpoint → ``{'epoch': 0, 'state_dict'}``).
"""
import argparse
import os

import torch

from segx.checkpoint.centernet import official_to_segx, segx_to_official


def _state_dict(obj, path):
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise SystemExit(f"{path}: not a state_dict (or a dict with 'state_dict' / 'model')")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--to-official", action="store_true", help="segx checkpoint → official key layout")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.input):
        raise SystemExit(f"{args.input}: no such file")
    sd = _state_dict(torch.load(args.input, map_location="cpu", weights_only=False), args.input)
    try:
        if args.to_official:
            out = {"epoch": 0, "state_dict": segx_to_official(sd)}
            n = len(out["state_dict"])
        else:
            out = {"model": official_to_segx(sd), "__author__": "xingyizhou/CenterNet (converted by segx)"}
            n = len(out["model"])
    except ValueError as e:
        raise SystemExit(f"{args.input}: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save(out, args.output)
    print(f"wrote {n} tensors to {args.output}")


if __name__ == "__main__":
    main()
