"""The cost volume: the displacement correlation of FlowNet, DispNet and PWC-Net, NHWC.

    out[n, y, x, k] = scale * sum over the window (j, i) and channels c of
                      a[n, cy + j, cx + i, c] * b[n, cy + j + dy_k, cx + i + dx_k, c]

with (cy, cx) = (oy0 + y*stride1, ox0 + x*stride1) the window centre in the unpadded input,
reads outside the input taken as zeros, and scale = 1/(kernel_size**2 * C) when normalising.
Sizes, borders and padding follow Caffe's correlation layer and TensorFlow Addons'
CorrelationCost; `Geometry` turns the parameters into the few integers the kernels take.

`_VolumeCall` checks one public call the way `_api._Call` does (the same messages, the same
dtype rules) and dispatches it: "reference" to `fastcorr.reference`, "cpu" to
`_kernels.volume_cpu`, "cuda" to `_kernels.volume_cuda` through `_device`.
"""

import math
import operator

import numpy as np

from . import reference
from ._api import _kernels
from ._validate import (
    BACKENDS,
    NO_REDUCTION,
    REDUCTIONS,
    as_host_array,
    broadcast_shapes,
    check_choice,
    check_grad_out,
    check_out,
    check_real,
    is_dask_array,
    is_device_array,
    resolve_dtypes,
)

DIRECTIONS = ("2d", "x")


# The parameters are int32 attributes in CorrelationCost; the bound also keeps every index
# the kernels compute from them inside int64.
_INT_MAX = (1 << 31) - 1


