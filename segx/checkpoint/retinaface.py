"""Key mapping between biubug6/Pytorch_Retinaface checkpoints and segx's ``RetinaFace``.

Official layout (a raw ``state_dict``, keys optionally prefixed ``module.`` by DataParallel):
``body.*`` (MobileNetV1: ``stage{1,2,3}.{i}.{0,1,3,4}``; ResNet-50: torchvision ``conv1``/``bn1``/``layer{1..4}``),
``fpn.output{1,2,3}.{0,1}``, ``fpn.merge{1,2}.{0,1}``, ``ssh{1,2,3}.<conv>.{0,1}`` (index 0 the conv, 1 the
BatchNorm), ``ClassHead.{i}.conv1x1``, ``BboxHead.{i}.conv1x1``, ``LandmarkHead.{i}.conv1x1``.

segx layout: ``backbone.*`` (``MobileNetV1``: a stage's first block ``stage1.0`` is one conv with ``.norm``, the
others ``dw``/``pw`` convs each with ``.norm``; ResNet: detectron2 ``stem.conv1`` / ``res{2..5}.{b}.conv{k}`` /
``shortcut``), ``fpn.<name>`` (conv with ``.norm``), ``ssh{n}.<conv>``, ``class_head.{i}``, ``bbox_head.{i}``,
``landmark_head.{i}``.
"""
import re

__all__ = ["official_to_segx", "segx_to_official", "strip_module_prefix"]

_HEADS = {"ClassHead": "class_head", "BboxHead": "bbox_head", "LandmarkHead": "landmark_head"}
_DW_PARTS = {"0": "dw", "1": "dw.norm", "3": "pw", "4": "pw.norm"}


def strip_module_prefix(state_dict):
    """Drops a leading ``module.`` (DataParallel) from every key."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def _conv_bn(prefix, idx, rest):
    """``<prefix>.0.<p>`` → ``<prefix>.<p>``; ``<prefix>.1.<p>`` → ``<prefix>.norm.<p>``."""
    return f"{prefix}.{rest}" if idx == "0" else f"{prefix}.norm.{rest}"


def _official_key(k):
    m = re.fullmatch(r"body\.stage(\d)\.(\d+)\.(\d)\.(.+)", k)
    if m:
        stage, block, part, rest = m.groups()
        if stage == "1" and block == "0":  # the plain stride-2 conv at the start of the network
            if part not in ("0", "1"):
                raise KeyError(k)
            return _conv_bn("backbone.stage1.0", part, rest)
        if part not in _DW_PARTS:
            raise KeyError(k)
        return f"backbone.stage{stage}.{block}.{_DW_PARTS[part]}.{rest}"
    m = re.fullmatch(r"body\.conv1\.(.+)", k)
    if m:
        return f"backbone.stem.conv1.{m.group(1)}"
    m = re.fullmatch(r"body\.bn1\.(.+)", k)
    if m:
        return f"backbone.stem.conv1.norm.{m.group(1)}"
    m = re.fullmatch(r"body\.layer(\d)\.(\d+)\.(.+)", k)
    if m:
        layer, block, rest = m.groups()
        pre = f"backbone.res{int(layer) + 1}.{block}"
        mm = re.fullmatch(r"conv(\d)\.(.+)", rest)
        if mm:
            return f"{pre}.conv{mm.group(1)}.{mm.group(2)}"
        mm = re.fullmatch(r"bn(\d)\.(.+)", rest)
        if mm:
            return f"{pre}.conv{mm.group(1)}.norm.{mm.group(2)}"
        mm = re.fullmatch(r"downsample\.([01])\.(.+)", rest)
        if mm:
            return _conv_bn(f"{pre}.shortcut", mm.group(1), mm.group(2))
        raise KeyError(k)
    m = re.fullmatch(r"(fpn\.(?:output|merge)\d|ssh\d\.conv\w+)\.([01])\.(.+)", k)
    if m:
        return _conv_bn(m.group(1), m.group(2), m.group(3))
    m = re.fullmatch(r"(ClassHead|BboxHead|LandmarkHead)\.(\d+)\.conv1x1\.(weight|bias)", k)
    if m:
        return f"{_HEADS[m.group(1)]}.{m.group(2)}.{m.group(3)}"
    raise KeyError(k)


def official_to_segx(state_dict):
    """Official RetinaFace ``state_dict`` (``module.`` prefix allowed) → segx ``RetinaFace`` keys.

    Raises ``ValueError`` listing the keys it does not know (e.g. a checkpoint of another model); the converter
    command line reports it as a one-line error."""
    sd = strip_module_prefix(state_dict)
    out, unknown = {}, []
    for k, v in sd.items():
        try:
            out[_official_key(k)] = v
        except KeyError:
            unknown.append(k)
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise ValueError(f"not a RetinaFace (biubug6/Pytorch_Retinaface) checkpoint: {len(unknown)} of {len(sd)} keys "
                         f"are unknown: {unknown[:10]}{more}")
    return out


def _segx_key(k):
    m = re.fullmatch(r"backbone\.stage1\.0\.(norm\.)?(.+)", k)
    if m:
        return f"body.stage1.0.{'1' if m.group(1) else '0'}.{m.group(2)}"
    m = re.fullmatch(r"backbone\.stage(\d)\.(\d+)\.(dw|pw)\.(norm\.)?(.+)", k)
    if m:
        stage, block, conv, norm, rest = m.groups()
        part = {("dw", False): "0", ("dw", True): "1", ("pw", False): "3", ("pw", True): "4"}[(conv, bool(norm))]
        return f"body.stage{stage}.{block}.{part}.{rest}"
    m = re.fullmatch(r"backbone\.stem\.conv1\.(norm\.)?(.+)", k)
    if m:
        return f"body.{'bn1' if m.group(1) else 'conv1'}.{m.group(2)}"
    m = re.fullmatch(r"backbone\.res(\d)\.(\d+)\.(conv\d|shortcut)\.(norm\.)?(.+)", k)
    if m:
        res, block, conv, norm, rest = m.groups()
        pre = f"body.layer{int(res) - 1}.{block}"
        if conv == "shortcut":
            return f"{pre}.downsample.{'1' if norm else '0'}.{rest}"
        return f"{pre}.{('bn' + conv[4:]) if norm else conv}.{rest}"
    m = re.fullmatch(r"(fpn\.(?:output|merge)\d|ssh\d\.conv\w+?)\.(norm\.)?(weight|bias|running_mean|running_var|"
                     r"num_batches_tracked)", k)
    if m:
        return f"{m.group(1)}.{'1' if m.group(2) else '0'}.{m.group(3)}"
    m = re.fullmatch(r"(class_head|bbox_head|landmark_head)\.(\d+)\.(weight|bias)", k)
    if m:
        official = {v: k2 for k2, v in _HEADS.items()}[m.group(1)]
        return f"{official}.{m.group(2)}.conv1x1.{m.group(3)}"
    raise KeyError(k)


def segx_to_official(state_dict):
    """segx ``RetinaFace`` ``state_dict`` → the official key layout (inverse of ``official_to_segx``); ``ValueError``
    listing the keys without an official counterpart."""
    out, unknown = {}, []
    for k, v in state_dict.items():
        try:
            out[_segx_key(k)] = v
        except KeyError:
            unknown.append(k)
    if unknown:
        raise ValueError(f"keys without an official RetinaFace counterpart: {unknown[:10]}"
                         + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""))
    return out
