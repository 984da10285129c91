"""The public functions: validation, axis and broadcast handling, dispatch to a backend.

Kernel backends see one contract (DESIGN.md section 3): `a` and `b` as 3-D (P, R, Q) arrays of
one float dtype, the reduced axes in the middle, outputs allocated here. `_Call` does the
checks shared by all six functions; `_Layout` maps between the caller's N-D shapes and (P, R, Q).
"""

from functools import lru_cache

import numpy as np

from . import reference
from ._validate import (
    BACKENDS,
    NO_REDUCTION,
    REDUCTIONS,
    as_host_array,
    broadcast_shape,
    broadcast_shapes,
    check_choice,
    check_grad_out,
    check_out,
    check_real,
    is_dask_array,
    is_device_array,
    normalize_axes,
    resolve_dtypes,
    weak,
)

_F64 = np.dtype(np.float64)


_BACKEND_MODULES = {}


def _kernels(backend, func="fastcorr"):
    """The kernel module of a backend, imported on first use: `import fastcorr` stays light."""
    module = _BACKEND_MODULES.get(backend)
    if module is None:
        if backend == "cpu":
            from ._kernels import cpu as module
        else:
            module = _cuda_module(func)
        _BACKEND_MODULES[backend] = module
    return module


def _lazy(a, b, grad=None):
    """Whether any input is a Dask array. NumPy inputs are answered first: this runs on
    every call, small ones included."""
    if type(a) is np.ndarray and type(b) is np.ndarray and (grad is None
                                                          or type(grad) is np.ndarray):
        return False
    return any(is_dask_array(x) for x in (a, b, grad))


def _dask():
    from . import _dask

    return _dask


def _device():
    from . import _device

    return _device


def _cuda_module(func):
    why = None
    try:
        from ._kernels import cuda as module
    except ImportError as exc:
        why = f"numba.cuda cannot be imported ({exc}); install the 'cuda' extra (numba-cuda)"
    else:
        why = module.reason_unusable()
    if why:
        raise RuntimeError(f"{func}: backend='cuda' is not usable: {why}")
    return module


class _Call:
    """The checked arguments of one public call."""

    __slots__ = ("func", "a", "b", "shape", "axes", "dtype", "result", "backend", "layout",
                 "device")

    def __init__(self, func, a, b, axis, backend, reduction=NO_REDUCTION):
        check_choice(func, "backend", backend, BACKENDS)
        if reduction is not NO_REDUCTION:
            check_choice(func, "reduction", reduction, REDUCTIONS)
        on_device = False
        if type(a) is np.ndarray and type(b) is np.ndarray:  # the common case, checked cheaply
            if backend == "auto":
                backend = "cpu"
        else:
            backend, on_device = self._device_backend(func, a, b, backend)
        if backend == "cuda":
            _kernels("cuda", func)
        self.device = None
        a0, b0 = a, b
        if on_device:
            from ._device import Buf

            dev_a, dev_b = a, b
            a, b = Buf.of(a), Buf.of(b)  # shape and dtype, for the checks below
            for name, x in (("a", a), ("b", b)):
                check_real(func, name, x.dtype)
        else:
            a = as_host_array(a, "a", func)
            b = as_host_array(b, "b", func)
        self.dtype, self.result = resolve_dtypes(func, weak(a0, a), weak(b0, b))
        self.shape = broadcast_shape(func, a.shape, b.shape)
        self.axes = normalize_axes(func, axis, len(self.shape))
        self.func = func
        self.backend = backend
        self.layout = _layout(self.shape, self.axes)
        if not on_device:
            # astype converts integers, float16 and byte-swapped input; same dtype is untouched
            a = a if a.dtype is self.dtype else a.astype(self.dtype)
            b = b if b.dtype is self.dtype else b.astype(self.dtype)
        self.a, self.b = a, b
        if backend == "cuda":
            device = _device()
            if on_device:
                self.device = device.DeviceCall(self, dev_a, dev_b, host=False)
            else:  # NumPy input: copied over, and the results back
                self.device = device.DeviceCall(self, device.to_device(a),
                                                device.to_device(b), host=True)

    @staticmethod
    def _device_backend(func, a, b, backend):
        """(backend, whether the inputs are CUDA device arrays) for inputs that are not both
        NumPy arrays."""
        dev_a, dev_b = is_device_array(a), is_device_array(b)
        if not (dev_a or dev_b):
            return ("cpu" if backend == "auto" else backend), False
        if not (dev_a and dev_b):
            which = "a" if dev_a else "b"
            raise TypeError(
                f"{func}: {which} is a CUDA device array and the other input a host array; "
                "move both to the same device"
            )
        if backend in ("cpu", "reference"):
            raise TypeError(
                f"{func}: backend={backend!r} needs host arrays; the inputs are CUDA device "
                "arrays (use backend='cuda' or 'auto', or copy them to the host)"
            )
        return "cuda", True

    @property
    def kernels(self):
        return _kernels(self.backend)

    def operands(self):
        """a and b as (P, R, Q) arrays: views where the layout allows, else copies.

        Numba compiles a kernel for each combination of array types it meets; anything but
        two writeable C-ordered arrays is passed as read-only views, to keep those few."""
        lay = self.layout
        a3, b3 = lay.to3d(self.a), lay.to3d(self.b)
        fa, fb = a3.flags, b3.flags
        if fa.writeable and fb.writeable and fa.c_contiguous and fb.c_contiguous:
            return a3, b3
        return _readonly(a3), _readonly(b3)

    def scale(self, reduction):
        n = self.layout.positions
        return 1.0 / n if reduction == "mean" and n else 1.0

    def loss(self, total, reduction):
        """A summed loss as a scalar of the result dtype, divided for reduction='mean'."""
        if reduction == "mean":
            n = self.layout.positions
            total = total / n if n else float("nan")
        return self.result.type(total)

    def unshares(self, out, *more):
        """True where writing into `out` cannot disturb an operand still being read: a, b
        and any others (grad)."""
        return not any(np.may_share_memory(out, x) for x in (self.a, self.b, *more))


