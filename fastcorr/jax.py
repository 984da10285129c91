"""fastcorr for JAX: the correlation and the two losses with `jax.custom_vjp`, usable under
`jax.jit`, `jax.grad`, `jax.value_and_grad` and `jax.vmap`.

    from fastcorr.jax import corr_loss
    loss, (ga, gb) = jax.jit(jax.value_and_grad(corr_loss, argnums=(0, 1)))(a, b)

fastcorr runs inside the JAX program through `jax.experimental.buffer_callback`, which hands
it XLA's own buffers: on the CPU it reads the inputs and writes its results in place, as
NumPy views, with no copy either way. A differentiated summed loss runs fastcorr's fused
loss-and-gradients once, in the forward pass, writing the gradients into XLA's buffers; the
backward pass hands those same buffers on as the cotangents (`input_output_aliases`), scaled
in place by the incoming gradient where that is not 1: four array passes in all, as fastcorr
alone. A GPU's buffers are device arrays (`__cuda_array_interface__`) that fastcorr's
CUDA kernels read in place; that path is written for a GPU run and not yet tested on one.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.buffer_callback import buffer_callback

import fastcorr

from ._adapters import broadcast_dims, layout, layout_of, loss_functions, static_axis
from ._docs import sharing
from ._memory import advise_huge_pages

if TYPE_CHECKING:
    from jax.typing import ArrayLike

    from ._typing import Axis, LossFunction, Reduction

# this module's docstring fragments, beside fastcorr._docs's
_DOCS = {
    "a_b": """\
a, b : jax.Array or array_like
    The inputs, broadcast against each other; fastcorr reads XLA's own CPU buffers in
    place (``jax.experimental.buffer_callback``).""",
    "raises": """\
ValueError, numpy.exceptions.AxisError
    For shapes that do not broadcast and axes out of range, when the call is traced.
jax.errors.JaxRuntimeError
    For what fastcorr checks when it runs (`reduction`, dtypes), inside the callback:
    JAX wraps fastcorr's ValueError or TypeError, whose message it shows.""",
}
shared = sharing(_DOCS, array="jax.Array", result="of ``jnp.result_type(a, b)`` (JAX's "
                 "default float type where that is an integer or bool type)")

__all__ = ["correlation", "corr_loss", "product_loss"]


def _array(buf: Any) -> Any:
    """An XLA buffer as what fastcorr computes on: a NumPy view of the CPU's, or a GPU's
    itself (a CUDA array, which NumPy cannot view)."""
    try:
        return np.asarray(buf)
    except Exception:  # noqa: BLE001 (jax raises its own error type for a device buffer)
        return buf


def _call(fn: Any, result: Any, *args: Any, aliases: Any = None) -> Any:
    """fn(*inputs, out) on XLA's buffers: it writes its results into out (one array, or a
    tuple of them), in place; `aliases` maps inputs to the outputs that are their buffers.
    vmap runs it once an item: fastcorr's axes are those of one."""
    def callback(ctx: Any, out: Any, *bufs: Any) -> Any:
        out = tuple(map(_array, out)) if isinstance(out, (tuple, list)) else _array(out)
        for x in out if isinstance(out, tuple) else (out,):
            if isinstance(x, np.ndarray):  # XLA's fresh CPU buffers: mapped 2 MiB at a time
                advise_huge_pages(x)
        fn(*map(_array, bufs), out)
    # A callback has no derivative of its own: what it computes is differentiated through
    # the custom rules below and `_exact`, never through it
    return buffer_callback(callback, result, vmap_method="sequential",
                           input_output_aliases=aliases)(*map(jax.lax.stop_gradient, args))


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _exact(plain: Any, xs: Any, values: Any) -> Any:
    """values, which fastcorr computed from xs, with the derivative of plain(*xs), the same
    values written in jnp: a backward pass is then itself differentiable (grad of grad,
    jax.jacrev of jax.grad, a gradient penalty), where a callback has no derivative at all.
    Forward mode (jax.jvp, jax.hessian) stays refused, as for every custom_vjp."""
    return values


def _exact_fwd(plain: Any, xs: Any, values: Any) -> Any:
    return values, xs


def _exact_bwd(plain: Any, xs: Any, ct: Any) -> Any:
    return jax.vjp(plain, *xs)[1](ct), jax.tree.map(jnp.zeros_like, ct)


