"""The public functions on CUDA: device arrays of any library read in place, results handed
back as arrays of that library. Imported only when CUDA is in use.

Inputs are described by their `__cuda_array_interface__` (pointer, shape, byte strides,
dtype). The axis and broadcast arithmetic of `_api._Layout` is done on a *shadow*: a NumPy
view with the same shape and strides over a one-element buffer, which is never read. Whatever
NumPy can express as a view of the input (broadcasting, transposing, merging axes) becomes a
strided Numba view of the same device memory; the rest (axes that cannot be merged, a dtype to
convert) is copied once on the device by `transfer`, which also sums the gradients of broadcast
inputs back to their shapes, casts results, and writes into `out`.

Results are allocated by the inputs' own library (CuPy, PyTorch, or Numba for Numba device
arrays and anything else with the interface), and kernels run on that library's current
stream, so a call queues work like any other operation of the library and does not
synchronise; the loss is a 0-d array of that library. NumPy input with backend="cuda" is
uploaded, computed the same way, and copied back.
"""

import math

import numpy as np
from numba import cuda
from numba.core import config

from ._kernels import cuda as kernels
from ._validate import check_grad_out, check_out, check_real

_SIMULATOR = bool(config.ENABLE_CUDASIM)
_F64 = np.dtype(np.float64)


# --------------------------------------------------------------------------- device memory


class Buf:
    """A strided view of device memory: what the CUDA array interface says about an array."""

    __slots__ = ("ptr", "shape", "strides", "dtype", "readonly", "owner")

    def __init__(self, ptr, shape, strides, dtype, readonly, owner):
        self.ptr, self.shape, self.strides = ptr, tuple(shape), tuple(strides)
        self.dtype, self.readonly, self.owner = dtype, readonly, owner

    @classmethod
    def of(cls, x):
        """The Buf of a device array; x is kept alive by every view made from it."""
        desc = _interface(x)
        dtype = np.dtype(desc["typestr"])
        shape = tuple(desc["shape"])
        strides = desc.get("strides") or _c_strides(shape, dtype.itemsize)
        if desc.get("mask") is not None:
            raise TypeError("masked CUDA arrays are not supported")
        ptr, readonly = desc["data"]
        return cls(ptr, shape, strides, dtype, readonly, x)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def shadow(self):
        """A NumPy array of this shape and strides whose data must never be read."""
        base = np.empty(1, self.dtype)
        return np.lib.stride_tricks.as_strided(base, self.shape, self.strides), base

    def view(self, shadow, base):
        """The Buf that `shadow` (a view derived from self.shadow()) describes."""
        offset = shadow.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        return Buf(self.ptr + offset, shadow.shape, shadow.strides, self.dtype, self.readonly,
                   self.owner)

    def reshape(self, shape):
        shadow, base = self.shadow()
        return self.view(shadow.reshape(shape, copy=False), base)

    def numba(self):
        """A Numba device array over the same memory, for a kernel to take."""
        desc = {"shape": self.shape, "strides": self.strides, "typestr": self.dtype.str,
                "data": (self.ptr, self.readonly), "version": 3}
        if _SIMULATOR:  # simulated device memory is host memory
            from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

            return FakeCUDAArray(np.asarray(_HostView(desc, self.owner)))
        return cuda.from_cuda_array_interface(desc, owner=self.owner, sync=False)

    def span(self):
        """(flat 1-D Buf over every byte this view can touch, index of element 0 in it,
        strides in elements)."""
        item = self.dtype.itemsize
        if any(s % item for s in self.strides):
            raise ValueError("CUDA arrays with strides that are not a multiple of the item "
                             "size are not supported")
        steps = [s // item for s in self.strides]
        lo = sum((n - 1) * s for n, s in zip(self.shape, steps) if s < 0)
        hi = sum((n - 1) * s for n, s in zip(self.shape, steps) if s > 0)
        flat = Buf(self.ptr + lo * item, (hi - lo + 1,), (item,), self.dtype, self.readonly,
                   self.owner)
        return flat, -lo, steps

    def bounds(self):
        flat, _, _ = self.span()
        return flat.ptr, flat.ptr + flat.shape[0] * self.dtype.itemsize


class _HostView:
    """An object NumPy can view through `__array_interface__` (the simulator's memory)."""

    def __init__(self, desc, owner):
        self.__array_interface__ = desc
        self.owner = owner


def _interface(x):
    if _SIMULATOR and not hasattr(x, "__cuda_array_interface__"):
        return x._ary.__array_interface__  # a simulated Numba device array
    if type(x).__module__.partition(".")[0] == "torch":
        x = x.detach()  # a tensor that requires grad refuses the interface
    return x.__cuda_array_interface__


def _c_strides(shape, itemsize):
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _overlap(x, y):
    (x0, x1), (y0, y1) = x.bounds(), y.bounds()
    return x0 < y1 and y0 < x1


# --------------------------------------------------------------------------- array libraries


def _stream(ptr):
    return cuda.external_stream(ptr) if ptr else cuda.default_stream()


class _Numba:
    """Numba device arrays, and any other array with the CUDA array interface."""

    def __init__(self, x):
        self.stream = cuda.default_stream()

    def empty(self, shape, dtype):
        return cuda.device_array(shape, dtype, stream=self.stream)

    def zeros(self, shape, dtype):
        return cuda.to_device(np.zeros(shape, dtype), stream=self.stream)


class _Cupy:
    def __init__(self, x):
        import cupy

        self.xp, self.device = cupy, x.device
        self.stream = _stream(cupy.cuda.get_current_stream().ptr)

    def empty(self, shape, dtype):
        with self.device:
            return self.xp.empty(shape, dtype)

    def zeros(self, shape, dtype):
        with self.device:
            return self.xp.zeros(shape, dtype)


class _Torch:
    def __init__(self, x):
        import torch

        self.torch, self.device = torch, x.device
        self.stream = _stream(torch.cuda.current_stream(x.device).cuda_stream)

    def _dtype(self, dtype):
        return getattr(self.torch, np.dtype(dtype).name)

    def empty(self, shape, dtype):
        return self.torch.empty(shape, dtype=self._dtype(dtype), device=self.device)

    def zeros(self, shape, dtype):
        return self.torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)


