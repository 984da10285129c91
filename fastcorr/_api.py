"""The six public functions, each written once over an executor (docs/design.md, "Front end").

A call is checked (`_call.Call`) and handed to the executor of its arrays: `_executor.Host`
for NumPy arrays and the CPU kernels, `_device.Device` for CUDA arrays of any library (and for
NumPy input with backend="cuda"). Both offer the same primitives on the (P, R, Q) layout of
`_layout`, and the kernels of both take the same arguments (`_kernels`), so each function
below reads as one flow. backend="reference" returns early with `fastcorr.reference`'s N-D
formulation; broadcast operands much larger than the inputs run in blocks (`_blocks`); Dask
arrays go to `_dask`, which builds a graph of these same functions.

The public signatures are typed (`fastcorr._typing`): NumPy arrays in give NumPy types out
(the first overloads); anything else (CUDA device arrays, Dask arrays, array-likes) gives Any.
The four losses are made by `_loss_function`, corr_loss and product_loss typed as one
`_typing.Loss`, their _and_grad twins as `_typing.LossAndGrad`. The docstrings share fragments
(`fastcorr._docs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from . import _blocks, reference
from ._call import Call, results
from ._docs import shared
from ._validate import check_flag, is_dask_array

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from ._typing import (Axis, Backend, CudaArray, FloatArray, Input, Loss, LossAndGrad,
                          Reduction)

_F64 = np.dtype(np.float64)


def _lazy(*xs: object) -> bool:
    """Whether any input is a Dask array. NumPy inputs are answered first: this runs on
    every call, small ones included."""
    if all(type(x) is np.ndarray or x is None for x in xs):
        return False
    return any(is_dask_array(x) for x in xs)


def _on_dask(name: str, a: Input, b: Input, axis: Axis, **kw: Any) -> Any:
    """fastcorr.<name> on Dask arrays: a graph of these same functions, chunk by chunk."""
    from . import _dask

    return _dask.run(PUBLIC, name, a, b, axis, **kw)


# --------------------------------------------------------------------------- public functions


@overload
def correlation(a: NDArray[Any], b: NDArray[Any], axis: Axis = -1, *, keepdims: bool = False,
                out: FloatArray | None = None, backend: Backend = "auto") -> FloatArray: ...
@overload
def correlation(a: Input, b: Input, axis: Axis = -1, *, keepdims: bool = False,
                out: NDArray[Any] | CudaArray | None = None, backend: Backend = "auto"
                ) -> Any: ...
@shared
def correlation(a: Input, b: Input, axis: Axis = -1, *, keepdims: bool = False,
                out: NDArray[Any] | CudaArray | None = None, backend: Backend = "auto"
                ) -> Any:
    """The correlation of `a` and `b`: ``sum(a * b, axis)``, fused.

    The products are summed as they are formed, without the array of products NumPy's
    ``np.sum(a * b, axis)`` holds; for real inputs this is ``numpy.vecdot`` along any axis
    or axes. On the CPU the sums are compensated: a sum's error is that of 64 terms at any
    length (CUDA sums in float64).

    {Parameters: a_b axis keepdims out backend}

    Returns
    -------
    corr : ndarray or device array
        ``sum(a * b, axis)``, in the broadcast shape of `a` and `b` without the reduced axes
        (kept as length 1 if `keepdims`); `out` where given. Where no axis remains, a NumPy
        scalar for host inputs, as NumPy's reductions give.

    {Raises: raises}

    See Also
    --------
    correlation_vjp : the gradients of ``sum(grad * correlation(a, b, axis))``.
    fastcorr.reference.correlation : the plain-NumPy formulation.

    {Notes: results}

    {Examples: imports}
    >>> a = np.arange(6.0).reshape(2, 3)
    >>> b = np.ones((2, 3))
    >>> fastcorr.correlation(a, b)
    array([ 3., 12.])
    >>> fastcorr.correlation(a, b, axis=0)
    array([3., 5., 7.])
    >>> fastcorr.correlation(a, b, keepdims=True)
    array([[ 3.],
           [12.]])

    Python scalars broadcast and are weak, as in NumPy 2:

    >>> fastcorr.correlation(a.astype(np.float32), 2.0)
    array([ 6., 24.], dtype=float32)
    """
    key = _key("correlation", a, b, axis, backend, out, keepdims)
    plan = _PLANS.get(key)
    if plan is not None and a.flags.carray and b.flags.carray:  # type: ignore
        return plan(a, b)
    keepdims = check_flag("correlation", "keepdims", keepdims)
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


@overload
def correlation_vjp(a: NDArray[Any], b: NDArray[Any], grad: ArrayLike, axis: Axis = -1, *,
                    out: Sequence[FloatArray] | None = None, backend: Backend = "auto"
                    ) -> tuple[FloatArray, FloatArray]: ...
@overload
def correlation_vjp(a: Input, b: Input, grad: Input, axis: Axis = -1, *,
                    out: Sequence[Any] | None = None, backend: Backend = "auto"
                    ) -> tuple[Any, Any]: ...
@shared
def correlation_vjp(a: Input, b: Input, grad: Input, axis: Axis = -1, *,
                    out: Sequence[Any] | None = None, backend: Backend = "auto"
                    ) -> tuple[Any, Any]:
    """The gradients of ``sum(grad * correlation(a, b, axis))``: ``(grad * b, grad * a)``.

    The vector-Jacobian product of `correlation`, the backward pass of a network that uses
    it: `grad` is broadcast back along the reduced axes and multiplied by the other input,
    and each gradient is summed back over the axes along which its input was broadcast.
    Both gradients are written in one pass over `a` and `b`.

    {Parameters: a_b grad axis out_pair backend}

    {Returns: grad_returns}

    {Raises: raises}

    See Also
    --------
    correlation : the forward pass, ``sum(a * b, axis)``.
    corr_loss_and_grad : the gradients for the correlation itself as `grad`, with the loss.

    Notes
    -----
    With ``c = correlation(a, b, axis, keepdims=True)`` and `grad` of its shape,
    ``grad_a = grad * b`` and ``grad_b = grad * a``, each summed back to its input's shape.

    {results}

    {Examples: imports}
    >>> a = np.arange(6.0).reshape(2, 3)
    >>> b = np.ones((2, 3))
    >>> grad_a, grad_b = fastcorr.correlation_vjp(a, b, np.array([1.0, 2.0]))
    >>> grad_a
    array([[1., 1., 1.],
           [2., 2., 2.]])
    >>> grad_b
    array([[ 0.,  1.,  2.],
           [ 6.,  8., 10.]])
    """
    key = _key("correlation_vjp", a, b, axis, backend, out, grad=grad)
    plan = _PLANS.get(key)
    if plan is not None and a.flags.carray and b.flags.carray:  # type: ignore
        return plan(a, b, grad)  # type: ignore[no-any-return]
    if _lazy(a, b, grad):
        return _on_dask(  # type: ignore[no-any-return]
            "correlation_vjp", a, b, axis, grad=grad, out=out, backend=backend)
    call = Call("correlation_vjp", a, b, axis, backend)
    lay, ex = call.layout, call.ex
    outs = ex.checked_pair(out, call.shapes)
    g = ex.upstream(grad, lambda shape: lay.grad_target(call.func, shape))
    if call.backend == "reference":
        grads = reference.correlation_vjp(ex.a, ex.b, g.astype(call.dtype), call.axes)
        return tuple(ex.deliver(x, s, o) for x, s, o in zip(grads, call.shapes, outs))
    # g of the compute dtype goes in as it is: the kernels' products of it are exact in
    # float64 and rounded once, the same bits as from its float64 copy, which at few
    # channels was a fifth array to move (1/C of each input, in float64)
    g = ex.contiguous(g, g.dtype if g.dtype == call.dtype else _F64).reshape(
        (lay.prq[0], lay.prq[2]))
    if _blocks.needed(call, grads=True):
        grads = _blocks.vjp(call, g)
        return tuple(ex.deliver(x, s, o) for x, s, o in zip(grads, call.shapes, outs))
    ga, gb = (ex.target(o, lay.prq, lay.direct(s), (g,)) for o, s in zip(outs, call.shapes))
    ex.run("correlation_vjp", *ex.operands(), g, ga, gb)
    _remember(key, call)
    return tuple(ex.deliver_grad(x, s, o) for x, s, o in zip((ga, gb), call.shapes, outs))


def _loss(func: str, op: str, a: Input, b: Input, axis: Axis, reduction: Reduction,
          backend: Backend, out: Any = None, grads: bool = False, plan: Any = None) -> Any:
    """corr_loss or product_loss (op), with the gradients where grads; a small call's plan
    is kept under the key `plan` (see _loss_and_grad)."""
    call = Call(func, a, b, axis, backend, reduction)
    lay, ex = call.layout, call.ex
    outs: Any = ex.checked_pair(out, call.shapes) if grads else None
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


def _loss_function(func: str, doc: str) -> Any:
    """A public loss function, `func`: corr_loss and product_loss share one signature
    (`_typing.Loss`), their _and_grad twins another (`_typing.LossAndGrad`), and all four
    one flow (`_loss_and_grad`)."""
    if func.endswith("_and_grad"):
        def public(a: Input, b: Input, axis: Axis = -1, *, reduction: Reduction = "sum",
                   out: Sequence[Any] | None = None, backend: Backend = "auto") -> Any:
            return _loss_and_grad(func, a, b, axis, reduction, out, backend)
    else:
        def public(a: Input, b: Input, axis: Axis = -1, *,  # type: ignore[misc]
                   reduction: Reduction = "sum", backend: Backend = "auto") -> Any:
            return _loss_and_grad(func, a, b, axis, reduction, None, backend)
    public.__name__ = public.__qualname__ = func
    public.__doc__ = doc
    return shared(public)


corr_loss: Loss = _loss_function("corr_loss", """\
The correlation loss ``0.5 * ||correlation(a, b, axis)||**2``.

    Half the squared correlation at each position (each index of the axes that are not
    reduced), summed, averaged or returned per position. The correlation is never stored:
    each position's loss is accumulated as it is computed, in float64.

    {loss_sections}

    See Also
    --------
    corr_loss_and_grad : the loss with its gradients, in one fused pass.
    product_loss : the loss of the products themselves, not of their sum.

    Notes
    -----
    With ``c = sum(a * b, axis)``: ``0.5 * sum(c**2)`` ("sum"), that divided by ``c.size``
    ("mean"), or ``0.5 * c**2`` ("none").

    {results}

    {Examples: imports}
    >>> a = np.arange(6.0).reshape(2, 3)
    >>> b = np.ones((2, 3))
    >>> fastcorr.corr_loss(a, b)  # correlation [3, 12]: 0.5 * (9 + 144)
    np.float64(76.5)
    >>> fastcorr.corr_loss(a, b, reduction="mean")
    np.float64(38.25)
    >>> fastcorr.corr_loss(a, b, reduction="none")
    array([ 4.5, 72. ])
    """)


corr_loss_and_grad: LossAndGrad = _loss_function("corr_loss_and_grad", """\
The correlation loss and its gradients, ``(loss, corr * b, corr * a)``, fused.

    One pass reads `a` and `b` once, writes both gradients once and accumulates the loss on
    the way: four array passes, the memory-traffic floor, where computing the correlation,
    the loss and the two gradients separately reads and writes each array again.

    {loss_grad_sections}

    See Also
    --------
    corr_loss : the loss alone.
    correlation_vjp : the gradients for any upstream gradient.

    Notes
    -----
    With ``c = sum(a * b, axis, keepdims=True)``: the loss is as in `corr_loss`,
    ``grad_a = c * b`` and ``grad_b = c * a`` (divided by the number of positions for
    "mean"), each summed back to its input's shape.

    {results}

    {Examples: imports}
    >>> a = np.arange(6.0).reshape(2, 3)
    >>> b = np.ones((2, 3))
    >>> loss, grad_a, grad_b = fastcorr.corr_loss_and_grad(a, b)
    >>> loss
    np.float64(76.5)
    >>> grad_a  # the correlation [3, 12] times b
    array([[ 3.,  3.,  3.],
           [12., 12., 12.]])
    >>> grad_b  # the correlation times a
    array([[ 0.,  3.,  6.],
           [36., 48., 60.]])
    """)


product_loss: Loss = _loss_function("product_loss", """\
The product loss ``0.5 * ||a * b||**2``, per correlation position.

    Half the squared products, summed along `axis` at each position (each index of the axes
    that are not reduced), then summed, averaged or returned per position. The products are
    never stored; the loss is accumulated in float64.

    {loss_sections}

    See Also
    --------
    product_loss_and_grad : the loss with its gradients, in one fused pass.
    corr_loss : the loss of the correlation, the sum of the products.

    Notes
    -----
    With ``p = 0.5 * sum((a * b)**2, axis)``: ``sum(p)`` ("sum"), that divided by ``p.size``
    ("mean"), or ``p`` ("none").

    {results}

    {Examples: imports}
    >>> a = np.arange(6.0).reshape(2, 3)
    >>> b = np.ones((2, 3))
    >>> fastcorr.product_loss(a, b)  # 0.5 * (0 + 1 + 4 + 9 + 16 + 25)
    np.float64(27.5)
    >>> fastcorr.product_loss(a, b, reduction="none")
    array([ 2.5, 25. ])
    """)


product_loss_and_grad: LossAndGrad = _loss_function("product_loss_and_grad", """\
The product loss and its gradients, ``(loss, a * b**2, a**2 * b)``, fused.

    One pass reads `a` and `b` once, writes both gradients once and accumulates the loss on
    the way: four array passes, the memory-traffic floor.

    {loss_grad_sections}

    See Also
    --------
    product_loss : the loss alone.

    Notes
    -----
    The loss is as in `product_loss`; ``grad_a = a * b**2`` and ``grad_b = a**2 * b``
    (divided by the number of positions for "mean"), each summed back to its input's shape.

    {results}

    {Examples: imports}
    >>> a = np.arange(6.0).reshape(2, 3)
    >>> b = np.full((2, 3), 2.0)
    >>> loss, grad_a, grad_b = fastcorr.product_loss_and_grad(a, b)
    >>> loss  # 0.5 * 4 * (0 + 1 + 4 + 9 + 16 + 25)
    np.float64(110.0)
    >>> grad_a  # a * b**2
    array([[ 0.,  4.,  8.],
           [12., 16., 20.]])
    >>> grad_b  # a**2 * b
    array([[ 0.,  2.,  8.],
           [18., 32., 50.]])
    """)


def _loss_and_grad(func: str, a: Any, b: Any, axis: Axis, reduction: Reduction, out: Any,
                   backend: Backend) -> Any:
    """Either loss (func), with its gradients where func ends in _and_grad."""
    key = _key(func, a, b, axis, backend, out, reduction)
    plan = _PLANS.get(key)
    if plan is not None and a.flags.carray and b.flags.carray:
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
# same shapes, dtypes and arguments, served only to behaved C-ordered arrays (`flags.carray`:
# the plan calls compiled code that checks no types). Keys hold only exact types, so values that
# compare equal but validate differently (1.0 and True beside 1, str subclasses) never find
# one: an outcome never depends on what ran before.

_PLANS: dict[tuple[Any, ...] | None, Callable[..., Any]] = {}
_PLAN_MAX = 1 << 15  # elements: above this the call is long enough that planning is noise


_NO_GRAD = object()


def _key(func: str, a: Any, b: Any, axis: Axis, backend: Backend, out: Any,
         arg: str | bool = "", grad: Any = _NO_GRAD) -> tuple[Any, ...] | None:
    """The plan key of a call, or None where no plan may serve it; arg: keepdims or
    reduction; grad: the VJP's upstream gradient, a NumPy array too where a plan serves."""
    if (out is None and type(a) is np.ndarray and type(b) is np.ndarray and type(axis) is int
            and type(backend) is str and (type(arg) is str or type(arg) is bool)):
        if grad is _NO_GRAD:
            return (func, a.shape, a.dtype, b.shape, b.dtype, axis, backend, arg)
        if type(grad) is np.ndarray:
            return (func, a.shape, a.dtype, b.shape, b.dtype, axis, backend, arg, grad.shape,
                    grad.dtype)
    return None


