"""The device executor: CUDA arrays of any library, read in place, and the CUDA kernels
(docs/design.md, "Executors"). Imported only when CUDA is in use.

Inputs are described by their `__cuda_array_interface__` (pointer, shape, byte strides,
dtype). The layout arithmetic (fastcorr._layout) runs on a *shadow*: a NumPy view with the
same shape and strides over a one-element buffer, which is never read. Whatever NumPy can
express as a view of the input (broadcasting, transposing, merging axes) becomes a strided
view of the same device memory (a `Buf`); the rest (axes that cannot be merged, a dtype to
convert) is copied once on the device by the `transfer` kernel, which also sums the gradients
of broadcast inputs back to their shapes, casts results, and writes into `out`.

Results are allocated by the inputs' own library (CuPy, PyTorch, or Numba for Numba device
arrays and anything else with the interface), and kernels run on that library's current
stream, so a call queues work like any other operation of the library and does not
synchronise; the loss is a 0-d array of that library. NumPy input with backend="cuda" is
uploaded, computed the same way, and copied back (`host=True`).
"""

import numpy as np
from numba import cuda
from numba.core import config

from ._executor import Executor, Host
from ._kernels import load
from ._validate import (
    as_host_array,
    check_out,
    check_real,
    is_device_array,
    same_device,
)

# numba's stubs lack the attribute that numba.config sets at run time
_SIMULATOR = bool(config.ENABLE_CUDASIM)  # type: ignore[attr-defined]
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
        if self.size == 0:  # touches nothing: (n - 1) * s below would count back
            return Buf(self.ptr, (0,), (item,), self.dtype, self.readonly, self.owner), 0, steps
        lo = sum((n - 1) * s for n, s in zip(self.shape, steps) if s < 0)
        hi = sum((n - 1) * s for n, s in zip(self.shape, steps) if s > 0)
        flat = Buf(self.ptr + lo * item, (hi - lo + 1,), (item,), self.dtype, self.readonly,
                   self.owner)
        return flat, -lo, steps

    def whole(self):
        """Whether this C-ordered view spans all of the array it views."""
        own = Buf.of(self.owner)
        return (self.ptr == own.ptr and self.size == own.size
                and self.strides == _c_strides(self.shape, self.dtype.itemsize))

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
    """Whether Bufs x and y share an element, exactly, as np.shares_memory answers on the
    host: interleaved views (out[:, ::2], out[:, 1::2]) do not."""
    (x0, x1), (y0, y1) = x.bounds(), y.bounds()
    if not (x0 < y1 and y0 < x1):
        return False
    # NumPy arrays over the device addresses, never read: shares_memory only does
    # arithmetic on their addresses, shapes and strides
    views = [np.asarray(_HostView({"shape": b.shape, "strides": b.strides, "version": 3,
                                   "typestr": b.dtype.str, "data": (b.ptr, True)}, None))
             for b in (x, y)]
    return bool(np.shares_memory(*views))


# --------------------------------------------------------------------------- array libraries


def library(x):
    """(new, stream) of x's library: new(zeroed, shape, dtype) allocates as that library does
    (CuPy, PyTorch; Numba for Numba device arrays and anything else with the interface), and
    the work is queued on its current stream."""
    top = type(x).__module__.partition(".")[0]
    if top == "cupy":
        import cupy

        def new(zeroed, shape, dtype):
            with x.device:
                return (cupy.zeros if zeroed else cupy.empty)(shape, dtype)
        return new, _stream(cupy.cuda.get_current_stream().ptr)
    if top == "torch":
        import torch

        def new(zeroed, shape, dtype):
            return (torch.zeros if zeroed else torch.empty)(
                shape, dtype=getattr(torch, np.dtype(dtype).name), device=x.device)
        return new, _stream(torch.cuda.current_stream(x.device).cuda_stream)
    stream = cuda.default_stream()

    def new(zeroed, shape, dtype):
        if zeroed:
            return cuda.to_device(np.zeros(shape, dtype), stream=stream)
        return cuda.device_array(shape, dtype, stream=stream)
    return new, stream


def _stream(ptr):
    return cuda.external_stream(ptr) if ptr else cuda.default_stream()


def to_device(x):
    """A NumPy array uploaded as a Numba device array, C-ordered in native byte order (the
    only order CUDA kernels read), 0-d ones too."""
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    return cuda.to_device(x if x.flags.c_contiguous else x.copy())


# --------------------------------------------------------------------------- the executor