def library(x):
    """The array library of x, which allocates the results and whose stream runs the work."""
    top = type(x).__module__.partition(".")[0]
    return {"cupy": _Cupy, "torch": _Torch}.get(top, _Numba)(x)


def to_device(x):
    """A NumPy array (native byte order) uploaded as a Numba device array, 0-d ones too."""
    return cuda.to_device(x if x.flags.c_contiguous else x.copy())


# --------------------------------------------------------------------------- one call


class DeviceCall:
    """The device side of one public call: its operands as kernel views, its outputs.

    call: the checked `_api._Call` (layout, dtypes, function name); a, b: the device arrays;
    host: True for NumPy input with backend="cuda" (results are copied back)."""

    def __init__(self, call, a, b, host):
        self.call, self.layout, self.host = call, call.layout, host
        self.lib = library(a)
        self.stream = self.lib.stream
        self.a, self.b = Buf.of(a), Buf.of(b)
        self.kernels = kernels

    # --- inputs

    def operand(self, buf):
        """buf as the (P, R, Q) Numba array of the compute dtype: a view where one exists."""
        lay, dtype = self.layout, self.call.dtype
        shadow, base = buf.shadow()
        nd = lay.nd(shadow)
        if buf.dtype == dtype:
            try:
                return buf.view(nd.reshape(lay.prq, copy=False), base).numba()
            except ValueError:  # the axes cannot be merged in place
                pass
        copy = self.lib.empty(nd.shape, dtype)
        self.transfer(buf.view(nd, base), Buf.of(copy))
        return Buf.of(copy).reshape(lay.prq).numba()

    def operands(self):
        return self.operand(self.a), self.operand(self.b)

    def grad_input(self, g):
        """The upstream gradient of correlation_vjp as a (P, Q) float64 Numba array."""
        lay = self.layout
        buf = Buf.of(g)
        target = lay.grad_target(self.call.func, buf.shape)
        check_real(self.call.func, "grad", buf.dtype)
        shadow, base = buf.shadow()
        shadow = np.broadcast_to(shadow, target)
        g2 = self.lib.empty(target, _F64)
        self.transfer(buf.view(shadow, base), Buf.of(g2))
        return Buf.of(g2).reshape((lay.prq[0], lay.prq[2])).numba()

    # --- the device copy kernel

    def transfer(self, src, dst, transform=0):
        """dst[...] = src, cast to dst's dtype; src axes of length > 1 where dst has length 1
        (or is missing in front) are summed: the gradient of a broadcast input."""
        if dst.size == 0:
            return
        nd = len(src.shape)
        pad = nd - len(dst.shape)
        dshape = (1,) * pad + dst.shape
        sflat, s0, sstr = src.span()
        dflat, d0, dstr = dst.span()
        dstr = [0] * pad + dstr
        summed = [i for i in range(nd) if dshape[i] == 1 and src.shape[i] != 1]
        rshape = tuple(src.shape[i] for i in summed) or (1,)
        rstr = tuple(sstr[i] for i in summed) or (0,)
        shape = tuple(1 if i in summed else src.shape[i] for i in range(nd)) or (1,)
        sstr, dstr = tuple(sstr) or (0,), tuple(dstr) or (0,)
        self.kernels.transfer(sflat.numba(), s0, dflat.numba(), d0, shape, sstr, dstr, rshape,
                              rstr, transform, self.stream)

    # --- outputs

    def out_buf(self, out, shape, name="out"):
        """A device `out` checked like a NumPy one, as a Buf."""
        if self.host:
            return None
        if not (hasattr(out, "__cuda_array_interface__") or getattr(out, "__cuda_ndarray__",
                                                                        False)):
            raise TypeError(f"{self.call.func}: {name} is a host array and the inputs are CUDA "
                            "device arrays; give a device array of the inputs' library")
        buf = Buf.of(out)
        check_out(self.call.func, buf, shape, self.call.result, name, host=False)
        if buf.readonly:
            raise ValueError(f"{self.call.func}: {name} is read-only")
        return buf

    def deliver(self, x, shape, out, transform=0):
        """x (a contiguous array of the lib) as `shape` in the result dtype, or written into
        out; on the host for NumPy input."""
        result = self.call.result
        if out is None and Buf.of(x).dtype == result and transform == 0:
            y = x.reshape(shape)  # Numba, CuPy and torch arrays alike
        else:
            y = out if out is not None else self.lib.empty(shape, result)
            self.transfer(Buf.of(x).reshape(shape), Buf.of(y), transform)
        return y.copy_to_host() if self.host else y

    def grad_output(self, g3, shape, out):
        """A (P, R, Q) gradient back in an input's shape, summed over its broadcast axes."""
        lay = self.layout
        if lay.perm is None and shape == lay.shape:
            return self.deliver(g3, shape, out)
        shadow, base = Buf.of(g3).shadow()
        nd = lay.nd_back(shadow)
        y = out if out is not None else self.lib.empty(shape, self.call.result)
        self.transfer(Buf.of(g3).view(nd, base), Buf.of(y))
        return y.copy_to_host() if self.host else y

    def direct(self, buf):
        """An out= array itself as the kernels' (P, R, Q) gradient, where its layout allows."""
        lay = self.layout
        if (buf.dtype != self.call.dtype or buf.shape != lay.shape
                or lay.perm is not None or buf.strides != _c_strides(buf.shape, buf.dtype.itemsize)
                or _overlap(buf, self.a) or _overlap(buf, self.b)):
            return None
        return buf.reshape(lay.prq).numba()

    def loss(self, total, divisor):
        y = self.lib.empty((), self.call.result)
        self.kernels.finish_loss(Buf.of(total).numba(), divisor, Buf.of(y).numba(), self.stream)
        return y.copy_to_host()[()] if self.host else y