def _int(func, name, value, least):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be an int, not {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{func}: {name} must be an int, not {value!r}") from None
    if value < least:
        raise ValueError(f"{func}: {name} must be at least {least}; got {value}")
    if value > _INT_MAX:
        raise ValueError(f"{func}: {name} must be at most {_INT_MAX}; got {value}")
    return value


def _inside(d0, step, n, size):
    """[lo, hi): the k in [0, n) with |d0 + k*step| < size, displacements that can meet the
    image."""
    lo = min(n, max(0, (-size - d0) // step + 1))
    return lo, max(lo, min(n, -((d0 - size) // step)))


def _meeting(size, kr, o0, s1, n):
    """[lo, hi): the outputs, centred on o0 + o*s1, whose window of radius kr meets
    [0, size)."""
    lo = min(n, max(0, -((o0 + kr) // s1)))  # the first with o0 + o*s1 + kr >= 0
    hi = min(n, (size - 1 + kr - o0) // s1 + 1) if size else lo
    return lo, max(lo, hi)


class Geometry:
    """The output shape and the kernels' int64 parameters for inputs of shape (N, H, W, C).

    params: Ho, Wo, oy0, ox0, stride1, kernel radius, dy0, ny, dx0, nx, stride2: output (oy,
    ox) is centred on input pixel (oy0 + oy*stride1, ox0 + ox*stride1) and displacement k is
    (dy0 + (k // nx)*stride2, dx0 + (k % nx)*stride2)."""

    __slots__ = ("out_shape", "params", "scale", "split", "crop", "kparams", "active_shape")

    def cropped(self, x):
        """The part of a volume-shaped array that the kernels compute (a view)."""
        return x if self.crop is None else x.reshape(self.split)[self.crop]

    def __init__(self, func, shape, max_displacement, kernel_size, stride1, stride2, pad,
                 direction, normalize):
        if len(shape) != 4:
            raise ValueError(f"{func}: a and b must be 4-D NHWC arrays (batch, height, width, "
                             f"channels); got shape {shape}")
        ks = _int(func, "kernel_size", kernel_size, 1)
        if ks % 2 == 0:
            raise ValueError(f"{func}: kernel_size must be odd (the window is centred); "
                             f"got {ks}")
        s1 = _int(func, "stride1", stride1, 1)
        s2 = _int(func, "stride2", stride2, 1)
        check_choice(func, "direction", direction, DIRECTIONS)
        if normalize not in (True, False):
            raise TypeError(f"{func}: normalize must be True or False, not {normalize!r}")
        if isinstance(max_displacement, (tuple, list)):
            if len(max_displacement) != 2:
                raise ValueError(f"{func}: max_displacement must be an int or a (lo, hi) pair; "
                                 f"got {max_displacement!r}")
            lo = _int(func, "max_displacement[0]", max_displacement[0], -_INT_MAX)
            hi = _int(func, "max_displacement[1]", max_displacement[1], lo)
            reach = max(-lo, hi, 0)
        else:
            reach = _int(func, "max_displacement", max_displacement, 0)
            r = reach // s2  # CorrelationCost's grid: whole steps of stride2 either way
            lo, hi = -r * s2, r * s2
        n = (hi - lo) // s2 + 1
        kr = ks // 2
        border = reach + kr
        pad = border if pad is None else _int(func, "pad", pad, 0)
        if direction == "2d":
            pads, borders, (dy0, ny) = (pad, pad), (border, border), (lo, n)
        else:  # stereo: displacements, padding and border along x only
            pads, borders, (dy0, ny) = (0, pad), (kr, border), (0, 1)
        N, H, W, C = shape
        Ho, Wo = (-(-(size + 2 * p - 2 * q) // s1) for size, p, q in zip((H, W), pads, borders))
        if Ho < 1 or Wo < 1:
            raise ValueError(
                f"{func}: the window and displacements need {borders[0]} pixels of border in "
                f"height and {borders[1]} in width; an input of height {H} and width {W} "
                f"padded by {pads[0]} and {pads[1]} leaves no output (raise pad or lower "
                "max_displacement or kernel_size)")
        self.out_shape = (N, Ho, Wo, ny * n)
        if math.prod(self.out_shape) >= 1 << 62:
            raise ValueError(f"{func}: the volume would have shape {self.out_shape}, more "
                             "elements than an array can index")
        oy0, ox0 = borders[0] - pads[0], borders[1] - pads[1]
        self.params = np.array([Ho, Wo, oy0, ox0, s1, kr, dy0, ny, lo, n, s2], np.int64)
        # Outputs whose window reads only padding, and displacements that leave the image
        # whatever the pixel, give zeros. The kernels compute the box of the rest (kparams),
        # which is as large as the input whatever the padding and the displacement range; the
        # zeros are written only where a volume is returned.
        box = (_meeting(H, kr, oy0, s1, Ho), _meeting(W, kr, ox0, s1, Wo),
               _inside(dy0, s2, ny, H), _inside(lo, s2, n, W))
        (y0, y1), (x0, x1), (ky0, ky1), (kx0, kx1) = box
        self.split = (N, Ho, Wo, ny, n)  # the volume with its displacements as (dy, dx)
        self.crop = None
        if box != ((0, Ho), (0, Wo), (0, ny), (0, n)):
            self.crop = (slice(None),) + tuple(slice(*r) for r in box)
        self.kparams = np.array([y1 - y0, x1 - x0, oy0 + y0 * s1, ox0 + x0 * s1, s1, kr,
                                 dy0 + ky0 * s2, ky1 - ky0, lo + kx0 * s2, kx1 - kx0, s2],
                                np.int64)
        self.active_shape = (N, y1 - y0, x1 - x0, (ky1 - ky0) * (kx1 - kx0))
        norm = ks * ks * C
        self.scale = 1.0 / norm if normalize and norm else 1.0


class _VolumeCall:
    """The checked arguments of one public cost-volume call."""

    def __init__(self, func, a, b, backend, params, reduction=NO_REDUCTION):
        check_choice(func, "backend", backend, BACKENDS)
        if reduction is not NO_REDUCTION:
            check_choice(func, "reduction", reduction, REDUCTIONS)
        if is_dask_array(a) or is_dask_array(b):
            raise TypeError(f"{func}: Dask arrays are not supported here yet; apply it to "
                            "each block with dask.array.map_overlap, or compute the inputs")
        dev_a, dev_b = is_device_array(a), is_device_array(b)
        if dev_a != dev_b:
            raise TypeError(f"{func}: {'a' if dev_a else 'b'} is a CUDA device array and the "
                            "other input a host array; move both to the same device")
        if dev_a:
            backend = "cuda" if backend == "auto" else backend
            if backend != "cuda":
                raise TypeError(f"{func}: the inputs are CUDA device arrays; backend="
                                f"{backend!r} computes on the host (use 'cuda' or 'auto')")
            from ._device import Buf

            shapes = Buf.of(a), Buf.of(b)
            for name, x in zip("ab", shapes):
                check_real(func, name, x.dtype)
        else:
            backend = "cpu" if backend == "auto" else backend
            a, b = as_host_array(a, "a", func), as_host_array(b, "b", func)
            shapes = a, b
        if backend == "cuda":
            _kernels("cuda", func)
        if shapes[0].shape != shapes[1].shape:
            raise ValueError(f"{func}: a has shape {tuple(shapes[0].shape)} and b "
                             f"{tuple(shapes[1].shape)}; the cost volume takes two arrays of "
                             "the same shape")
        self.func, self.backend, self.params = func, backend, params
        self.dtype, self.result = resolve_dtypes(func, shapes[0].dtype, shapes[1].dtype)
        self.shape = tuple(shapes[0].shape)
        self.geo = Geometry(func, self.shape, **params)
        self.layout = None
        if backend == "cuda":
            from . import _device

            host = not dev_a
            if host:
                a, b = _device.to_device(a), _device.to_device(b)
            self.device = _device.DeviceCall(self, a, b, host=host)
        else:
            self.device = None
            self.a = np.ascontiguousarray(a, self.dtype)
            self.b = np.ascontiguousarray(b, self.dtype)

    # --- host helpers

    def _target(self, out, shape, name="out", reads=()):
        """(array the kernel writes, array returned): out itself where the kernel can write
        it (and it shares no memory with what the kernels read: a, b, `reads`), else a
        scratch array copied into out (or cast) at the end."""
        if out is not None:
            check_out(self.func, out, shape, self.result, name)
            if out.dtype == self.dtype and out.flags.c_contiguous and not any(
                    np.may_share_memory(out, x) for x in (self.a, self.b, *reads)):
                return out, out
        return None, out

    def _finish(self, work, out):
        if out is None:
            return work if work.dtype == self.result else work.astype(self.result)
        if work is not out:
            np.copyto(out, work, casting="unsafe")
        return out

    def _grad_targets(self, out, reads=()):
        outs = check_grad_out(self.func, out, (self.shape, self.shape), self.result)
        targets = []
        for o, name in zip(outs, ("out[0] (grad_a)", "out[1] (grad_b)")):
            work, o = self._target(o, self.shape, name, reads)
            targets.append((np.empty(self.shape, self.dtype) if work is None else work, o))
        return targets

    def _grad_input(self, grad):
        """(grad broadcast to the volume's shape in the compute dtype, a view, and the array
        it views)."""
        grad = as_host_array(grad, "grad", self.func)
        shape = self.geo.out_shape
        try:
            fits = broadcast_shapes(grad.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"{self.func}: grad has shape {grad.shape}; expected the volume's "
                             f"shape {shape} or one that broadcasts to it")
        return np.broadcast_to(grad.astype(self.dtype, copy=False), shape), grad

    def _loss_value(self, total, reduction, count):
        if reduction == "mean":
            total = total / count if count else np.nan
        return self.result.type(total)

    def _volume(self, work=None):
        """The volume in the compute dtype, into `work` (C-ordered) where given."""
        geo = self.geo
        if self.backend == "reference":
            vol = reference.correlation_volume(self.a, self.b, **self.params)
            if work is None:
                return vol
            work[...] = vol
            return work
        if work is None:  # zeros from the allocator cost nothing until written
            work = (np.zeros if geo.crop else np.empty)(geo.out_shape, self.dtype)
        elif geo.crop:
            work[...] = 0
        sub = work if geo.crop is None else np.empty(geo.active_shape, self.dtype)
        _volume_kernels().forward(self.a, self.b, sub, geo.kparams, geo.scale)
        if geo.crop:
            part = geo.cropped(work)
            part[...] = sub.reshape(part.shape)
        return work

    # --- the four operations

    @property
    def _host_input(self):
        """Whether NumPy input goes to the GPU (backend="cuda"): then a NumPy `out` is checked
        here, the device path returns new host arrays, and `_into` copies them into out."""
        return self.device.host

    def _into(self, result, out):
        if out is None:
            return result
        if isinstance(result, tuple):  # (grad_a, grad_b) or (loss, grad_a, grad_b)
            head = result[:-2]
            return head + tuple(self._into(r, o) for r, o in zip(result[-2:], out))
        np.copyto(out, result, casting="unsafe")
        return out

    def forward(self, out):
        if self.device is not None:
            from . import _device

            if self._host_input:
                if out is not None:
                    check_out(self.func, out, self.geo.out_shape, self.result)
                return self._into(_device.volume(self, None), out)
            return _device.volume(self, out)
        work, out = self._target(out, self.geo.out_shape)
        return self._finish(self._volume(work), out)

    def vjp(self, grad, out):
        if self.device is not None:
            from . import _device

            if self._host_input:
                check_grad_out(self.func, out, (self.shape, self.shape), self.result)
                return self._into(_device.volume_vjp(self, grad, None), out)
            return _device.volume_vjp(self, grad, out)
        g, given = self._grad_input(grad)
        (wa, oa), (wb, ob) = self._grad_targets(out, (given,))
        self._vjp_into(g, wa, wb)
        return self._finish(wa, oa), self._finish(wb, ob)

    def _vjp_into(self, g, wa, wb, weight=1.0):
        """wa, wb <- the gradients of sum(g * volume), g of the volume's shape (a broadcast
        view is read in place); g None: of weight*0.5*||volume||**2, whose unweighted sum is
        returned."""
        geo = self.geo
        if self.backend == "reference":
            wa[...], wb[...] = reference.correlation_volume_vjp(self.a, self.b, g,
                                                                **self.params)
            return None
        if g is not None:  # the upstream gradient of the outputs the kernels compute
            g = np.ascontiguousarray(geo.cropped(g)).reshape(geo.active_shape)
        return _volume_kernels().vjp(self.a, self.b, g, wa, wb, geo.kparams, geo.scale,
                                     weight)

    def loss(self, reduction, want_grads, out=None):
        if self.device is not None:
            from . import _device

            if self._host_input:
                check_grad_out(self.func, out, (self.shape, self.shape), self.result)
                return self._into(_device.volume_loss(self, reduction, want_grads, None), out)
            return _device.volume_loss(self, reduction, want_grads, out)
        count = math.prod(self.geo.out_shape)
        if self.backend == "reference":
            if not want_grads:
                return self.result.type(reference.correlation_volume_loss(
                    self.a, self.b, **self.params, reduction=reduction))
            loss, ga, gb = reference.correlation_volume_loss_and_grad(
                self.a, self.b, **self.params, reduction=reduction)
            (wa, oa), (wb, ob) = self._grad_targets(out)
            wa[...], wb[...] = ga, gb
            return loss.astype(self.result), self._finish(wa, oa), self._finish(wb, ob)
        if reduction == "none":
            vol = self._volume()  # in the compute dtype, for the gradients too
            loss = (0.5 * vol * vol).astype(self.result, copy=False)
            if not want_grads:
                return loss
            (wa, oa), (wb, ob) = self._grad_targets(out)
            self._vjp_into(vol, wa, wb)
            return loss, self._finish(wa, oa), self._finish(wb, ob)
        if not want_grads:
            total = _volume_kernels().energy(self.a, self.b, self.geo.kparams, self.geo.scale)
            return self._loss_value(total, reduction, count)
        (wa, oa), (wb, ob) = self._grad_targets(out)
        weight = 1.0 / count if reduction == "mean" and count else 1.0
        total = self._vjp_into(None, wa, wb, weight)
        return self._loss_value(total, reduction, count), self._finish(wa, oa), \
            self._finish(wb, ob)


def _volume_kernels():
    from ._kernels import volume_cpu

    return volume_cpu


def _params(max_displacement, kernel_size, stride1, stride2, pad, direction, normalize):
    return dict(max_displacement=max_displacement, kernel_size=kernel_size, stride1=stride1,
                stride2=stride2, pad=pad, direction=direction, normalize=normalize)


# --------------------------------------------------------------------------- public functions


def correlation_volume(a, b, *, max_displacement, kernel_size=1, stride1=1, stride2=1, pad=None,
                       direction="2d", normalize=True, out=None, backend="auto"):
    """The cost volume of two NHWC arrays: for each output pixel, the correlation of a window
    of `a` with the same window of `b` displaced by each of a grid of displacements.

    Returns an (N, Ho, Wo, D) array, displacement channels last, dy the slow index:
    out[n, y, x, k] = scale * sum over the kernel window (j, i) and channels c of
    a[n, cy + j, cx + i, c] * b[n, cy + j + dy_k, cx + i + dx_k, c], reads outside the image
    zero, scale = 1 / (kernel_size**2 * C) if normalize else 1.

    max_displacement: int r (displacements -r..r in steps of stride2, as CorrelationCost,
        whose grid has r // stride2 steps either way), or a (lo, hi) pair of displacements:
        lo, lo + stride2, ... up to hi, for a one-sided range such as stereo disparities.
    kernel_size: odd window size; stride1: step between output pixels; stride2: step between
        displacements.
    pad: zero padding on each side (default: the border, max displacement + kernel_size // 2,
        which gives ceil(H / stride1) x ceil(W / stride1) outputs). Output size, as in
        CorrelationCost: Ho = ceil((H + 2*pad - 2*border) / stride1), each output centred on
        input pixel border - pad + y*stride1.
    direction: "2d" (optical flow: D = n**2 displacements) or "x" (stereo: displacements,
        padding and border along x only, D = n; the height keeps a border of the kernel radius
        and no padding).
    """
    params = _params(max_displacement, kernel_size, stride1, stride2, pad, direction, normalize)
    return _VolumeCall("correlation_volume", a, b, backend, params).forward(out)


def correlation_volume_vjp(a, b, grad, *, max_displacement, kernel_size=1, stride1=1,
                           stride2=1, pad=None, direction="2d", normalize=True, out=None,
                           backend="auto"):
    """(grad_a, grad_b): the gradients of sum(grad * correlation_volume(a, b, ...)), grad of
    the volume's shape (or broadcasting to it). Both are gathers: no atomics, no races."""
    params = _params(max_displacement, kernel_size, stride1, stride2, pad, direction, normalize)
    return _VolumeCall("correlation_volume_vjp", a, b, backend, params).vjp(grad, out)


def correlation_volume_loss(a, b, *, max_displacement, kernel_size=1, stride1=1, stride2=1,
                            pad=None, direction="2d", normalize=True, reduction="sum",
                            backend="auto"):
    """0.5 * ||correlation_volume(a, b, ...)||**2, summed ("sum"), averaged over the volume's
    elements ("mean"), or per element ("none"). "sum" and "mean" never store the volume."""
    params = _params(max_displacement, kernel_size, stride1, stride2, pad, direction, normalize)
    call = _VolumeCall("correlation_volume_loss", a, b, backend, params, reduction)
    return call.loss(reduction, want_grads=False)


def correlation_volume_loss_and_grad(a, b, *, max_displacement, kernel_size=1, stride1=1,
                                     stride2=1, pad=None, direction="2d", normalize=True,
                                     reduction="sum", out=None, backend="auto"):
    """(loss, grad_a, grad_b) of correlation_volume_loss, fused: for "sum" and "mean" the
    volume is computed where the gradients need it and never stored, so the memory is that of
    the inputs and the gradients only; it costs about one more forward pass of compute."""
    params = _params(max_displacement, kernel_size, stride1, stride2, pad, direction, normalize)
    call = _VolumeCall("correlation_volume_loss_and_grad", a, b, backend, params, reduction)
    return call.loss(reduction, want_grads=True, out=out)