class _Layout:
    """How an N-D broadcast shape and its reduced axes map to (P, R, Q).

    Non-reduced axes after the last reduced one form Q, the rest P, so for C-ordered input
    the 3-D form is a view: axis=-1 in NHWC is (N*H*W, C, 1), axis=1 is (N, H, W*C)."""

    def __init__(self, shape, axes):
        n = len(shape)
        last = axes[-1] if axes else n - 1
        outer = tuple(i for i in range(n) if i not in axes and (i < last or not axes))
        inner = tuple(range(last + 1, n)) if axes else ()
        perm = outer + axes + inner
        self.shape = shape
        self.perm = None if perm == tuple(range(n)) else perm
        self.permuted = tuple(shape[i] for i in perm)
        size = lambda idx: int(np.prod([shape[i] for i in idx], dtype=np.int64))  # noqa: E731
        self.prq = (size(outer), size(axes), size(inner))
        self.positions = self.prq[0] * self.prq[2]
        self.reduced = tuple(shape[i] for i in outer + inner)
        self.kept = tuple(1 if i in axes else shape[i] for i in range(n))
        self.empty = 0 in self.prq

    def grad_target(self, func, shape):
        """The correlation's shape that a VJP's grad of `shape` broadcasts to (keepdims when
        it has every axis), or a ValueError naming both."""
        target = self.kept if len(shape) == len(self.shape) else self.reduced
        try:
            if broadcast_shapes(tuple(shape), target) == target:
                return target
        except ValueError:
            pass
        raise ValueError(f"{func}: grad has shape {tuple(shape)}; expected the correlation's "
                         f"shape {self.reduced} (or {self.kept} with keepdims)")

    def nd(self, x):
        """x broadcast to the call's shape, its axes in (P, R, Q) order: a view."""
        if x.shape != self.shape:
            x = np.broadcast_to(x, self.shape)
        return x if self.perm is None else x.transpose(self.perm)

    def nd_back(self, x3):
        """A (P, R, Q) array as a view in the call's shape and axis order."""
        x = x3.reshape(self.permuted)
        return x if self.perm is None else x.transpose(np.argsort(self.perm))

    def to3d(self, x):
        if self.perm is None and x.shape == self.shape and x.flags.c_contiguous:
            return x.reshape(self.prq)  # the usual case: a view
        x = self.nd(x)
        try:
            return x.reshape(self.prq, copy=False)
        except ValueError:  # the axes cannot be merged in place
            return np.ascontiguousarray(x).reshape(self.prq)

    def from3d(self, x3, shape):
        """A (P, R, Q) gradient back in an input's shape, summed over its broadcast axes."""
        if self.perm is None and shape == self.shape:
            return x3.reshape(shape)
        return reference.unbroadcast(self.nd_back(x3), shape)

    def out3d(self, out, call, shape, reads=()):
        """`out` as the (P, R, Q) array for a kernel to write, or None where it cannot be
        (`reads`: operands the kernel reads besides a and b)."""
        if (
            out is not None
            and type(out) is np.ndarray
            and out.dtype == call.dtype
            and out.flags.c_contiguous
            and out.shape == self.shape == shape
            and self.perm is None
            and call.unshares(out, *reads)
        ):
            return out.reshape(self.prq)
        return None


