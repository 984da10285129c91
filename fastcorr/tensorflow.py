"""fastcorr for TensorFlow: the correlation and the two losses through `tf.custom_gradient`,
computed by fastcorr on the CPU through `tf.numpy_function`, usable eagerly, inside
`tf.function` and in graph mode (`tf.gradients`).

    from fastcorr.tensorflow import corr_loss
    with tf.GradientTape() as tape:
        loss = corr_loss(a, b, axis=1)
    ga, gb = tape.gradient(loss, [a, b])    # corr * b, corr * a

The forward pass of a loss is fastcorr's fused loss-and-gradients; the backward pass scales
the kept gradients by the incoming one, or passes them on as they are where it is 1 (a loss
differentiated on its own).

Nothing is copied on the CPU: `tf.numpy_function` hands fastcorr NumPy views of TensorFlow's
input buffers, and takes fastcorr's results as tensors in place, which it does for arrays
that start on a 64-byte boundary, as fastcorr's large results do (`fastcorr._memory`);
DLPack would add nothing here, and cannot be used inside a `tf.function` graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

import fastcorr

from ._adapters import broadcast_dims, layout, layout_of, loss_functions, static_axis
from ._docs import sharing

if TYPE_CHECKING:
    from ._typing import Axis, LossFunction, Reduction

# this module's docstring fragments, beside fastcorr._docs's
_DOCS = {
    "a_b": """\
a, b : tf.Tensor or array_like
    The inputs, broadcast against each other, of one dtype.""",
    "raises": """\
ValueError, numpy.exceptions.AxisError
    For shapes that do not broadcast and axes out of range, when the op is built.
ValueError, TypeError
    Eagerly, for what fastcorr checks when it runs (`reduction`, dtypes): fastcorr's own.
tf.errors.InvalidArgumentError
    The same inside a ``tf.function`` or a graph, where ``tf.numpy_function`` wraps
    fastcorr's error and shows its message.""",
}
shared = sharing(_DOCS, array="tf.Tensor", result="of `a`'s dtype (an integer or bool input "
                 "cast first to the other's float dtype, or both to float64)")

__all__ = ["correlation", "corr_loss", "product_loss"]


def _call(f: Any, inputs: Any, dtypes: Any) -> Any:
    """f on NumPy arrays of the inputs, as a TensorFlow op."""
    def run(*args: Any) -> Any:
        out = f(*args)
        out = out if isinstance(out, tuple) else (out,)
        return [np.asarray(x, d.as_numpy_dtype) for x, d in zip(out, dtypes)]
    out = tf.numpy_function(run, inputs, dtypes, stateful=False)
    return list(out) if isinstance(out, (list, tuple)) else [out]  # eagerly: one tensor


def _floats(a: Any, b: Any) -> tuple[Any, Any]:
    """a and b as tensors, an integer or bool one cast to the other's float dtype, or both to
    float64, in which fastcorr computes integers: written back into an integer tensor, the
    float result would be truncated. The gradient of an integer input is TensorFlow's, None."""
    a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
    dtype = next((x.dtype for x in (a, b) if x.dtype.is_floating), tf.float64)
    a, b = (x if x.dtype.is_floating else tf.cast(x, dtype) for x in (a, b))
    return a, b


def _shapes(func: str, a: Any, b: Any, axis: Any, keepdims: Any = False) -> Any:
    for name, x in (("a", a), ("b", b)):
        if x.shape.rank is None or None in x.shape.as_list():
            raise ValueError(f"{func}: {name} has shape {x.shape}; fastcorr.tensorflow needs "
                             "every dimension known when the op is built (a tf.function's "
                             "input_signature with full shapes, or eager calls)")
    return layout(func, a.shape, b.shape, axis, keepdims)


@shared
def correlation(a: Any, b: Any, axis: Axis = -1, *, keepdims: bool = False) -> Any:
    """The correlation ``sum(a * b, axis)``, differentiable in `a` and `b`.

    A ``tf.custom_gradient`` whose forward pass is `fastcorr.correlation` and whose
    backward is `fastcorr.correlation_vjp`, computed on the CPU through
    ``tf.numpy_function``: eagerly, inside ``tf.function`` and in graph mode. Second
    derivatives (nested tapes) are exact.

    {adapter_correlation}

    Examples
    --------
    >>> import tensorflow as tf
    >>> import fastcorr.tensorflow as ftf
    >>> a = tf.reshape(tf.range(6.0), (2, 3))
    >>> b = tf.ones((2, 3))
    >>> ftf.correlation(a, b).numpy()
    array([ 3., 12.], dtype=float32)
    """
    axis = static_axis(axis)

    # TensorFlow has no annotations: its decorator is untyped
    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def f(a: Any, b: Any) -> Any:
        shape, axes, out = _shapes("correlation", a, b, axis, keepdims)
        (corr,) = _call(lambda x, y: fastcorr.correlation(x, y, axis, keepdims=keepdims),
                        [a, b], [a.dtype])
        corr = tf.ensure_shape(corr, out)

        def grad(g: Any) -> Any:
            return _vjp(a, b, tf.reshape(g, layout_of(shape, axes).kept), axis)
        return corr, grad
    return f(*_floats(a, b))


