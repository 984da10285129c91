"""fastcorr for JAX: the correlation and the two losses with `jax.custom_vjp`, usable under
`jax.jit` and `jax.grad`, computed on the CPU by fastcorr through `jax.pure_callback`.

    from fastcorr.jax import corr_loss
    loss, (ga, gb) = jax.jit(jax.value_and_grad(corr_loss, argnums=(0, 1)))(a, b)

The forward pass of a loss is fastcorr's fused loss-and-gradients: the gradients are kept as
residuals, and the backward pass scales them by the incoming gradient. A callback receives
and returns host arrays: on a GPU, JAX copies through the host (use the CUDA arrays with
`fastcorr` itself there).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import fastcorr

from ._adapters import broadcast_dims, layout

__all__ = ["correlation", "corr_loss", "product_loss"]


def _shapes(a, b, axis, keepdims=False):
    return layout(a.shape, b.shape, axis, keepdims)


def _struct(shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype)


def _host(f):
    """A callback on NumPy views of the arrays JAX hands over; results as NumPy arrays."""
    def run(*args):
        out = f(*[np.asarray(x) for x in args])
        return tuple(np.asarray(x) for x in out) if isinstance(out, tuple) else np.asarray(out)
    return run


# --------------------------------------------------------------------------- correlation


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _correlation(a, b, axis, keepdims):
    _, _, out = _shapes(a, b, axis, keepdims)
    dtype = jnp.result_type(a, b)
    return jax.pure_callback(
        _host(lambda x, y: fastcorr.correlation(x, y, axis, keepdims=keepdims)),
        _struct(out, dtype), a, b)


def _correlation_fwd(a, b, axis, keepdims):
    return _correlation(a, b, axis, keepdims), (a, b)


def _correlation_bwd(axis, keepdims, res, g):
    a, b = res
    return jax.pure_callback(
        _host(lambda x, y, w: fastcorr.correlation_vjp(x, y, w, axis)),
        (_struct(a.shape, a.dtype), _struct(b.shape, b.dtype)), a, b, g)


_correlation.defvjp(_correlation_fwd, _correlation_bwd)


# --------------------------------------------------------------------------- losses


def _loss_struct(a, b, axis, reduction):
    _, _, per = _shapes(a, b, axis)
    return _struct(per if reduction == "none" else (), jnp.result_type(a, b))


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _loss(a, b, op, axis, reduction):
    return jax.pure_callback(
        _host(lambda x, y: getattr(fastcorr, op)(x, y, axis, reduction=reduction)),
        _loss_struct(a, b, axis, reduction), a, b)


def _loss_fwd(a, b, op, axis, reduction):
    loss, ga, gb = jax.pure_callback(
        _host(lambda x, y: getattr(fastcorr, op + "_and_grad")(x, y, axis,
                                                                reduction=reduction)),
        (_loss_struct(a, b, axis, reduction), _struct(a.shape, a.dtype),
         _struct(b.shape, b.dtype)), a, b)
    return loss, (ga, gb, a, b)


def _loss_bwd(op, axis, reduction, res, g):
    ga, gb, a, b = res
    shape, axes, _ = _shapes(a, b, axis)
    if reduction != "none" or a.shape == b.shape == shape:
        # the gradients of the summed loss, scaled by the incoming gradient (per position)
        g = jnp.expand_dims(g, axes) if reduction == "none" else g
        return (g * ga).astype(a.dtype), (g * gb).astype(b.dtype)
    # per-position losses of broadcast inputs: weight before summing over broadcast axes
    g = jnp.expand_dims(g, axes)
    if op == "corr_loss":
        corr = _correlation(a, b, axis, True)
        return jax.pure_callback(
            _host(lambda x, y, w: fastcorr.correlation_vjp(x, y, w, axis)),
            (_struct(a.shape, a.dtype), _struct(b.shape, b.dtype)), a, b, g * corr)
    p = g * a * b
    return _sum_to(p * b, a.shape), _sum_to(p * a, b.shape)


def _sum_to(x, shape):
    dims = broadcast_dims(x.shape, shape)
    return jnp.sum(x, axis=dims, keepdims=True).reshape(shape) if dims else x


_loss.defvjp(_loss_fwd, _loss_bwd)


def _static_axis(axis):
    return axis if axis is None or isinstance(axis, int) else tuple(axis)


def correlation(a, b, axis=-1, *, keepdims=False):
    """sum(a * b, axis), differentiable in a and b."""
    return _correlation(jnp.asarray(a), jnp.asarray(b), _static_axis(axis), keepdims)


def corr_loss(a, b, axis=-1, *, reduction="sum"):
    """0.5 * ||correlation(a, b, axis)||**2 (see fastcorr.corr_loss), differentiable."""
    return _loss(jnp.asarray(a), jnp.asarray(b), "corr_loss", _static_axis(axis), reduction)


def product_loss(a, b, axis=-1, *, reduction="sum"):
    """0.5 * ||a * b||**2 (see fastcorr.product_loss), differentiable."""
    return _loss(jnp.asarray(a), jnp.asarray(b), "product_loss", _static_axis(axis), reduction)
