"""The command line shared by ``tools/convert_<arch>_to_d2.py`` for checkpoints converted by key mapping alone
(CenterNet, RetinaFace): read the official file, map its keys, write ``{"model": state_dict}``; or back."""
import argparse
import os

import torch

__all__ = ["load_state_dict", "convert_cli"]


def load_state_dict(path):
    """The state_dict in checkpoint ``path``: the file's dict itself, or its ``state_dict`` / ``model`` entry."""
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: no such file")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise SystemExit(f"{path}: not a state_dict (or a dict with 'state_dict' / 'model')")


def convert_cli(argv, description, official_to_segx, segx_to_official, source, official_container=None):
    """Runs the converter command line. ``official_to_segx`` / ``segx_to_official`` map state_dicts (raising
    ``ValueError`` listing leftover or missing keys); ``source`` names the official repo in the output;
    ``official_container`` wraps a state_dict in the official file layout for ``--to-official``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--to-official", action="store_true", help="segx checkpoint → official key layout")
    args = parser.parse_args(argv)
    sd = load_state_dict(args.input)
    try:
        if args.to_official:
            state = segx_to_official(sd)
            out = official_container(state) if official_container else state
        else:
            state = official_to_segx(sd)
            out = {"model": state, "__author__": f"{source} (converted by segx)"}
    except ValueError as e:
        raise SystemExit(f"{args.input}: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save(out, args.output)
    print(f"wrote {len(state)} tensors to {args.output}")
