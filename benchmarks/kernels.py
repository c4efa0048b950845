"""Kernel vs. reference timings for segx's custom ops, in one process.

    python benchmarks/kernels.py --device cpu --repeat 20

For each op and size: median wall time of forward, and of forward+backward, for the ``torch.ops.segx``
kernel (through ``segx.layers``) and for the PyTorch composite it replaces, plus their ratio
(reference / kernel; > 1 means the kernel is faster). The composites are the ones named in DESIGN.md §6:
matmul + sigmoid + crop for assemble_masks, cummax on a flipped map for corner_pool, grid_sample for
flow_warp.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from segx import _ext
from segx.layers import assemble_masks, assemble_masks_reference, corner_pool, flow_warp, flow_warp_reference


def cummax_corner_pool(x, direction):
    """The composite most ports of CornerNet use (values only; cummax's own tie rule in backward)."""
    dim = 2 if direction in ("top", "bottom") else 3
    if direction in ("top", "left"):
        return torch.cummax(x.flip(dim), dim)[0].flip(dim)
    return torch.cummax(x, dim)[0]


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _median_ms(fn, device, repeat, warmup=3):
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _fwd_bwd(f, inputs, grad):
    def run():
        out = f()
        torch.autograd.grad(out, inputs, grad)

    return run


def _cases(device, dtype):
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).to(device)

    # assemble_masks: 32 x 138 x 138 prototypes (YOLACT at 550^2), box sides 10-80 prototype pixels
    for n in (10, 100, 300):
        protos = rand(1, 32, 138, 138).requires_grad_()
        coeffs = rand(n, 32).requires_grad_()
        wh = torch.rand(n, 2, generator=g, dtype=dtype) * 70 + 10
        xy = torch.rand(n, 2, generator=g, dtype=dtype) * (138 - wh)
        boxes = torch.cat([xy, xy + wh], 1).to(device)
        grad = torch.randn(n, 138, 138, generator=g, dtype=dtype).to(device)
        yield (
            f"assemble_masks N={n}",
            lambda p=protos, c=coeffs, b=boxes: assemble_masks(p, c, b),
            lambda p=protos, c=coeffs, b=boxes: assemble_masks_reference(p, c, b),
            (protos, coeffs),
            grad,
        )
    x = rand(2, 128, 128, 128).requires_grad_()
    grad = rand(2, 128, 128, 128)
    for d in ("top", "bottom", "left", "right"):
        yield (
            f"corner_pool {d} [2,128,128,128]",
            lambda d=d: corner_pool(x, d),
            lambda d=d: cummax_corner_pool(x, d),
            (x,),
            grad,
        )
    for shape in ((1, 256, 69, 69), (4, 256, 35, 35)):
        B, C, H, W = shape
        xw = rand(*shape).requires_grad_()
        flow = rand(B, 2, H, W, scale=3.0).requires_grad_()
        grad = rand(*shape)
        yield (
            f"flow_warp {list(shape)}",
            lambda a=xw, f=flow: flow_warp(a, f),
            lambda a=xw, f=flow: flow_warp_reference(a, f),
            (xw, flow),
            grad,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    args = parser.parse_args()
    if not _ext.HAS_EXTENSION:
        raise SystemExit("segx._C is not built: the kernels would just be the references")
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} repeat={args.repeat} torch={torch.__version__}")
    header = f"{'op / size':34s} {'fwd kern':>9s} {'fwd ref':>9s} {'ratio':>6s} {'f+b kern':>9s} {'f+b ref':>9s} {'ratio':>6s}"
    print(header)
    print("-" * len(header))
    for name, kern, ref, inputs, grad in _cases(args.device, dtype):
        if args.only not in name:
            continue
        with torch.no_grad():
            fk = _median_ms(kern, args.device, args.repeat)
            fr = _median_ms(ref, args.device, args.repeat)
        bk = _median_ms(_fwd_bwd(kern, inputs, grad), args.device, args.repeat)
        br = _median_ms(_fwd_bwd(ref, inputs, grad), args.device, args.repeat)
        print(f"{name:34s} {fk:8.2f}ms {fr:8.2f}ms {fr / fk:5.1f}x {bk:8.2f}ms {br:8.2f}ms {br / bk:5.1f}x")


if __name__ == "__main__":
    main()
