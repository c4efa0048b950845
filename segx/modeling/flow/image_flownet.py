"""Optical flow between two images (VPSNet's flow; the official code uses a frozen, pretrained FlowNet2), written on
segx's layers.

* ``ImageFlowNet``: a FlowNetS-style encoder–decoder (Dosovitskiy et al., ICCV 2015) on the two images stacked along
  channels, predicting coarse to fine (each level refines the 2× upsampled flow of the level below); trained here on
  synthetic pairs with known flow (``flow_epe_loss`` of ``segx.modeling.flow``, multi-scale end-point error).
* ``TorchvisionRAFT``: torchvision's RAFT (Teed & Deng, ECCV 2020), frozen, for a user who has its pretrained weights
  (``MODEL.VPSNET.FLOW.NAME: "RAFTSmall"`` / ``"RAFTLarge"`` + ``FLOW.WEIGHTS``).

Both take the images the meta-architecture normalised (``(x - PIXEL_MEAN) / PIXEL_STD``, padded) and return flows
**in input pixels** (``[B,2,h,w]`` at any resolution h×w; dx, dy) with the convention of ``segx.layers.flow_warp``:
``target(p) = reference(p + flow(p))``, i.e. ``flow_warp(reference_features, resize_flow(flow, size, stride))``
aligns the reference's features with the target's. ``resize_flow`` brings a flow to a feature map of another stride.
"""
import logging

import torch
import torch.nn.functional as F
from torch import nn

from segx.layers import conv_norm_act, flow_warp, local_correlation

__all__ = ["ImageFlowNet", "PWCFlowNet", "TorchvisionRAFT", "resize_flow", "build_image_flow_net", "load_flow_weights",
           "IMAGE_FLOW_NETS"]

logger = logging.getLogger(__name__)


def resize_flow(flow, size, stride):
    """A flow in input pixels (``[B,2,h,w]``, any h×w) → ``[B,2,*size]`` in pixels of a feature map of ``stride``
    (bilinear resize, then ÷ stride)."""
    if tuple(flow.shape[-2:]) != tuple(size):
        flow = F.interpolate(flow, size=tuple(size), mode="bilinear", align_corners=False)
    return flow / float(stride)


def _conv(in_channels, out_channels, stride=1):
    """3×3 conv (bias) + LeakyReLU(0.1)."""
    return conv_norm_act(in_channels, out_channels, 3, stride=stride, norm="", activation=0.1)


def _check_stages(name, channels, finest_stride):
    """``(channels as ints, their number)``; an error naming the network unless there are at least 2 stages and
    ``finest_stride`` is the stride of one of them."""
    channels = tuple(int(c) for c in channels)
    num = len(channels)
    if num < 2 or finest_stride not in [2 ** i for i in range(1, num + 1)]:
        raise ValueError(f"{name}: ENCODE_CHANNELS needs at least 2 stages and FINEST_STRIDE a stride of one of them "
                         f"(2..{2 ** num}), got {list(channels)} and {finest_stride}")
    return channels, num


def _stages(in_channels, channels):
    """One stride-2 stage (two 3×3 convs) per width of ``channels``."""
    out = nn.ModuleList()
    for w in channels:
        out.append(nn.Sequential(_conv(in_channels, w, 2), _conv(w, w)))
        in_channels = w
    return out


