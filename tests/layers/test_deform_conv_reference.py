"""deform_conv2d_reference (pure PyTorch, what ONNX export records) against torchvision's deform_conv2d:
values and gradients, groups / offset groups / modulation / stride / dilation, points outside the map, and the
layer's switch during ONNX export."""
import io

import pytest
import torch
from torchvision.ops import deform_conv2d

from segx.layers import deform_conv2d_reference
from segx.layers.deform_conv import DeformConvWithOffset

# (B, Cin, H, W, Cout, k, stride, pad, dilation, offset groups, groups, modulated)
CASES = [
    (2, 4, 9, 11, 6, 3, 1, 1, 1, 1, 1, True),
    (1, 8, 7, 6, 4, 3, 2, 1, 1, 2, 1, False),
    (2, 4, 8, 8, 6, 3, 1, 2, 2, 2, 2, True),
    (1, 2, 5, 5, 3, 1, 1, 0, 1, 1, 1, False),
    (1, 4, 6, 7, 4, 2, 1, 0, 1, 4, 2, True),
    (1, 3, 1, 4, 2, 3, 1, 1, 1, 1, 1, True),  # one-row map
]


def _inputs(case, dtype, seed=0, spread=3.0):
    B, C, H, W, Co, k, s, p, d, G, g, mod = case
    gen = torch.Generator().manual_seed(seed)
    Ho, Wo = (H + 2 * p - d * (k - 1) - 1) // s + 1, (W + 2 * p - d * (k - 1) - 1) // s + 1
    x = torch.randn(B, C, H, W, generator=gen, dtype=dtype)
    weight = torch.randn(Co, C // g, k, k, generator=gen, dtype=dtype)
    bias = torch.randn(Co, generator=gen, dtype=dtype)
    offset = torch.randn(B, 2 * G * k * k, Ho, Wo, generator=gen, dtype=dtype) * spread  # many points outside
    mask = torch.rand(B, G * k * k, Ho, Wo, generator=gen, dtype=dtype) if mod else None
    return (x, offset, weight, bias), mask, dict(stride=s, padding=p, dilation=d)


@pytest.mark.parametrize("case", CASES)
def test_values_match_torchvision(case):
    args, mask, kw = _inputs(case, torch.float64)
    ref = deform_conv2d(*args, mask=mask, **kw)
    out = deform_conv2d_reference(*args, mask=mask, **kw)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_integer_offsets_on_the_border_read_zero_outside():
    """Offsets of whole pixels put points exactly on -1 and H: torchvision reads 0 there, so must the reference."""
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    offset = torch.randint(-6, 7, (1, 18, 5, 6)).double()
    torch.testing.assert_close(deform_conv2d_reference(x, offset, weight, padding=(1, 1)),
                               deform_conv2d(x, offset, weight, padding=1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[2]])
def test_gradients_match_torchvision(case):
    """Points kept off the integer grid (the bilinear derivative jumps there): input, offset, weight, bias and
    mask gradients equal torchvision's."""
    args, mask, kw = _inputs(case, torch.float64, spread=1.0)
    offset = args[1]
    args = (args[0], offset.floor() + 0.2 + 0.6 * (offset - offset.floor()), *args[2:])
    leaves = [a.clone().requires_grad_() for a in args] + ([mask.clone().requires_grad_()] if mask is not None else [])
    grads = []
    for fn in (deform_conv2d, deform_conv2d_reference):
        xs = [t.detach().clone().requires_grad_() for t in leaves]
        out = fn(*xs[:4], mask=xs[4] if mask is not None else None, **kw)
        grads.append(torch.autograd.grad(out, xs, torch.ones_like(out)))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-8)


def test_layer_records_the_reference_in_onnx():
    """``DeformConvWithOffset`` exports to ONNX (torchvision's op has no symbolic) and onnxruntime equals eager,
    at the traced size and at another one (dynamic axes)."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    layer = DeformConvWithOffset(4, 6, 3, modulated=True, deformable_groups=2).eval()
    with torch.no_grad():
        layer.offset_conv.weight.normal_(0, 0.5)  # non-zero offsets and masks
    f = io.BytesIO()
    x = torch.randn(1, 4, 12, 10)
    torch.onnx.export(layer, (x,), f, opset_version=16, input_names=["x"], output_names=["y"], dynamo=False,
                      dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}})
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    for shape in ((1, 4, 12, 10), (1, 4, 7, 15)):
        x = torch.randn(shape)
        with torch.no_grad():
            ref = layer(x).numpy()
        out = sess.run(None, {"x": x.numpy()})[0]
        assert out.shape == ref.shape
        assert abs(out - ref).max() < 1e-4
