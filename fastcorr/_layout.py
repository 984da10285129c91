"""How an N-D call maps onto the kernels' fixed (P, R, Q) layout (docs/design.md, "Layout").

The reduced axes form R; the other axes before the last reduced one form P, those after it Q.
For C-ordered input the 3-D form is a view: axis=-1 of NHWC is (N*H*W, C, 1), axis=1 is
(N, H, W*C). The same arithmetic serves NumPy arrays and the shadows that describe device
arrays (fastcorr._device), so both executors view operands alike.
"""

import math
from functools import lru_cache

import numpy as np

from ._validate import broadcast_shapes


class Layout:
    """A broadcast shape and its reduced axes (sorted, distinct, non-negative)."""

    def __init__(self, shape, axes):
        n = len(shape)
        last = axes[-1] if axes else n - 1
        outer = tuple(i for i in range(n) if i not in axes and (i < last or not axes))
        inner = tuple(range(last + 1, n)) if axes else ()
        perm = outer + axes + inner
        self.shape, self.axes = shape, axes
        self.perm = None if perm == tuple(range(n)) else perm
        self.permuted = tuple(shape[i] for i in perm)
        self.groups = (len(outer), len(axes), len(inner))
        self.prq = tuple(math.prod(shape[i] for i in idx) for idx in (outer, axes, inner))
        self.positions = self.prq[0] * self.prq[2]
        self.size = math.prod(shape)
        self.reduced = tuple(shape[i] for i in outer + inner)
        self.kept = tuple(1 if i in axes else shape[i] for i in range(n))
        self.empty = self.size == 0

    def scale(self, reduction):
        """What reduction="mean" divides the summed loss by, as a factor: 1 otherwise, and
        where there are no positions (the loss is then NaN, the gradients empty)."""
        return 1.0 / self.positions if reduction == "mean" and self.positions else 1.0

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

    def nd_back(self, x):
        """An array in (P, R, Q) axis order (3-D, or N-D permuted) as a view in the call's
        shape and axis order."""
        x = x.reshape(self.permuted)
        return x if self.perm is None else x.transpose(np.argsort(self.perm))

    def as3d(self, x):
        """x (a NumPy array or a shadow) as a (P, R, Q) view, or None where its axes cannot
        be merged in place."""
        if self.perm is None and x.shape == self.shape and x.flags.c_contiguous:
            return x.reshape(self.prq)  # the usual case
        try:
            return self.nd(x).reshape(self.prq, copy=False)
        except ValueError:
            return None

    def direct(self, shape):
        """Whether an output of `shape` (a gradient) is itself the (P, R, Q) array."""
        return self.perm is None and shape == self.shape

    def grouped(self, shape):
        """(P, R, Q) of an N-D shape in (P, R, Q) axis order: a box of `permuted`."""
        no, nr, _ = self.groups
        return (math.prod(shape[:no]), math.prod(shape[no:no + nr]), math.prod(shape[no + nr:]))

    def own(self, x):
        """x, an array in one input's shape, viewed with the axes of `permuted` (length 1
        where the input is broadcast)."""
        x = x.reshape((1,) * (len(self.shape) - x.ndim) + x.shape)
        return x if self.perm is None else x.transpose(self.perm)


@lru_cache(maxsize=256)
def layout(shape, axes):
    return Layout(shape, axes)