class ImageFlowNet(nn.Module):
    """FlowNetS-style flow between two normalised images (module docstring).

    Args:
        channels: encoder widths, one stride-2 stage (two 3×3 convs) each (FlowNetS: 64, 128, 256, 512, 1024).
        finest_stride: stride of the finest predicted flow (4: the FPN's P2, VPSNet's fusion level).
    Forward: ``(target, reference)`` ``[B,3,H,W]`` each (H, W multiples of the coarsest stride) → list of flows
    ``[B,2,H/s,W/s]`` in input pixels, finest first (``strides`` lists s).
    """

    def __init__(self, channels=(64, 128, 256, 512, 1024), finest_stride=4):
        super().__init__()
        channels, num = _check_stages(type(self).__name__, channels, finest_stride)
        self.encoder = _stages(6, channels)
        self.strides = [2 ** i for i in range(num, 0, -1) if 2 ** i >= finest_stride][::-1]  # finest first
        # decoder, coarse to fine: the level of stride s = 2**(i+1) sees encoder stage i and, below the coarsest, the
        # upsampled decoder features and flow of the level below; it predicts a flow (a residual one below the coarsest)
        self.predict = nn.ModuleDict()
        self.decode = nn.ModuleDict()
        below = 0
        for i in range(num - 1, -1, -1):
            s = 2 ** (i + 1)
            if s < finest_stride:
                break
            width = max(channels[i] // 2, 8)
            self.decode[str(s)] = _conv(channels[i] + (below + 2 if below else 0), width)
            self.predict[str(s)] = nn.Conv2d(width, 2, 3, padding=1)
            below = width
        for m in self.predict.values():  # start near zero flow
            nn.init.normal_(m.weight, std=1e-3)
            nn.init.zeros_(m.bias)
        self.channels, self.finest_stride = channels, finest_stride
        self.size_divisibility = 2 ** num

    def forward(self, target, reference):
        x = torch.cat([target, reference], dim=1)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        flows, prev_feat, prev_flow = [], None, None
        for i in range(len(skips) - 1, -1, -1):
            s = 2 ** (i + 1)
            if s < self.finest_stride:
                break
            inp = skips[i]
            if prev_feat is not None:
                size = inp.shape[-2:]
                prev_flow = F.interpolate(prev_flow, size=size, mode="bilinear", align_corners=False)
                inp = torch.cat([inp, F.interpolate(prev_feat, size=size, mode="nearest"), prev_flow / s], dim=1)
            feat = self.decode[str(s)](inp)
            flow = self.predict[str(s)](feat) * s  # in input pixels
            if prev_flow is not None:
                flow = flow + prev_flow
            flows.append(flow)
            prev_feat, prev_flow = feat, flow
        return flows[::-1]


def _unit(x):
    """Features centred per channel (over the map) and scaled to unit length along channels."""
    x = x - x.mean((2, 3), keepdim=True)
    return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + 1e-6)


class PWCFlowNet(nn.Module):
    """Pyramid, warping and cost volume (PWC-Net, Sun et al., CVPR 2018), small: a feature pyramid shared by both
    images; from the coarsest level to ``finest_stride``, the reference's features are warped (``flow_warp``) along
    the 2× upsampled flow of the level below, a local correlation (±``search_range`` pixels of that level) with the
    target's features is computed, and an estimator (three 3×3 convs) predicts the residual flow from the cost
    volume, the target's features and the upsampled flow. The cost volume is a cosine similarity (features centred
    per channel and unit-length along channels): with raw LeakyReLU features the correlation is dominated by their
    common positive mean and barely depends on the displacement, and neither this network nor ``ImageFlowNet``
    learned the synthetic sets' few-pixel motions in the iterations a CPU allows (the model card has both).

    Args:
        channels: pyramid widths, one stride-2 stage (two 3×3 convs) each. finest_stride: stride of the finest flow.
        search_range: d of the correlation, ``(2d+1)²`` displacements per level.
    Forward: ``(target, reference)`` ``[B,3,H,W]`` each (H, W multiples of the coarsest stride) → list of flows
    ``[B,2,H/s,W/s]`` in input pixels, finest first (``strides`` lists s).
    """

    def __init__(self, channels=(16, 32, 64, 96, 128), finest_stride=4, search_range=4):
        super().__init__()
        channels, num = _check_stages(type(self).__name__, channels, finest_stride)
        self.pyramid = _stages(3, channels)
        self.search_range = int(search_range)
        self.strides = [2 ** i for i in range(num, 0, -1) if 2 ** i >= finest_stride][::-1]  # finest first
        cost = (2 * self.search_range + 1) ** 2
        self.estimate = nn.ModuleDict()
        for i, w in enumerate(channels):
            s = 2 ** (i + 1)
            if s >= finest_stride:
                head = nn.Conv2d(32, 2, 3, padding=1)
                nn.init.normal_(head.weight, std=1e-3)  # start near zero flow
                nn.init.zeros_(head.bias)
                self.estimate[str(s)] = nn.Sequential(_conv(cost + w + 2, 64), _conv(64, 32), head)
        self.channels, self.finest_stride = channels, finest_stride
        self.size_divisibility = 2 ** num

    def forward(self, target, reference):
        x = torch.cat([target, reference], dim=0)  # one pass of the shared pyramid for both images
        levels = []
        for stage in self.pyramid:
            x = stage(x)
            levels.append(x)
        B = target.shape[0]
        flows, flow = [], None
        for i in range(len(levels) - 1, -1, -1):
            s = 2 ** (i + 1)
            if s < self.finest_stride:
                break
            a, b = levels[i][:B], levels[i][B:]
            if flow is None:
                up = a.new_zeros((B, 2, *a.shape[-2:]))  # level pixels
                warped = b
            else:
                up = F.interpolate(flow, size=a.shape[-2:], mode="bilinear", align_corners=False) / s
                warped = flow_warp(b, up)
            cost = local_correlation(_unit(a), _unit(warped), self.search_range) * a.shape[1]  # cosine similarity
            flow = (up + self.estimate[str(s)](torch.cat([cost, a, up], dim=1))) * s  # input pixels
            flows.append(flow)
        return flows[::-1]


