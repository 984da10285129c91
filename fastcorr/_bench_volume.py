"""The cost-volume benchmark, for `fastcorr bench-volume` and `bench/test_volume.py`.

Three operations on one layer (by default FlowNetC's correlation: batch 4, 48x64, 256
channels, max displacement 20, stride2 2, pad 20, 441 output channels, float32):
- "forward": the volume;
- "forward+backward": the volume, then the gradients of sum(g * volume) for a given g (what
  a training step asks of the layer);
- "loss_and_grad": 0.5*||volume||**2 and its gradients.

Implementations: fastcorr, the NumPy reference, and PyTorch's autograd of the plain
formulation (a stack of shifted products, as a user writes it), eager and under
`torch.compile`; spatial-correlation-sampler where it is installed. Each result is checked
against fastcorr's before it is timed. `torch_volume` is also the autograd oracle of the tests.
"""

import importlib.util
import time

import numpy as np

import fastcorr

from ._bench import check, host, times

OPS = ("forward", "forward+backward", "loss_and_grad")
SHAPE = (4, 48, 64, 256)
PARAMS = dict(max_displacement=20, stride2=2, pad=20)
QUICK_SHAPE = (2, 24, 32, 64)
QUICK_PARAMS = dict(max_displacement=4, stride2=1, pad=4)
# the CI smoke run: every implementation once, torch.compile's graphs small
TINY_SHAPE = (1, 8, 8, 4)
TINY_PARAMS = dict(max_displacement=1, stride2=1, pad=1)


def displacements(max_displacement, stride2=1, direction="2d"):
    """(dys, dxs) of the volume's channels, as CorrelationCost lays them out."""
    if isinstance(max_displacement, tuple):
        lo, hi = max_displacement
        reach, ds = max(-lo, hi, 0), list(range(lo, hi + 1, stride2))
    else:
        r = max_displacement // stride2
        reach, ds = max_displacement, [k * stride2 for k in range(-r, r + 1)]
    return reach, (ds if direction == "2d" else [0]), ds


