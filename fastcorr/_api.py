"""The six public functions, each written once over an executor (docs/design.md, "Front end").

A call is checked (`_call.Call`) and handed to the executor of its arrays: `_executor.Host`
for NumPy arrays and the CPU kernels, `_device.Device` for CUDA arrays of any library (and for
NumPy input with backend="cuda"). Both offer the same primitives on the (P, R, Q) layout of
`_layout`, and the kernels of both take the same arguments (`_kernels`), so each function
below reads as one flow. backend="reference" returns early with `fastcorr.reference`'s N-D
formulation; broadcast operands much larger than the inputs run in blocks (`_blocks`); Dask
arrays go to `_dask`, which builds a graph of these same functions.
"""

import numpy as np

from . import _blocks, reference
from ._call import Call, results
from ._validate import is_dask_array

_F64 = np.dtype(np.float64)


def _lazy(*xs):
    """Whether any input is a Dask array. NumPy inputs are answered first: this runs on
    every call, small ones included."""
    if all(type(x) is np.ndarray or x is None for x in xs):
        return False
    return any(is_dask_array(x) for x in xs)


def _on_dask(name, a, b, axis, **kw):
    """fastcorr.<name> on Dask arrays: a graph of these same functions, chunk by chunk."""
    from . import _dask

    return _dask.run(PUBLIC, name, a, b, axis, **kw)


# --------------------------------------------------------------------------- public functions


def correlation(a, b, axis=-1, *, keepdims=False, out=None, backend="auto"):
    """sum(a * b, axis), as numpy.vecdot, with the reduced axes kept as size 1 when keepdims."""
    key = _key("correlation", a, b, axis, backend, out, keepdims)
    plan = _PLANS.get(key)
    if plan is not None and a.flags.c_contiguous and b.flags.c_contiguous:
        return plan(a, b)
    if _lazy(a, b):
        return _on_dask("correlation", a, b, axis, keepdims=keepdims, out=out, backend=backend)
    call = Call("correlation", a, b, axis, backend)
    lay, ex = call.layout, call.ex
    shape = lay.kept if keepdims else lay.reduced
    out = ex.checked(out, shape)
    if call.backend == "reference":
        return ex.deliver(reference.correlation(ex.a, ex.b, call.axes, keepdims), shape, out)
    if _blocks.needed(call, grads=False):
        return ex.deliver(_blocks.correlation(call), shape, out)
    P, R, Q = lay.prq
    work = ex.target(out, (P, Q))
    ex.run("correlation", *ex.operands(), work)
    _remember(key, call, shape)
    return ex.deliver(work, shape, out)


def correlation_vjp(a, b, grad, axis=-1, *, out=None, backend="auto"):
    """Gradients (grad * b, grad * a) of sum(grad * correlation(a, b, axis)) with respect to
    a and b, in their shapes. grad has the shape of the correlation (keepdims or not)."""
    key = _key("correlation_vjp", a, b, axis, backend, out)
    if key is not None and type(grad) is np.ndarray:
        key += (grad.shape, grad.dtype)
        plan = _PLANS.get(key)
        if plan is not None and a.flags.c_contiguous and b.flags.c_contiguous:
            return plan(a, b, grad)
    if _lazy(a, b, grad):
        return _on_dask("correlation_vjp", a, b, axis, grad=grad, out=out, backend=backend)
    call = Call("correlation_vjp", a, b, axis, backend)
    lay, ex = call.layout, call.ex
    outs = ex.checked_pair(out, call.shapes)
    g = ex.upstream(grad, lambda shape: lay.grad_target(call.func, shape))
    if call.backend == "reference":
        grads = reference.correlation_vjp(ex.a, ex.b, g.astype(call.dtype), call.axes)
        return tuple(ex.deliver(x, s, o) for x, s, o in zip(grads, call.shapes, outs))
    g = ex.contiguous(g, _F64).reshape((lay.prq[0], lay.prq[2]))
    if _blocks.needed(call, grads=True):
        grads = _blocks.vjp(call, g)
        return tuple(ex.deliver(x, s, o) for x, s, o in zip(grads, call.shapes, outs))
    ga, gb = (ex.target(o, lay.prq, lay.direct(s), (g,)) for o, s in zip(outs, call.shapes))
    ex.run("correlation_vjp", *ex.operands(), g, ga, gb)
    if key is not None and len(key) == 10:
        _remember(key, call)
    return tuple(ex.deliver_grad(x, s, o) for x, s, o in zip((ga, gb), call.shapes, outs))


def _loss(func, op, a, b, axis, reduction, backend, out=None, grads=False, plan=None):
    """corr_loss or product_loss (op), with the gradients where grads; a small call's plan
    is kept under the key `plan` (see _loss_and_grad)."""
    call = Call(func, a, b, axis, backend, reduction)
    lay, ex = call.layout, call.ex
    outs = ex.checked_pair(out, call.shapes) if grads else None
    if call.backend == "reference":
        res = getattr(reference, op + "_and_grad" if grads else op)(ex.a, ex.b, call.axes,
                                                                    reduction)
        return results(ex, res[0], res[1:], outs, call.shapes) if grads else results(ex, res)
    corr = op == "corr_loss"
    if _blocks.needed(call, grads):
        loss, accs, f = _blocks.loss(call, corr, reduction, grads)
        if not grads:
            return loss
        return (loss, *(ex.deliver(x, s, o, factor=f) for x, s, o in zip(accs, call.shapes,
                                                                           outs)))
    P, R, Q = lay.prq
    pos = ex.zeros((P, Q), _F64) if reduction == "none" else None
    total = ex.zeros((1,), _F64)
    ga = gb = None
    if grads:
        ga, gb = (ex.target(o, lay.prq, lay.direct(s)) for o, s in zip(outs, call.shapes))
    ex.run("corr_loss_grad" if corr else "product_loss_grad", *ex.operands(),
           call.scale(reduction), pos, ga, gb, total)
    if reduction == "none":
        loss = ex.deliver(pos, lay.reduced, None, square=corr, factor=0.5)
    else:
        loss = ex.loss(total, lay.positions if reduction == "mean" else 1)
    if reduction != "none":
        _remember(plan, call)
    if not grads:
        return loss
    return (loss, *(ex.deliver_grad(x, s, o) for x, s, o in zip((ga, gb), call.shapes, outs)))


