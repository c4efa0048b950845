"""The command line shared by ``tools/convert_<arch>_to_d2.py`` for checkpoints converted by key mapping alone
(CenterNet, RetinaFace): read the official file, map its keys, write ``{"model": state_dict}``; or back.
With ``--config-file`` the segx-side state_dict is checked against the model that config builds
(``check_against_config``) and the conversion is refused, with the lists, on any missing, unexpected or
mis-shaped key."""
import argparse
import os
import pickle

import torch

__all__ = ["load_state_dict", "convert_cli", "config_model_shapes", "state_dict_mismatches", "check_against_config"]


def load_state_dict(path):
    """The state_dict in checkpoint ``path``: the file's dict itself, or its ``state_dict`` / ``model`` entry."""
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as e:  # not a torch.save file
        raise SystemExit(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})")
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise SystemExit(f"{path}: not a state_dict (or a dict with 'state_dict' / 'model')")


def config_model_shapes(config_file, opts=()):
    """``{key: shape}`` of the state_dict of the model ``config_file`` (+ ``opts``, KEY VALUE pairs) builds, built
    on the meta device (no memory, no initialisation work)."""
    from detectron2.config import get_cfg
    from detectron2.modeling import META_ARCH_REGISTRY

    from segx.config import add_segx_config

    if not os.path.isfile(config_file):
        raise SystemExit(f"--config-file {config_file}: no such file")
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def state_dict_mismatches(state, shapes, optional_suffixes=("num_batches_tracked",)):
    """(missing, unexpected, mis-shaped) keys of ``state`` against ``shapes`` (``{key: shape}``): keys of the model
    absent from ``state`` (those ending in ``optional_suffixes``, BN counters some releases lack, excepted), keys
    of ``state`` the model lacks, and ``(key, shape in state, shape in model)`` where both have a key."""
    missing = sorted(k for k in shapes if k not in state and not k.endswith(tuple(optional_suffixes)))
    unexpected = sorted(k for k in state if k not in shapes)
    misshaped = sorted((k, tuple(v.shape), shapes[k]) for k, v in state.items()
                       if k in shapes and tuple(v.shape) != shapes[k])
    return missing, unexpected, misshaped


def check_against_config(state, config_file, opts=(), what="the converted checkpoint"):
    """Raises ``ValueError`` listing every missing, unexpected and mis-shaped key of the segx ``state`` against the
    model of ``config_file``; returns ``state`` when it fits exactly."""
    missing, unexpected, misshaped = state_dict_mismatches(state, config_model_shapes(config_file, opts))
    if not (missing or unexpected or misshaped):
        return state
    lines = [f"{what} does not fit the model of {config_file} (a different architecture or config?):"]
    if missing:
        lines.append(f"  {len(missing)} missing (in the model, not in the checkpoint): {missing}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected (in the checkpoint, not in the model): {unexpected}")
    if misshaped:
        lines.append(f"  {len(misshaped)} mis-shaped (key: checkpoint shape vs model shape): "
                     + ", ".join(f"{k}: {a} vs {b}" for k, a, b in misshaped))
    raise ValueError("\n".join(lines))


def convert_cli(argv, description, official_to_segx, segx_to_official, source, official_container=None,
                config_required=False):
    """Runs the converter command line. ``official_to_segx`` / ``segx_to_official`` map state_dicts (raising
    ``ValueError`` listing leftover or missing keys); ``source`` names the official repo in the output;
    ``official_container`` wraps a state_dict in the official file layout for ``--to-official``.
    ``--config-file`` (required with ``config_required``): the segx state_dict (converted, or the input of
    ``--to-official``) must fit that config's model exactly (``check_against_config``), else nothing is written."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--to-official", action="store_true", help="segx checkpoint → official key layout")
    parser.add_argument("--config-file", required=config_required, metavar="FILE",
                        help="segx config of the model the checkpoint is for: its keys and shapes are checked")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE",
                        help="config overrides for --config-file (e.g. MODEL.CENTERNET.NUM_CLASSES 20)")
    args = parser.parse_args(argv)
    sd = load_state_dict(args.input)
    try:
        if args.to_official:
            if args.config_file:
                check_against_config(sd, args.config_file, args.opts, what=f"segx checkpoint {args.input}")
            state = segx_to_official(sd)
            out = official_container(state) if official_container else state
        else:
            state = official_to_segx(sd)
            if args.config_file:
                check_against_config(state, args.config_file, args.opts, what=f"{args.input} after conversion")
            out = {"model": state, "__author__": f"{source} (converted by segx)"}
    except ValueError as e:
        raise SystemExit(f"{args.input}: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save(out, args.output)
    print(f"wrote {len(state)} tensors to {args.output}")