# --------------------------------------------------------------------------- the functions


def correlation(call, dev, keepdims, out):
    lay = call.layout
    shape = lay.kept if keepdims else lay.reduced
    out_buf = dev.out_buf(out, shape) if out is not None else None
    P, R, Q = lay.prq
    target = dev.lib.zeros((P, Q), call.dtype) if lay.empty else dev.lib.empty((P, Q), call.dtype)
    if not lay.empty:
        kernels.correlation(*dev.operands(), Buf.of(target).numba(), dev.stream)
    return dev.deliver(target, shape, None if out_buf is None else out)


def _grads(call, dev, out, run):
    """Allocate or take the gradient outputs, run(a3, b3, ga3, gb3), deliver the gradients."""
    lay = call.layout
    outs = [None, None]
    if out is not None and not dev.host:
        check_grad_out(call.func, out, (dev.a.shape, dev.b.shape), call.result,
                       check=dev.out_buf, overlap=_overlap)
        outs = list(out)
    grads = []
    for x, o in zip((dev.a, dev.b), outs):
        direct = dev.direct(Buf.of(o)) if o is not None else None
        alloc = dev.lib.zeros if lay.empty else dev.lib.empty
        grads.append((direct, o, None if direct is not None else alloc(lay.prq, call.dtype)))
    if not lay.empty:
        a3, b3 = dev.operands()
        run(a3, b3, *[d if d is not None else Buf.of(t).numba() for d, _, t in grads])
    return tuple(o if d is not None else dev.grad_output(t, x.shape, o)
                 for (d, o, t), x in zip(grads, (dev.a, dev.b)))


