"""corner_pool: kernel vs. reference, tie rule, gradcheck, tracing, ONNX, input errors, fallback."""
import importlib
import io

import pytest
import torch

from segx import _ext
from segx.layers import corner_pool, corner_pool_reference
cp_mod = importlib.import_module("segx.layers.corner_pool")

needs_ext = pytest.mark.skipif(not _ext.has_op("corner_pool_forward"), reason="segx._C (corner_pool) not built")
DIRS = ("top", "bottom", "left", "right")


def _distinct(*shape, dtype=torch.float64):
    """Values without ties, so the max (and its gradient) is unique everywhere."""
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n, dtype=dtype) / n).reshape(shape)


def _grads(f, x, d, g):
    x = x.detach().clone().requires_grad_()
    out = f(x, d)
    (gx,) = torch.autograd.grad(out, x, g)
    return out.detach(), gx


@needs_ext
@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 1, 1, 5), (1, 2, 6, 1), (1, 1, 1, 1), (2, 0, 4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_random(direction, shape, dtype):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype)
    g = torch.randn(shape, dtype=dtype)
    ok, gk = _grads(corner_pool, x, direction, g)
    orf, gr = _grads(corner_pool_reference, x, direction, g)
    torch.testing.assert_close(ok, orf, rtol=0, atol=0)
    torch.testing.assert_close(gk, gr)


@needs_ext
@pytest.mark.parametrize("direction", DIRS)
def test_parity_ties(direction):
    """Many ties (small integers, -inf): the kernel and the reference route gradients identically."""
    torch.manual_seed(1)
    x = torch.randint(0, 3, (2, 2, 8, 11)).double()
    x[0, 0, :, 3] = float("-inf")
    g = torch.randn_like(x)
    ok, gk = _grads(corner_pool, x, direction, g)
    orf, gr = _grads(corner_pool_reference, x, direction, g)
    assert torch.equal(ok, orf)
    torch.testing.assert_close(gk, gr, rtol=1e-12, atol=1e-12)


@needs_ext
@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("shape", [(1, 2, 16, 32), (2, 1, 19, 40), (1, 1, 8, 13), (1, 64, 128, 128)])
def test_parity_float32_ties(direction, shape):
    """float32 with many ties and -inf: the CPU AVX2 left/right paths (full 8x8 blocks, row and column tails,
    and streaming stores for outputs of >= 4 MiB) route values and gradients like the reference."""
    torch.manual_seed(8)
    x = torch.randint(0, 3, shape).float()
    x[..., 1, :] = float("-inf")
    x[..., :, 2] = float("-inf")
    g = torch.randn(shape)
    ok, gk = _grads(corner_pool, x, direction, g)
    orf, gr = _grads(corner_pool_reference, x, direction, g)
    assert torch.equal(ok, orf)
    torch.testing.assert_close(gk, gr)


@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_tie_rule_by_hand(impl):
    """On ties the gradient goes to the tied element met first, scanning from the far end."""
    if impl == "kernel" and not _ext.has_op("corner_pool_forward"):
        pytest.skip("segx._C (corner_pool) not built")
    f = corner_pool if impl == "kernel" else corner_pool_reference
    col = torch.tensor([1.0, 3.0, 3.0, 2.0], dtype=torch.float64).view(1, 1, 4, 1)
    expect = {
        "bottom": ([1, 3, 3, 3], [1, 3, 0, 0]),  # scan rows 0..3: the 3 at row 1 comes first
        "top": ([3, 3, 3, 2], [0, 0, 3, 1]),  # scan rows 3..0: the 3 at row 2 comes first
    }
    for d, (vals, grads) in expect.items():
        out, gx = _grads(f, col, d, torch.ones_like(col))
        assert out.flatten().tolist() == vals
        assert gx.flatten().tolist() == grads
    row = col.view(1, 1, 1, 4)
    out, gx = _grads(f, row, "right", torch.ones_like(row))
    assert out.flatten().tolist() == [1, 3, 3, 3] and gx.flatten().tolist() == [1, 3, 0, 0]
    out, gx = _grads(f, row, "left", torch.ones_like(row))
    assert out.flatten().tolist() == [3, 3, 3, 2] and gx.flatten().tolist() == [0, 0, 3, 1]


