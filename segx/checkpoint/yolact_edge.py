"""Key mapping between haotian-liu/yolact_edge's checkpoints (plain ``state_dict``s, ``Yolact.save_weights``) and
segx's ``YolactEdge`` meta-architecture. The YOLACT parts map as ``segx.checkpoint.yolact`` maps them.

Official layout → segx:
  ``fpn_phase_1.lat_layers.i`` (C5 first)        → ``backbone.lateral_convs.(n-1-i)`` (C3 first)
  ``fpn_phase_2.pred_layers.i`` (C5 first)       → ``backbone.output_convs.(n-1-i)``
  ``fpn_phase_2.downsample_layers.i``            → ``backbone.downsample_convs.i``
  ``fpn.*`` (a YOLACT checkpoint)                → the same places (the official loader renames them too)
  ``spa.refine_convs.i.0``                       → ``refinement.convs.i``
  ``flow_net_pre_convs.convs.i.0``               → ``flow_net.pre_convs.i``
  ``flow_net.conv{1,2,3}.j.0``                   → ``flow_net.encoder{3,4,5}.j``
  ``flow_net.pred{1,2,3}.{conv,scale,bias}``     → ``flow_net.predict{3,4,5}.{flow,scale,bias}``
  ``flow_net.upfeat{2,3}``, ``flow_net.upflow{2,3}`` → ``flow_net.up_feat{4,5}``, ``flow_net.up_flow{4,5}``
  ``backbone.*``, ``proto_net.*``, ``prediction_layers.0.*``, ``semantic_seg_conv.*`` → as for YOLACT.
Like the official loader, ``backbone.layer*`` keys outside ``backbone.layers`` and ``fpn*.downsample_layers.i`` with
i ≥ the model's downsample levels are dropped (and reported).
"""
import logging
import re

from segx.checkpoint.yolact import ConversionError
from segx.checkpoint.yolact import official_to_segx_key as yolact_official_to_segx_key
from segx.checkpoint.yolact import segx_to_official_key as yolact_segx_to_official_key

__all__ = ["official_to_segx_key", "segx_to_official_key", "convert_official_state_dict", "to_official_state_dict",
           "YolactEdgeConversionError", "IMAGE_ONLY_PREFIXES"]

logger = logging.getLogger(__name__)

# model parts an image-only checkpoint (official yolact_edge_*_800000.pth, or a YOLACT one) does not have
IMAGE_ONLY_PREFIXES = ("flow_net.", "refinement.")

_FLOW_RULES = [  # (official regex, segx replacement), and the inverse below
    (r"flow_net_pre_convs\.convs\.(\d+)\.0\.", r"flow_net.pre_convs.\1."),
    (r"flow_net\.conv([123])\.(\d+)\.0\.", lambda m: f"flow_net.encoder{int(m.group(1)) + 2}.{m.group(2)}."),
    (r"flow_net\.pred([123])\.conv\.", lambda m: f"flow_net.predict{int(m.group(1)) + 2}.flow."),
    (r"flow_net\.pred([123])\.(scale|bias)\.", lambda m: f"flow_net.predict{int(m.group(1)) + 2}.{m.group(2)}."),
    (r"flow_net\.upfeat([23])\.", lambda m: f"flow_net.up_feat{int(m.group(1)) + 2}."),
    (r"flow_net\.upflow([23])\.", lambda m: f"flow_net.up_flow{int(m.group(1)) + 2}."),
    (r"spa\.refine_convs\.(\d+)\.0\.", r"refinement.convs.\1."),
]
_INVERSE_RULES = [
    (r"flow_net\.pre_convs\.(\d+)\.", r"flow_net_pre_convs.convs.\1.0."),
    (r"flow_net\.encoder([345])\.(\d+)\.", lambda m: f"flow_net.conv{int(m.group(1)) - 2}.{m.group(2)}.0."),
    (r"flow_net\.predict([345])\.flow\.", lambda m: f"flow_net.pred{int(m.group(1)) - 2}.conv."),
    (r"flow_net\.predict([345])\.(scale|bias)\.", lambda m: f"flow_net.pred{int(m.group(1)) - 2}.{m.group(2)}."),
    (r"flow_net\.up_feat([45])\.", lambda m: f"flow_net.upfeat{int(m.group(1)) - 2}."),
    (r"flow_net\.up_flow([45])\.", lambda m: f"flow_net.upflow{int(m.group(1)) - 2}."),
    (r"refinement\.convs\.(\d+)\.", r"spa.refine_convs.\1.0."),
]


