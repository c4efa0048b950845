"""YOLACT++'s mask re-scoring network (``maskiou_net``)."""
from torch import nn

__all__ = ["MaskIoUNet"]


class MaskIoUNet(nn.Module):
    """YOLACT++ mask re-scoring: ``[N,1,H,W]`` cropped soft masks → ``[N,C]`` predicted mask IoU per class.
    Unpadded stride-2 3×3 convs (8, 16, 32, 64, 128 channels) + ReLU, a 1×1 conv to C + ReLU, global max pool
    (official ``maskiou_net``). Needs H, W ≥ 63."""

    def __init__(self, num_classes, channels=(8, 16, 32, 64, 128)):
        super().__init__()
        layers, cin = [], 1
        for c in channels:
            layers += [nn.Conv2d(cin, c, 3, stride=2), nn.ReLU(inplace=True)]
            cin = c
        layers += [nn.Conv2d(cin, num_classes, 1), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, masks):
        return self.net(masks).amax(dim=(2, 3))
