"""The cost-volume workloads of `fastcorr bench-volume` and `bench/test_volume.py`.

Three operations on one layer (by default FlowNetC's correlation: batch 4, 48x64, 256
channels, max displacement 20, stride2 2, pad 20, 441 output channels, float32):
- "forward": the volume;
- "forward+backward": the volume, then the gradients of sum(g * volume) for a given g (what
  a training step asks of the layer);
- "loss_and_grad": 0.5*||volume||**2 and its gradients.

Implementations: fastcorr, the NumPy reference, and PyTorch's autograd of the plain
formulation (a stack of shifted products, as a user writes it), eager and under
`torch.compile`; spatial-correlation-sampler where it is installed.
"""

import math
import tracemalloc

import numpy as np

import fastcorr

from . import _bench_run, reference
from ._bench_run import Impl, medians_of, nothing, placed, problem_of, torch_calls

OPS = ("forward", "forward+backward", "loss_and_grad")
SHAPE = (4, 48, 64, 256)
PARAMS = dict(max_displacement=20, stride2=2, pad=20)
QUICK_SHAPE = (2, 24, 32, 64)
QUICK_PARAMS = dict(max_displacement=4, stride2=1, pad=4)
# the CI smoke run: every implementation once, torch.compile's graphs small
TINY_SHAPE = (1, 8, 8, 4)
TINY_PARAMS = dict(max_displacement=1, stride2=1, pad=1)


class Problem(_bench_run.Problem):
    def __init__(self, op, shape, params, dtype=np.float32, backend="cpu"):
        super().__init__(op, shape, dtype, backend)
        self.params = dict(params)

    def volume_shape(self):
        one = np.zeros(self.shape[:3] + (1,), self.dtype)  # the channels do not count
        return fastcorr.correlation_volume(one, one, **self.params).shape

    def grad_shape(self):
        return self.volume_shape() if self.op == "forward+backward" else None

    def volume_bytes(self):
        return math.prod(self.volume_shape()) * self.dtype.itemsize


def add_ratios(rows):
    """x fastcorr: each row's median over fastcorr's."""
    base = medians_of(rows, "fastcorr")
    for r in rows:
        t = base.get(problem_of(r))
        r["x_fastcorr"] = r["median_s"] / t if t else None


def memory(shape, params):
    """Peak NumPy allocations (tracemalloc) of fastcorr's forward+backward, which stores the
    volume, and of its fused loss, which does not; with the sizes of the volume and the
    inputs."""
    p = Problem("forward+backward", shape, params)
    data = p.inputs()
    out = {}
    for op, label in (("forward+backward", "forward+backward"),
                      ("loss_and_grad", "loss_and_grad (fused)")):
        fn, _ = IMPLS["fastcorr"].make(Problem(op, shape, params), *data)
        tracemalloc.start()
        fn()
        out[label] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    out["volume"] = p.volume_bytes()
    out["inputs"] = data[0].nbytes + data[1].nbytes
    return out


# --------------------------------------------------------------------------- implementations


def _library(lib):
    """fastcorr (its forward pass into the volume of a first call, as a layer reuses its
    output), or the NumPy reference, `fastcorr.reference`."""
    def make(p, a, b, g):
        (a, b, g), sync = placed(p.backend, a, b, g)
        kw = p.params
        if p.op == "forward+backward":
            def fn():
                vol = lib.correlation_volume(a, b, **kw)
                return (vol, *lib.correlation_volume_vjp(a, b, g, **kw))
        elif p.op == "loss_and_grad":
            def fn():
                return lib.correlation_volume_loss_and_grad(a, b, **kw)
        else:
            out = {"out": lib.correlation_volume(a, b, **kw)} if lib is fastcorr else {}

            def fn():
                return lib.correlation_volume(a, b, **kw, **out)
        return fn, sync
    return make


