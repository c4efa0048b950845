"""Key mapping between xingyizhou/CenterNet ``ctdet`` checkpoints and segx's ``CenterNet``.

Official layout (``{'epoch', 'state_dict'}``; keys optionally prefixed ``module.``):
- ``res_18`` / ``res_101`` (``msra_resnet.py``): torchvision-style ``conv1``, ``bn1``, ``layer{1..4}.*``,
  ``deconv_layers.{0,1,3,4,6,7}.*`` and the heads ``hm|wh|reg.{0,2}.*``;
- ``resdcn_18`` / ``resdcn_101`` (``resnet_dcn.py``): the same trunk and heads, ``deconv_layers.{0..17}``: per
  up-stage a DCNv2 layer (``weight``, ``bias``, ``conv_offset_mask.*``), BN, ConvTranspose, BN;
- ``dla_34`` (``pose_dla_dcn.py``): ``base.*`` (DLA trunk; ``base.fc.*``, the ImageNet classifier, is unused),
  ``dla_up.ida_{i}.{proj,up,node}_{j}.*``, ``ida_up.*``, heads as above. Deformable convs (DCNv2) hold
  ``conv.weight``, ``conv.bias`` and ``conv.conv_offset_mask.*``.

segx layout: the backbone under ``backbone.`` with the same names, the heads unchanged, ``conv_offset_mask``
renamed ``offset_conv``. DLA-34's deformable convs (``<p>.conv.weight`` beside ``<p>.conv.conv_offset_mask``)
have their weight halved: segx's DLA uses a 2·sigmoid mask where DCNv2's is sigmoid, and the output is linear in
the mask, so the converted layer is exactly the official one. The ``resdcn`` up-path uses DCNv2's own sigmoid
mask (``mask_scale=1``), so its weights are copied unchanged.

Whether the converted keys fit a model is checked against a config by the command line
(``tools/convert_centernet_to_d2.py --config-file``, ``segx.checkpoint.convert_cli.check_against_config``).
"""
import re

__all__ = ["official_to_segx", "segx_to_official", "strip_module_prefix", "HEAD_PREFIXES"]

HEAD_PREFIXES = ("hm.", "wh.", "reg.")
_DCN_WEIGHT = re.compile(r"^(.*)\.conv\.weight$")


def strip_module_prefix(state_dict):
    """Drops a leading ``module.`` (DataParallel) from every key."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def _dcn_weights(keys, offset_name):
    """Keys ``<p>.conv.weight`` of deformable convs: those with a sibling ``<p>.conv.<offset_name>.weight``."""
    out = set()
    for k in keys:
        m = _DCN_WEIGHT.match(k)
        if m and f"{m.group(1)}.conv.{offset_name}.weight" in keys:
            out.add(k)
    return out


def official_to_segx(state_dict):
    """Official ``state_dict`` (res_*, resdcn_* or dla_34) → segx ``CenterNet`` ``state_dict``."""
    sd = strip_module_prefix(state_dict)
    if not any(k.startswith(HEAD_PREFIXES) for k in sd):
        raise ValueError("official_to_segx: no 'hm.'/'wh.'/'reg.' head keys; not a CenterNet ctdet checkpoint")
    dcn = _dcn_weights(set(sd), "conv_offset_mask")
    out = {}
    for k, v in sd.items():
        if k.startswith("base.fc."):
            continue
        if k in dcn:
            v = v / 2
        k = k.replace(".conv_offset_mask.", ".offset_conv.")
        out[k if k.startswith(HEAD_PREFIXES) else "backbone." + k] = v
    return out


def segx_to_official(state_dict):
    """segx ``CenterNet`` ``state_dict`` → the official key layout (inverse of ``official_to_segx``)."""
    dcn = _dcn_weights(set(state_dict), "offset_conv")
    out = {}
    for k, v in state_dict.items():
        if k in dcn:
            v = v * 2
        if k.startswith("backbone."):
            k = k[len("backbone."):]
        elif not k.startswith(HEAD_PREFIXES):
            raise ValueError(f"segx_to_official: unexpected key {k!r} (neither backbone nor a CenterNet head)")
        out[k.replace(".offset_conv.", ".conv_offset_mask.")] = v
    return out
