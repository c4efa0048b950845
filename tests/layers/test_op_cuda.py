"""CUDA kernels: parity with the references and float64 gradcheck on the GPU (skipped without one)."""
import pytest
import torch

from segx import _ext
from segx.layers import (
    assemble_masks,
    assemble_masks_reference,
    corner_pool,
    corner_pool_reference,
    flow_warp,
    flow_warp_reference,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not _ext.HAS_EXTENSION, reason="segx._C not built"),
]


@pytest.fixture(autouse=True)
def _needs_cuda_kernels():
    if not torch._C._dispatch_has_kernel_for_dispatch_key("segx::corner_pool_forward", "CUDA"):
        pytest.skip("segx._C was built without CUDA kernels (rebuild with a GPU visible or FORCE_CUDA=1)")


def _grad(f, inputs, g):
    inputs = [t.detach().clone().requires_grad_() if t.is_floating_point() else t for t in inputs]
    out = f(*inputs)
    grads = torch.autograd.grad(out, [t for t in inputs if t.requires_grad], g)
    return [out.detach(), *grads]


TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("direction", ["top", "bottom", "left", "right"])
def test_corner_pool_cuda(direction, dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 17, 33, device="cuda").to(dtype)
    g = torch.randn_like(x)
    got = _grad(lambda t: corner_pool(t, direction), [x], g)
    ref = _grad(lambda t: corner_pool_reference(t.double(), direction), [x], g.double())
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b, **TOL[dtype])
    cpu = corner_pool(x.cpu().float(), direction)
    torch.testing.assert_close(got[0].float().cpu(), cpu, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_flow_warp_cuda(dtype):
    torch.manual_seed(1)
    x = torch.randn(2, 5, 9, 11, device="cuda")
    flow = torch.randn(2, 2, 9, 11, device="cuda") * 4
    g = torch.randn_like(x)
    got = _grad(flow_warp, [x.to(dtype), flow.to(dtype)], g.to(dtype))
    ref = _grad(flow_warp_reference, [x.to(dtype).double(), flow.to(dtype).double()], g.to(dtype).double())
    tol = TOL[dtype] if dtype != torch.float32 else dict(rtol=1e-3, atol=1e-3)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_assemble_masks_cuda(dtype):
    torch.manual_seed(2)
    protos = torch.randn(2, 8, 20, 17, device="cuda")
    coeffs = torch.randn(12, 8, device="cuda")
    wh = torch.rand(12, 2) * 14
    xy = torch.rand(12, 2) * 20 - 3
    boxes = torch.cat([xy, xy + wh], 1).cuda()
    batch_idx = torch.randint(0, 2, (12,), device="cuda")
    g = torch.randn(12, 20, 17, device="cuda")
    for crop in (True, False):
        got = _grad(lambda p, c: assemble_masks(p, c, boxes, batch_idx, crop), [protos.to(dtype), coeffs.to(dtype)], g.to(dtype))
        ref = _grad(
            lambda p, c: assemble_masks_reference(p, c, boxes, batch_idx, crop),
            [protos.to(dtype).double(), coeffs.to(dtype).double()],
            g.to(dtype).double(),
        )
        assert torch.equal(got[0] == 0, ref[0] == 0)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a.double(), b, **TOL[dtype])


def test_gradcheck_cuda():
    torch.manual_seed(3)
    dev, f64 = "cuda", torch.float64
    x = (torch.randperm(2 * 2 * 4 * 5, dtype=f64) / 80).reshape(2, 2, 4, 5).to(dev).requires_grad_()
    for d in ("top", "bottom", "left", "right"):
        assert torch.autograd.gradcheck(lambda t: corner_pool(t, d), (x,))
    xw = torch.randn(1, 2, 4, 5, dtype=f64, device=dev, requires_grad=True)
    flow = (torch.randint(-4, 5, (1, 2, 4, 5)).to(f64) + torch.rand(1, 2, 4, 5, dtype=f64) * 0.6 + 0.2).to(dev)
    assert torch.autograd.gradcheck(flow_warp, (xw, flow.requires_grad_()))
    protos = torch.randn(2, 3, 5, 6, dtype=f64, device=dev, requires_grad=True)
    coeffs = torch.randn(3, 3, dtype=f64, device=dev, requires_grad=True)
    boxes = torch.tensor([[0.3, 0.2, 4.1, 3.9], [-2.0, 1.0, 9.0, 9.0], [1.0, 0.0, 6.0, 5.0]], device=dev)
    bi = torch.tensor([0, 1, 1], device=dev)
    assert torch.autograd.gradcheck(lambda p, c: assemble_masks(p, c, boxes, bi), (protos, coeffs))


def test_trace_cuda(tmp_path):
    x = torch.randn(1, 3, 6, 5, device="cuda")
    traced = torch.jit.trace(lambda t: corner_pool(t, "top"), (x,))
    assert "segx::corner_pool_forward" in str(traced.graph)
    torch.testing.assert_close(traced(x), corner_pool_reference(x, "top"))
