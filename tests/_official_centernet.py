"""Runs xingyizhou/CenterNet's own test pieces on the CPU, in a separate process (its packages are named
``models``, ``utils``, ``datasets``, ``detectors``): used by ``tests/test_centernet_official.py``.

    python tests/_official_centernet.py OFFICIAL_SRC_LIB ARCH WEIGHTS_OUT IMAGE_NPY RESULT_OUT

* builds the official network of ``ARCH`` (``res_18``: ``msra_resnet.PoseResNet``, ``resdcn_18``:
  ``resnet_dcn.PoseResNet``, ``dla_34``: ``pose_dla_dcn.DLASeg``; no ImageNet download), fills every parameter and
  BN buffer with seeded random values (the heatmap bias then shifted so that every class's mean logit on this
  image is −2.19: detections of many classes) and saves it as the official file (``{'epoch', 'state_dict'}``
  with DataParallel's ``module.`` prefix) at WEIGHTS_OUT;
* runs the official test of one image (``IMAGE_NPY``, ``[H,W,3]`` uint8 BGR as ``cv2.imread`` gives) with the
  official ``CtdetDetector`` methods, unchanged: ``pre_process`` (``fix_res``: letterbox to 512², COCO mean/std),
  ``process`` (network, ``ctdet_decode``), ``post_process`` (``ctdet_post_process``) and ``merge_outputs``;
* saves ``{"input": the network input [1,3,512,512], "detections": [N,6] (x0, y0, x1, y1, score, class 0-based)}``
  at RESULT_OUT.

Only the CUDA-only pieces are replaced: DCNv2's ``DCN`` by a module with the same parameters and semantics on
``torchvision.ops.deform_conv2d`` (offsets = the first two thirds of ``conv_offset_mask``'s output, mask = sigmoid
of the last third), ``torch.cuda.synchronize`` by a no-op, and ``progress.bar`` (a progress-bar package the
detector imports) by a stub.
"""
import math
import sys
import types

import numpy as np
import torch
from torch import nn
from torchvision.ops import deform_conv2d

HEADS = {"hm": 80, "wh": 2, "reg": 2}


class TorchvisionDCN(nn.Module):
    """Stand-in for DCNv2's ``DCN`` (same parameter names and shapes, same init, same output)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation=1, deformable_groups=1):
        super().__init__()
        k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *k))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        bound = 1.0 / math.sqrt(in_channels * k[0] * k[1])
        nn.init.uniform_(self.weight, -bound, bound)
        self.conv_offset_mask = nn.Conv2d(in_channels, deformable_groups * 3 * k[0] * k[1], k, stride=stride,
                                          padding=padding, bias=True)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x):
        o1, o2, m = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
        return deform_conv2d(x, torch.cat((o1, o2), dim=1), self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=torch.sigmoid(m))


def _install_stubs():
    dcn = types.ModuleType("models.networks.DCNv2.dcn_v2")
    dcn.DCN = TorchvisionDCN
    pkg = types.ModuleType("models.networks.DCNv2")
    pkg.__path__ = []
    sys.modules["models.networks.DCNv2"] = pkg
    sys.modules["models.networks.DCNv2.dcn_v2"] = dcn
    progress = types.ModuleType("progress")
    bar = types.ModuleType("progress.bar")
    bar.Bar = object
    progress.bar = bar
    sys.modules.setdefault("progress", progress)
    sys.modules.setdefault("progress.bar", bar)
    torch.cuda.synchronize = lambda *a, **k: None


def build_official(arch):
    if arch == "res_18":
        from models.networks import msra_resnet as net

        return net.PoseResNet(net.BasicBlock, [2, 2, 2, 2], HEADS, head_conv=64)
    if arch == "resdcn_18":
        from models.networks import resnet_dcn as net

        return net.PoseResNet(net.BasicBlock, [2, 2, 2, 2], HEADS, head_conv=64)
    if arch == "dla_34":
        from models.networks import pose_dla_dcn as net

        return net.DLASeg("dla34", HEADS, pretrained=False, down_ratio=4, final_kernel=1, last_level=5, head_conv=256)
    raise ValueError(f"unknown arch {arch!r}")


def randomise(model, seed=0):
    """Seeded random values in every float tensor: weights ~ N(0, 1/fan_in), BN affine near (1, 0), BN statistics
    in a sane range, the heatmap bias spread so that the peaks' scores are distinct; DCN offsets stay moderate."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                v = torch.rand(t.shape, generator=g) + 0.5
            elif name.endswith("running_mean"):
                v = torch.randn(t.shape, generator=g) * 0.1
            elif t.dim() >= 2:
                fan_in = max(1, t[0].numel())
                v = torch.randn(t.shape, generator=g) / math.sqrt(fan_in)
                if "conv_offset_mask" in name:
                    v = v * 0.5
            elif name.endswith("weight"):
                v = 1 + 0.1 * torch.randn(t.shape, generator=g)
            else:
                v = 0.1 * torch.randn(t.shape, generator=g)
            last = name.split(".")[0] in HEADS and name.split(".")[1] == "2"  # a head's last conv
            if last and name.startswith("hm.") and name.endswith("weight"):
                v = v * 20  # spatial variation: distinct peak scores
            elif last and name.startswith("hm."):
                v = -2.19 + 0.5 * torch.randn(t.shape, generator=g)
            elif last and name.startswith("wh.") and name.endswith("bias"):
                v = 5 + 25 * torch.rand(t.shape, generator=g)  # boxes of 5-30 output pixels
            elif last and name.startswith("reg.") and name.endswith("bias"):
                v = 0.5 + 0.1 * torch.randn(t.shape, generator=g)
            t.copy_(v)
    return model


