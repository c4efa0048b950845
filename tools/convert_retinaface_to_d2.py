#!/usr/bin/env python
"""Convert biubug6/Pytorch_Retinaface checkpoints (``mobilenet0.25_Final.pth``, ``Resnet50_Final.pth``) to segx.

    python tools/convert_retinaface_to_d2.py mobilenet0.25_Final.pth output/retinaface_mnet025_official.pth
    python tools/train_net.py --config-file configs/RetinaFace/retinaface_mnet025_640.yaml --eval-only \\
        MODEL.WEIGHTS output/retinaface_mnet025_official.pth

The input is a raw ``state_dict`` (keys may start with ``module.``; a dict holding it under ``state_dict`` or
``model`` also works). The output is ``{"model": state_dict}`` as detectron2's checkpointer expects.
``--to-official`` converts the other way (a segx checkpoint → the official key layout).
"""
import argparse
import os

import torch

from segx.checkpoint.retinaface import official_to_segx, segx_to_official


def _state_dict(obj, path):
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise SystemExit(f"{path}: not a state_dict (or a dict with 'model' / 'state_dict')")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--to-official", action="store_true", help="segx checkpoint → official key layout")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.input):
        raise SystemExit(f"{args.input}: no such file")
    sd = _state_dict(torch.load(args.input, map_location="cpu", weights_only=False), args.input)
    if args.to_official:
        out = segx_to_official(sd)
    else:
        out = {"model": official_to_segx(sd), "__author__": "biubug6/Pytorch_Retinaface (converted by segx)"}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save(out, args.output)
    n = len(out) if args.to_official else len(out["model"])
    print(f"wrote {n} tensors to {args.output}")


if __name__ == "__main__":
    main()