def _readonly(x):
    if x.flags.writeable:
        x = x.view()
        x.flags.writeable = False
    return x


@lru_cache(maxsize=256)
def _layout(shape, axes):
    return _Layout(shape, axes)


def _deliver(result, dtype, out):
    """result in the result dtype, or written into out."""
    if out is None:
        return result if result.dtype is dtype else result.astype(dtype)
    np.copyto(out, result, casting="same_kind")
    return out


def _kernel_grads(call, out, run, reads=()):
    """Common path of the gradient-returning functions on a kernel backend.

    The kernels write into `out` itself where it has the right layout and shares no memory
    with what they read (a, b and `reads`); otherwise into new (P, R, Q) arrays that are then
    summed over broadcast axes and cast. run(a3, b3, ga3, gb3) launches the kernels and
    returns the loss (or None)."""
    lay = call.layout
    shape_a, shape_b = call.a.shape, call.b.shape
    out_a = out_b = direct_a = direct_b = None
    if out is not None:
        out_a, out_b = check_grad_out(call.func, out, (shape_a, shape_b), call.result)
        direct_a = lay.out3d(out_a, call, shape_a, reads)
        direct_b = lay.out3d(out_b, call, shape_b, reads)
    alloc = np.zeros if lay.empty else np.empty
    ga3 = alloc(lay.prq, call.dtype) if direct_a is None else direct_a
    gb3 = alloc(lay.prq, call.dtype) if direct_b is None else direct_b
    loss = None
    if not lay.empty:
        loss = run(*call.operands(), ga3, gb3)
    if direct_a is None:
        out_a = _deliver(lay.from3d(ga3, shape_a), call.result, out_a)
    if direct_b is None:
        out_b = _deliver(lay.from3d(gb3, shape_b), call.result, out_b)
    return loss, (out_a, out_b)


# --------------------------------------------------------------------------- public functions


def correlation(a, b, axis=-1, *, keepdims=False, out=None, backend="auto"):
    """sum(a * b, axis), as numpy.vecdot, with the reduced axes kept as size 1 when keepdims."""
    if _lazy(a, b):
        return _dask().correlation(a, b, axis, keepdims=keepdims, out=out, backend=backend)
    call = _Call("correlation", a, b, axis, backend)
    lay = call.layout
    shape = lay.kept if keepdims else lay.reduced
    dev = call.device
    if dev is not None and not dev.host:
        return _device().correlation(call, dev, keepdims, out)
    if out is not None:
        check_out(call.func, out, shape, call.result)
    if dev is not None:
        return _deliver(_device().correlation(call, dev, keepdims, None), call.result, out)
    if call.backend == "reference":
        return _deliver(reference.correlation(call.a, call.b, call.axes, keepdims), call.result,
                        out)
    P, R, Q = lay.prq
    direct = (type(out) is np.ndarray and out.dtype == call.dtype and out.flags.c_contiguous
              and call.unshares(out))
    target = out.reshape(P, Q) if direct else np.empty((P, Q), call.dtype)
    if lay.empty:
        target[...] = 0
    else:
        a3, b3 = call.operands()
        call.kernels.correlation(a3, b3, target)
    return out if direct else _deliver(target.reshape(shape), call.result, out)


