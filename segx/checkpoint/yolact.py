"""Key mapping between dbolya/yolact's checkpoints (plain ``state_dict``s saved by ``Yolact.save_weights``) and
segx's ``YOLACT`` meta-architecture.

Official layout → segx:
  ``backbone.{conv1,bn1}``, ``backbone.layers.i`` → ``backbone.bottom_up.{conv1,bn1}``,
                                               ``backbone.bottom_up.layer(i+1)`` (DCN ``conv2.conv_offset_mask`` →
                                               ``conv2.offset_conv``)
  ``fpn.lat_layers.i`` / ``fpn.pred_layers.i`` (C5 first) → ``backbone.lateral_convs.(n-1-i)`` /
                                               ``backbone.output_convs.(n-1-i)`` (C3 first)
  ``fpn.downsample_layers.i``               → ``backbone.downsample_convs.i``
  ``proto_net.i``                           → ``proto_net.i`` (same Sequential indices)
  ``prediction_layers.0.{upfeature.0,bbox_layer,conf_layer,mask_layer}`` → ``head.*``
  ``semantic_seg_conv``                     → ``semantic_seg_conv``
  ``maskiou_net.maskiou_net.i``             → ``maskiou_net.net.i`` (YOLACT++)
BatchNorm ``num_batches_tracked`` buffers are optional on both sides (older PyTorch did not save them).

Keys the official loader (``Yolact.load_weights``) drops for backward compatibility are dropped here too, and
reported (``legacy_keys``): ``backbone.layer*`` keys that are not ``backbone.layers.*`` (an older backbone
naming) and ``fpn.downsample_layers.i`` with i ≥ the configured number of downsample levels (v1.0 files).
"""
import logging
import re

import torch

__all__ = ["official_to_segx_key", "segx_to_official_key", "convert_official_state_dict", "to_official_state_dict",
           "legacy_keys", "num_downsample_of", "ConversionError"]

logger = logging.getLogger(__name__)


class ConversionError(ValueError):
    """The checkpoint does not fit the model: ``leftover`` official keys, ``missing`` model keys, ``mismatched``
    shapes (lists of strings)."""

    def __init__(self, leftover, missing, mismatched):
        self.leftover, self.missing, self.mismatched = leftover, missing, mismatched
        parts = []
        if leftover:
            parts.append(f"{len(leftover)} checkpoint keys have no place in the model:\n  " + "\n  ".join(leftover))
        if missing:
            parts.append(f"{len(missing)} model keys are missing from the checkpoint:\n  " + "\n  ".join(missing))
        if mismatched:
            parts.append(f"{len(mismatched)} shapes differ:\n  " + "\n  ".join(mismatched))
        super().__init__("YOLACT checkpoint does not match the model (check the config: depth, DCN layers, "
                         "classes, prototypes, anchors, MASKIOU_ON).\n" + "\n".join(parts))


def official_to_segx_key(key, num_fpn_inputs=3):
    """One official key → segx key, or ``None`` when it has no segx counterpart."""
    m = re.match(r"backbone\.(.*)$", key)
    if m:
        rest = re.sub(r"^layers\.(\d+)\.", lambda s: f"layer{int(s.group(1)) + 1}.", m.group(1))
        return "backbone.bottom_up." + rest.replace(".conv_offset_mask.", ".offset_conv.")
    m = re.match(r"fpn\.(lat_layers|pred_layers)\.(\d+)\.(.*)$", key)
    if m:
        name = "lateral_convs" if m.group(1) == "lat_layers" else "output_convs"
        return f"backbone.{name}.{num_fpn_inputs - 1 - int(m.group(2))}.{m.group(3)}"
    m = re.match(r"fpn\.downsample_layers\.(\d+)\.(.*)$", key)
    if m:
        return f"backbone.downsample_convs.{m.group(1)}.{m.group(2)}"
    m = re.match(r"proto_net\.(.*)$", key)
    if m:
        return key
    m = re.match(r"prediction_layers\.0\.((upfeature\.0|bbox_layer|conf_layer|mask_layer)\..*)$", key)
    if m:
        return "head." + m.group(1)
    if key.startswith("semantic_seg_conv."):
        return key
    m = re.match(r"maskiou_net\.maskiou_net\.(.*)$", key)
    if m:
        return "maskiou_net.net." + m.group(1)
    return None