def _torch_volume(a, b, max_displacement, kernel_size=1, stride1=1, stride2=1, pad=None,
                  direction="2d"):
    """The cost volume as a PyTorch user writes it, NHWC: padded inputs, one strided slice
    product per displacement and window offset, stacked; autograd differentiates it."""
    import torch

    _, H, W, C = a.shape
    kr = kernel_size // 2
    r = max_displacement // stride2
    dxs = [k * stride2 for k in range(-r, r + 1)]
    dys = dxs if direction == "2d" else [0]
    border = max_displacement + kr
    pad = border if pad is None else pad
    py, by = (pad, border) if direction == "2d" else (0, kr)
    Ho = -(-(H + 2 * py - 2 * by) // stride1)
    Wo = -(-(W + 2 * pad - 2 * border) // stride1)
    ap, bp = (torch.nn.functional.pad(t, (0, 0, pad, pad, py, py)) for t in (a, b))
    span_y, span_x = stride1 * (Ho - 1) + 1, stride1 * (Wo - 1) + 1

    def window(t, y, x):
        return t[:, y:y + span_y:stride1, x:x + span_x:stride1]

    offsets = [(by + j, border + i) for j in range(-kr, kr + 1) for i in range(-kr, kr + 1)]
    vols = [sum((window(ap, y, x) * window(bp, y + dy, x + dx)).sum(-1) for y, x in offsets)
            for dy in dys for dx in dxs]
    return torch.stack(vols, -1) / (kernel_size**2 * C)


def _torch(compile_):
    def make(p, a, b, g):
        import torch

        def f(x, y):
            vol = _torch_volume(x, y, **p.params)
            return 0.5 * (vol**2).sum() if p.op == "loss_and_grad" else vol
        if compile_:
            f = torch.compile(f)
        return torch_calls(p, a, b, f, g)
    return make


def _sampler(p, a, b, g):
    """spatial-correlation-sampler, NCHW and unnormalised: its (kernel_size, patch_size,
    stride, padding, dilation_patch) for this layer, following the README's mapping."""
    import torch
    from spatial_correlation_sampler import SpatialCorrelationSampler

    kw = p.params
    md, s2, ks = kw["max_displacement"], kw.get("stride2", 1), kw.get("kernel_size", 1)
    r = md // s2
    pad = kw.get("pad")
    sampler = SpatialCorrelationSampler(kernel_size=ks, patch_size=2 * r + 1,
                                        stride=kw.get("stride1", 1),
                                        padding=ks // 2 if pad is None else pad - r * s2,
                                        dilation_patch=s2)
    scale = 1.0 / (ks * ks * a.shape[-1])
    x = torch.as_tensor(a).permute(0, 3, 1, 2).contiguous().requires_grad_(p.op != "forward")
    y = torch.as_tensor(b).permute(0, 3, 1, 2).contiguous().requires_grad_(p.op != "forward")

    def volume():
        v = sampler(x, y)
        return (v.reshape(v.shape[0], -1, *v.shape[3:]) * scale).permute(0, 2, 3, 1)

    if p.op == "forward":
        def fn():
            with torch.no_grad():
                return volume()
        return fn, nothing
    w = None if g is None else torch.as_tensor(g)

    def fn():
        vol = volume()
        out = vol if w is not None else 0.5 * (vol**2).sum()
        ga, gb = torch.autograd.grad(out, (x, y), w)
        return out.detach(), ga.permute(0, 2, 3, 1), gb.permute(0, 2, 3, 1)
    return fn, nothing


IMPLS = {
    "fastcorr": Impl(_library(fastcorr)),
    "numpy": Impl(_library(reference), ("cpu",)),
    "torch": Impl(_torch(False), needs="torch"),
    "torch.compile": Impl(_torch(True), needs="torch"),
    "spatial-correlation-sampler": Impl(
        _sampler, ("cpu",), "spatial_correlation_sampler",
        "not installed: its C++ extension builds against one torch at install time"),
}
PEERS = [name for name in IMPLS if name != "fastcorr"]
