"""UPSNet's semantic head, registered in detectron2's ``SEM_SEG_HEADS_REGISTRY``."""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from segx.layers.deform_conv import DeformConvWithOffset
from segx.modeling.panoptic.losses import cross_entropy_with_ignore

__all__ = ["UPSNetSemanticHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class UPSNetSemanticHead(nn.Module):
    """One subnet of ``num_convs`` 3×3 (deformable) convs + ReLU (optional norm) shared over the input levels
    (P2–P5), every level upsampled to the finest level's size, concatenated, 1×1 classifier (``score``).

    The interface of detectron2's ``SemSegFPNHead``: ``layers(features) -> [B, num_classes, H/s, W/s]`` logits at
    the finest input stride ``s = common_stride``; ``losses(logits, targets)``; ``forward(features, targets)`` →
    ``(None, losses)`` in training, ``(logits upsampled ×s, {})`` in inference. For UPSNet the classes are the
    S stuff channels first, then the K thing classes (``segx.modeling.panoptic`` conventions).
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, num_classes, conv_dims, num_convs=3, deformable=True,
                 norm="", loss_weight=1.0, ignore_value=255):
        """
        Args:
            input_shape: the input levels (equal channels); the finest stride is the output's.
            num_classes: output channels.
            conv_dims: channels of the shared subnet.
            num_convs: 3×3 convs of the subnet.
            deformable: deformable convs (offsets from a zero-initialised 3×3 conv) as in the paper; False:
                plain convs, whose graph exports to ONNX.
            norm: detectron2 norm name after each conv ("" for none, the official setting).
            loss_weight: weight of ``loss_sem_seg``.
            ignore_value: label ignored by the loss.
        """
        super().__init__()
        input_shape = sorted(input_shape.items(), key=lambda x: x[1].stride)
        if not input_shape:
            raise ValueError("UPSNetSemanticHead: input_shape is empty (MODEL.SEM_SEG_HEAD.IN_FEATURES)")
        channels = {v.channels for _, v in input_shape}
        if len(channels) != 1:
            raise ValueError(f"UPSNetSemanticHead: the input levels {[k for k, _ in input_shape]} must have equal "
                             f"channels (the subnet is shared), got {sorted(channels)}")
        self.in_features = [k for k, _ in input_shape]
        self.common_stride = input_shape[0][1].stride
        self.num_classes = num_classes
        self.loss_weight = loss_weight
        self.ignore_value = ignore_value
        in_channels = channels.pop()
        layers = []
        for i in range(num_convs):
            cin = in_channels if i == 0 else conv_dims
            nm = get_norm(norm, conv_dims) if norm else None
            if deformable:
                layers.append(DeformConvWithOffset(cin, conv_dims, 3, bias=not norm, norm=nm, activation=nn.ReLU()))
            else:
                layers.append(Conv2d(cin, conv_dims, 3, padding=1, bias=not norm, norm=nm, activation=F.relu))
        self.subnet = nn.Sequential(*layers)
        for m in layers:  # MSRA fill (trains from scratch); deformable offset convs stay zero-initialised
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        self.score = nn.Conv2d(conv_dims * len(self.in_features), num_classes, 1)
        nn.init.normal_(self.score.weight, std=0.01)
        nn.init.zeros_(self.score.bias)

    @classmethod
    def from_config(cls, cfg, input_shape):
        """``MODEL.SEM_SEG_HEAD``'s IN_FEATURES, CONVS_DIM, NORM, LOSS_WEIGHT, IGNORE_VALUE; ``MODEL.UPSNET``'s
        SEM_NUM_CONVS, SEM_DEFORMABLE. Classes: ``NUM_CLASSES`` counts the "things" label 0 of the separated
        semantic data plus the S stuff classes (as for PanopticFPN); the head predicts S stuff +
        ``MODEL.ROI_HEADS.NUM_CLASSES`` thing channels."""
        head = cfg.MODEL.SEM_SEG_HEAD
        num_stuff = head.NUM_CLASSES - 1
        if num_stuff < 1:
            raise ValueError("UPSNetSemanticHead: MODEL.SEM_SEG_HEAD.NUM_CLASSES counts 'things' (label 0) + the stuff "
                             f"classes, got {head.NUM_CLASSES}")
        missing = [f for f in head.IN_FEATURES if f not in input_shape]
        if missing:
            raise ValueError(f"UPSNetSemanticHead: MODEL.SEM_SEG_HEAD.IN_FEATURES {missing} are not backbone outputs "
                             f"({sorted(input_shape)})")
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "num_classes": num_stuff + cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dims": head.CONVS_DIM,
            "num_convs": cfg.MODEL.UPSNET.SEM_NUM_CONVS,
            "deformable": cfg.MODEL.UPSNET.SEM_DEFORMABLE,
            "norm": head.NORM,
            "loss_weight": head.LOSS_WEIGHT,
            "ignore_value": head.IGNORE_VALUE,
        }

    def layers(self, features):
        """``dict[str, [B,C,Hl,Wl]]`` → ``[B, num_classes, H0, W0]`` logits at the finest level's size."""
        size = features[self.in_features[0]].shape[-2:]
        outs = []
        for i, f in enumerate(self.in_features):
            y = self.subnet(features[f])
            outs.append(y if i == 0 else F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return self.score(torch.cat(outs, dim=1))

    def losses(self, predictions, targets):
        """``{"loss_sem_seg"}``: mean cross-entropy (ignoring ``ignore_value``; 0 when all are) of the logits
        upsampled to the ``[B,H,W]`` targets' size, times ``loss_weight``."""
        up = F.interpolate(predictions, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        return {"loss_sem_seg": self.loss_weight * cross_entropy_with_ignore(up, targets, self.ignore_value)}

    def forward(self, features, targets=None):
        """detectron2's semantic-head contract: ``(None, losses)`` in training, ``(logits ×common_stride, {})``."""
        x = self.layers(features)
        if self.training:
            return None, self.losses(x, targets)
        return F.interpolate(x, scale_factor=self.common_stride, mode="bilinear", align_corners=False), {}
