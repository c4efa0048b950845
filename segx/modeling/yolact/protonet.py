"""YOLACT's prototype network (``mask_proto_net``)."""
from torch import nn

__all__ = ["make_protonet"]


def make_protonet(in_channels, channels=256, num_convs=3, num_prototypes=32):
    """Protonet as YOLACT's ``mask_proto_net``: ``num_convs`` × (3×3, ReLU) → ×2 bilinear upsample → ReLU →
    3×3 + ReLU → 1×1 to ``num_prototypes``; ``[B,C,H,W]`` (P3) → ``[B,k,2H,2W]``.

    The module indices equal the official ``proto_net.<i>``; the final ReLU is applied by the caller (official
    ``mask_proto_prototype_activation``). Convs are xavier-initialised with zero bias.
    """
    layers = []
    for i in range(num_convs):
        layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
    layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.ReLU(inplace=True)]
    layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
    layers += [nn.Conv2d(channels, num_prototypes, 1)]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net