def torch_volume(a, b, max_displacement, kernel_size=1, stride1=1, stride2=1, pad=None,
                 direction="2d", normalize=True):
    """The cost volume in plain PyTorch, NHWC: padded inputs, one strided slice product per
    displacement and window offset, stacked; autograd differentiates it."""
    import torch

    N, H, W, C = a.shape
    kr = kernel_size // 2
    reach, dys, dxs = displacements(max_displacement, stride2, direction)
    border = reach + kr
    pad = border if pad is None else pad
    py, by = (pad, border) if direction == "2d" else (0, kr)
    px, bx = pad, border
    Ho = -(-(H + 2 * py - 2 * by) // stride1)
    Wo = -(-(W + 2 * px - 2 * bx) // stride1)
    ap = torch.nn.functional.pad(a, (0, 0, px, px, py, py))
    bp = torch.nn.functional.pad(b, (0, 0, px, px, py, py))
    span_y, span_x = stride1 * (Ho - 1) + 1, stride1 * (Wo - 1) + 1
    vols = []
    for dy in dys:
        for dx in dxs:
            v = 0
            for j in range(-kr, kr + 1):
                for i in range(-kr, kr + 1):
                    y0, x0 = by + j, bx + i
                    pa = ap[:, y0:y0 + span_y:stride1, x0:x0 + span_x:stride1]
                    pb = bp[:, y0 + dy:y0 + dy + span_y:stride1,
                            x0 + dx:x0 + dx + span_x:stride1]
                    v = v + (pa * pb).sum(-1)
            vols.append(v)
    out = torch.stack(vols, -1)
    return out / (kernel_size**2 * C) if normalize else out


class Problem:
    def __init__(self, op, shape, params, dtype=np.float32, backend="cpu"):
        self.op, self.shape, self.params = op, tuple(shape), dict(params)
        self.dtype, self.backend = np.dtype(dtype), backend

    def inputs(self, seed=0):
        rng = np.random.default_rng(seed)
        a = rng.standard_normal(self.shape, np.float32).astype(self.dtype)
        b = rng.standard_normal(self.shape, np.float32).astype(self.dtype)
        g = None
        if self.op == "forward+backward":
            vol = fastcorr.correlation_volume(a[:, :, :, :1], b[:, :, :, :1], **self.params)
            g = rng.standard_normal(vol.shape, np.float32).astype(self.dtype)
        return a, b, g

    def volume_bytes(self):
        vol = fastcorr.correlation_volume(np.zeros(self.shape[:3] + (1,), self.dtype),
                                          np.zeros(self.shape[:3] + (1,), self.dtype),
                                          **self.params)
        return vol.size * self.dtype.itemsize


# --------------------------------------------------------------------------- implementations
# make(problem, a, b, g) -> fn: fn() runs one call and returns its results, finished (on a
# GPU, synchronised).


def _fastcorr(p, a, b, g):
    if p.backend == "cuda":
        from ._bench import _cuda_sync, _to_gpu_arrays

        a, b, g = _to_gpu_arrays(a, b, *(() if g is None else (g,))) + [None] * (g is None)
        fn = _fastcorr_calls(p, a, b, g)

        def synced():
            out = fn()
            _cuda_sync()
            return out
        return synced
    return _fastcorr_calls(p, a, b, g)


def _fastcorr_calls(p, a, b, g):
    kw = p.params
    if p.op == "forward":
        out = fastcorr.correlation_volume(a, b, **kw)
        return lambda: fastcorr.correlation_volume(a, b, out=out, **kw)
    if p.op == "forward+backward":
        def fn():
            vol = fastcorr.correlation_volume(a, b, **kw)
            return (vol, *fastcorr.correlation_volume_vjp(a, b, g, **kw))
        return fn
    return lambda: fastcorr.correlation_volume_loss_and_grad(a, b, **kw)


def _numpy(p, a, b, g):
    from . import reference

    kw = p.params
    if p.op == "forward":
        return lambda: reference.correlation_volume(a, b, **kw)
    if p.op == "forward+backward":
        def fn():
            vol = reference.correlation_volume(a, b, **kw)
            return (vol, *reference.correlation_volume_vjp(a, b, g, **kw))
        return fn
    return lambda: reference.correlation_volume_loss_and_grad(a, b, **kw)


def _torch(compile_):
    def make(p, a, b, g):
        import torch

        f = lambda x, y: torch_volume(x, y, **p.params)  # noqa: E731
        if p.op == "loss_and_grad":
            f = (lambda vol: lambda x, y: 0.5 * (vol(x, y) ** 2).sum())(f)
        if compile_:
            f = torch.compile(f)
        dev = "cuda" if p.backend == "cuda" else "cpu"
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        x, y = torch.as_tensor(a, device=dev), torch.as_tensor(b, device=dev)
        if p.op == "forward":
            def fn():
                with torch.no_grad():
                    out = f(x, y)
                sync()
                return out
            return fn
        x.requires_grad_(True)
        y.requires_grad_(True)
        w = None if g is None else torch.as_tensor(g, device=dev)

        def fn():
            out = f(x, y)
            ga, gb = torch.autograd.grad(out, (x, y), w)
            sync()
            return out.detach(), ga, gb
        return fn
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
        return fn
    w = None if g is None else torch.as_tensor(g)

    def fn():
        vol = volume()
        out = vol if w is not None else 0.5 * (vol**2).sum()
        ga, gb = torch.autograd.grad(out, (x, y), w)
        return out.detach(), ga.permute(0, 2, 3, 1), gb.permute(0, 2, 3, 1)
    return fn


IMPLS = {
    "fastcorr": (_fastcorr, None),
    "numpy": (_numpy, None),
    "torch": (_torch(False), "torch"),
    "torch.compile": (_torch(True), "torch"),
    "spatial-correlation-sampler": (_sampler, "spatial_correlation_sampler"),
}
PEERS = [name for name in IMPLS if name != "fastcorr"]


def unavailable(name, backend="cpu"):
    module = IMPLS[name][1]
    if backend == "cuda" and name in ("numpy", "spatial-correlation-sampler"):
        return "a CPU implementation (on the CPU this bench times it)"
    if module and importlib.util.find_spec(module) is None:
        if module == "spatial_correlation_sampler":
            return "not installed: its C++ extension builds against one torch at install time"
        return f"{module} is not installed"
    if backend == "cuda" and module == "torch":
        import torch

        if not torch.cuda.is_available():
            return "torch has no CUDA here"
    return None


def run(problem, names, repeats=5, budget=60.0, progress=None):
    """Rows of {name, op, first, times} (or {name, op, skipped}), fastcorr first, each peer's
    results checked against fastcorr's."""
    data = problem.inputs()
    rows, want = [], None
    for name in ["fastcorr"] + [n for n in names if n != "fastcorr"]:
        why = unavailable(name, problem.backend)
        if why:
            rows.append(dict(name=name, op=problem.op, skipped=why))
            continue
        if progress:
            progress(f"{problem.op}: {name}")
        fn = IMPLS[name][0](problem, *data)
        t = time.perf_counter()
        got = fn()
        first = time.perf_counter() - t
        if want is None:
            want = got
        else:
            check(problem, _as_tuple(got), _as_tuple(want))
        rows.append(dict(name=name, op=problem.op, first=first,
                         times=times(fn, lambda: None, repeats, budget)))
    return rows


def _as_tuple(x):
    if isinstance(x, tuple):
        return tuple(host(v) for v in x)
    return (host(x),)
