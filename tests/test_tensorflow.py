"""fastcorr.tensorflow against TensorFlow's own autodiff of the plain expression: eagerly,
inside tf.function, and the classic graph-mode example with tf.gradients. TensorFlow is
heavy: its own extra (tensorflow) and its own stage of .ci/run."""

import itertools
import os

import numpy as np
import pytest

import fastcorr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
from fastcorr import tensorflow as ftf  # noqa: E402

SHAPES = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (1, 3, 4)), ((2, 3, 4), (4,))]


def rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def plain(op, axis, reduction):
    axis = list(axis) if isinstance(axis, tuple) else axis

    def f(x, y):
        per = 0.5 * tf.reduce_sum(x * y, axis=axis) ** 2 if op == "corr_loss" else \
            0.5 * tf.reduce_sum((x * y) ** 2, axis=axis)
        if reduction == "none":
            return per
        return tf.reduce_sum(per) if reduction == "sum" else tf.reduce_mean(per)
    return f


def value_and_grads(f, a, b, compiled, start=1):
    def run(x, y):
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            loss = f(x, y)
            n = tf.size(loss)
            w = tf.reshape(tf.cast(tf.range(start, n + start), loss.dtype), tf.shape(loss))
            total = tf.reduce_sum(loss * w)  # distinct weights per position
        return (total, *tape.gradient(total, [x, y]))
    if compiled:
        run = tf.function(run, autograph=False)
    return [t.numpy() for t in run(a, b)]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("axis", [-1, 1, (0, 2), None], ids=str)
def test_against_tensorflow(compiled, shapes, axis):
    a, b = tf.constant(rand(shapes[0], 1)), tf.constant(rand(shapes[1], 2))
    # a scalar loss's upstream gradient: 1 (its gradients passed on as they are) or 2
    for op, reduction, start in itertools.product(("corr_loss", "product_loss"),
                                                  ("sum", "mean", "none"), (1, 2)):
        got = value_and_grads(lambda x, y: getattr(ftf, op)(x, y, axis, reduction=reduction),
                              a, b, compiled, start)
        want = value_and_grads(plain(op, axis, reduction), a, b, compiled, start)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5,
                                       err_msg=f"{op} {reduction} {start}")
    ax = list(axis) if isinstance(axis, tuple) else axis
    got = value_and_grads(lambda x, y: ftf.correlation(x, y, axis) ** 3, a, b, compiled)
    want = value_and_grads(lambda x, y: tf.reduce_sum(x * y, axis=ax) ** 3, a, b, compiled)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


def penalised(f, a, b, compiled):
    """The gradients of f(a, b) + |d f / d a|^2 + <d f / d a, sum of d f / d b>: nested
    tapes, as a gradient penalty takes them."""
    def run(x, y):
        with tf.GradientTape() as outer:
            outer.watch([x, y])
            with tf.GradientTape() as inner:
                inner.watch([x, y])
                loss = tf.reduce_sum(f(x, y) * 1.5)
            gx, gy = inner.gradient(loss, [x, y])
            total = loss + tf.reduce_sum(gx ** 2) + tf.reduce_sum(gx * tf.reduce_sum(gy))
        return outer.gradient(total, [x, y])
    if compiled:
        run = tf.function(run, autograph=False)
    return [t.numpy() for t in run(a, b)]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("axis", [-1, (0, 2)], ids=str)
def test_second_derivatives(compiled, shapes, axis):
    """TensorFlow takes a tf.numpy_function's results for constants: the gradients the
    backward hands on were so, and a penalty on them silently lost its own derivative."""
    a = tf.constant(rand(shapes[0], 1).astype(np.float64))
    b = tf.constant(rand(shapes[1], 2).astype(np.float64))
    ax = list(axis) if isinstance(axis, tuple) else axis
    cases = [(lambda x, y: ftf.correlation(x, y, axis) ** 2,
              lambda x, y: tf.reduce_sum(x * y, axis=ax) ** 2)]
    cases += [(lambda x, y, op=op, r=r: getattr(ftf, op)(x, y, axis, reduction=r),
               plain(op, axis, r)) for op in ("corr_loss", "product_loss")
              for r in ("sum", "mean", "none")]
    for fast, slow in cases:
        for g, w in zip(penalised(fast, a, b, compiled), penalised(slow, a, b, compiled)):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_classic_graph_mode_example():
    """tf.gradients of 0.5 * square(reduce_sum(a * b, axis=1)) in a TF1-style graph, through
    fastcorr: the same values."""
    g = tf.Graph()
    with g.as_default():
        a = tf.constant(np.arange(36, dtype=np.float32).reshape(1, 3, 3, 4))
        b = tf.constant(np.arange(36, 72, dtype=np.float32).reshape(1, 3, 3, 4))
        want = tf.gradients(0.5 * tf.square(tf.reduce_sum(a * b, axis=1)), [a, b])
        got = tf.gradients(ftf.corr_loss(a, b, axis=1, reduction="none"), [a, b])
        with tf.compat.v1.Session(graph=g) as session:
            got, want = session.run([got, want])
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)


def test_integer_and_bool_inputs_compute_in_floats():
    """Integer and bool tensors give float results, as with NumPy input: never an integer
    result truncated from the float fastcorr computed. Beside a float tensor, an integer one
    takes its dtype; an integer input's gradient is TensorFlow's (None)."""
    a, b = tf.reshape(tf.range(6), (2, 3)), tf.ones((2, 3), tf.int32)
    x, y = np.arange(6).reshape(2, 3), np.ones((2, 3), np.int32)
    for op in ("corr_loss", "product_loss"):
        for reduction in ("sum", "mean", "none"):
            got = getattr(ftf, op)(a, b, -1, reduction=reduction)
            assert got.dtype == tf.float64
            np.testing.assert_array_equal(got, getattr(fastcorr, op)(x, y, -1,
                                                                     reduction=reduction))
        got = getattr(ftf, op)(a > 1, b > 0, 0, reduction="mean")
        np.testing.assert_array_equal(got, getattr(fastcorr, op)(x > 1, y > 0, 0,
                                                                 reduction="mean"))
    np.testing.assert_array_equal(ftf.correlation(a, b), fastcorr.correlation(x, y))
    af = tf.Variable(x.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = ftf.corr_loss(af, b)
    assert loss.dtype == tf.float32 and float(loss) == 76.5
    np.testing.assert_array_equal(tape.gradient(loss, af), np.broadcast_to(
        x.sum(-1, keepdims=True), x.shape))


def test_errors_at_trace_time_name_the_function():
    from numpy.exceptions import AxisError

    a = tf.ones((2, 3))
    with pytest.raises(ValueError, match=r"^corr_loss: shapes \(2, 3\) \(a\) and \(4,\) \(b\)"):
        ftf.corr_loss(a, tf.ones(4))
    with pytest.raises(AxisError, match="^correlation: axis"):
        ftf.correlation(a, a, 2)


def test_unknown_dimensions_are_refused_when_the_op_is_built():
    spec = tf.TensorSpec([None, 4], tf.float32)
    for f, name in ((lambda a, b: ftf.corr_loss(a, b), "corr_loss"),
                    (lambda a, b: ftf.correlation(a, b), "correlation")):
        with pytest.raises(ValueError, match=f"{name}: a has shape \\(None, 4\\); "
                                             "fastcorr.tensorflow needs every dimension"):
            tf.function(f, input_signature=[spec, spec])(tf.ones((3, 4)), tf.ones((3, 4)))