def segx_to_official_key(key, num_fpn_inputs=3):
    """Inverse of :func:`official_to_segx_key`."""
    m = re.match(r"backbone\.bottom_up\.(.*)$", key)
    if m:
        rest = re.sub(r"^layer(\d)\.", lambda s: f"layers.{int(s.group(1)) - 1}.", m.group(1))
        return "backbone." + rest.replace(".offset_conv.", ".conv_offset_mask.")
    m = re.match(r"backbone\.(lateral_convs|output_convs)\.(\d+)\.(.*)$", key)
    if m:
        name = "lat_layers" if m.group(1) == "lateral_convs" else "pred_layers"
        return f"fpn.{name}.{num_fpn_inputs - 1 - int(m.group(2))}.{m.group(3)}"
    m = re.match(r"backbone\.downsample_convs\.(\d+)\.(.*)$", key)
    if m:
        return f"fpn.downsample_layers.{m.group(1)}.{m.group(2)}"
    if key.startswith("proto_net.") or key.startswith("semantic_seg_conv."):
        return key
    m = re.match(r"head\.(.*)$", key)
    if m:
        return "prediction_layers.0." + m.group(1)
    m = re.match(r"maskiou_net\.net\.(.*)$", key)
    if m:
        return "maskiou_net.maskiou_net." + m.group(1)
    return None


def _optional(key):
    return key.endswith("num_batches_tracked")


def num_downsample_of(model_state):
    """The number of FPN downsample levels (P6, P7, ...) of a segx YOLACT ``state_dict``."""
    idx = {int(m.group(1)) for m in (re.match(r"backbone\.downsample_convs\.(\d+)\.", k) for k in model_state) if m}
    return max(idx) + 1 if idx else 0


def legacy_keys(official, num_downsample):
    """The keys of an official ``state_dict`` that dbolya/yolact's ``Yolact.load_weights`` deletes before loading:
    ``backbone.layer*`` not under ``backbone.layers`` (old backbone naming), and ``fpn.downsample_layers.i`` with
    i ≥ ``num_downsample`` (v1.0 checkpoints carried more downsample layers than the configs use)."""
    out = []
    for key in official:
        if key.startswith("backbone.layer") and not key.startswith("backbone.layers"):
            out.append(key)
        elif key.startswith("fpn.downsample_layers.") and int(key.split(".")[2]) >= num_downsample:
            out.append(key)
    return out


def convert_official_state_dict(official, model_state, num_fpn_inputs=3, num_downsample=None):
    """Official ``state_dict`` → segx ``state_dict`` for a model whose ``state_dict()`` is ``model_state``.

    First drops (and logs) the ``legacy_keys`` the official loader drops too (``num_downsample``: the model's FPN
    downsample levels, read from ``model_state`` when None). Then raises :class:`ConversionError` listing every
    leftover checkpoint key, missing model key and shape mismatch.
    """
    if num_downsample is None:
        num_downsample = num_downsample_of(model_state)
    dropped = set(legacy_keys(official, num_downsample))
    if dropped:
        logger.warning("YOLACT checkpoint: dropped %d keys the official loader drops too (backward compatibility): %s",
                       len(dropped), ", ".join(sorted(dropped)))
    out, leftover, mismatched = {}, [], []
    for key, value in official.items():
        if key in dropped:
            continue
        new = official_to_segx_key(key, num_fpn_inputs)
        if new is None or new not in model_state:
            if not _optional(key):
                leftover.append(key if new is None else f"{key} (→ {new}, not in the model)")
            continue
        if tuple(value.shape) != tuple(model_state[new].shape):
            mismatched.append(f"{key} {tuple(value.shape)} → {new} {tuple(model_state[new].shape)}")
            continue
        out[new] = value
    missing = [k for k in model_state if k not in out and not _optional(k)]
    if leftover or missing or mismatched:
        raise ConversionError(leftover, missing, mismatched)
    for k in model_state:
        if k not in out:  # optional BN counters
            out[k] = model_state[k].clone()
    return out


def to_official_state_dict(model_state, num_fpn_inputs=3):
    """segx ``state_dict`` → the official key layout (for round-trip tests and for running the official code)."""
    out = {}
    for key, value in model_state.items():
        new = segx_to_official_key(key, num_fpn_inputs)
        if new is None:
            raise ConversionError([key], [], [])
        out[new] = value
    return out


def load_official_checkpoint(path):
    """Reads an official ``.pth`` (a plain ``state_dict``; a ``{"model": ...}`` wrapper is unwrapped)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path}: expected a state_dict of tensors (dbolya/yolact's save_weights format)")
    return obj
