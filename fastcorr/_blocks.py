"""Broadcast operands far larger than the inputs, run in blocks (docs/design.md, "Broadcast
operands").

Where a and b broadcast to a shape much larger than either (an outer product such as (n, 1)
with (1, n)), the (P, R, Q) form of an operand whose axes cannot be merged is a copy of that
whole shape, and so is the gradient of a broadcast input before it is summed back to the
input's shape. Here the broadcast shape is cut into boxes of at most BLOCK elements; each
box's operands are copied (a bounded working set) and run through the same kernels, and its
per-position sums and gradients are added into float64 accumulators of the outputs' own
sizes. Peak memory is the outputs plus a few blocks, whatever the broadcast.
"""

import math

import numpy as np

BLOCK = 1 << 20  # elements of the broadcast shape in one box
_F64 = np.dtype(np.float64)


def needed(call, grads):
    """Whether the call runs in blocks: its broadcast is larger than a block and than both
    inputs, and a copy of it would be made (a gradient, or an operand whose axes cannot be
    merged in place)."""
    size = call.layout.size
    if size <= BLOCK or size <= max(map(math.prod, call.shapes)):
        return False
    return grads or not call.ex.in_place()


def _boxes(shape):
    """Boxes of at most BLOCK elements tiling `shape`: the trailing axes whole, one axis in
    runs, the axes before it one index at a time."""
    k, rest = len(shape), 1
    while k and rest * shape[k - 1] <= BLOCK:
        k -= 1
        rest *= shape[k]
    tail = (slice(None),) * (len(shape) - k)
    if k == 0:
        yield tail
        return
    run, n = max(1, BLOCK // rest), shape[k - 1]
    for lead in np.ndindex(*shape[:k - 1]):
        for i in range(0, n, run):
            yield tuple(slice(j, j + 1) for j in lead) + (slice(i, min(i + run, n)),) + tail


def _extent(box, shape):
    return tuple(len(range(*s.indices(n))) for s, n in zip(box, shape))


def _run(call, kernel, g=None, scale=1.0, per_position=True, grads=False):
    """kernel ("correlation", "correlation_vjp" with the upstream g (P, Q), or a loss kernel)
    box by box. Returns float64 accumulators: the per-position sums as (P, Q) (or None), the
    loss total, and the gradients in the inputs' shapes (or an empty list)."""
    ex, lay = call.ex, call.layout
    no, nr, _ = lay.groups
    reduced = range(no, no + nr)
    kept = tuple(1 if i in reduced else n for i, n in enumerate(lay.permuted))
    pos = ex.zeros(kept, _F64) if per_position else None
    total = ex.zeros((1,), _F64)
    accs = [ex.zeros(s, _F64) for s in call.shapes] if grads else []
    owns = [ex.view(acc, lay.own) for acc in accs]
    if g is not None:
        g = g.reshape(kept)
    for box in _boxes(lay.permuted):
        a3, b3 = ex.block(ex.a, box), ex.block(ex.b, box)
        P, R, Q = a3.shape
        shape = _extent(box, lay.permuted)
        pbox = tuple(slice(None) if i in reduced else s for i, s in enumerate(box))
        part = ex.empty((P, Q), _F64) if per_position else None
        ga, gb = (ex.empty((P, R, Q)), ex.empty((P, R, Q))) if grads else (None, None)
        if kernel == "correlation":
            ex.run(kernel, a3, b3, part)
        elif kernel == "correlation_vjp":
            gbox = ex.contiguous(ex.view(g, lambda x: x[pbox]), _F64).reshape((P, Q))
            ex.run(kernel, a3, b3, gbox, ga, gb)
        else:
            ex.run(kernel, a3, b3, scale, part, ga, gb, total)
        if per_position:
            kept_box = tuple(1 if i in reduced else n for i, n in enumerate(shape))
            ex.accumulate(part.reshape(kept_box), ex.view(pos, lambda x: x[pbox]))
        for x3, own in zip((ga, gb) if grads else (), owns):
            obox = tuple(slice(None) if m == 1 else s for m, s in zip(own.shape, box))
            ex.accumulate(x3.reshape(shape), ex.view(own, lambda x: x[obox]))
    if per_position:
        pos = pos.reshape((lay.prq[0], lay.prq[2]))
    return pos, total, accs


def correlation(call):
    """The correlation as a (P, Q) float64 array."""
    return _run(call, "correlation")[0]


def vjp(call, g):
    """The gradients of sum(g * correlation), float64, in the inputs' shapes."""
    return _run(call, "correlation_vjp", g=g, per_position=False, grads=True)[2]


def loss(call, corr, reduction, grads):
    """(loss, gradients, factor) of the corr loss (corr) or the product loss: the gradients
    are float64, in the inputs' shapes, to be multiplied by factor."""
    ex, lay = call.ex, call.layout
    no, nr, _ = lay.groups
    whole = _extent(next(_boxes(lay.permuted)), lay.permuted)[no:no + nr] == \
        lay.permuted[no:no + nr]
    scale, none = call.scale(reduction), reduction == "none"
    if whole or not corr:  # every box holds whole positions, or the loss is elementwise
        pos, total, accs = _run(call, "corr_loss_grad" if corr else "product_loss_grad",
                                scale=scale, per_position=none, grads=grads)
        factor, divisor = 1.0, 1
    else:  # a reduced axis is cut: the correlation first, then its loss and gradients
        pos = correlation(call)
        total = ex.zeros((1,), _F64)
        c = pos.reshape((1, lay.positions, 1))
        ex.run("correlation", c, c, total.reshape((1, 1)))  # sum(corr**2): twice the loss
        accs = vjp(call, pos) if grads else []
        factor, divisor = scale, 2
    if none:
        loss = ex.deliver(pos, lay.reduced, None, square=corr, factor=0.5)
    else:
        n = lay.positions if reduction == "mean" else 1
        loss = ex.loss(total, divisor * n)
    return loss, accs, factor