_exact.defvjp(_exact_fwd, _exact_bwd)


def _floats(a: Any, b: Any) -> tuple[Any, Any]:
    """a and b as JAX arrays, each integer or bool one converted to the float dtype of the
    result: fastcorr computes integers in floats (float64 for NumPy input), where JAX's own
    promotion would keep an integer result type, and a float written into an integer buffer
    would be truncated. JAX differentiates through the conversion (a zero cotangent for an
    integer input)."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    dtype = jnp.result_type(a, b)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)  # float64 under jax_enable_x64, else float32
    a, b = (x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(dtype) for x in (a, b))
    return a, b


def _struct(shape: Any, dtype: Any) -> Any:
    return jax.ShapeDtypeStruct(shape, dtype)  # type: ignore[no-untyped-call]


def _put(out: Any, value: Any) -> Any:
    """A scalar loss written into a 0-d output buffer."""
    np.asarray(out)[...] = value


# --------------------------------------------------------------------------- correlation


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _correlation(a: Any, b: Any, axis: Any, keepdims: Any) -> Any:
    _, _, shape = layout("correlation", a.shape, b.shape, axis, keepdims)
    return _call(lambda x, y, out: fastcorr.correlation(x, y, axis, keepdims=keepdims, out=out),
                 _struct(shape, jnp.result_type(a, b)), a, b)


def _correlation_fwd(a: Any, b: Any, axis: Any, keepdims: Any) -> Any:
    return _correlation(a, b, axis, keepdims), (a, b)


def _correlation_bwd(axis: Any, keepdims: Any, res: Any, g: Any) -> Any:
    a, b = res
    return _vjp(a, b, g, axis)


def _vjp(a: Any, b: Any, g: Any, axis: Any) -> Any:
    values = _call(lambda x, y, w, out: fastcorr.correlation_vjp(x, y, w, axis, out=out),
                   (_struct(a.shape, a.dtype), _struct(b.shape, b.dtype)), a, b, g)
    return _exact(partial(_plain_vjp, axis), (a, b, g), values)


def _plain_vjp(axis: Any, a: Any, b: Any, g: Any) -> Any:
    """correlation_vjp in jnp: (g * b, g * a), each summed back to its input's shape."""
    shape, axes, _ = layout("correlation_vjp", a.shape, b.shape, axis)
    g = g.reshape(layout_of(shape, axes).kept)
    return (_sum_to(jnp.broadcast_to(g * b, shape), a.shape).astype(a.dtype),
            _sum_to(jnp.broadcast_to(g * a, shape), b.shape).astype(b.dtype))


_correlation.defvjp(_correlation_fwd, _correlation_bwd)


# --------------------------------------------------------------------------- losses


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _loss(a: Any, b: Any, op: Any, axis: Any, reduction: Any) -> Any:
    _, _, per = layout(op, a.shape, b.shape, axis)
    dtype = jnp.result_type(a, b)
    if reduction == "none":
        return _call(lambda x, y, out: np.copyto(out, getattr(fastcorr, op)(
            x, y, axis, reduction="none")), _struct(per, dtype), a, b)
    return _call(lambda x, y, out: _put(out, getattr(fastcorr, op)(x, y, axis,
                                                                   reduction=reduction)),
                 _struct((), dtype), a, b)


def _loss_fwd(a: Any, b: Any, op: Any, axis: Any, reduction: Any) -> Any:
    if reduction == "none":
        return _loss(a, b, op, axis, reduction), (a, b)
    # the fused pass: the loss, and the gradients of the summed loss kept for the backward
    def fused(x: Any, y: Any, out: Any) -> Any:
        _put(out[0], getattr(fastcorr, op + "_and_grad")(x, y, axis, reduction=reduction,
                                                         out=out[1:])[0])
    loss, ga, gb = _call(fused, (_struct((), jnp.result_type(a, b)),
                                 _struct(a.shape, a.dtype), _struct(b.shape, b.dtype)), a, b)
    # the loss too: value_and_grad inside another grad differentiates this pass's value
    loss, ga, gb = _exact(partial(_plain_fused, op, axis, reduction), (a, b), (loss, ga, gb))
    return loss, (a, b, ga, gb)