def correlation_vjp(a, b, grad, axis=-1, *, out=None, backend="auto"):
    """Gradients (grad * b, grad * a) of sum(grad * correlation(a, b, axis)) with respect to
    a and b, in their shapes. grad has the shape of the correlation (keepdims or not)."""
    if _lazy(a, b, grad):
        return _dask().correlation_vjp(a, b, grad, axis, out=out, backend=backend)
    call = _Call("correlation_vjp", a, b, axis, backend)
    lay = call.layout
    dev = call.device
    if dev is not None:
        if dev.host != (not is_device_array(grad)):
            raise TypeError(f"{call.func}: grad must be on the same device as a and b")
        if not dev.host:
            return _device().correlation_vjp(call, dev, grad, out)
        out_a, out_b = check_grad_out(call.func, out, (call.a.shape, call.b.shape), call.result)
        g = as_host_array(grad, "grad", call.func)
        ga, gb = _device().correlation_vjp(call, dev, _device().to_device(g), None)
        return _deliver(ga, call.result, out_a), _deliver(gb, call.result, out_b)
    g = as_host_array(grad, "grad", call.func)
    g = np.broadcast_to(g, lay.grad_target(call.func, g.shape))
    if call.backend == "reference":
        out_a, out_b = check_grad_out(call.func, out, (call.a.shape, call.b.shape), call.result)
        ga, gb = reference.correlation_vjp(call.a, call.b, g.astype(call.dtype), call.axes)
        return _deliver(ga, call.result, out_a), _deliver(gb, call.result, out_b)
    g2 = np.ascontiguousarray(g, _F64).reshape(lay.prq[0], lay.prq[2])
    _, grads = _kernel_grads(call, out, lambda a3, b3, ga3, gb3:
                             call.kernels.correlation_vjp(a3, b3, g2, ga3, gb3), (g2,))
    return grads


def _loss(func, op, a, b, axis, reduction, backend):
    if _lazy(a, b):
        return getattr(_dask(), op)(a, b, axis, reduction=reduction, backend=backend)
    call = _Call(func, a, b, axis, backend, reduction)
    lay = call.layout
    if call.device is not None:
        return _device().loss_and_grad(call, call.device, op, reduction, None, False)
    if call.backend == "reference":
        loss = getattr(reference, op)(call.a, call.b, call.axes, reduction)
        return _deliver(np.asarray(loss), call.result, None)[()]
    pos = np.zeros((lay.prq[0], lay.prq[2])) if reduction == "none" else None
    total = 0.0
    if not lay.empty:
        a3, b3 = call.operands()
        kernel = call.kernels.corr_loss_grad if op == "corr_loss" else \
            call.kernels.product_loss_grad
        total = kernel(a3, b3, 1.0, pos, None, None)
    if reduction == "none":
        return _per_position(call, op, pos)
    return call.loss(total, reduction)


def _per_position(call, op, pos):
    """The reduction='none' loss tensor from the kernels' per-position sums."""
    per = 0.5 * (np.square(pos) if op.startswith("corr_loss") else pos)
    return per.reshape(call.layout.reduced).astype(call.result)


