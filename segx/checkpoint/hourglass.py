"""Key mapping between princeton-vl/pytorch_stacked_hourglass checkpoints and segx's ``StackedHourglass``.

Official layout (``models/posenet.py`` ``PoseNet``, ``models/layers.py``; the released ``checkpoint.pt`` is
``{'state_dict', 'optimizer', 'epoch'}`` of ``Trainer(DataParallel(PoseNet))``, keys prefixed ``model.module.``):
``pre.0.{conv,bn}`` (7×7 stem conv + BN), ``pre.{1,3,4}`` residuals (``pre.2`` is the max-pool),
``hgs.{i}.0`` the hourglass (``up1``/``low1``/``low3`` residuals, ``low2`` the inner hourglass or, at the bottom,
a residual), ``features.{i}.0`` (residual) and ``features.{i}.1.{conv,bn}`` (1×1 conv + BN), ``outs.{i}.conv``,
``merge_features.{i}.conv.conv``, ``merge_preds.{i}.conv.conv``. A residual holds ``bn1``/``bn2``/``bn3``,
``conv{1,2,3}.conv`` and always a ``skip_layer.conv``, which its forward uses only when its input and output widths
differ (``need_skip``).

segx layout (``segx/modeling/backbone/stacked_hourglass.py``, under ``backbone.``): ``stem.{0,1}``,
``stem_res.{0,2,3}``, ``hourglasses.{i}`` (each residual a one-module ``Sequential``: ``up1.0``, ..., innermost
``low2.0``), ``post.{i}.0``, ``lin.{i}.{0,1}``, ``heads.{i}``, ``merge_features.{i}``, ``merge_preds.{i}``; a
residual's convs are ``conv{1,2,3}`` and ``skip`` (present only where it is used).
"""
import re

__all__ = ["official_to_segx", "segx_to_official", "strip_prefixes", "unused_skip_layers"]

_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_RESIDUAL_PART = rf"(bn[123]\.{_PARAM}|conv[123]\.conv\.(?:weight|bias)|skip_layer\.conv\.(?:weight|bias))"


def strip_prefixes(state_dict):
    """Drops the wrappers' prefixes of the released files (``model.module.``, ``module.``, ``model.``)."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("model.module.", "module.model.", "module.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
                break
        out[k] = v
    return out


def unused_skip_layers(state_dict):
    """The ``skip_layer`` keys of residuals whose forward never uses them: ``need_skip`` is off when the input and
    output widths are equal (``conv1``'s input channels == ``conv3``'s output channels)."""
    unused = []
    for k in state_dict:
        m = re.fullmatch(r"(.*)\.skip_layer\.conv\.(weight|bias)", k)
        if not m:
            continue
        conv1 = state_dict.get(f"{m.group(1)}.conv1.conv.weight")
        conv3 = state_dict.get(f"{m.group(1)}.conv3.conv.weight")
        if conv1 is not None and conv3 is not None and conv1.shape[1] == conv3.shape[0]:
            unused.append(k)
    return unused


def _residual(rest):
    """A residual's parameter name, official → segx."""
    rest = re.sub(r"^conv([123])\.conv\.", r"conv\1.", rest)
    return re.sub(r"^skip_layer\.conv\.", "skip.", rest)


def _official_key(k):
    m = re.fullmatch(rf"pre\.0\.(conv|bn)\.{_PARAM}", k)
    if m:
        return f"backbone.stem.{0 if m.group(1) == 'conv' else 1}.{m.group(2)}"
    m = re.fullmatch(rf"pre\.([134])\.{_RESIDUAL_PART}", k)
    if m:
        return f"backbone.stem_res.{ {'1': 0, '3': 2, '4': 3}[m.group(1)] }.{_residual(m.group(2))}"
    m = re.fullmatch(rf"hgs\.(\d+)\.0\.((?:low2\.)*)(up1|low1|low2|low3)\.{_RESIDUAL_PART}", k)
    if m:
        i, inner, name, rest = m.group(1), m.group(2), m.group(3), m.group(4)
        return f"backbone.hourglasses.{i}.{inner}{name}.0.{_residual(rest)}"
    m = re.fullmatch(rf"features\.(\d+)\.0\.{_RESIDUAL_PART}", k)
    if m:
        return f"backbone.post.{m.group(1)}.0.{_residual(m.group(2))}"
    m = re.fullmatch(rf"features\.(\d+)\.1\.(conv|bn)\.{_PARAM}", k)
    if m:
        return f"backbone.lin.{m.group(1)}.{0 if m.group(2) == 'conv' else 1}.{m.group(3)}"
    m = re.fullmatch(r"outs\.(\d+)\.conv\.(weight|bias)", k)
    if m:
        return f"backbone.heads.{m.group(1)}.{m.group(2)}"
    m = re.fullmatch(r"(merge_features|merge_preds)\.(\d+)\.conv\.conv\.(weight|bias)", k)
    if m:
        return f"backbone.{m.group(1)}.{m.group(2)}.{m.group(3)}"
    raise KeyError(k)


