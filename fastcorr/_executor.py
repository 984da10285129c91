"""The executor protocol, and the host executor (docs/design.md, "Executors").

An executor holds one checked call's operands where they live and offers the front end the
same few primitives: operands in the kernels' layout, the upstream gradient, output targets,
kernel launches, delivery into `out` or the result dtype, gradients back to the inputs'
shapes, the loss, and the block primitives of broadcast operands. `Executor` writes once what
the host executor (`Host`: NumPy arrays, CPU kernels) and the device executor
(fastcorr._device: CUDA arrays, CUDA kernels) share; each adds how its arrays are checked,
viewed, copied and allocated.
"""

import numpy as np

from . import reference
from ._kernels import load
from ._memory import output_pool
from ._validate import as_host_array, check_grad_out, check_out, is_device_array, same_device

_F64 = np.dtype(np.float64)


class Executor:
    on_device = False  # whether the inputs are CUDA device arrays

    def __init__(self, call):
        self.call, self.lay, self.func = call, call.layout, call.func
        self.dtype, self.result = call.dtype, call.result

    def checked(self, out, shape, name="out"):
        if out is not None:
            self.check(out, shape, name)
        return out

    def checked_pair(self, out, shapes):
        return check_grad_out(self.func, out, shapes, self.check, self.overlap)

    def upstream(self, grad, target_of):
        """grad checked and broadcast to its target shape (target_of(shape)): a view."""
        if is_device_array(grad) != self.on_device:
            raise TypeError(same_device(self.func, "grad", self.on_device))
        return self.view(self.array(grad, "grad"),
                         lambda x: np.broadcast_to(x, target_of(x.shape)))

    def target(self, out, kshape, direct=True, reads=()):
        """out itself as the kernel's array of kshape where it can be (C-ordered, the compute
        dtype, sharing no memory with anything the kernels read), else a new array."""
        x = self.writable(out) if direct and out is not None else None
        if x is not None and not any(self.overlap(x, y) for y in (self.a, self.b, *reads)):
            return x.reshape(kshape)
        return self.empty(kshape)

    def block(self, x, box, dtype=None):
        """The box of x's broadcast, permuted view as a new C-ordered (P, R, Q) array."""
        part = self.view(x, lambda s: self.lay.nd(s)[box])
        return self.contiguous(part, dtype).reshape(self.lay.grouped(part.shape))

    def in_place(self):
        """Whether `operands` are views, not copies."""
        return all(self.lay.as3d(self.shadow(x)) is not None for x in (self.a, self.b))


class Host(Executor):
    """NumPy arrays and the CPU kernels."""

    def __init__(self, call, a, b):
        super().__init__(call)
        # astype converts integers, float16 and byte-swapped input; the same dtype is kept
        self.a = a if a.dtype == self.dtype else a.astype(self.dtype)
        self.b = b if b.dtype == self.dtype else b.astype(self.dtype)
        self.kernels = load("cpu") if call.backend == "cpu" else None

    def run(self, name, *args):
        return getattr(self.kernels, name)(*args)

    def empty(self, shape, dtype=None):
        return output_pool.empty(shape, dtype or self.dtype)  # without fresh pages

    def zeros(self, shape, dtype=None):
        return np.zeros(shape, dtype or self.dtype)

    def operands(self):
        """a and b as (P, R, Q) arrays: views where the layout allows, else copies.

        Numba compiles a kernel for each combination of array types it meets; anything but
        two writeable C-ordered arrays is passed as read-only views, to keep those few."""
        a3, b3 = (self.lay.as3d(x) for x in (self.a, self.b))
        if a3 is None or b3 is None:
            a3, b3 = (self.block(x, ()) for x in (self.a, self.b))
        fa, fb = a3.flags, b3.flags
        if fa.writeable and fb.writeable and fa.c_contiguous and fb.c_contiguous:
            return a3, b3
        return _readonly(a3), _readonly(b3)

    def volume_operands(self):
        return self.contiguous(self.a), self.contiguous(self.b)

    def array(self, x, name):
        return as_host_array(x, name, self.func)

    def contiguous(self, x, dtype=None):
        return np.ascontiguousarray(x, dtype or self.dtype)

    def check(self, out, shape, name):
        check_out(self.func, out, shape, self.result, name)
        return out

    def writable(self, out):
        ok = type(out) is np.ndarray and out.dtype == self.dtype and out.flags.c_contiguous
        return out if ok else None

    @staticmethod
    def overlap(x, y):
        return np.may_share_memory(x, y) and np.shares_memory(x, y)

    def deliver(self, work, shape, out, square=False, factor=1.0):
        """The kernel's array `work` as a result of `shape`: out itself where the kernel wrote
        it, else in the result dtype or copied into out; factor * work (or work**2 if square)
        for per-position losses."""
        if out is not None and np.may_share_memory(work, out):
            return out
        x = work.reshape(shape)
        if square:
            x = x * x
        if factor != 1.0:
            x = factor * x
        if out is None:
            x = x if x.dtype == self.result else x.astype(self.result)
            return x if x.ndim else x[()]  # a scalar, as NumPy's reductions give one
        np.copyto(out, x, casting="same_kind")
        return out

    def deliver_grad(self, work, shape, out):
        """A (P, R, Q) gradient in an input's shape, summed over its broadcast axes."""
        if not self.lay.direct(shape) and not (out is not None and
                                                np.may_share_memory(work, out)):
            work = reference.unbroadcast(self.lay.nd_back(work), shape)
        return self.deliver(work, shape, out)

    def loss(self, total, divisor):
        """The summed loss total[0] divided (for a mean), as a scalar of the result dtype."""
        return self.result.type(total[0] / divisor if divisor else np.nan)

    def accumulate(self, src, dst):
        """dst += src summed over the axes where dst has length 1 and src does not."""
        axes = tuple(i for i, (m, n) in enumerate(zip(src.shape, dst.shape)) if m != n)
        dst += src.sum(axes, keepdims=True, dtype=_F64) if axes else src

    @staticmethod
    def view(x, f):
        """f(x): f makes a view of a NumPy array (on the device, of a shadow)."""
        return f(x)

    @staticmethod
    def shadow(x):
        return x


def _readonly(x):
    if x.flags.writeable:
        x = x.view()
        x.flags.writeable = False
    return x