def _plain_fused(op: Any, axis: Any, reduction: Any, a: Any, b: Any) -> Any:
    """(loss, grad_a, grad_b) by jax.value_and_grad of the loss's jnp formula."""
    def loss(x: Any, y: Any) -> Any:
        _, axes, _ = layout(op, x.shape, y.shape, axis)
        per = 0.5 * jnp.sum(x * y, axis=axes) ** 2 if op == "corr_loss" else \
            0.5 * jnp.sum((x * y) ** 2, axis=axes)
        return jnp.mean(per) if reduction == "mean" else jnp.sum(per)
    value, (ga, gb) = jax.value_and_grad(loss, argnums=(0, 1))(a, b)
    return value.astype(jnp.result_type(a, b)), ga, gb


def _scale(ga: Any, gb: Any, w: Any, out: Any) -> Any:
    """out (the buffers of ga and gb) *= w, in place; nothing to do for w == 1, which is
    what value_and_grad and grad of the loss itself give."""
    w = float(np.asarray(w))
    if w != 1.0:
        for o in out:
            o *= w


def _scaled(ga: Any, gb: Any, g: Any) -> Any:
    return (g * ga).astype(ga.dtype), (g * gb).astype(gb.dtype)


def _loss_bwd(op: Any, axis: Any, reduction: Any, res: Any, g: Any) -> Any:
    a, b = res[:2]
    if reduction != "none":  # the kept gradients, scaled in their own buffers
        ga, gb = res[2:]
        values = _call(_scale, (_struct(ga.shape, ga.dtype), _struct(gb.shape, gb.dtype)), ga,
                       gb, g, aliases={0: 0, 1: 1})
        return _exact(_scaled, (ga, gb, g), values)
    # per position: the gradients of sum(g * loss), g broadcast back along the reduced axes
    _, axes, _ = layout(op, a.shape, b.shape, axis)
    g = jnp.expand_dims(g, axes)
    if op == "corr_loss":
        return _vjp(a, b, g * _correlation(a, b, axis, True), axis)
    p = g * a * b  # in the wider dtype: each cotangent back in its own input's
    return _sum_to(p * b, a.shape).astype(a.dtype), _sum_to(p * a, b.shape).astype(b.dtype)


def _sum_to(x: Any, shape: Any) -> Any:
    dims = broadcast_dims(x.shape, shape)
    return jnp.sum(x, axis=dims, keepdims=True).reshape(shape) if dims else x


_loss.defvjp(_loss_fwd, _loss_bwd)


@shared
def correlation(a: ArrayLike, b: ArrayLike, axis: Axis = -1, *, keepdims: bool = False
                ) -> jax.Array:
    """The correlation ``sum(a * b, axis)``, differentiable in `a` and `b`.

    A ``jax.custom_vjp`` whose forward pass is `fastcorr.correlation` and whose backward is
    `fastcorr.correlation_vjp`, usable under ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

    {adapter_correlation}

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import fastcorr.jax as fj
    >>> a = jnp.arange(6.0).reshape(2, 3)
    >>> b = jnp.ones((2, 3))
    >>> fj.correlation(a, b)
    Array([ 3., 12.], dtype=float32)
    """
    out: jax.Array = _correlation(*_floats(a, b), static_axis(axis), keepdims)
    return out


_LOSS_DOC = """<title>, differentiable.

    A ``jax.custom_vjp``. Differentiated, a summed loss runs fastcorr's fused
    `fastcorr.<name>_and_grad` once, in the forward pass, writing the gradients into
    XLA's buffers; the backward pass hands those buffers on as the cotangents, scaled in
    place where the incoming gradient is not 1. Not differentiated, the loss is computed
    alone.

    {adapter_loss}

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import fastcorr.jax as fj
    >>> a, b = jnp.arange(6.0).reshape(2, 3), <scale>jnp.ones((2, 3))
    >>> float(fj.<name>(a, b))
    <loss>
    >>> jax.grad(fj.<name>)(a, b).tolist()  # <why>
    <grad>
    """


def _public_loss(a: ArrayLike, b: ArrayLike, op: str, axis: Axis, reduction: Reduction
                 ) -> jax.Array:
    out: jax.Array = _loss(*_floats(a, b), op, static_axis(axis), reduction)
    return out


corr_loss: LossFunction[jax.Array]
product_loss: LossFunction[jax.Array]
corr_loss, product_loss = loss_functions(_public_loss, shared, _LOSS_DOC)