class YolactEdgeConversionError(ConversionError):
    """The checkpoint does not fit the YolactEdge model (lists as ``ConversionError``)."""

    def __init__(self, leftover, missing, mismatched):
        super().__init__(leftover, missing, mismatched)
        self.args = (str(self.args[0]).replace(
            "YOLACT checkpoint does not match the model (check the config: ",
            "YolactEdge checkpoint does not match the model (check the config: flow-net widths "
            "(MODEL.YOLACT_EDGE.FLOW), REFINEMENT, ", 1),)


def official_to_segx_key(key, num_fpn_inputs=3):
    """One official key → segx key, or ``None`` when it has no segx counterpart."""
    for pattern, repl in _FLOW_RULES:
        new, n = re.subn("^" + pattern, repl, key)
        if n:
            return new
    key = re.sub(r"^fpn_phase_[12]\.", "fpn.", key)
    return yolact_official_to_segx_key(key, num_fpn_inputs)


def segx_to_official_key(key, num_fpn_inputs=3):
    """Inverse of :func:`official_to_segx_key` (FPN keys in the ``fpn_phase_1`` / ``fpn_phase_2`` layout)."""
    for pattern, repl in _INVERSE_RULES:
        new, n = re.subn("^" + pattern, repl, key)
        if n:
            return new
    new = yolact_segx_to_official_key(key, num_fpn_inputs)
    if new is not None and new.startswith("fpn."):
        new = ("fpn_phase_1." if new.startswith("fpn.lat_layers.") else "fpn_phase_2.") + new[len("fpn."):]
    return new


def _num_downsample(model_state):
    idx = {int(m.group(1)) for m in (re.match(r"backbone\.downsample_convs\.(\d+)\.", k) for k in model_state) if m}
    return max(idx) + 1 if idx else 0


def _dropped_by_official_loader(key, num_downsample):
    if key.startswith("backbone.layer") and not key.startswith("backbone.layers"):
        return True
    m = re.match(r"fpn(_phase_2)?\.downsample_layers\.(\d+)\.", key)
    return bool(m) and int(m.group(2)) >= num_downsample


def convert_official_state_dict(official, model_state, num_fpn_inputs=3, allow_missing=()):
    """Official ``state_dict`` → segx ``state_dict`` for a model whose ``state_dict()`` is ``model_state``.

    Model keys under a prefix of ``allow_missing`` (e.g. ``IMAGE_ONLY_PREFIXES``) may be absent from the checkpoint
    and keep the model's values (logged). Raises :class:`YolactEdgeConversionError` listing every leftover
    checkpoint key, missing model key and shape mismatch."""
    nd = _num_downsample(model_state)
    dropped = sorted(k for k in official if _dropped_by_official_loader(k, nd))
    if dropped:
        logger.warning("YolactEdge checkpoint: dropped %d keys the official loader drops too: %s", len(dropped),
                       ", ".join(dropped))
    out, leftover, mismatched = {}, [], []
    optional = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    for key, value in official.items():
        if key in dropped:
            continue
        new = official_to_segx_key(key, num_fpn_inputs)
        if new is None or new not in model_state:
            if not optional(key):
                leftover.append(key if new is None else f"{key} (→ {new}, not in the model)")
            continue
        if tuple(value.shape) != tuple(model_state[new].shape):
            mismatched.append(f"{key} {tuple(value.shape)} → {new} {tuple(model_state[new].shape)}")
            continue
        out[new] = value
    kept = [k for k in model_state if k not in out and not optional(k) and k.startswith(tuple(allow_missing))]
    missing = [k for k in model_state if k not in out and not optional(k) and k not in kept]
    if leftover or missing or mismatched:
        raise YolactEdgeConversionError(leftover, missing, mismatched)
    if kept:
        logger.warning("YolactEdge checkpoint has no %s: %d tensors keep the model's initial values",
                       "/".join(allow_missing), len(kept))
    for k in model_state:
        if k not in out:
            out[k] = model_state[k].clone()
    return out


def to_official_state_dict(model_state, num_fpn_inputs=3):
    """segx ``state_dict`` → the official YolactEdge key layout (round-trip tests, running the official code)."""
    out = {}
    for key, value in model_state.items():
        new = segx_to_official_key(key, num_fpn_inputs)
        if new is None:
            raise YolactEdgeConversionError([key], [], [])
        out[new] = value
    return out
