"""assemble_masks: kernel vs. reference, gradcheck, tracing, ONNX, input errors, fallback."""
import io

import pytest
import torch

from segx import _ext
from segx.layers import assemble_masks, assemble_masks_reference

needs_ext = pytest.mark.skipif(not _ext.has_op("assemble_masks_forward"), reason="segx._C (assemble_masks) not built")


def _boxes(N, H, W, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(N, 2, generator=g) * torch.tensor([W, H]) * 0.8
    xy = torch.rand(N, 2, generator=g) * torch.tensor([W, H]) * 1.2 - 0.2 * torch.tensor([W, H])
    return torch.cat([xy, xy + wh], 1).to(dtype)


SPECIAL = torch.tensor(
    [
        [-5.0, -5.0, 3.3, 2.5],  # partly outside (top-left)
        [20.0, 20.0, 30.0, 30.0],  # wholly outside
        [2.0, 2.0, 2.0, 5.0],  # zero width
        [1.0, 3.0, 4.0, 3.0],  # zero height
        [0.0, 0.0, 100.0, 100.0],  # covers everything
        [2.5, 1.5, 3.5, 2.5],  # edges exactly on pixel centres: one pixel
        [4.9, 0.4, 5.6, 9.0],  # narrower than a pixel but straddling a centre
        [3.0, 2.0, 1.0, 6.0],  # x1 < x0: empty
    ]
)


def _run(f, protos, coeffs, boxes, batch_idx, crop, g):
    protos = protos.detach().clone().requires_grad_()
    coeffs = coeffs.detach().clone().requires_grad_()
    out = f(protos, coeffs, boxes, batch_idx, crop)
    gp, gc = torch.autograd.grad(out, (protos, coeffs), g, allow_unused=True)
    return out.detach(), gp, gc


def _check(protos, coeffs, boxes, batch_idx=None, crop=True, exact=False):
    N = coeffs.shape[0]
    H, W = protos.shape[-2:]
    g = torch.randn(N, H, W, dtype=protos.dtype)
    ok, gpk, gck = _run(assemble_masks, protos, coeffs, boxes, batch_idx, crop, g)
    orf, gpr, gcr = _run(assemble_masks_reference, protos, coeffs, boxes, batch_idx, crop, g)
    tol = dict(rtol=1e-5, atol=1e-5) if protos.dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    # the box mask itself must agree exactly: zeros in the same places
    assert torch.equal(ok == 0, orf == 0)
    torch.testing.assert_close(ok, orf, **tol)
    torch.testing.assert_close(gpk, gpr.reshape(gpk.shape), **tol)
    torch.testing.assert_close(gck, gcr, **tol)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,k,H,W", [(7, 4, 9, 11), (0, 3, 5, 5), (5, 8, 1, 12), (5, 8, 13, 1), (40, 16, 20, 17)])
@pytest.mark.parametrize("crop", [True, False])
def test_parity_random(dtype, N, k, H, W, crop):
    torch.manual_seed(0)
    protos = torch.randn(1, k, H, W, dtype=dtype)
    coeffs = torch.randn(N, k, dtype=dtype)
    _check(protos, coeffs, _boxes(N, H, W), crop=crop)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_special_boxes(dtype):
    torch.manual_seed(1)
    protos = torch.randn(8, 10, 9, dtype=dtype)  # [k,H,W] form
    coeffs = torch.randn(len(SPECIAL), 8, dtype=dtype)
    _check(protos, coeffs, SPECIAL)
    _check(protos, coeffs, SPECIAL.double())
    out = assemble_masks(protos, coeffs, SPECIAL)
    assert out[1].abs().sum() == 0 and out[2].abs().sum() == 0 and out[3].abs().sum() == 0 and out[7].abs().sum() == 0
    assert (out[4] > 0).all()
    assert (out[5] > 0).sum() == 1 and out[5, 1, 2] > 0
    assert (out[6] > 0).sum() == 9  # column 5, rows 0..8


@needs_ext
def test_parity_batched_and_non_contiguous():
    torch.manual_seed(2)
    protos = torch.randn(3, 10, 12, 6).permute(0, 3, 2, 1)  # [3,6,12,10] strided
    coeffs = torch.randn(6, 9).t()  # [9,6] strided
    boxes = _boxes(9, 12, 10).t().contiguous().t()
    batch_idx = torch.tensor([0, 2, 1, 1, 0, 2, 2, 0, 1], dtype=torch.int32)
    assert not protos.is_contiguous() and not coeffs.is_contiguous()
    _check(protos, coeffs, boxes, batch_idx)
    _check(protos.double(), coeffs.double(), boxes, batch_idx, crop=False)


@needs_ext
@pytest.mark.parametrize("k", [32, 13])
@pytest.mark.parametrize("crop", [True, False])
def test_parity_float32_wide_boxes(k, crop):
    """float32 boxes 1..70 pixels wide (the CPU AVX2 path's 32-, 8-column and masked-tail blocks), k not a
    multiple of the 8-prototype (grad_coeffs) and 4-plane (grad_protos) blocks, two images."""
    torch.manual_seed(7)
    B, N, H, W = 2, 24, 45, 75
    protos = torch.randn(B, k, H, W)
    coeffs = torch.randn(N, k)
    g = torch.Generator().manual_seed(7)
    wh = torch.rand(N, 2, generator=g) * torch.tensor([70.0, 40.0]) + 0.6
    xy = torch.rand(N, 2, generator=g) * (torch.tensor([W, H]) - wh)
    boxes = torch.cat([xy, xy + wh], 1)
    batch_idx = torch.arange(N) % B
    _check(protos, coeffs, boxes, batch_idx, crop=crop)


@needs_ext
def test_gradcheck_kernel():
    torch.manual_seed(3)
    protos = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    coeffs = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0.3, 0.2, 4.1, 3.9], [-2.0, 1.0, 9.0, 9.0], [2.0, 2.0, 2.0, 3.0], [1.0, 0.0, 6.0, 5.0]])
    batch_idx = torch.tensor([0, 1, 1, 0])
    for crop in (True, False):
        assert torch.autograd.gradcheck(lambda p, c: assemble_masks(p, c, boxes, batch_idx, crop), (protos, coeffs))