class TorchvisionRAFT(nn.Module):
    """torchvision's RAFT (``raft_small`` or ``raft_large``), frozen, on VPSNet's normalised images.

    Args:
        variant: "small" or "large". pixel_mean, pixel_std: the meta-architecture's (input format ``input_format``,
            "BGR" or "RGB"), to recover 0–255 RGB; RAFT takes RGB in [-1, 1]. num_updates: RAFT's recurrent updates.
    Forward: ``(target, reference)`` → ``[flow [B,2,H,W]]`` in input pixels (the last update).
    """

    def __init__(self, variant="small", pixel_mean=(103.53, 116.28, 123.675), pixel_std=(1.0, 1.0, 1.0),
                 input_format="BGR", num_updates=12):
        super().__init__()
        from torchvision.models.optical_flow import raft_large, raft_small

        if variant not in ("small", "large"):
            raise ValueError(f"TorchvisionRAFT: variant must be 'small' or 'large', got {variant!r}")
        self.raft = (raft_small if variant == "small" else raft_large)(weights=None, progress=False)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.bgr = input_format == "BGR"
        self.num_updates = int(num_updates)
        self.strides = [1]
        self.size_divisibility = 8
        for p in self.parameters():
            p.requires_grad_(False)

    def _rgb(self, x):
        x = x * self.pixel_std + self.pixel_mean
        if self.bgr:
            x = x.flip(1)
        return (x / 127.5 - 1.0).clamp(-1, 1)

    def forward(self, target, reference):
        h, w = target.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        a, b = (F.pad(self._rgb(t), (0, pw, 0, ph), mode="replicate") for t in (target, reference))
        flow = self.raft(a, b, num_flow_updates=self.num_updates)[-1]
        return [flow[..., :h, :w]]

    def train(self, mode=True):
        super().train(mode)
        self.raft.eval()  # frozen: BatchNorm / dropout as at test time
        return self


IMAGE_FLOW_NETS = ("ImageFlowNet", "PWCFlowNet", "RAFTSmall", "RAFTLarge")


def build_image_flow_net(name, *, channels=(64, 128, 256, 512, 1024), finest_stride=4, pixel_mean=None,
                         pixel_std=None, input_format="BGR", num_updates=12):
    """The flow network called ``name`` (one of ``IMAGE_FLOW_NETS``)."""
    if name == "ImageFlowNet":
        return ImageFlowNet(channels, finest_stride)
    if name == "PWCFlowNet":
        return PWCFlowNet(channels, finest_stride)
    if name in ("RAFTSmall", "RAFTLarge"):
        return TorchvisionRAFT("small" if name == "RAFTSmall" else "large", pixel_mean, pixel_std, input_format,
                               num_updates)
    raise ValueError(f"unknown image flow network {name!r}; choose one of {IMAGE_FLOW_NETS}")


def load_flow_weights(flow_net, path):
    """Loads the weights of ``flow_net`` from ``path``: a bare state dict of the flow network, torchvision's RAFT
    file (for ``TorchvisionRAFT``), or a segx / detectron2 checkpoint whose ``model`` holds ``flow_net.*`` keys (e.g.
    the final checkpoint of VPSNet's flow stage). Errors name the file and the keys that do not fit."""
    import os

    from segx.checkpoint.atomic import CorruptCheckpointError, checkpoint_file_problem

    if not os.path.isfile(path):
        raise FileNotFoundError(f"flow network weights {path} (MODEL.VPSNET.FLOW.WEIGHTS) do not exist")
    problem = checkpoint_file_problem(path)
    if problem:
        raise CorruptCheckpointError(f"checkpoint {path} {problem}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CorruptCheckpointError(f"checkpoint {path} cannot be loaded: {type(e).__name__}: {e}") from e
    state = obj
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict (or a checkpoint with 'model' / 'state_dict')")
    if any(k.startswith("flow_net.") for k in state):
        state = {k[len("flow_net."):]: v for k, v in state.items() if k.startswith("flow_net.")}
    target = flow_net.raft if isinstance(flow_net, TorchvisionRAFT) and not any(k.startswith("raft.") for k in state) \
        else flow_net
    state = {k: torch.as_tensor(v) for k, v in state.items()}
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(f"{path} does not fit the {type(flow_net).__name__} of this config: "
                         f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
                         f"{len(wrong)} of another shape {wrong[:3]}")
    target.load_state_dict(state)
    logger.info("Loaded the flow network (%s) from %s", type(flow_net).__name__, path)
    return flow_net
