"""fastcorr for TensorFlow: the correlation and the two losses through `tf.custom_gradient`,
computed by fastcorr on the CPU through `tf.numpy_function`, usable eagerly, inside
`tf.function` and in graph mode (`tf.gradients`).

    from fastcorr.tensorflow import corr_loss
    with tf.GradientTape() as tape:
        loss = corr_loss(a, b, axis=1)
    ga, gb = tape.gradient(loss, [a, b])    # corr * b, corr * a

The forward pass of a loss is fastcorr's fused loss-and-gradients; the backward pass scales
the kept gradients by the incoming one.
"""

import numpy as np
import tensorflow as tf

import fastcorr

from ._adapters import broadcast_dims, layout

__all__ = ["correlation", "corr_loss", "product_loss"]


def _static(axis):
    return axis if axis is None or isinstance(axis, int) else tuple(axis)


def _call(f, inputs, dtypes):
    """f on NumPy arrays of the inputs, as a TensorFlow op."""
    def run(*args):
        out = f(*args)
        out = out if isinstance(out, tuple) else (out,)
        return [np.asarray(x, d.as_numpy_dtype) for x, d in zip(out, dtypes)]
    out = tf.numpy_function(run, inputs, dtypes, stateful=False)
    return list(out) if isinstance(out, (list, tuple)) else [out]  # eagerly: one tensor


def _shapes(a, b, axis, keepdims=False):
    return layout(a.shape, b.shape, axis, keepdims)


def correlation(a, b, axis=-1, *, keepdims=False):
    """sum(a * b, axis), differentiable in a and b."""
    axis = _static(axis)

    @tf.custom_gradient
    def f(a, b):
        _, _, out = _shapes(a, b, axis, keepdims)
        (corr,) = _call(lambda x, y: fastcorr.correlation(x, y, axis, keepdims=keepdims),
                        [a, b], [a.dtype])
        corr = tf.ensure_shape(corr, out)

        def grad(g):
            ga, gb = _call(lambda x, y, w: fastcorr.correlation_vjp(x, y, w, axis),
                           [a, b, g], [a.dtype, b.dtype])
            return tf.ensure_shape(ga, a.shape), tf.ensure_shape(gb, b.shape)
        return corr, grad
    return f(tf.convert_to_tensor(a), tf.convert_to_tensor(b))


def _loss(op, a, b, axis, reduction):
    axis = _static(axis)

    @tf.custom_gradient
    def f(a, b):
        shape, axes, per = _shapes(a, b, axis)
        loss, ga, gb = _call(
            lambda x, y: getattr(fastcorr, op + "_and_grad")(x, y, axis, reduction=reduction),
            [a, b], [a.dtype, a.dtype, b.dtype])
        loss = tf.ensure_shape(loss, per if reduction == "none" else ())
        ga, gb = tf.ensure_shape(ga, a.shape), tf.ensure_shape(gb, b.shape)

        def grad(g):
            if reduction != "none":
                return g * ga, g * gb
            g = tf.reshape(g, [1 if i in axes else n for i, n in enumerate(shape)])
            if tuple(a.shape) == tuple(b.shape) == shape:
                return g * ga, g * gb
            # per-position losses of broadcast inputs: weight before summing over the
            # broadcast axes
            if op == "corr_loss":
                w = g * correlation(a, b, axis, keepdims=True)
                return _call(lambda x, y, v: fastcorr.correlation_vjp(x, y, v, axis),
                             [a, b, w], [a.dtype, b.dtype])
            p = g * a * b
            return _sum_to(p * b, a.shape), _sum_to(p * a, b.shape)
        return loss, grad
    return f(tf.convert_to_tensor(a), tf.convert_to_tensor(b))


def _sum_to(x, shape):
    dims = list(broadcast_dims(tuple(x.shape), shape))
    return tf.reshape(tf.reduce_sum(x, axis=dims, keepdims=True), shape) if dims else x


def corr_loss(a, b, axis=-1, *, reduction="sum"):
    """0.5 * ||correlation(a, b, axis)||**2 (see fastcorr.corr_loss), differentiable."""
    return _loss("corr_loss", a, b, axis, reduction)


def product_loss(a, b, axis=-1, *, reduction="sum"):
    """0.5 * ||a * b||**2 (see fastcorr.product_loss), differentiable."""
    return _loss("product_loss", a, b, axis, reduction)