def corr_loss(a, b, axis=-1, *, reduction="sum", backend="auto"):
    """0.5 * ||correlation(a, b, axis)||**2: summed, averaged over positions, or per position."""
    return _loss_and_grad("corr_loss", a, b, axis, reduction, None, backend)


def corr_loss_and_grad(a, b, axis=-1, *, reduction="sum", out=None, backend="auto"):
    """(corr_loss, grad_a, grad_b) in one fused pass; grad_a = corr * b, grad_b = corr * a."""
    return _loss_and_grad("corr_loss_and_grad", a, b, axis, reduction, out, backend)


def product_loss(a, b, axis=-1, *, reduction="sum", backend="auto"):
    """0.5 * ||a * b||**2, summed along axis per position, then reduced over positions."""
    return _loss_and_grad("product_loss", a, b, axis, reduction, None, backend)


def product_loss_and_grad(a, b, axis=-1, *, reduction="sum", out=None, backend="auto"):
    """(product_loss, grad_a, grad_b) in one fused pass; grad_a = a*b**2, grad_b = a**2*b."""
    return _loss_and_grad("product_loss_and_grad", a, b, axis, reduction, out, backend)


def _loss_and_grad(func, a, b, axis, reduction, out, backend):
    """Either loss (func), with its gradients where func ends in _and_grad."""
    key = _key(func, a, b, axis, backend, out, reduction)
    plan = _PLANS.get(key)
    if plan is not None and a.flags.c_contiguous and b.flags.c_contiguous:
        return plan(a, b)
    grads = func.endswith("_and_grad")
    if _lazy(a, b):
        kw = {"out": out} if grads else {}
        return _on_dask(func, a, b, axis, reduction=reduction, backend=backend, **kw)
    return _loss(func, func.removesuffix("_and_grad"), a, b, axis, reduction, backend, out,
                 grads=grads, plan=key)


# --------------------------------------------------------------------------- small calls
# Small inputs must not pay more Python than the NumPy expression they replace. A call that
# passed every check leaves a *plan* under its key: a ready-made serial kernel call for the
# same shapes, dtypes and arguments, C-ordered. Keys hold only exact types, so values that
# compare equal but validate differently (1.0 and True beside 1, str subclasses) never find
# one: an outcome never depends on what ran before.

_PLANS = {}
_PLAN_MAX = 1 << 15  # elements: above this the call is long enough that planning is noise


def _key(func, a, b, axis, backend, out, arg=""):
    """The plan key of a call, or None where no plan may serve it; arg: keepdims or
    reduction."""
    if (out is None and type(a) is np.ndarray and type(b) is np.ndarray and type(axis) is int
            and type(backend) is str and (type(arg) is str or type(arg) is bool)):
        return (func, a.shape, a.dtype, b.shape, b.dtype, axis, backend, arg)
    return None


def _remember(key, call, shape=None):
    """Keep, under `key`, a plan for the call just made, where its operands were the
    caller's own C-ordered arrays of one shape and its layout needs no transposition (the
    plan reshapes them to (P, R, Q))."""
    lay, ex = call.layout, call.ex
    if (key is None or call.backend != "cpu" or lay.perm is not None or lay.empty
            or call.shapes[0] != call.shapes[1] or lay.size > _PLAN_MAX
            or (key[0] == "correlation_vjp" and key[8] not in (lay.reduced, lay.kept))
            or key[2] != call.dtype or key[4] != call.dtype  # the caller's arrays, as given
            or not (ex.a.flags.c_contiguous and ex.b.flags.c_contiguous)):
        return
    func, dtype, (P, _, Q) = key[0], call.dtype, lay.prq
    reduction = key[7] if "loss" in func else None
    kshape, run = ex.kernels.serial_plan(func, lay.prq, dtype, call.scale(reduction))
    full = lay.shape

    if func == "correlation":
        def plan(a, b):
            out = np.empty((P, Q), dtype)
            run(a.reshape(kshape), b.reshape(kshape), out)
            return out.reshape(shape)
    elif func == "correlation_vjp":
        def plan(a, b, g):
            ga, gb = np.empty(kshape, dtype), np.empty(kshape, dtype)
            run(a.reshape(kshape), b.reshape(kshape),
                np.ascontiguousarray(g, _F64).reshape(P, Q), ga, gb)
            return ga.reshape(full), gb.reshape(full)
    else:
        mean = reduction == "mean" and lay.positions
        grads = func.endswith("_and_grad")
        none = np.empty((1,) * (len(kshape) - 1) + (0,), dtype)  # no gradients wanted

        def plan(a, b):
            ga, gb = (np.empty(kshape, dtype), np.empty(kshape, dtype)) if grads else (none,
                                                                                     none)
            loss = run(a.reshape(kshape), b.reshape(kshape), ga, gb)
            loss = dtype.type(loss / mean if mean else loss)
            return (loss, ga.reshape(full), gb.reshape(full)) if grads else loss

    if len(_PLANS) > 256:
        _PLANS.clear()
    _PLANS[key] = plan


PUBLIC = {f.__name__: f for f in (correlation, correlation_vjp, corr_loss, corr_loss_and_grad,
                                  product_loss, product_loss_and_grad)}
