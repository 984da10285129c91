"""Accuracy at sizes where naive float sums drift: the losses of 10**8 float32 elements within
2e-7 of float64, and float64 dot products and losses at least as accurate as NumPy's."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastcorr


def float64_losses(a, b, axis, chunk=1 << 22):
    """0.5*sum(corr**2) and 0.5*sum((a*b)**2) in float64 (fsum across chunks): the yardstick."""
    corr_parts, prod_parts = [], []
    step = max(1, chunk // int(np.prod(a.shape[1:])))
    for i in range(0, a.shape[0], step):
        x = a[i:i + step].astype(np.float64)
        y = b[i:i + step].astype(np.float64)
        p = x * y
        corr_parts.append(0.5 * np.sum(np.square(np.sum(p, axis=axis))))
        prod_parts.append(0.5 * np.sum(np.square(p)))
    return math.fsum(corr_parts), math.fsum(prod_parts)


@pytest.mark.slow  # 800 MB of float32 inputs, and a float64 oracle over them in chunks
@pytest.mark.parametrize("axis", [-1, 1])
def test_float32_losses_of_1e8_elements(axis):
    rng = np.random.default_rng(0)
    shape = (25, 250, 250, 64)  # 10**8 elements
    a = rng.standard_normal(shape, np.float32)
    b = rng.standard_normal(shape, np.float32) + np.float32(0.5)
    corr_want, prod_want = float64_losses(a, b, axis)
    corr = fastcorr.corr_loss(a, b, axis, backend="cpu")
    prod = fastcorr.product_loss(a, b, axis, backend="cpu")
    # the float32 result itself rounds by up to 6e-8
    assert abs(float(corr) - corr_want) / corr_want < 2e-7
    assert abs(float(prod) - prod_want) / prod_want < 2e-7


def test_float64_sums_of_a_constant():
    """A constant summed 10**7 times: a plain float64 loop drifts by about 1e-10 relative here,
    and so does NumPy along a strided axis; its pairwise sum along a contiguous one stays within
    a few ulps. The kernels must do at least as well as NumPy on the same layout."""
    n = 10**7
    a = np.full(n, 0.1)
    b = np.ones(n)
    rel = 4 * np.finfo(float).eps  # 8.9e-16
    for shape, axis in [((n,), -1), ((n // 4, 4), 0), ((4, n // 4), 1), ((n // 8, 8), None)]:
        x, y = a.reshape(shape), b.reshape(shape)
        got = fastcorr.correlation(x, y, axis=axis, backend="cpu")
        if axis is None:
            exact = math.fsum(a)
        else:
            rows = np.moveaxis(x, axis, -1).reshape(-1, shape[axis])
            exact = np.array([math.fsum(c) for c in rows])
        numpy_err = np.abs(np.sum(x * y, axis=axis).ravel() - exact)
        assert np.all(np.abs(got.ravel() - exact) <= np.maximum(numpy_err, rel * exact)), \
            (shape, axis, got, exact, numpy_err)
    # the loss over 10**7 positions: 0.5 * sum of corr**2, compensated across positions
    want = 0.5 * math.fsum(np.square(a))
    loss = fastcorr.corr_loss(a.reshape(-1, 1), b.reshape(-1, 1), axis=-1, backend="cpu")
    assert abs(loss - want) <= rel * want
    loss = fastcorr.product_loss(a, b, axis=None, backend="cpu")
    assert abs(loss - want) <= rel * want


def test_float64_cancellation_is_as_good_as_numpy():
    """Large terms that cancel: the error stays within a few ulps of the sum of |terms|."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(10**6) * 10.0 ** rng.integers(-8, 8, 10**6)
    a = np.concatenate([x, -x])
    b = np.ones_like(a)
    rng.shuffle(a)
    got = fastcorr.correlation(a, b, backend="cpu")
    bound = np.sum(np.abs(a))
    numpy_err = abs(np.sum(a))  # the true sum is exactly 0
    assert abs(got) <= max(numpy_err, 16 * np.finfo(float).eps * bound)


@pytest.mark.slow  # three processes compiling into an empty cache
def test_cache_is_shared_by_concurrent_processes(tmp_path):
    """Three processes compiling into one empty cache at once, then three loading from it,
    all give the right answer."""
    code = (
        "import numpy as np, fastcorr\n"
        "rng = np.random.default_rng(0)\n"
        "a = rng.standard_normal((64, 64, 64)); b = rng.standard_normal((64, 64, 64))\n"
        "l, ga, gb = fastcorr.corr_loss_and_grad(a, b, -1, backend='cpu')\n"
        "c = np.sum(a * b, -1, keepdims=True)\n"
        "assert np.isclose(l, 0.5 * np.sum(c**2), rtol=1e-13)\n"
        "assert np.allclose(ga, c * b, rtol=1e-13) and np.allclose(gb, c * a, rtol=1e-13)\n"
        "print('OK')\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    for _ in range(2):
        procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0 and out.strip() == "OK", err
    assert any(tmp_path.rglob("*.nbi"))
