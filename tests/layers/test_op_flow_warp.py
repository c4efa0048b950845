"""flow_warp: kernel vs. grid_sample reference, gradcheck, tracing, ONNX, input errors, fallback."""
import io

import pytest
import torch
import torch.nn.functional as F

from segx import _ext
from segx.layers import flow_warp, flow_warp_reference

needs_ext = pytest.mark.skipif(not _ext.has_op("flow_warp_forward"), reason="segx._C (flow_warp) not built")


def _off_grid_flow(B, H, W, span, dtype=torch.float64, seed=0):
    """Flows whose sample points stay >= 0.2 px away from integer grid lines (the bilinear derivative
    jumps there), reaching up to `span` px, i.e. also outside the map."""
    g = torch.Generator().manual_seed(seed)
    whole = torch.randint(-span, span + 1, (B, 2, H, W), generator=g).to(dtype)
    frac = torch.rand(B, 2, H, W, generator=g, dtype=dtype) * 0.6 + 0.2
    return whole + frac


def _grads(f, x, flow, g):
    x = x.detach().clone().requires_grad_()
    flow = flow.detach().clone().requires_grad_()
    out = f(x, flow)
    gx, gf = torch.autograd.grad(out, (x, flow), g)
    return out.detach(), gx, gf


@needs_ext
@pytest.mark.parametrize("shape", [(2, 3, 6, 7), (1, 4, 1, 5), (1, 2, 5, 1), (1, 1, 1, 1), (2, 0, 3, 3), (1, 3, 9, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity(shape, dtype):
    torch.manual_seed(0)
    B, C, H, W = shape
    x = torch.randn(shape, dtype=dtype)
    flow = torch.randn(B, 2, H, W, dtype=dtype) * max(H, W)  # many points land outside
    g = torch.randn(shape, dtype=dtype)
    ok, gxk, gfk = _grads(flow_warp, x, flow, g)
    orf, gxr, gfr = _grads(flow_warp_reference, x, flow, g)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ok, orf, **tol)
    torch.testing.assert_close(gxk, gxr, **tol)
    torch.testing.assert_close(gfk, gfr, **(dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else tol))


@needs_ext
def test_non_contiguous_and_exact_shift():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 6, 4).permute(0, 3, 2, 1)  # [2,4,6,5] strided
    flow = torch.randn(2, 5, 6, 2).permute(0, 3, 2, 1) * 2
    assert not x.is_contiguous() and not flow.is_contiguous()
    torch.testing.assert_close(flow_warp(x, flow), flow_warp_reference(x, flow), rtol=1e-5, atol=1e-5)
    # zero flow is the identity; an integer flow is an exact shift with zeros shifted in
    xc = torch.randn(1, 2, 4, 5)
    assert torch.equal(flow_warp(xc, torch.zeros(1, 2, 4, 5)), xc)
    shift = torch.zeros(1, 2, 4, 5)
    shift[:, 0] = 1.0
    out = flow_warp(xc, shift)
    assert torch.equal(out[..., :-1], xc[..., 1:]) and torch.equal(out[..., -1], torch.zeros(1, 2, 4))


def test_reference_matches_grid_sample():
    torch.manual_seed(2)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    flow = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
    gx = (xs + flow[:, 0]) / 5 * 2 - 1
    gy = (ys + flow[:, 1]) / 4 * 2 - 1
    ref = F.grid_sample(x, torch.stack([gx, gy], -1).double(), align_corners=True, padding_mode="zeros")
    torch.testing.assert_close(flow_warp_reference(x, flow), ref)


@needs_ext
def test_gradcheck_kernel():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    flow = _off_grid_flow(2, 4, 5, span=5).requires_grad_()
    assert torch.autograd.gradcheck(flow_warp, (x, flow))


@needs_ext
def test_gradcheck_kernel_size_one():
    x = torch.randn(1, 2, 1, 4, dtype=torch.float64, requires_grad=True)
    flow = _off_grid_flow(1, 1, 4, span=2, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(flow_warp, (x, flow))


def test_gradcheck_reference():
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    flow = _off_grid_flow(1, 3, 4, span=3, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(flow_warp_reference, (x, flow))


def test_fallback_uses_reference(monkeypatch):
    torch.manual_seed(5)
    x = torch.randn(1, 2, 4, 5, requires_grad=True)
    flow = torch.randn(1, 2, 4, 5)
    monkeypatch.setattr(_ext, "has_op", lambda name: False)
    out = flow_warp(x, flow)
    assert "CppNode" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, flow_warp_reference(x, flow), rtol=0, atol=0)


@pytest.mark.parametrize(
    "x, flow, match",
    [
        (torch.randn(2, 3, 4), torch.randn(2, 2, 3, 4), r"x must be \[B,C,H,W\]"),
        (torch.randn(1, 3, 4, 5), torch.randn(1, 3, 4, 5), r"flow must be \[B,2,H,W\]"),
        (torch.randn(1, 3, 4, 5), torch.randn(1, 2, 5, 4), r"flow must be \[B,2,H,W\]"),
        (torch.randn(1, 3, 4, 5), torch.randn(1, 2, 4, 5, dtype=torch.float64), "flow has dtype"),
        (torch.randn(1, 3, 4, 5), torch.randn(1, 2, 4, 5, device="meta"), "flow is on meta"),
        (torch.ones(1, 3, 4, 5, dtype=torch.int32), torch.randn(1, 2, 4, 5), "x must be a floating-point"),
    ],
)
def test_errors(x, flow, match):
    with pytest.raises(ValueError, match=match):
        flow_warp(x, flow)


class _Warp(torch.nn.Module):
    def forward(self, x, flow):
        return flow_warp(x, flow) * 2


@needs_ext
def test_trace_save_load(tmp_path):
    torch.manual_seed(6)
    x, flow = torch.randn(1, 3, 5, 6), torch.randn(1, 2, 5, 6)
    traced = torch.jit.trace(_Warp(), (x, flow))
    assert "segx::flow_warp_forward" in str(traced.graph)
    traced.save(str(tmp_path / "warp.pt"))
    loaded = torch.jit.load(str(tmp_path / "warp.pt"))
    x2, f2 = torch.randn(2, 4, 7, 3), torch.randn(2, 2, 7, 3) * 2
    torch.testing.assert_close(loaded(x2, f2), _Warp()(x2, f2))


def test_onnx_export_runs():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(7)
    x, flow = torch.randn(1, 3, 5, 6), torch.randn(1, 2, 5, 6) * 2
    f = io.BytesIO()
    torch.onnx.export(_Warp(), (x, flow), f, dynamo=False, opset_version=17)
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    (got,) = sess.run(None, dict(zip(names, (x.numpy(), flow.numpy()))))
    torch.testing.assert_close(torch.from_numpy(got), _Warp()(x, flow), rtol=1e-5, atol=1e-5)
