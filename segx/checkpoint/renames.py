"""Renamed parameters: checkpoints written by earlier segx versions load into today's modules.

Each meta-architecture lists ``(old, new)`` pairs of regular expressions over state-dict keys (``re.sub``
patterns anchored at the start of the key) in ``CHECKPOINT_RENAMES[<meta-arch name>]``. ``SegxMetaArch``
registers a ``load_state_dict`` pre-hook that rewrites old keys before loading, so ``MODEL.WEIGHTS``,
detectron2's ``DetectionCheckpointer`` and plain ``load_state_dict`` all accept old checkpoints (detectron2
aligns renamed keys of its own model zoo the same way, in ``c2_model_loading``). A key is renamed only when it is
absent from today's model and the rewritten key is present.
"""
import logging
import re

__all__ = ["CHECKPOINT_RENAMES", "rename_state_dict", "register_rename_hook"]

logger = logging.getLogger(__name__)

# meta-arch name -> [(old key pattern, replacement)], applied in order. Filled per architecture (issue 12).
CHECKPOINT_RENAMES = {
    "YOLACT": [
        # YOLACT's own ResNet (layers.0..3) became the shared torchvision-layout ResNet (layer1..4)
        *[(rf"backbone\.bottom_up\.layers\.{i}\.", f"backbone.bottom_up.layer{i + 1}.") for i in range(4)],
    ],
    "CornerNet": [],
    "CenterNetTriplets": [],
    "CenterNet": [],
    "StackedHourglass": [
        # the network (stacks + heatmap heads) is built by build_backbone: the meta-arch's `net` became `backbone`
        (r"net\.", "backbone."),
    ],
    "RetinaFace": [],
    "UPSNet": [],
}


def rename_state_dict(state_dict, renames, known_keys, prefix=""):
    """Rewrites, in place, the keys of ``state_dict`` (under ``prefix``) that match an old pattern and are not in
    ``known_keys`` (today's keys, without prefix). Returns the list of ``(old, new)`` keys rewritten."""
    done = []
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        local = key[len(prefix):]
        if local in known_keys:
            continue
        new = local
        for pattern, replacement in renames:
            new = re.sub("^" + pattern, replacement, new)
        if new != local and new in known_keys and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(key)
            done.append((local, new))
    return done


def register_rename_hook(module, renames):
    """Makes ``module.load_state_dict`` accept checkpoints written with the old names in ``renames`` (a list,
    read when loading, so later additions count)."""

    def hook(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        if not renames:
            return
        known = set(module.state_dict().keys())
        done = rename_state_dict(state_dict, renames, known, prefix)
        if done:
            logger.info("%s: %d checkpoint keys renamed from an earlier segx layout (e.g. %s -> %s)",
                        type(module).__name__, len(done), *done[0])

    module._register_load_state_dict_pre_hook(hook)