class Device(Executor):
    """CUDA device arrays of any library and the CUDA kernels; with host=True, NumPy input
    uploaded here and results copied back (backend="cuda")."""

    def __init__(self, call, a, b, host=False):
        super().__init__(call)
        self.host, self.on_device = host, not host
        if host:
            a, b = to_device(a), to_device(b)
        self.new, self.stream = library(a)
        self.a, self.b = Buf.of(a), Buf.of(b)
        self.kernels = load("cuda")

    def run(self, name, *args):
        args = [x.numba() if isinstance(x, Buf) else x for x in args]
        return getattr(self.kernels, name)(*args, stream=self.stream)

    def empty(self, shape, dtype=None):
        return Buf.of(self.new(False, shape, dtype or self.dtype))

    def zeros(self, shape, dtype=None):
        return Buf.of(self.new(True, shape, dtype or self.dtype))

    def operands(self):
        """a and b as (P, R, Q) Bufs of the compute dtype: views where they exist."""
        return tuple(self._operand(x) for x in (self.a, self.b))

    def _operand(self, buf):
        buf = self.contiguous(buf, keep=True)  # converted in its own shape, not broadcast
        view = self.lay.as3d(self.shadow(buf))
        return self.view(buf, self.lay.as3d) if view is not None else self.block(buf, ())

    def volume_operands(self):
        return self.contiguous(self.a, keep=True), self.contiguous(self.b, keep=True)

    def array(self, x, name):
        buf = Buf.of(to_device(as_host_array(x, name, self.func)) if self.host else x)
        check_real(self.func, name, buf.dtype)
        return buf

    def contiguous(self, buf, dtype=None, keep=False):
        """buf as a C-ordered Buf of `dtype` (the compute dtype): a copy, or buf itself where
        keep and the dtype is already right (the kernels read any strides)."""
        dtype = dtype or self.dtype
        if keep and buf.dtype == dtype:
            return buf
        copy = self.empty(buf.shape, dtype)
        self.transfer(buf, copy)
        return copy

    def check(self, out, shape, name):
        """A NumPy out for host=True; else a device array of the right shape and dtype, as a
        Buf."""
        if self.host:
            return check_out(self.func, out, shape, self.result, name) or out
        if not is_device_array(out):
            raise TypeError(same_device(self.func, name, True))
        buf = Buf.of(out)
        check_out(self.func, buf, shape, self.result, name, host=False)
        if buf.readonly:
            raise ValueError(f"{self.func}: {name} is read-only")
        return buf

    def writable(self, out):
        if self.host:
            return None  # results are copied back to the host
        buf = Buf.of(out)
        ok = buf.dtype == self.dtype and buf.strides == _c_strides(buf.shape, buf.dtype.itemsize)
        return buf if ok else None

    def overlap(self, x, y):
        return Host.overlap(x, y) if self.host else _overlap(x, y)

    def deliver(self, work, shape, out, square=False, factor=1.0):
        """The kernel's Buf `work` as a result of `shape`: out itself where the kernel wrote
        it, else an array of the result dtype (of the inputs' library, or NumPy for host=True)
        or written into out; factor * work (or work**2 if square) for per-position losses."""
        if out is not None and not self.host and _overlap(work, Buf.of(out)):
            return out
        work = work.reshape(shape)
        if (out is None and work.dtype == self.result and not square and factor == 1.0
                and work.whole()):
            return self._finish(work.owner.reshape(shape), None)  # any library's arrays
        return self._into(work, shape, out, square, factor)

    def deliver_grad(self, work, shape, out):
        """A (P, R, Q) gradient Buf in an input's shape, summed over its broadcast axes."""
        if self.lay.direct(shape):
            return self.deliver(work, shape, out)
        return self._into(self.view(work, self.lay.nd_back), shape, out)

    def _into(self, src, shape, out, square=False, factor=1.0):
        """src cast (and summed over broadcast axes) into out, or a new array of `shape`."""
        if out is not None and not self.host:
            y = out
        else:  # the host's out takes the device's values as they are: no rounding on the way
            y = self.new(False, shape, self.result if out is None else
                         out.dtype.newbyteorder("="))
        self.transfer(src, Buf.of(y), square, factor)
        return self._finish(y, out)

    def _finish(self, y, out):
        if not self.host:
            return y
        if out is None:
            y = y.copy_to_host()
            return y if y.ndim else y[()]  # a scalar, as on the CPU
        out[...] = y.copy_to_host()
        return out

    def loss(self, total, divisor):
        """The summed loss total[0] divided (for a mean), as a 0-d array of the result
        dtype (a NumPy scalar for host=True)."""
        y = self.new(False, (), self.result)
        self.kernels.finish_loss(total.numba(), divisor, Buf.of(y).numba(), stream=self.stream)
        return y.copy_to_host()[()] if self.host else y

    def accumulate(self, src, dst):
        """dst += src summed over the axes where dst has length 1 and src does not."""
        self.transfer(src, dst, add=True)

    @staticmethod
    def view(buf, f):
        """The Buf that f makes of buf's shadow: f makes a view of a NumPy array."""
        shadow, base = buf.shadow()
        return buf.view(f(shadow), base)

    @staticmethod
    def shadow(buf):
        return buf.shadow()[0]

    # --- the device copy kernel

    def transfer(self, src, dst, square=False, factor=1.0, add=False):
        """dst[...] (+)= factor * src (or src**2), cast to dst's dtype; src axes of length > 1
        where dst has length 1 (or is missing in front) are summed: the gradient of a
        broadcast input."""
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
                              rstr, square, float(factor), add, stream=self.stream)
