#!/usr/bin/env python
"""Convert princeton-vl/pytorch_stacked_hourglass checkpoints (the 2- and 8-stack MPII ``checkpoint.pt``) to segx.

    python tools/convert_hourglass_to_d2.py original_8hg/checkpoint.pt output/hourglass_hg8_official.pth \\
        --config-file configs/Hourglass/hg8_256_official.yaml
    python tools/train_net.py --config-file configs/Hourglass/hg8_256_official.yaml --eval-only \\
        MODEL.WEIGHTS output/hourglass_hg8_official.pth

The input is the official ``{'state_dict', 'optimizer', 'epoch'}`` (a raw state_dict, or one under ``model``,
also works; the ``model.module.`` / ``module.`` prefixes of its wrappers are dropped). The residuals' ``skip_layer``
convs that the official forward never uses (equal input and output widths) are dropped and counted. The output is
``{"model": state_dict}`` as detectron2's checkpointer expects. ``--config-file`` (required) names the segx config
the weights are for (``configs/Hourglass/hg{2,8}_256_official.yaml``: the official input convention, RGB / 255):
the converted keys and shapes must equal that model's exactly, else nothing is written and every missing,
unexpected and mis-shaped key is listed. ``--opts KEY VALUE ...`` overrides the config. ``--to-official`` converts
the other way (a segx checkpoint → ``{'state_dict'}`` with the official ``model.module.`` keys, without the unused
``skip_layer`` convs: load it with ``strict=False``).
"""
import sys

from segx.checkpoint.convert_cli import convert_cli
from segx.checkpoint.hourglass import official_to_segx, segx_to_official


def _official_to_segx(state_dict):
    dropped = []
    out = official_to_segx(state_dict, dropped=dropped)
    if dropped:
        print(f"dropped {len(dropped)} unused skip_layer tensors (residuals with equal input and output widths)")
    return out


def main(argv=None):
    convert_cli(
        argv if argv is not None else sys.argv[1:],
        __doc__,
        _official_to_segx,
        segx_to_official,
        source="princeton-vl/pytorch_stacked_hourglass",
        official_container=lambda sd: {"state_dict": {"model.module." + k: v for k, v in sd.items()}},
        config_required=True,
    )


if __name__ == "__main__":
    main()