def _remember(key: tuple[Any, ...] | None, call: Call, shape: tuple[int, ...] | None = None
              ) -> None:
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
    full = lay.shape
    if len(_PLANS) > 256:
        _PLANS.clear()
    if func == "correlation_vjp":
        _PLANS[key] = ex.kernels.vjp_plan(lay.prq, full, dtype, key[8])
        return
    kshape, run = ex.kernels.serial_plan(func, lay.prq, dtype, call.scale(reduction))

    if func == "correlation":
        def plan(a: Any, b: Any) -> Any:
            out = np.empty((P, Q), dtype)
            run(a.reshape(kshape), b.reshape(kshape), out)
            return out.reshape(shape) if shape else out[0, 0]  # a scalar, as deliver's
    else:
        mean = reduction == "mean" and lay.positions
        grads = func.endswith("_and_grad")
        none = np.empty((1,) * (len(kshape) - 1) + (0,), dtype)  # no gradients wanted

        def plan(a: Any, b: Any) -> Any:
            ga, gb = (np.empty(kshape, dtype), np.empty(kshape, dtype)) if grads else (none,
                                                                                     none)
            loss = run(a.reshape(kshape), b.reshape(kshape), ga, gb)
            loss = dtype.type(loss / mean if mean else loss)
            return (loss, ga.reshape(full), gb.reshape(full)) if grads else loss

    _PLANS[key] = plan


PUBLIC: dict[str, Callable[..., Any]] = dict(
    correlation=correlation, correlation_vjp=correlation_vjp, corr_loss=corr_loss,
    corr_loss_and_grad=corr_loss_and_grad, product_loss=product_loss,
    product_loss_and_grad=product_loss_and_grad)