def _vjp(a: Any, b: Any, w: Any, axis: Any) -> Any:
    """fastcorr.correlation_vjp(a, b, w, axis), w with the reduced axes kept, as TensorFlow
    differentiates it again."""
    ga, gb = _call(lambda x, y, v: fastcorr.correlation_vjp(x, y, v, axis), [a, b, w],
                   [a.dtype, b.dtype])
    return _exact([tf.ensure_shape(ga, a.shape), tf.ensure_shape(gb, b.shape)], _weighted,
                  a, b, w)


def _weighted(a: Any, b: Any, w: Any) -> Any:
    """(w * b, w * a), each summed back to its input's shape, in TensorFlow's own ops: the
    gradients of sum(w * a * b)."""
    shape = tf.broadcast_static_shape(tf.broadcast_static_shape(a.shape, b.shape), w.shape)
    return (_sum_to(tf.broadcast_to(w * b, shape), a.shape),
            _sum_to(tf.broadcast_to(w * a, shape), b.shape))


def _exact(values: Any, plain: Any, *xs: Any) -> Any:
    """values, which fastcorr computed from xs, with the derivative of plain(*xs), the same
    values written in TensorFlow's ops. TensorFlow takes a `tf.numpy_function`'s results for
    constants: a backward pass's results handed on as they are would make every second
    derivative through them silently zero (a gradient penalty's term dropped)."""
    n = len(xs)

    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def f(*args: Any) -> Any:
        inputs = args[:n]

        def grad(*upstream: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                ys = plain(*inputs)
            return (*tape.gradient(ys, inputs, output_gradients=list(upstream)),
                    *[None] * len(values))
        return [tf.identity(v) for v in args[n:]], grad
    return f(*xs, *values)


def _loss(a: Any, b: Any, op: Any, axis: Any, reduction: Any) -> Any:
    axis = static_axis(axis)

    # TensorFlow has no annotations: its decorator is untyped
    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def f(a: Any, b: Any) -> Any:
        shape, axes, per = _shapes(op, a, b, axis)
        loss, ga, gb = _call(
            lambda x, y: getattr(fastcorr, op + "_and_grad")(x, y, axis, reduction=reduction),
            [a, b], [a.dtype, a.dtype, b.dtype])
        loss = tf.ensure_shape(loss, per if reduction == "none" else ())
        scale = layout_of(shape, axes).scale(reduction)

        def plain(x: Any, y: Any) -> Any:  # the kept gradients, in TensorFlow's ops
            w = tf.reduce_sum(x * y, axis=list(axes), keepdims=True) if op == "corr_loss" \
                else x * y
            return _weighted(x, y, w * tf.constant(scale, w.dtype))
        ga, gb = _exact([tf.ensure_shape(ga, a.shape), tf.ensure_shape(gb, b.shape)], plain,
                        a, b)

        def grad(g: Any) -> Any:
            if reduction != "none":
                # a loss differentiated on its own has g == 1: its gradients as they are, not
                # two more passes over arrays the size of the inputs
                return tf.cond(tf.equal(g, 1), lambda: (ga, gb), lambda: (g * ga, g * gb))
            g = tf.reshape(g, layout_of(shape, axes).kept)
            if tuple(a.shape) == tuple(b.shape) == shape:
                return g * ga, g * gb
            # per-position losses of broadcast inputs: weight before summing over the
            # broadcast axes
            if op == "corr_loss":
                return _vjp(a, b, g * correlation(a, b, axis, keepdims=True), axis)
            return _weighted(a, b, g * a * b)
        return loss, grad
    return f(*_floats(a, b))


def _sum_to(x: Any, shape: Any) -> Any:
    dims = list(broadcast_dims(tuple(x.shape), shape))
    return tf.reshape(tf.reduce_sum(x, axis=dims, keepdims=True), shape) if dims else x


_LOSS_DOC = """<title>, differentiable.

    A ``tf.custom_gradient`` whose forward pass is fastcorr's fused
    `fastcorr.<name>_and_grad`, on the CPU through ``tf.numpy_function``; the backward
    pass scales the kept gradients by the incoming one.

    {adapter_loss}

    Examples
    --------
    >>> import tensorflow as tf
    >>> import fastcorr.tensorflow as ftf
    >>> a = tf.Variable(tf.reshape(tf.range(6.0), (2, 3)))
    >>> with tf.GradientTape() as tape:
    ...     loss = ftf.<name>(a, <scale>tf.ones((2, 3)))
    >>> float(loss)
    <loss>
    >>> tape.gradient(loss, a).numpy().tolist()  # <why>
    <grad>
    """
corr_loss: LossFunction[Any]
product_loss: LossFunction[Any]
corr_loss, product_loss = loss_functions(_loss, shared, _LOSS_DOC)
