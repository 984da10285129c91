"""Gradients written with streaming stores (fastcorr/_kernels/stream.py, docs/design.md "CPU
kernels"): the same bits as the ordinary stores, at every alignment of the outputs, and the
values of the NumPy reference. The size threshold is lowered so that small arrays stream."""

import numpy as np
import pytest

import fastcorr
from fastcorr import reference
from fastcorr._kernels import cpu, stream

CASES = [  # shape, axis: runs of RUN_MIN bytes or more, of every length mod a cache line
    ((2, 37, 97, 33), 1),
    ((3, 9, 5000), 1),
    ((2, 16, 8, 1025), 2),
    ((1, 5, 1030), 1),
    ((4, 3, 2, 600), 0),
]


def stream_every_size(monkeypatch):
    """Let outputs of any size stream; returns the list of the launchers' decisions."""
    decisions = []

    def decide(g, x):
        decisions.append(stream.streams(g, x))
        return decisions[-1]

    monkeypatch.setattr(stream, "STREAM_MIN", 0)
    monkeypatch.setattr(cpu, "streams", decide)
    return decisions


def outputs(shape, dtype, shift):
    """Two gradient outputs starting `shift` elements into NaN-filled buffers, and the buffers:
    a write outside the output shows as a changed NaN."""
    n = int(np.prod(shape))
    bufs = [np.full(n + 24, np.nan, dtype) for _ in range(2)]
    return [buf[shift:shift + n].reshape(shape) for buf in bufs], bufs


def run(func, a, b, axis, shift):
    (ga, gb), bufs = outputs(a.shape, a.dtype, shift)
    if func == "correlation_vjp":
        g = np.sum(a * b, axis=axis)
        fastcorr.correlation_vjp(a, b, g, axis, out=(ga, gb))
        return None, bufs
    loss, _, _ = getattr(fastcorr, func)(a, b, axis, out=(ga, gb))
    return loss, bufs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("func", ["corr_loss_and_grad", "correlation_vjp"])
@pytest.mark.parametrize("shape, axis", CASES)
def test_streamed_gradients_are_the_ordinary_bits(shape, axis, func, dtype, monkeypatch):
    rng = np.random.default_rng(7)
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    for shift in range(0, 16, 3):  # every alignment of the outputs to a 64-byte line
        monkeypatch.setattr(cpu, "streams", lambda g, x: False)
        want = run(func, a, b, axis, shift)
        decisions = stream_every_size(monkeypatch)
        got = run(func, a, b, axis, shift)
        monkeypatch.undo()
        assert decisions and all(decisions), "the streaming path did not run"
        assert got[0] == want[0]
        for x, y in zip(got[1], want[1]):
            np.testing.assert_array_equal(x, y)  # NaN where nothing may be written


@pytest.mark.parametrize("shape, axis", CASES[:3])
@pytest.mark.parametrize("func", ["corr_loss_and_grad"])
def test_streamed_gradients_match_the_reference(shape, axis, func, monkeypatch):
    decisions = stream_every_size(monkeypatch)
    rng = np.random.default_rng(8)
    a = rng.standard_normal(shape)
    b = rng.standard_normal(shape)
    loss, ga, gb = getattr(fastcorr, func)(a, b, axis, out=outputs(shape, a.dtype, 1)[0])
    assert decisions and all(decisions)
    want = getattr(reference, func)(a, b, axis)
    np.testing.assert_allclose(loss, want[0], rtol=1e-13)
    np.testing.assert_allclose(ga, want[1], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gb, want[2], rtol=1e-13, atol=1e-13)


def test_only_large_contiguous_outputs_stream():
    big = np.empty((stream.STREAM_MIN // 4,), np.float32)
    assert stream.streams(big, big)
    assert not stream.streams(big[:-1024], big[:-1024])  # below the threshold
    assert not stream.streams(None, big)
    wide = np.empty((2, stream.STREAM_MIN // 4), np.float32)
    assert not stream.streams(wide[:, ::2], wide[:, ::2])  # not contiguous
    assert not stream.streams(wide.T.copy().T, wide)
