"""Backbones that belong to no single architecture: the torchvision-layout ResNet (YOLACT, CenterNet), its
deconvolution up-path, the conv-norm-act helper, and the rule that no backbone reads an architecture's node."""
import glob
import os
import re

import pytest
import torch
import torchvision

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from conftest import REPO_ROOT, load_cfg
from segx.layers import conv_norm_act
from segx.modeling.backbone.resnet import ResNet, dcn_block_flags
from segx.modeling.backbone.resnet_deconv import ResNetDeconv


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_equals_torchvision_resnet(depth):
    """Same layout as torchvision: its state dict (less ``fc``) loads with no leftover and gives the same maps."""
    torch.manual_seed(0)
    tv = getattr(torchvision.models, f"resnet{depth}")().eval()
    ours = ResNet(depth=depth, out_features=("res2", "res3", "res4", "res5")).eval()
    state = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    missing, unexpected = ours.load_state_dict(state, strict=True), None
    del missing, unexpected
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        out = ours(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for i, name in enumerate(("res2", "res3", "res4", "res5")):
            y = getattr(tv, f"layer{i + 1}")(y)
            torch.testing.assert_close(out[name], y)
    assert ours.output_shape()["res5"].channels == (512 if depth == 18 else 2048)
    assert ours.output_shape()["res3"].stride == 8


def test_width_slims_every_stage_and_dcn_blocks():
    net = ResNet(depth=50, width=16, dcn_layers=(0, 4, 6, 3), dcn_interval=3, out_features=("res5",))
    assert net.output_shape()["res5"].channels == 16 * 8 * 4
    assert dcn_block_flags(6, 6, 3) == [True, False, False, True, False, False]
    assert dcn_block_flags(4, 2, 1) == [False, False, True, True]
    deformable = [name for name, m in net.named_modules() if name.endswith("conv2") and hasattr(m, "offset_conv")]
    assert deformable == ["layer2.0.conv2", "layer2.3.conv2", "layer3.0.conv2", "layer3.3.conv2",
                          "layer4.0.conv2"]
    # DCNv2's sigmoid mask (official YOLACT++ weights load unchanged); offsets start at zero
    m = net.layer2[0].conv2
    assert m.mask_scale == 1.0 and float(m.offset_conv.weight.abs().sum()) == 0.0


def test_resnet_deconv_is_the_same_resnet_plus_deconvs():
    net = ResNetDeconv(depth=18, width=8, deconv_channels=(16, 16, 16)).eval()
    keys = set(net.state_dict())
    assert {"conv1.weight", "layer4.1.bn2.running_var", "deconv_layers.0.weight", "deconv_layers.7.bias"} <= keys
    out = net(torch.randn(2, 3, 64, 96))["deconv"]
    assert out.shape == (2, 16, 16, 24)
    assert net.output_shape() == {"deconv": ShapeSpec(channels=16, stride=4)}
    assert net.size_divisibility == 32


def test_builders_read_their_own_nodes():
    cfg = load_cfg("configs/CenterNet/centernet_R_18_shapes.yaml",
                   **{"MODEL.TV_RESNET.WIDTH": 8, "MODEL.RESNET_DECONV.DECONV_CHANNELS": [16, 16, 16]})
    net = build_backbone(cfg, ShapeSpec(channels=3))
    assert isinstance(net, ResNetDeconv) and net.output_shape()["deconv"].channels == 16
    cfg.MODEL.BACKBONE.NAME = "build_tv_resnet_backbone"
    cfg.MODEL.TV_RESNET.OUT_FEATURES = ["res4"]
    assert list(build_backbone(cfg).output_shape()) == ["res4"]
    cfg.MODEL.BACKBONE.NAME = "build_mobilenet_v1_backbone"
    cfg.MODEL.MOBILENET.WIDTH = 0.5
    assert build_backbone(cfg).output_shape()["stage3"].channels == 128


def test_detectron2_resnet_depth_is_not_ignored_silently():
    cfg = load_cfg("configs/CenterNet/centernet_R_18_shapes.yaml", **{"MODEL.RESNETS.DEPTH": 101})
    with pytest.raises(ValueError, match="MODEL.TV_RESNET.DEPTH"):
        build_backbone(cfg, ShapeSpec(channels=3))


@pytest.mark.parametrize("old,new", [
    ("MODEL.YOLACT.RESNET.DEPTH", "MODEL.TV_RESNET.DEPTH"),
    ("MODEL.CENTERNET.RESNET_DECONV.DECONV_CHANNELS", "MODEL.RESNET_DECONV.DECONV_CHANNELS"),
    ("MODEL.CENTERNET.DLA.WIDTH_DIV", "MODEL.DLA.WIDTH_DIV"),
    ("MODEL.RETINAFACE.BACKBONE_NORM", "MODEL.MOBILENET.NORM"),
])
def test_old_backbone_keys_name_the_new_ones(old, new, tmp_path):
    cfg = load_cfg("configs/CenterNet/centernet_R_18_shapes.yaml")
    with pytest.raises(KeyError, match=re.escape(new)):
        cfg.clone().merge_from_list([old, "1"])
    # in a YAML file too, as a whole node or as one key
    *parents, leaf = old.split(".")
    text = "".join("  " * i + p + ":\n" for i, p in enumerate(parents)) + "  " * len(parents) + f"{leaf}: 1\n"
    path = tmp_path / "old.yaml"
    path.write_text(text)
    with pytest.raises(KeyError, match="renamed"):
        cfg.clone().merge_from_file(str(path))


def test_conv_norm_act():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 9)
    relu = conv_norm_act(4, 6, 3, 2, norm="BN").eval()
    assert relu(x).shape == (2, 6, 5, 5) and relu.bias is None and (relu(x) >= 0).all()
    leaky = conv_norm_act(4, 6, 1, norm="", activation=0.1)
    assert leaky.bias is not None and isinstance(leaky.activation, torch.nn.LeakyReLU)
    assert leaky.activation.negative_slope == 0.1
    plain = conv_norm_act(4, 6, 3, norm="BN", activation=None, bias=False)
    assert plain.activation is None and set(plain.state_dict()) >= {"weight", "norm.weight", "norm.running_mean"}
    with pytest.raises(ValueError, match="activation"):
        conv_norm_act(4, 6, 3, activation="gelu")


def test_no_backbone_reads_an_architecture_node():
    """Backbones belong to no single architecture: ``cfg.MODEL.<ARCH>`` is never read in segx/modeling/backbone/."""
    arch_nodes = ("YOLACT", "CORNERNET", "CENTERNET", "CENTERNET_TRIPLETS", "STACKED_HOURGLASS", "RETINAFACE", "UPSNET")
    pattern = re.compile(r"cfg\.MODEL\.(" + "|".join(arch_nodes) + r")\b")
    offenders = []
    for path in glob.glob(os.path.join(REPO_ROOT, "segx", "modeling", "backbone", "*.py")):
        for i, line in enumerate(open(path), 1):
            if pattern.search(line):
                offenders.append(f"{os.path.relpath(path, REPO_ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
