"""The kernels' explicit vector code (fastcorr/_kernels/vectors.py, docs/design.md "Kernel
contract"). Rows of one cache line or less: the values of the NumPy reference, within the
bound of one block's sum; nothing written past a row; the same bits from the small-call plan
as from the launchers. Streaming stores: the same bits as the ordinary stores, at every
alignment of the outputs, and the values of the reference (the size threshold is lowered so
that small arrays stream)."""

import os
import sys

import numpy as np
import pytest

import fastcorr
from fastcorr import reference
from fastcorr._kernels import cpu
from fastcorr._kernels import vectors as stream

CASES = [  # shape, axis: runs of RUN_MIN bytes or more, of every length mod a cache line
    ((2, 37, 97, 33), 1),
    ((3, 9, 5000), 1),
    ((2, 16, 8, 1025), 2),
    ((1, 5, 1030), 1),
    ((4, 3, 2, 600), 0),
    ((3, 20, 100, 3), 1),  # runs of 300 elements: under 4 KiB of float32, partial lines
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("func", ["corr_loss_and_grad", "correlation_vjp"])
@pytest.mark.parametrize("C", [8, 16, 24, 32, 64, 80])
def test_streamed_rows_are_the_ordinary_bits(C, func, dtype, monkeypatch):
    """Rows of whole lines stream along the last axis at every alignment of the outputs (the
    lines two rows share, in chunks of the problem and across them; the corr loss's rows of
    one line with their dot products as one vector, line_dot): the bits of the ordinary rows
    kernels, and nothing written outside the outputs."""
    rng = np.random.default_rng(C)
    shape = (4, 32, 32, C)  # chunks of the parallel plan
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    whole_lines = C * np.dtype(dtype).itemsize % stream.LINE == 0
    for shift in range(0, 16, 3):
        results = []
        for streamed in (False, True):
            decisions = []
            monkeypatch.setattr(stream, "STREAM_MIN", 0)
            monkeypatch.setattr(stream, "STREAM_MORE_MIN", 0 if streamed else sys.maxsize)
            monkeypatch.setattr(cpu, "rows_stream",
                                lambda g, x: decisions.append(stream.rows_stream(g, x)) or
                                decisions[-1])
            results.append(run(func, a, b, -1, shift))
            monkeypatch.undo()
            assert decisions and all(decisions) == (streamed and whole_lines)
        (want, wbufs), (got, gbufs) = results
        assert got == want
        for x, y in zip(gbufs, wbufs):
            np.testing.assert_array_equal(x, y)  # NaN where nothing may be written


@pytest.mark.parametrize("func", ["corr_loss_and_grad", "correlation_vjp"])
def test_streamed_rows_one_a_chunk(func, monkeypatch):
    """A chunk of one row: its head, lines and tail at once (as many rows as chunks)."""
    rng = np.random.default_rng(5)
    shape = (4 * (os.cpu_count() or 1), 8192)  # the plan's chunks: 4 a core
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32)
    assert cpu._tiling(shape[0], shape[1], 1, 4, True)[::2] == (1, shape[0])
    for shift in range(0, 16, 5):
        monkeypatch.setattr(cpu, "rows_stream", lambda g, x: False)
        want = run(func, a, b, -1, shift)
        decisions = []
        monkeypatch.setattr(stream, "STREAM_MORE_MIN", 0)
        monkeypatch.setattr(cpu, "rows_stream", lambda g, x: decisions.append(
            stream.rows_stream(g, x)) or decisions[-1])
        got = run(func, a, b, -1, shift)
        monkeypatch.undo()
        assert decisions and all(decisions)
        assert got[0] == want[0]
        for x, y in zip(got[1], want[1]):
            np.testing.assert_array_equal(x, y)  # NaN where nothing may be written


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 37, 97, 33), (3, 9, 5000), (1, 65536 + 7)])
def test_streamed_product_gradients_are_the_ordinary_bits(shape, dtype, monkeypatch):
    """The product loss's gradients, one long row in segments, streamed at every alignment."""
    rng = np.random.default_rng(9)
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    for shift in range(0, 16, 3):
        results = []
        for streamed in (False, True):
            monkeypatch.setattr(stream, "STREAM_MIN", 0)
            monkeypatch.setattr(stream, "STREAM_MORE_MIN", 0 if streamed else sys.maxsize)
            names = []
            launch = cpu.launch
            monkeypatch.setattr(cpu, "launch", lambda name, *args: names.append(name) or
                                launch(name, *args))
            results.append(run("product_loss_and_grad", a, b, -1, shift))
            monkeypatch.undo()
            assert names == ["rows_product_stream" if streamed else "rows_product"]
        (want, wbufs), (got, gbufs) = results
        assert got == want
        for x, y in zip(gbufs, wbufs):
            np.testing.assert_array_equal(x, y)  # NaN where nothing may be written
        np.testing.assert_allclose(gbufs[0][shift:shift + a.size].reshape(shape),
                                   reference.product_loss_and_grad(a, b, -1)[1], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((2, 37, 97, 33), 1), ((1, 65536 + 7), -1),
                                         ((300, 7), -1)])