def official_to_segx(state_dict, dropped=None):
    """Official ``PoseNet`` ``state_dict`` (wrapper prefixes allowed) → segx ``StackedHourglass`` keys.

    The ``skip_layer`` convs that the official forward never uses (``unused_skip_layers``) are dropped; their
    names are appended to ``dropped`` when given. Raises ``ValueError`` listing the keys it does not know (e.g. a
    checkpoint of another model)."""
    sd = strip_prefixes(state_dict)
    unused = set(unused_skip_layers(sd))
    out, unknown = {}, []
    for k, v in sd.items():
        if k in unused:
            if dropped is not None:
                dropped.append(k)
            continue
        try:
            out[_official_key(k)] = v
        except KeyError:
            unknown.append(k)
    if unknown:
        raise ValueError(f"not a pytorch_stacked_hourglass PoseNet checkpoint: {len(unknown)} of {len(sd)} keys are "
                         f"unknown: {unknown[:10]}" + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""))
    return out


def _segx_residual(rest):
    rest = re.sub(r"^conv([123])\.", r"conv\1.conv.", rest)
    return re.sub(r"^skip\.", "skip_layer.conv.", rest)


_SEGX_RESIDUAL_PART = rf"(bn[123]\.{_PARAM}|conv[123]\.(?:weight|bias)|skip\.(?:weight|bias))"


def _segx_key(k):
    m = re.fullmatch(rf"backbone\.stem\.([01])\.{_PARAM}", k)
    if m:
        return f"pre.0.{'conv' if m.group(1) == '0' else 'bn'}.{m.group(2)}"
    m = re.fullmatch(rf"backbone\.stem_res\.([023])\.{_SEGX_RESIDUAL_PART}", k)
    if m:
        return f"pre.{ {'0': 1, '2': 3, '3': 4}[m.group(1)] }.{_segx_residual(m.group(2))}"
    m = re.fullmatch(rf"backbone\.hourglasses\.(\d+)\.((?:low2\.)*)(up1|low1|low2|low3)\.0\.{_SEGX_RESIDUAL_PART}", k)
    if m:
        return f"hgs.{m.group(1)}.0.{m.group(2)}{m.group(3)}.{_segx_residual(m.group(4))}"
    m = re.fullmatch(rf"backbone\.post\.(\d+)\.0\.{_SEGX_RESIDUAL_PART}", k)
    if m:
        return f"features.{m.group(1)}.0.{_segx_residual(m.group(2))}"
    m = re.fullmatch(rf"backbone\.lin\.(\d+)\.([01])\.{_PARAM}", k)
    if m:
        return f"features.{m.group(1)}.1.{'conv' if m.group(2) == '0' else 'bn'}.{m.group(3)}"
    m = re.fullmatch(r"backbone\.heads\.(\d+)\.(weight|bias)", k)
    if m:
        return f"outs.{m.group(1)}.conv.{m.group(2)}"
    m = re.fullmatch(r"backbone\.(merge_features|merge_preds)\.(\d+)\.(weight|bias)", k)
    if m:
        return f"{m.group(1)}.{m.group(2)}.conv.conv.{m.group(3)}"
    raise KeyError(k)


def segx_to_official(state_dict):
    """segx ``StackedHourglass`` ``state_dict`` → the official ``PoseNet`` key layout (inverse of
    ``official_to_segx``, without the unused ``skip_layer`` convs: load it with ``strict=False``). Only models with
    one residual per hourglass level (``NUM_MODULES`` 1) and heatmap heads have an official counterpart;
    ``ValueError`` lists the keys without one."""
    out, unknown = {}, []
    for k, v in state_dict.items():
        try:
            out[_segx_key(k)] = v
        except KeyError:
            unknown.append(k)
    if unknown:
        raise ValueError(f"keys without an official pytorch_stacked_hourglass counterpart: {unknown[:10]}"
                         + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""))
    return out
