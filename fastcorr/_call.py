"""One public call, checked: the arguments every function takes, in the order their errors
are raised (docs/design.md, "Front end"), and the executor that will run it.

Every check runs before anything is computed or written, whatever the backend, so the same
arguments fail the same way on NumPy, CUDA and Dask arrays (fastcorr._dask subclasses Call),
and for the cost volume (fastcorr._volume subclasses it too).
"""

import numpy as np

from ._executor import Host
from ._layout import layout
from ._validate import (
    NO_REDUCTION,
    REDUCTIONS,
    as_host_array,
    broadcast_shape,
    check_choice,
    check_real,
    normalize_axes,
    resolve_backend,
    resolve_dtypes,
    weak,
)


class Call:
    """The checked arguments of one public call, and the executor that runs it (`ex`)."""

    def __init__(self, func, a, b, axis, backend, reduction=NO_REDUCTION):
        if reduction is not NO_REDUCTION:
            check_choice(func, "reduction", reduction, REDUCTIONS)
        self.func = func
        self.backend, device = resolve_backend(func, a, b, backend)
        x, y = self.inputs(a, b, device)
        self.dtype, self.result = resolve_dtypes(func, weak(a, x), weak(b, y))
        if self.result != self.dtype and not device:
            # float16, computed in float32: a Python scalar is first a float16, as NumPy 2
            # casts it to the array's dtype (70000 is Inf there, 0.1 is 0.0999755859375)
            x, y = (np.asarray(s, self.result) if type(s) in (bool, int, float) else arr
                    for s, arr in ((a, x), (b, y)))
        self.shapes = (tuple(x.shape), tuple(y.shape))
        self.layout = self.arrange(axis)
        self.ex = self.executor(a, b, x, y, device)

    def inputs(self, a, b, device):
        """a and b checked as real arrays: NumPy arrays, or the `Buf`s of device arrays."""
        if not device:
            return as_host_array(a, "a", self.func), as_host_array(b, "b", self.func)
        from ._device import Buf

        x, y = Buf.of(a), Buf.of(b)
        for name, buf in (("a", x), ("b", y)):
            check_real(self.func, name, buf.dtype)
        return x, y

    def arrange(self, axis):
        """The call's shape and axes, as the Layout its kernels run on."""
        self.shape = broadcast_shape(self.func, *self.shapes)
        self.axes = normalize_axes(self.func, axis, len(self.shape))
        return layout(self.shape, self.axes)

    def executor(self, a, b, x, y, device):
        """Device arrays in place, NumPy input on the GPU (uploaded in the compute dtype),
        or the host."""
        if self.backend != "cuda":
            return Host(self, x, y)
        from ._device import Device

        if device:
            return Device(self, a, b)
        return Device(self, *(np.asarray(v, self.dtype) for v in (x, y)), host=True)

    def scale(self, reduction):
        return self.layout.scale(reduction)


def results(ex, loss, grads=None, outs=None, shapes=None):
    """Host results of the reference backend: the loss as NumPy gives it, the gradients in
    the result dtype or written into out."""
    loss = np.asarray(loss)
    loss = ex.deliver(loss, loss.shape, None)  # a scalar where 0-d, as deliver gives
    if grads is None:
        return loss
    return (loss, *(ex.deliver(g, s, o) for g, s, o in zip(grads, shapes, outs)))