def test_product_loss_alone_is_the_bits_of_the_loss_with_gradients(shape, axis, dtype,
                                                                   monkeypatch):
    """The loss without gradients runs in a kernel variant of its own (LOSS_ONLY): the sums of
    the loss with gradients, whether those stream or not."""
    rng = np.random.default_rng(11)
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    names = []
    launch = cpu.launch
    monkeypatch.setattr(cpu, "launch", lambda name, *args: names.append(name) or
                        launch(name, *args))
    alone = fastcorr.product_loss(a, b, axis, reduction="sum")
    assert names == ["rows_product_loss"]
    monkeypatch.setattr(stream, "STREAM_MIN", 0)
    for more in (0, sys.maxsize):  # the gradients streamed, then not
        monkeypatch.setattr(stream, "STREAM_MORE_MIN", more)
        assert fastcorr.product_loss_and_grad(a, b, axis, reduction="sum")[0] == alone
    flat = a.size >= cpu.PARALLEL_MIN  # one long row, which streams at any alignment
    assert set(names[1:]) == {"rows_product", "rows_product_stream"} if flat else {"rows_product"}
    np.testing.assert_allclose(alone, reference.product_loss(a, b, axis, reduction="sum"),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_only_large_contiguous_rows_of_whole_lines_stream(monkeypatch):
    monkeypatch.setattr(stream, "STREAM_MORE_MIN", stream.STREAM_MIN)
    g = np.empty((stream.STREAM_MIN // 64 + 1, 16), np.float32)[1:]
    assert stream.rows_stream(g, g)
    assert stream.rows_stream(g[:, ::-1][:, ::-1], g)  # anywhere in a line
    assert not stream.rows_stream(g[1:], g[1:])  # below the threshold
    h = np.empty((stream.STREAM_MIN // 48 + 1, 12), np.float32)
    assert not stream.rows_stream(h, h)  # rows of 48 bytes
    wide = np.empty((g.shape[0], 32), np.float32)
    assert not stream.rows_stream(g, wide[:, :16])  # input rows laid out otherwise
    assert not stream.rows_stream(wide[:, :16], g)  # gaps between the rows
    monkeypatch.setattr(stream, "STREAM_MORE_MIN", sys.maxsize)
    assert not stream.rows_stream(g, g)
    assert not stream.more_streams(g, g)


def test_only_large_contiguous_outputs_stream():
    big = np.empty((stream.STREAM_MIN // 4,), np.float32)
    assert stream.streams(big, big)
    assert not stream.streams(big[:-1024], big[:-1024])  # below the threshold
    assert not stream.streams(None, big)
    wide = np.empty((2, stream.STREAM_MIN // 4), np.float32)
    assert not stream.streams(wide[:, ::2], wide[:, ::2])  # not contiguous
    assert not stream.streams(wide.T.copy().T, wide)


# --------------------------------------------------------------------------- short rows


def launched(monkeypatch):
    """The names of the kernels launched from now on."""
    names = []
    launch = cpu.launch

    def spy(name, *args):
        names.append(name)
        return launch(name, *args)

    monkeypatch.setattr(cpu, "launch", spy)
    return names


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_rows_match_the_reference(dtype, monkeypatch):
    rng = np.random.default_rng(9)
    eps = float(np.finfo(dtype).eps)
    names = launched(monkeypatch)
    for C in range(1, 64 // np.dtype(dtype).itemsize + 1):
        P = 70_000 // C + 3  # large enough for the launchers
        a = rng.standard_normal((P, C)).astype(dtype)
        b = rng.standard_normal((P, C)).astype(dtype)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        bound = np.sum(np.abs(a64 * b64), axis=-1)
        corr = fastcorr.correlation(a, b)
        want = reference.correlation(a64, b64)
        assert np.all(np.abs(corr - want) <= (2 * C + 4) * eps * bound), C
        loss, ga, gb = fastcorr.corr_loss_and_grad(a, b)
        want = reference.corr_loss_and_grad(a64, b64)
        np.testing.assert_allclose(loss, want[0], rtol=(2 * C + 8) * eps)
        # the correlation's error times b, and the rounding of the correlation and the product
        tol = eps * ((2 * C + 4) * bound[:, None] * np.abs(b64) + 2 * np.abs(want[1]))
        assert np.all(np.abs(ga - want[1]) <= tol), C
        g = rng.standard_normal(P).astype(dtype)
        va, vb = fastcorr.correlation_vjp(a, b, g)
        wa, wb = reference.correlation_vjp(a64, b64, g.astype(np.float64))
        np.testing.assert_allclose(va, wa, rtol=eps)
        np.testing.assert_allclose(vb, wb, rtol=eps)
    assert {"rows_dot_short", "rows_corr_grad_short", "rows_vjp_short", "rows_dot_short_packed",
            "rows_corr_grad_short_packed", "rows_vjp_short_packed"} <= set(names)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_rows_are_the_bits_of_the_short_kernels(dtype, monkeypatch):
    """Contiguous rows of half a line or less go several to a vector (`_short_packed`):
    each row's dot product summed in line_dot's order, the loss terms in the same blocks,
    the VJP's weights rounded as before, so the `_short` kernels' bits, at every row count about a block and a chunk, with
    NaN, infinities and signed zeros among the values; rows with gaps between them take the
    `_short` kernels."""
    rng = np.random.default_rng(13)
    short = cpu._short
    for C in range(1, 32 // np.dtype(dtype).itemsize + 1):
        for P in (1, 2, 63, 64, 65, 129, 70_001):
            a = rng.standard_normal((P, C)).astype(dtype)
            b = rng.standard_normal((P, C)).astype(dtype)
            g = rng.standard_normal(P)
            if P > 64:
                a[3, 0], b[5, -1], a[7, 0], b[7, 0] = np.nan, np.inf, -0.0, 0.0
            results = []
            for kernels in ("packed", "short"):
                names = launched(monkeypatch)
                if kernels == "short":
                    monkeypatch.setattr(cpu, "_short", lambda *args, **kw: short(
                        *args, **kw).replace("_short_packed", "_short"))
                results.append([fastcorr.correlation(a, b), fastcorr.corr_loss(a, b),
                                *fastcorr.corr_loss_and_grad(a, b, reduction="none"),
                                *fastcorr.corr_loss_and_grad(a, b),
                                *fastcorr.correlation_vjp(a, b, g),
                                *fastcorr.correlation_vjp(a, b, g.astype(dtype))])
                monkeypatch.undo()
                if P > 64:
                    assert names and all(n.endswith("_" + kernels) for n in names), names
            for x, y in zip(*results):
                np.testing.assert_array_equal(x, y)
    wide = np.ones((70_001, 8), dtype)
    names = launched(monkeypatch)
    fastcorr.corr_loss_and_grad(wide[:, :2], wide[:, :2])
    assert names == ["rows_corr_grad_short"]


@pytest.mark.parametrize("C", [1, 3, 4, 5, 8, 16])
def test_short_rows_write_nothing_past_them(C):
    rng = np.random.default_rng(10)
    P = 70_000 // C + 5
    a = rng.standard_normal((P, C)).astype(np.float32)
    b = rng.standard_normal((P, C)).astype(np.float32)
    for func in ("corr_loss_and_grad", "correlation_vjp"):
        bufs = [np.full(P * C + 32, np.nan, np.float32) for _ in range(2)]
        out = tuple(buf[:P * C].reshape(P, C) for buf in bufs)
        if func == "correlation_vjp":
            fastcorr.correlation_vjp(a, b, np.ones(P, np.float32), out=out)
        else:
            fastcorr.corr_loss_and_grad(a, b, out=out)
        for buf in bufs:
            assert not np.isnan(buf[:P * C]).any()
            assert np.isnan(buf[P * C:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_rows_give_the_same_bits_small_and_large(dtype):
    rng = np.random.default_rng(11)
    for C in (2, 7, 64 // np.dtype(dtype).itemsize):
        a = rng.standard_normal((70_000, C)).astype(dtype)
        b = rng.standard_normal((70_000, C)).astype(dtype)
        small = [fastcorr.correlation(a[:5], b[:5]),
                 *fastcorr.corr_loss_and_grad(a[:5], b[:5], reduction="none")]
        large = [fastcorr.correlation(a, b),
                 *fastcorr.corr_loss_and_grad(a, b, reduction="none")]
        for x, y in zip(small, large):
            np.testing.assert_array_equal(x, y[:5])


def test_strided_short_rows_take_the_ordinary_kernels(monkeypatch):
    rng = np.random.default_rng(12)
    a = rng.standard_normal((40_000, 16)).astype(np.float32)
    b = rng.standard_normal((40_000, 16)).astype(np.float32)
    names = launched(monkeypatch)
    x, y = a[:, ::2], b[:, ::2]  # rows of 8 with a stride of 2
    loss, ga, gb = fastcorr.corr_loss_and_grad(x, y)
    want = reference.corr_loss_and_grad(x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(loss, want[0], rtol=1e-5)
    np.testing.assert_allclose(ga, want[1], rtol=1e-5, atol=1e-5)
    assert names and not any(n.endswith("_short") for n in names)


@pytest.mark.parametrize("size, want", [("491520K", 480 << 20), ("32M", 32 << 20),
                                        ("1048576", 1 << 20), ("lots", 0)])
def test_the_level_3_cache_size_is_read_from_sysfs(size, want, tmp_path):
    for index, (level, sz) in enumerate([("1", "48K"), ("2", "2048K"), ("3", size)]):
        (tmp_path / f"index{index}").mkdir()
        (tmp_path / f"index{index}" / "level").write_text(level + "\n")
        (tmp_path / f"index{index}" / "size").write_text(sz + "\n")
    assert stream._l3_bytes(str(tmp_path)) == want
    assert stream._l3_bytes(str(tmp_path / "absent")) == 0