def test_gradcheck_reference():
    torch.manual_seed(4)
    protos = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    coeffs = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0.3, 0.2, 4.1, 3.9], [-2.0, 1.0, 9.0, 9.0], [1.0, 0.0, 3.0, 5.0]])
    assert torch.autograd.gradcheck(lambda p, c: assemble_masks_reference(p, c, boxes), (protos, coeffs))


def test_fallback_uses_reference(monkeypatch):
    torch.manual_seed(5)
    protos = torch.randn(1, 4, 6, 7, requires_grad=True)
    coeffs = torch.randn(3, 4)
    boxes = _boxes(3, 6, 7)
    monkeypatch.setattr(_ext, "has_op", lambda name: False)
    out = assemble_masks(protos, coeffs, boxes)
    assert "CppNode" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, assemble_masks_reference(protos, coeffs, boxes), rtol=0, atol=0)


P, C, BX = torch.randn(1, 4, 5, 6), torch.randn(3, 4), torch.zeros(3, 4)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.randn(4, 5), C, BX), {}, r"protos must be \[B,k,H,W\]"),
        ((P, torch.randn(3, 5), BX), {}, r"coeffs must be \[N,k\] with k=4"),
        ((P, C, torch.zeros(3, 5)), {}, r"boxes must be \[N,4\]"),
        ((P, C, torch.zeros(2, 4)), {}, r"boxes must be \[N,4\]"),
        ((P, C.double(), BX), {}, "coeffs has dtype"),
        ((P, C.to("meta"), BX), {}, "coeffs is on meta"),
        ((torch.randn(2, 4, 5, 6), C, BX), {}, "batch_idx is required"),
        ((torch.randn(2, 4, 5, 6), C, BX), {"batch_idx": torch.tensor([0, 2, 1])}, r"batch_idx values must lie in \[0, 2\)"),
        ((P, C, BX), {"batch_idx": torch.tensor([0, -1, 0])}, r"batch_idx values must lie in \[0, 1\)"),
        ((P, C, BX), {"batch_idx": torch.tensor([0.0, 0.0, 0.0])}, "batch_idx must be an integer tensor"),
        ((P, C, BX), {"batch_idx": torch.tensor([0, 0])}, r"batch_idx must be \[N\]"),
        ((P, C, torch.zeros(3, 4, dtype=torch.long)), {}, "boxes must be a floating-point"),
    ],
)
def test_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        assemble_masks(*args, **kwargs)
    with pytest.raises(ValueError, match=match):
        assemble_masks_reference(*args, **kwargs)


class _Masks(torch.nn.Module):
    def forward(self, protos, coeffs, boxes):
        return assemble_masks(protos, coeffs, boxes)


@needs_ext
def test_trace_save_load(tmp_path):
    torch.manual_seed(6)
    inputs = (torch.randn(1, 4, 8, 9), torch.randn(5, 4), _boxes(5, 8, 9))
    traced = torch.jit.trace(_Masks(), inputs)
    assert "segx::assemble_masks_forward" in str(traced.graph)
    traced.save(str(tmp_path / "masks.pt"))
    loaded = torch.jit.load(str(tmp_path / "masks.pt"))
    other = (torch.randn(1, 4, 10, 7), torch.randn(8, 4), _boxes(8, 10, 7, seed=1))
    torch.testing.assert_close(loaded(*other), _Masks()(*other))


def test_onnx_export_runs():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(7)
    inputs = (torch.randn(1, 4, 8, 9), torch.randn(5, 4), _boxes(5, 8, 9))
    f = io.BytesIO()
    torch.onnx.export(_Masks(), inputs, f, dynamo=False, opset_version=17)
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    (got,) = sess.run(None, dict(zip(names, (t.numpy() for t in inputs))))
    torch.testing.assert_close(torch.from_numpy(got), _Masks()(*inputs), rtol=1e-5, atol=1e-5)
