"""YOLACT's prediction head, shared by every FPN level."""
import torch
from torch import nn

__all__ = ["YolactHead"]


class YolactHead(nn.Module):
    """The prediction module shared by all levels: 3×3 conv + ReLU (``upfeature``), then 3×3 convs for box
    deltas, class logits (background first) and tanh mask coefficients.

    ``forward(features)``, ``features`` a list of ``[B,C,Hl,Wl]`` → ``{"box_deltas": [B,P,4], "logits":
    [B,P,C+1], "coeffs": [B,P,k]}``, P = Σ Hl·Wl·A, the anchors of a location consecutive (rows, then columns,
    then anchors), levels in the order given.
    """

    def __init__(self, in_channels, channels, num_anchors, num_classes, num_prototypes):
        super().__init__()
        self.upfeature = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.bbox_layer = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.conf_layer = nn.Conv2d(channels, num_anchors * (num_classes + 1), 3, padding=1)
        self.mask_layer = nn.Conv2d(channels, num_anchors * num_prototypes, 3, padding=1)
        self.num_classes, self.num_prototypes = num_classes, num_prototypes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features):
        deltas, logits, coeffs = [], [], []
        for x in features:
            x = self.upfeature(x)
            B = x.shape[0]
            deltas.append(self.bbox_layer(x).permute(0, 2, 3, 1).reshape(B, -1, 4))
            logits.append(self.conf_layer(x).permute(0, 2, 3, 1).reshape(B, -1, self.num_classes + 1))
            coeffs.append(self.mask_layer(x).permute(0, 2, 3, 1).reshape(B, -1, self.num_prototypes))
        return {
            "box_deltas": torch.cat(deltas, 1),
            "logits": torch.cat(logits, 1),
            "coeffs": torch.tanh(torch.cat(coeffs, 1)),
        }