def correlation_vjp(call, dev, grad, out):
    g2 = dev.grad_input(grad)
    return _grads(call, dev, out, lambda a3, b3, ga3, gb3:
                  kernels.correlation_vjp(a3, b3, g2, ga3, gb3, dev.stream))


def loss_and_grad(call, dev, op, reduction, out, want_grads):
    """The loss (0-d, or per position for reduction="none"), with the gradients if wanted."""
    lay = call.layout
    P, R, Q = lay.prq
    kernel = kernels.corr_loss_grad if op.startswith("corr_loss") else kernels.product_loss_grad
    pos = dev.lib.zeros((P, Q), _F64) if reduction == "none" else None
    total = dev.lib.zeros((1,), _F64)
    scale = call.scale(reduction)

    def run(a3, b3, ga3=None, gb3=None):
        kernel(a3, b3, scale, None if pos is None else Buf.of(pos).numba(), ga3, gb3,
               Buf.of(total).numba(), dev.stream)

    if want_grads:
        grads = _grads(call, dev, out, run)
    else:
        grads = ()
        if not lay.empty:
            run(*dev.operands())
    if reduction == "none":
        loss = dev.deliver(pos, lay.reduced, None, 1 if op.startswith("corr_loss") else 2)
    else:
        loss = dev.loss(total, lay.positions if reduction == "mean" else 1.0)
    return (loss, *grads) if want_grads else loss


# --------------------------------------------------------------------------- the cost volume
# `call` is a checked `_volume._VolumeCall`; the kernels read the inputs in place, whatever
# their strides, and results go through `deliver` (cast, out=, host copy) like the rest.


def _volume_kernels():
    from ._kernels import volume_cuda

    return volume_cuda


def _volume_operand(dev, buf, dtype):
    """buf as a Buf of the compute dtype: itself, or a contiguous copy."""
    if buf.dtype == dtype:
        return buf
    copy = dev.lib.empty(buf.shape, dtype)
    dev.transfer(buf, Buf.of(copy))
    return Buf.of(copy)


def _volume_grad_input(call, dev, grad):
    if dev.host:
        grad = to_device(np.asarray(grad))
    elif not (hasattr(grad, "__cuda_array_interface__") or getattr(grad, "__cuda_ndarray__",
                                                                    False)):
        raise TypeError(f"{call.func}: grad is a host array and the inputs are CUDA device "
                        "arrays; give a device array of the inputs' library")
    buf = Buf.of(grad)
    check_real(call.func, "grad", buf.dtype)
    shape = call.geo.out_shape
    try:
        shadow, base = buf.shadow()
        shadow = np.broadcast_to(shadow, shape)
    except ValueError:
        raise ValueError(f"{call.func}: grad has shape {buf.shape}; expected the volume's "
                         f"shape {shape} or one that broadcasts to it") from None
    return _active(call, dev, buf.view(shadow, base)).numba()