def _loss_and_grad(func, op, a, b, axis, reduction, out, backend):
    if _lazy(a, b):
        return getattr(_dask(), op)(a, b, axis, reduction=reduction, out=out, backend=backend)
    key = None
    # A plan stands for a call that passed every check. Its key holds only exact types:
    # values that compare equal but validate differently (1.0 and True beside 1, str
    # subclasses) never find one, so an outcome never depends on what ran before.
    if (out is None and type(a) is np.ndarray and type(b) is np.ndarray and type(axis) is int
            and type(reduction) is str and type(backend) is str):
        key = (op, a.shape, a.dtype, b.shape, b.dtype, axis, reduction, backend)
        plan = _PLANS.get(key)
        if plan is not None and a.flags.c_contiguous and b.flags.c_contiguous:
            return plan(a, b)
    call = _Call(func, a, b, axis, backend, reduction)
    lay = call.layout
    dev = call.device
    if dev is not None and not dev.host:
        return _device().loss_and_grad(call, dev, op, reduction, out, True)
    if dev is not None:
        out_a, out_b = check_grad_out(func, out, (call.a.shape, call.b.shape), call.result)
        loss, ga, gb = _device().loss_and_grad(call, dev, op, reduction, None, True)
        return loss, _deliver(ga, call.result, out_a), _deliver(gb, call.result, out_b)
    if call.backend == "reference":
        out_a, out_b = check_grad_out(func, out, (call.a.shape, call.b.shape), call.result)
        loss, ga, gb = getattr(reference, op)(call.a, call.b, call.axes, reduction)
        return (_deliver(np.asarray(loss), call.result, None)[()],
                _deliver(ga, call.result, out_a), _deliver(gb, call.result, out_b))
    pos = np.zeros((lay.prq[0], lay.prq[2])) if reduction == "none" else None
    kernel = call.kernels.corr_loss_grad if op == "corr_loss_and_grad" else \
        call.kernels.product_loss_grad
    scale = call.scale(reduction)
    total, (ga, gb) = _kernel_grads(call, out, lambda a3, b3, ga3, gb3:
                                    kernel(a3, b3, scale, pos, ga3, gb3))
    if reduction == "none":
        return _per_position(call, op, pos), ga, gb
    if key is not None and call.a is a and call.b is b:
        _remember(key, op, call, reduction)
    return call.loss(total or 0.0, reduction), ga, gb


_PLANS = {}
_PLAN_MAX = 1 << 15  # elements: above this the call is long enough that planning is noise


def _remember(key, op, call, reduction):
    """Keep, under `key`, a ready-made plan for small same-shape C-ordered calls.

    Small inputs must not pay more Python than the NumPy expression they replace; every
    check that depends only on shapes, dtypes and arguments has passed once for this key."""
    a, b, lay = call.a, call.b, call.layout
    # the plan reshapes a and b to (P, R, Q): only right where that needs no transposition
    if (a.shape != b.shape or a.dtype is not b.dtype or lay.empty or a.size > _PLAN_MAX
            or lay.perm is not None
            or not (a.flags.c_contiguous and b.flags.c_contiguous)
            or not hasattr(call.kernels, "serial_plan")):
        return
    dtype, shape, positions = call.dtype, a.shape, lay.positions
    kshape, run = call.kernels.serial_plan(op, lay.prq, dtype, call.scale(reduction))
    mean = reduction == "mean"

    def plan(a, b):
        ga = np.empty(kshape, dtype)
        gb = np.empty(kshape, dtype)
        loss = run(a.reshape(kshape), b.reshape(kshape), ga, gb)
        return dtype.type(loss / positions if mean else loss), ga.reshape(shape), \
            gb.reshape(shape)

    if len(_PLANS) > 256:
        _PLANS.clear()
    _PLANS[key] = plan


def corr_loss(a, b, axis=-1, *, reduction="sum", backend="auto"):
    """0.5 * ||correlation(a, b, axis)||**2: summed, averaged over positions, or per position."""
    return _loss("corr_loss", "corr_loss", a, b, axis, reduction, backend)


def corr_loss_and_grad(a, b, axis=-1, *, reduction="sum", out=None, backend="auto"):
    """(corr_loss, grad_a, grad_b) in one fused pass; grad_a = corr * b, grad_b = corr * a."""
    return _loss_and_grad("corr_loss_and_grad", "corr_loss_and_grad", a, b, axis, reduction,
                          out, backend)


def product_loss(a, b, axis=-1, *, reduction="sum", backend="auto"):
    """0.5 * ||a * b||**2, summed along axis per position, then reduced over positions."""
    return _loss("product_loss", "product_loss", a, b, axis, reduction, backend)


def product_loss_and_grad(a, b, axis=-1, *, reduction="sum", out=None, backend="auto"):
    """(product_loss, grad_a, grad_b) in one fused pass; grad_a = a*b**2, grad_b = a**2*b."""
    return _loss_and_grad("product_loss_and_grad", "product_loss_and_grad", a, b, axis,
                          reduction, out, backend)