def calibrate_heatmap_bias(model, images):
    """Shifts the heatmap bias so that every class's logits have mean −2.19 on ``images`` (the official network
    input): peaks then come from many classes and places, not from the class with the largest random offset."""
    with torch.no_grad():
        mean = model(images)[-1]["hm"].mean(dim=(0, 2, 3))
        model.hm[-1].bias.sub_(mean + 2.19)


def official_test(model, image, calibrate=False):
    from detectors.ctdet import CtdetDetector
    from datasets.dataset.coco import COCO

    opt = types.SimpleNamespace(fix_res=True, input_h=512, input_w=512, pad=31, down_ratio=4, flip_test=False,
                                reg_offset=True, cat_spec_wh=False, K=100, num_classes=80, nms=False,
                                device=torch.device("cpu"))
    det = CtdetDetector.__new__(CtdetDetector)  # the official methods, without the constructor's model loading
    det.opt, det.model = opt, model.eval()
    det.mean = np.array(COCO.mean, dtype=np.float32).reshape(1, 1, 3)
    det.std = np.array(COCO.std, dtype=np.float32).reshape(1, 1, 3)
    det.max_per_image, det.num_classes, det.scales = 100, 80, [1.0]
    images, meta = det.pre_process(image, 1.0)
    if calibrate:
        calibrate_heatmap_bias(model, images)
    _, dets = det.process(images)
    dets = det.merge_outputs([det.post_process(dets, meta, 1.0)])
    rows = [np.concatenate([d[:, :5], np.full((len(d), 1), j - 1, dtype=np.float32)], axis=1)
            for j, d in dets.items() if len(d)]
    return images, np.concatenate(rows, axis=0)


def main(src_lib, arch, weights_out, image_npy, result_out):
    sys.path.insert(0, src_lib)
    _install_stubs()
    torch.set_num_threads(1)
    model = randomise(build_official(arch)).eval()
    images, detections = official_test(model, np.load(image_npy), calibrate=True)
    torch.save({"epoch": 0, "state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, weights_out)
    torch.save({"input": images, "detections": torch.from_numpy(detections)}, result_out)


if __name__ == "__main__":
    main(*sys.argv[1:6])