def _active(call, dev, buf):
    """The part of a volume-shaped Buf that the kernels compute, as an (N, Ho', Wo', D')
    Buf of the compute dtype: a view where one exists, else a contiguous copy."""
    geo = call.geo
    if geo.crop is None:
        return _volume_operand(dev, buf, call.dtype)
    shadow, base = buf.shadow()
    part = buf.view(geo.cropped(shadow), base)
    if part.dtype == call.dtype:
        try:
            return part.reshape(geo.active_shape)
        except ValueError:  # a sub-grid of the displacements: not one stride
            pass
    copy = dev.lib.empty(part.shape, call.dtype)
    dev.transfer(part, Buf.of(copy))
    return Buf.of(copy).reshape(geo.active_shape)


def _volume_grads(call, dev, g, out, weight=1.0):
    """Run the gradient kernel (g None: the fused loss) and deliver (grad_a, grad_b); returns
    them with the float64 loss total."""
    outs = (None, None)
    if out is not None and not dev.host:
        outs = check_grad_out(call.func, out, (call.shape, call.shape), call.result,
                              check=dev.out_buf, overlap=_overlap)
    ga, gb = (dev.lib.empty(call.shape, call.dtype) for _ in range(2))
    total = dev.lib.zeros((1,), _F64)
    if ga.size:
        a, b = (_volume_operand(dev, x, call.dtype).numba() for x in (dev.a, dev.b))
        _volume_kernels().vjp(a, b, g, Buf.of(ga).numba(), Buf.of(gb).numba(),
                              tuple(int(v) for v in call.geo.kparams), call.geo.scale, weight,
                              Buf.of(total).numba(), dev.stream)
    return (dev.deliver(ga, call.shape, outs[0]), dev.deliver(gb, call.shape, outs[1])), total


def _volume_forward(call, dev, store=True):
    """The volume as a contiguous array of the compute dtype (or None), and the loss total.
    The kernels compute the outputs whose window reads the image (geo.kparams); the rest
    are zeros."""
    geo = call.geo
    total = dev.lib.zeros((1,), _F64)
    work = geo.active_shape if store else None
    sub = dev.lib.zeros(work, call.dtype) if store else None
    if math.prod(geo.active_shape) and call.shape[3]:
        a, b = (_volume_operand(dev, x, call.dtype).numba() for x in (dev.a, dev.b))
        _volume_kernels().forward(a, b, None if sub is None else Buf.of(sub).numba(),
                                  tuple(int(v) for v in geo.kparams), geo.scale,
                                  Buf.of(total).numba(), dev.stream)
    if not store or geo.crop is None:
        return sub, total
    vol = dev.lib.zeros(geo.out_shape, call.dtype)
    full = Buf.of(vol)
    shadow, base = full.shadow()
    part = full.view(geo.cropped(shadow), base)
    dev.transfer(Buf.of(sub).reshape(part.shape), part)
    return vol, total


def volume(call, out):
    dev = call.device
    shape = call.geo.out_shape
    out_buf = dev.out_buf(out, shape) if out is not None else None
    vol, _ = _volume_forward(call, dev)
    return dev.deliver(vol, shape, None if out_buf is None else out)


def volume_vjp(call, grad, out):
    dev = call.device
    g = _volume_grad_input(call, dev, grad)
    grads, _ = _volume_grads(call, dev, g, out)
    return grads


def volume_loss(call, reduction, want_grads, out):
    dev = call.device
    shape = call.geo.out_shape
    count = math.prod(shape)
    if reduction == "none":
        vol, _ = _volume_forward(call, dev)
        loss = dev.deliver(vol, shape, None, transform=1)
        if not want_grads:
            return loss
        grads, _ = _volume_grads(call, dev, _active(call, dev, Buf.of(vol)).numba(), out)
        return (loss, *grads)
    divisor = count if reduction == "mean" else 1.0
    if want_grads:
        weight = 1.0 / count if reduction == "mean" and count else 1.0
        grads, total = _volume_grads(call, dev, None, out, weight)
        return (dev.loss(total, divisor), *grads)
    _, total = _volume_forward(call, dev, False)
    return dev.loss(total, divisor)