@needs_ext
@pytest.mark.parametrize("direction", DIRS)
def test_non_contiguous(direction):
    torch.manual_seed(2)
    base = torch.randn(2, 6, 5, 4)
    x = base.permute(0, 3, 2, 1)  # [2,4,5,6], strided
    assert not x.is_contiguous()
    torch.testing.assert_close(corner_pool(x, direction), corner_pool_reference(x, direction), rtol=0, atol=0)
    xl = base.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(corner_pool(xl, direction), corner_pool_reference(xl, direction), rtol=0, atol=0)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_cpu(dtype):
    torch.manual_seed(3)
    x = torch.randn(1, 2, 5, 6).to(dtype)
    for d in DIRS:
        assert torch.equal(corner_pool(x, d), corner_pool_reference(x, d))


@needs_ext
@pytest.mark.parametrize("direction", DIRS)
def test_gradcheck_kernel(direction):
    torch.manual_seed(4)
    x = _distinct(2, 2, 4, 5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: corner_pool(t, direction), (x,))


@pytest.mark.parametrize("direction", DIRS)
def test_gradcheck_reference(direction):
    torch.manual_seed(5)
    x = _distinct(1, 2, 4, 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: corner_pool_reference(t, direction), (x,))


@pytest.mark.parametrize("direction", DIRS)
def test_onnx_path_matches(direction, monkeypatch):
    """The log-step doubling used while exporting to ONNX (which has no cummax) equals the cummax path."""
    torch.manual_seed(6)
    x = torch.randint(0, 4, (1, 2, 9, 7)).double().requires_grad_()
    g = torch.randn(1, 2, 9, 7, dtype=torch.float64)
    a, ga = _grads(corner_pool_reference, x, direction, g)
    monkeypatch.setattr(cp_mod, "_FORCE_DOUBLING", True)
    b, gb = _grads(corner_pool_reference, x, direction, g)
    assert torch.equal(a, b)
    torch.testing.assert_close(ga, gb)


def test_fallback_uses_reference(monkeypatch):
    torch.manual_seed(7)
    x = torch.randn(1, 2, 5, 6, requires_grad=True)
    monkeypatch.setattr(_ext, "has_op", lambda name: False)
    out = corner_pool(x, "left")
    assert "CppNode" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, corner_pool_reference(x, "left"), rtol=0, atol=0)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.randn(2, 3, 4), "top"), r"x must be \[B,C,H,W\]"),
        ((torch.randn(1, 1, 2, 2), "up"), "direction must be one of"),
        ((torch.ones(1, 1, 2, 2, dtype=torch.long), "top"), "x must be a floating-point tensor"),
        (([[1.0]], "top"), "x must be a torch.Tensor"),
    ],
)
def test_errors(args, match):
    with pytest.raises(ValueError, match=match):
        corner_pool(*args)
    with pytest.raises(ValueError, match=match):
        corner_pool_reference(*args)


class _Pool(torch.nn.Module):
    def forward(self, x):
        return corner_pool(x, "top") + corner_pool(x, "left")


@needs_ext
def test_trace_save_load(tmp_path):
    torch.manual_seed(8)
    x = torch.randn(1, 3, 6, 5)
    traced = torch.jit.trace(_Pool(), (x,))
    assert "segx::corner_pool_forward" in str(traced.graph)
    path = tmp_path / "pool.pt"
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    x2 = torch.randn(2, 4, 7, 3, requires_grad=True)
    out = loaded(x2)
    torch.testing.assert_close(out, _Pool()(x2))
    out.sum().backward()  # the C++ autograd kernel is reached from the loaded module too
    assert x2.grad is not None


def test_onnx_export_runs():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(9)
    x = torch.randn(1, 3, 6, 5)
    f = io.BytesIO()
    torch.onnx.export(_Pool(), (x,), f, dynamo=False, opset_version=17)
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), _Pool()(x))
