"""Numba CPU kernels on the fixed kernel contract, and the code that launches them.

The contract (docs/design.md, "Kernel contract"): the API layer hands over `a` and `b` as 3-D
arrays of shape (P, R, Q): P outer positions, the reduced axis R, Q inner positions. When
Q == 1 the reduced axis is the contiguous one and the `rows_*` kernels take 2-D (P, R) views;
otherwise the `strided_*` kernels walk memory in order and keep a partial sum for each of the
Q positions of a tile instead of striding along R.

Work is split into tiles (position p, segment k of R, block of Q) and tiles into chunks, both
fixed by the problem's shape; each chunk keeps its own partial loss, combined in chunk order,
so results do not depend on the thread count. Sums are taken in blocks of BLOCK terms in the
inputs' dtype (vectorised), and the blocks added in float64 with Neumaier compensation: the
error of a dot product is bounded by that of BLOCK terms at any length, where NumPy's pairwise
sum grows with log n (and its sums along a strided axis with n). Losses are accumulated in
float64.

No loop both sums and stores: LLVM vectorises such a loop only behind a run-time check that
the stores lie clear of the loads, and runs a scalar copy, summing in another order, where they
lie within a vector's length of them; the bits of a loss would then depend on where its
gradients happen to be allocated. The sums get loops of their own (_sq_grad).

Every kernel is serial and releases the GIL, and computes chunks [c0, c1) of nchunks: the
pool of `threads` runs chunks on as many threads as a call may use.
"""

import math
import os
import types
from functools import lru_cache

import numpy as np
from numba import njit, typeof

from . import threads
from .vectors import (LINE, address, ahead, ahead_write, line_dot, line_scale, line_straddle,
                      more_streams, rows_dots, rows_scaled, rows_stream, run_lines, run_product,
                      run_square, square_lines, streams)

# reassoc lets LLVM vectorise the blocked float sums; contract allows fused multiply-adds.
# Both change results only by float rounding; nothing here assumes finite values, so NaN and
# Inf still propagate. The compensation helpers are compiled without it, on purpose.
FASTMATH = {"reassoc", "contract"}
OPTIONS = dict(nogil=True, cache=True, error_model="numpy")

BLOCK = 64  # terms summed plainly, in the inputs' dtype, before a compensated float64 add
# A strided tile: its rows are runs of at least MIN_RUN columns (4 KiB of float32, long enough
# for the prefetchers), and where R allows, its share of a and b (TILE_BYTES) stays in the
# last-level cache between the two passes of the fused corr loss.
TILE_BYTES = 4 << 20
MIN_RUN = 1024
MAX_RUN = 1 << 16
FLAT_RUN = 1 << 14  # segment of an elementwise problem taken as one long row
PARALLEL_MIN = 1 << 16  # elements; smaller problems are tiled as one chunk
# Bytes a call moves (its inputs read, its gradients written) before a second thread pays for
# itself: waking a pool worker and sharing chunks with it cost 50-100 us a call on the 2-core
# VM this was measured on, where one thread wake-up takes about 20 us, and a serial call
# below about 16 MiB (300 us there) came out faster on one thread than on two.
PARALLEL_BYTES = 16 << 20
# Fixed True in the rows kernels' "_short" variants (_short_rows): rows of one cache line or
# less, whose loops would run scalar, go through one masked vector each (vectors.py).
SHORT_ROWS = False
# Fixed True, with SHORT_ROWS, in the rows kernels' "_short_packed" variants: rows of half a
# cache line or less, one after another, as many at a time as fill a line (vectors.rows_dots;
# a chunk of fewer than BLOCK rows goes row by row, as the _short variants: the same bits,
# without the setting up, which cost a small call 0.1 us).
PACKED_ROWS = False
# Fixed True in the "_stream" variants, which write their gradients with streaming stores
# (vectors.py): rows of whole lines (rows_stream), and the product loss's one long row. On an
# Intel Xeon VM write-allocate was a third of these kernels' memory traffic.
STREAM_ROWS = False
# Rows this short (bytes) or shorter store their gradients with the scalar loop even then:
# masked stores cost more than four scalar ones (the fused corr loss at C = 3 and 4 float32
# measured 0.9x with them, 1.15-1.45x without).
MASKED_STORE_MIN = 16
# Fixed True in the product loss's "_loss" variant, for the loss without gradients: the
# gradient loops, though they never ran, held its flat loop to 0.8-0.85x the speed it has
# without them (Intel Xeon VM, three runs; LLVM compiles the kernel as a whole). The strided
# fused corr loss measured level either way and has no such variant.
LOSS_ONLY = False


# --------------------------------------------------------------------------- helpers


@njit(fastmath=False, **OPTIONS)
def neumaier(s, c, x):
    t = s + x
    if abs(s) >= abs(x):
        c += (s - t) + x
    else:
        c += (x - t) + s
    return t, c


@njit(fastmath=False, **OPTIONS)
def _plain(s, x):
    """s + x, in that order whatever the caller's fastmath."""
    return s + x


@njit(fastmath=False, **OPTIONS)
def _total(s, c):
    # Once the sum is Inf or NaN the compensation holds inf - inf: keep the sum as NumPy would.
    return s + c if np.isfinite(s) else s


@njit(fastmath=False, **OPTIONS)
def combine(sums, comps):
    s = 0.0
    c = 0.0
    for i in range(sums.shape[0]):
        s, c = neumaier(s, c, sums[i])
        c += comps[i]
    return _total(s, c)


@njit(**OPTIONS)
def bounds(c, nchunks, ntiles):
    return c * ntiles // nchunks, (c + 1) * ntiles // nchunks


@njit(inline="always", **OPTIONS)
def _segment(t, S, seg, R):
    """Tile t of a rows kernel -> (p, k, r0, r1): row p, its segment k = [r0, r1)."""
    if S == 1:
        return t, 0, 0, R
    p = t // S
    k = t - p * S
    r0 = k * seg
    return p, k, r0, min(r0 + seg, R)


@njit(inline="always", **OPTIONS)
def _tile(t, S, nqb, R, Q, QB):
    """Tile t -> (p, k, r0, r1, q0, q1): position p, segment k = [r0, r1) of R, block [q0, q1)."""
    if S == 1 and nqb == 1:  # one tile a position: no divisions in the common case
        return t, 0, 0, R, 0, Q
    p = t // (S * nqb)
    rest = t - p * (S * nqb)
    k = rest // nqb
    q0 = (rest - k * nqb) * QB
    seg = -(-R // S)
    r0 = k * seg
    return p, k, r0, min(r0 + seg, R), q0, min(q0 + QB, Q)


# The helpers below are inlined into the kernels at Numba IR level (a call that is not inlined
# costs more than a 64-element row). Being inlined they share the kernel's fastmath flags; the
# compensation helpers above are ordinary calls, compiled without fastmath, so they stay exact.
INLINE = dict(inline="always", fastmath=FASTMATH, **OPTIONS)


# They take 1-D runs (slices) and loop from 0: with indices LLVM can prove non-negative, Numba
# drops its negative-index wraparound and the loops vectorise.


@njit(**INLINE)
def _dot(x, y):
    """sum(x * y): plain sums of BLOCK terms in the inputs' dtype, compensated across blocks.

    One loop for every length: a separate path for rows of one block (the common case) made
    LLVM compile the fused corr-loss kernels' rows loop 1.2-1.8x slower, though only that
    path ran (for one block the compensation is exact: it returns the block's sum)."""
    n = x.shape[0]
    s = 0.0
    c = 0.0
    for k in range(0, n, BLOCK):
        xs = x[k:k + BLOCK]  # a block as a slice, looped from 0: see above
        ys = y[k:k + BLOCK]
        blk = x.dtype.type(0)
        for i in range(xs.shape[0]):
            blk += xs[i] * ys[i]
        s, c = neumaier(s, c, np.float64(blk))
    return _total(s, c)


@njit(**INLINE)
def _sq(x, y):
    """sum((x*y)**2), summed as _dot."""
    n = x.shape[0]
    s = 0.0
    c = 0.0
    for k in range(0, n, BLOCK):
        s, c = neumaier(s, c, np.float64(_block_sq(x[k:k + BLOCK], y[k:k + BLOCK])))
    return _total(s, c)


@njit(**INLINE)
def _block_sq(xs, ys):
    """sum((xs*ys)**2) of one block (slices, looped from 0: see above), plainly."""
    blk = xs.dtype.type(0)
    for i in range(xs.shape[0]):
        t = xs[i] * ys[i]
        blk += t * t
    return blk


@njit(**INLINE)
def _sq_grad(x, y, gx, gy, scale):
    """_sq, with its bits, writing the product-loss gradients scale*x*y**2 and scale*x**2*y
    into gx and gy.

    Each block is summed in a loop of its own, with no stores (see the module's docstring):
    in one loop with them, the loss changed in its last bit when the gradients lay right
    after the inputs in memory. Apart from _sq: one helper with both loops, chosen inside the
    block loop, made the rows kernel 1.6-1.7x slower with gradients."""
    n = x.shape[0]
    s = 0.0
    c = 0.0
    for k in range(0, n, BLOCK):
        xs = x[k:k + BLOCK]
        ys = y[k:k + BLOCK]
        gxs = gx[k:k + BLOCK]
        gys = gy[k:k + BLOCK]
        blk = x.dtype.type(0)
        for i in range(xs.shape[0]):
            t = xs[i] * ys[i]
            blk += t * t
        for i in range(xs.shape[0]):
            u = xs[i]
            v = ys[i]
            w = scale * (u * v)
            gxs[i] = w * v
            gys[i] = w * u
        s, c = neumaier(s, c, np.float64(blk))
    return _total(s, c)


@njit(**INLINE)
def _sq_streamed(x, y, gx, gy, scale):
    """_sq_grad, with its bits, the gradients streamed (vectors.py): each block is summed in
    its loop, then the whole lines of gx and gy that the block completes are streamed from
    L1; the partial lines at either end of the run take ordinary stores. Reads and streaming
    stores in one pass ran 1.25-1.35x as fast as a 64 KiB run summed first and its gradients
    streamed from L2 after: 1.3-1.4x the triad against 1.03x (the Intel Xeon VM)."""
    n = x.shape[0]
    size = x.itemsize
    per = LINE // size
    X, Y, GX, GY = address(x), address(y), address(gx), address(gy)
    hx = min(n, (-GX) % LINE // size)  # elements of gx written so far
    hy = min(n, (-GY) % LINE // size)
    run_square(GX, X, Y, hx, scale)
    run_square(GY, Y, X, hy, scale)
    s = 0.0
    c = 0.0
    for k in range(0, n, BLOCK):
        xs = x[k:k + BLOCK]
        ys = y[k:k + BLOCK]
        s, c = neumaier(s, c, np.float64(_block_sq(xs, ys)))
        end = k + xs.shape[0]
        m = (end - hx) // per
        square_lines(GX + hx * size, X + hx * size, Y + hx * size, m, scale)
        hx += m * per
        m = (end - hy) // per
        square_lines(GY + hy * size, Y + hy * size, X + hy * size, m, scale)
        hy += m * per
    run_square(GX + hx * size, X + hx * size, Y + hx * size, n - hx, scale)
    run_square(GY + hy * size, Y + hy * size, X + hy * size, n - hy, scale)
    return _total(s, c)


@njit(**INLINE)
def _scaled(w, x, y, gx, gy):
    """gx <- w * y, gy <- w * x, for a scalar w."""
    for i in range(x.shape[0]):
        u = x[i]
        v = y[i]
        gx[i] = w * v
        gy[i] = w * u


@njit(**INLINE)
def _scaled_run(w, x, y, gx, gy):
    """gx <- w * y, gy <- w * x, elementwise, for 1-D runs (w a vector)."""
    for i in range(x.shape[0]):
        u = x[i]
        v = y[i]
        gx[i] = w[i] * v
        gy[i] = w[i] * u


@njit(**INLINE)
def _row_dot(a, b, p, line):
    """_dot of row p of 2-D a and b; with line (rows of one cache line or less, unit stride),
    as one masked vector (vectors.py)."""
    if line:
        x = address(a) + p * a.strides[0]
        y = address(b) + p * b.strides[0]
        ahead(x)
        ahead(y)
        return np.float64(line_dot(x, y, a.dtype.type(0), a.shape[1]))
    return _dot(a[p], b[p])


@njit(**INLINE)
def _row_scaled(w, a, b, ga, gb, p, line):
    """_scaled of row p; with line, as one masked vector each (rows above MASKED_STORE_MIN
    bytes)."""
    if line:
        ahead_write(address(ga) + p * ga.strides[0])
        ahead_write(address(gb) + p * gb.strides[0])
    if line and a.shape[1] * a.itemsize > MASKED_STORE_MIN:
        R = a.shape[1]
        line_scale(address(ga) + p * ga.strides[0], address(b) + p * b.strides[0], w, R)
        line_scale(address(gb) + p * gb.strides[0], address(a) + p * a.strides[0], w, R)
    else:
        _scaled(w, a[p], b[p], ga[p], gb[p])


@njit(**INLINE)
def _lead(g, lo):
    """(lead, tail): the elements of row lo (of every row) before its first line boundary, and
    those after its last; (0, 0) for rows that start on a line. Once a chunk: a division a
    row cost rows of one line half their speed."""
    lead = (-(address(g) + lo * g.strides[0]) % LINE) // g.itemsize
    return lead, (LINE // g.itemsize - lead) % (LINE // g.itemsize)


# The rows kernels stream a chunk's rows of g <- w * rows of x (contiguous rows of whole
# lines laid out alike, rows_stream) in three steps: its first row (_stream_first), each
# next row (_stream_next), then the last row's tail (_stream_last). A row that starts inside
# a line shares that line with the row before: it is written with the second row, in one
# store of both weights. The lines at a chunk's two ends, which the chunks beside share, take
# ordinary stores. The first row apart from the loop and a plain count of lines took the
# fused corr loss from 0.8x to 1.1-1.2x the triad (the same branches inside the loop, or the
# same run_product for the whole lines, each kept it at 1.0x).


@njit(**INLINE)
def _stream_first(g, x, p, w, lead):
    """Row p, the first of a chunk, but for its tail: its head, before its first line
    boundary, with ordinary stores, then its whole lines."""
    dst = address(g) + p * g.strides[0]
    src = address(x) + p * g.strides[0]
    run_product(dst, src, w, lead, w)
    head = lead * g.itemsize
    run_lines(dst + head, src + head, w, (g.strides[0] - head) // LINE)


@njit(**INLINE)
def _stream_next(g, x, p, w, wprev, tail):
    """Row p after row p - 1, but for its tail: the line the two share (row p's first line
    where tail is 0), wprev in its first tail lanes, then row p's other whole lines."""
    start = address(g) + p * g.strides[0] - tail * g.itemsize
    src = address(x) + p * g.strides[0] - tail * g.itemsize
    line_straddle(start, src, wprev, w, tail)
    run_lines(start + LINE, src + LINE, w, g.strides[0] // LINE - 1)


@njit(**INLINE)
def _stream_last(g, x, p, w, tail):
    """The tail of row p, the last of a chunk, with ordinary stores."""
    off = p * g.strides[0] + g.strides[0] - tail * g.itemsize
    run_product(address(g) + off, address(x) + off, w, tail, w)


@njit(**INLINE)
def _scaled_tile(w, a, b, ga, gb, p, r0, r1, q0, q1, stream):
    """ga[p, r, q0:q1] <- w[:n] * b[p, r, q0:q1] and gb likewise from a, for rows [r0, r1).
    With stream (C-contiguous arrays, vectors.py) the stores are non-temporal, and the runs
    are given by byte address, not by slice."""
    n = q1 - q0
    if stream:
        R, Q = a.shape[1], a.shape[2]
        like = a.dtype.type(0)
        for r in range(r0, r1):
            off = ((p * R + r) * Q + q0) * a.itemsize
            run_product(address(ga) + off, address(b) + off, address(w), n, like)
            run_product(address(gb) + off, address(a) + off, address(w), n, like)
    else:
        for r in range(r0, r1):
            _scaled_run(w[:n], a[p, r, q0:q1], b[p, r, q0:q1], ga[p, r, q0:q1],
                        gb[p, r, q0:q1])


@njit(**INLINE)
def _cols(a, b, ga, gb, p, r0, r1, q0, q1, scale, square, acc, tot, cmp, prev):
    """Column sums over rows [r0, r1) of a[p] * b[p] (square: of (a*b)**2, writing the product
    loss gradients unless ga is empty), for columns [q0, q1), into float64 tot[:q1 - q0].
    Not square, the corr loss's gradients of the tile before, prev = (w, p, q0, q1, stream),
    are written meanwhile (unless its q1 is its q0), as many rows as each pass reads, from
    the last row up: the rows that tile read last may still be in cache (its rows, a power
    of two apart in NHWC, share a few sets of the L2). 1.02-1.03x against first row first.

    Rows are walked in memory order, each a contiguous run; BLOCK rows at a time are summed
    plainly into acc, and the blocks added into tot with compensation. Plain products are
    taken four rows a pass (a quarter of the passes over acc: 1.05-1.09x along axis 1)."""
    n = q1 - q0
    want = ga.size > 0
    w, pp, pq0, pq1, stream = prev
    tot[:n] = 0.0
    cmp[:n] = 0.0
    for k in range(r0, r1, BLOCK):
        acc[:n] = 0
        kend = min(k + BLOCK, r1)
        if not square:
            for r in range(k, kend - 3, 4):
                x0 = a[p, r, q0:q1]
                y0 = b[p, r, q0:q1]
                x1 = a[p, r + 1, q0:q1]
                y1 = b[p, r + 1, q0:q1]
                x2 = a[p, r + 2, q0:q1]
                y2 = b[p, r + 2, q0:q1]
                x3 = a[p, r + 3, q0:q1]
                y3 = b[p, r + 3, q0:q1]
                for i in range(n):
                    acc[i] += (x0[i] * y0[i] + x1[i] * y1[i]) + (x2[i] * y2[i] + x3[i] * y3[i])
                if pq1 > pq0:
                    _scaled_tile(w, a, b, ga, gb, pp, r0 + r1 - r - 4, r0 + r1 - r, pq0, pq1,
                                 stream)
            for r in range(kend - (kend - k) % 4, kend):
                x = a[p, r, q0:q1]
                y = b[p, r, q0:q1]
                for i in range(n):
                    acc[i] += x[i] * y[i]
                if pq1 > pq0:
                    _scaled_tile(w, a, b, ga, gb, pp, r0 + r1 - r - 1, r0 + r1 - r, pq0, pq1,
                                 stream)
        else:
            for r in range(k, kend):
                x = a[p, r, q0:q1]
                y = b[p, r, q0:q1]
                if want:
                    gx = ga[p, r, q0:q1]
                    gy = gb[p, r, q0:q1]
                    for i in range(n):
                        u = x[i]
                        v = y[i]
                        t = u * v
                        acc[i] += t * t
                        w = scale * t
                        gx[i] = w * v
                        gy[i] = w * u
                else:
                    for i in range(n):
                        t = x[i] * y[i]
                        acc[i] += t * t
        for i in range(n):
            tot[i], cmp[i] = neumaier(tot[i], cmp[i], np.float64(acc[i]))
    for i in range(n):
        tot[i] = _total(tot[i], cmp[i])


@njit(inline="always", **OPTIONS)
def _column_sums(QB, dtype):
    """The buffers of _cols for one chunk: block sums in the inputs' dtype, float64 totals and
    their compensations."""
    return np.empty(QB, dtype), np.empty(QB), np.empty(QB)


# --------------------------------------------------------------------------- kernels
# Each returns nothing or the float64 loss sum; `nchunks` is 1 for the serial variants.
# An output that is not wanted is passed as an empty array of the same type. Gradients are
# computed in the inputs' dtype, as NumPy would.


def rows_dot(a, b, out, sums, comps, c0, c1, nchunks):
    """out[p, k] = sum over segment k of a[p] * b[p]."""
    P, S = out.shape
    R = a.shape[1]
    seg = -(-R // S)
    for c in range(c0, c1):
        lo, hi = bounds(c, nchunks, P * S)
        if PACKED_ROWS and hi - lo >= BLOCK:
            _packed(a, b, out[:, 0], out[:0, 0], a[:0], b[:0], 1.0, lo, hi)
        elif S == 1:
            for p in range(lo, hi):
                out[p, 0] = _row_dot(a, b, p, SHORT_ROWS)
        else:
            for t in range(lo, hi):
                p, k, r0, r1 = _segment(t, S, seg, R)
                out[p, k] = _dot(a[p, r0:r1], b[p, r0:r1])


def rows_corr_grad(a, b, pos, ga, gb, scale, sums, comps, c0, c1, nchunks):
    """Fused corr loss: returns sum(0.5*corr**2); pos <- corr; ga, gb <- scale*corr*(b, a)."""
    P, R = a.shape
    for c in range(c0, c1):
        lo, hi = bounds(c, nchunks, P)
        if PACKED_ROWS and hi - lo >= BLOCK:
            s, e = _packed(a, b, pos, pos[:0], ga, gb, scale, lo, hi)
        elif STREAM_ROWS:
            s, e = _corr_rows_streamed(a, b, pos, ga, gb, scale, lo, hi, SHORT_ROWS)
        else:
            s, e = _corr_rows(a, b, pos, ga, gb, scale, lo, hi, SHORT_ROWS)
        sums[c] = s
        comps[c] = e


@njit(**INLINE)
def _corr_rows(a, b, pos, ga, gb, scale, lo, hi, line):
    """Rows [lo, hi) of rows_corr_grad: (loss sum, compensation). Rows of one line (line,
    a constant) sum the loss terms of BLOCK rows plainly (in float64, in order: _plain),
    then add them with compensation: compensating each row's term took those rows twice the
    time; longer rows measured 0.8x as fast with the blocks (LLVM compiles their dot
    products' loops otherwise), and compensate each term."""
    s = 0.0
    e = 0.0
    if line:
        for p0 in range(lo, hi, BLOCK):
            part = 0.0
            for p in range(p0, min(p0 + BLOCK, hi)):
                d = _row_dot(a, b, p, line)
                if pos.size:
                    pos[p] = d
                if ga.size:
                    _row_scaled(a.dtype.type(scale * d), a, b, ga, gb, p, line)
                part = _plain(part, 0.5 * d * d)
            s, e = neumaier(s, e, part)
        return s, e
    for p in range(lo, hi):
        d = _row_dot(a, b, p, line)
        if pos.size:
            pos[p] = d
        if ga.size:
            _row_scaled(a.dtype.type(scale * d), a, b, ga, gb, p, line)
        s, e = neumaier(s, e, 0.5 * d * d)
    return s, e


@njit(**INLINE)
def _packed(a, b, pos, g, ga, gb, scale, lo, hi):
    """Rows [lo, hi) of the PACKED_ROWS variants, as many rows at a time as fill a line:
    their dot products into pos, the loss sum of their squares as _corr_rows takes it, and
    the gradients ga, gb <- like(scale * the dot product) * (b, a); or, where g is not empty
    (the VJP), no dot products and the gradients like(g) * (b, a). Each row's dot product
    has line_dot's bits, so the rows give the _short variants' bits."""
    R = a.shape[1]
    G = LINE // a.itemsize // R
    like = a.dtype.type(0)
    lanes = np.empty(LINE // a.itemsize, a.dtype)
    offs = np.empty(LINE // a.itemsize, np.int32)  # each lane's offset in its row
    o = 0
    for i in range(offs.size):  # no division: a small call has few rows to spread it over
        offs[i] = o
        o = o + 1 if o + 1 < R else 0
    s = 0.0
    e = 0.0
    for p0 in range(lo, hi, BLOCK):
        part = 0.0
        end = min(p0 + BLOCK, hi)
        for p in range(p0, end, G):
            n = min(G, end - p)
            off = p * R * a.itemsize
            ahead(address(a) + off)
            ahead(address(b) + off)
            if g.size:
                for j in range(n):
                    lanes[j * R] = a.dtype.type(g[p + j])
            else:
                rows_dots(address(lanes), address(a) + off, address(b) + off, address(offs),
                          like, R, n)
                for j in range(n):
                    d = np.float64(lanes[j * R])
                    if pos.size:
                        pos[p + j] = d
                    part = _plain(part, 0.5 * d * d)
            if ga.size:
                ahead_write(address(ga) + off)
                ahead_write(address(gb) + off)
                rows_scaled(address(ga) + off, address(gb) + off, address(a) + off,
                            address(b) + off, address(lanes), address(offs), like, R, n, scale)
        s, e = neumaier(s, e, part)
    return s, e


@njit(**INLINE)
def _corr_rows_streamed(a, b, pos, ga, gb, scale, lo, hi, line):
    """_corr_rows, the gradients streamed (STREAM_ROWS), for rows of whole lines; with line
    (rows of one line) its dot products and its blocks of loss terms as _corr_rows takes
    them, so that both give the same bits. The first row is written out apart from the loop
    (see above), its dot product and weight too: an inlined helper for those, given pos and
    returning both, brought reference counting into the loop, whose locked instructions
    wait for the streaming stores (0.1x)."""
    if lo == hi:
        return 0.0, 0.0
    alead, atail = _lead(ga, lo)
    blead, btail = _lead(gb, lo)
    d = _row_dot(a, b, lo, line)
    if pos.size:
        pos[lo] = d
    w = a.dtype.type(scale * d)
    _stream_first(ga, b, lo, w, alead)
    _stream_first(gb, a, lo, w, blead)
    s, e = 0.0, 0.0
    part = 0.5 * d * d  # the block of terms so far (line), else the one term
    k = 1
    for p in range(lo + 1, hi):
        wprev = w
        d = _row_dot(a, b, p, line)
        if pos.size:
            pos[p] = d
        w = a.dtype.type(scale * d)
        _stream_next(ga, b, p, w, wprev, atail)
        _stream_next(gb, a, p, w, wprev, btail)
        if line and k < BLOCK:
            part = _plain(part, 0.5 * d * d)
            k += 1
        else:
            s, e = neumaier(s, e, part)
            part = 0.5 * d * d
            k = 1
    _stream_last(ga, b, hi - 1, w, atail)
    _stream_last(gb, a, hi - 1, w, btail)
    return neumaier(s, e, part)


def rows_product(a, b, pos, ga, gb, scale, S, sums, comps, c0, c1, nchunks):
    """Product loss: returns sum(0.5*(a*b)**2); pos[p, k] <- sum((a*b)**2) over segment k."""
    P, R = a.shape
    seg = -(-R // S)
    w = a.dtype.type(scale)
    for c in range(c0, c1):
        lo, hi = bounds(c, nchunks, P * S)
        s = 0.0
        e = 0.0
        for t in range(lo, hi):
            p, k, r0, r1 = _segment(t, S, seg, R)
            if LOSS_ONLY:
                v = _sq(a[p, r0:r1], b[p, r0:r1])
            elif ga.size and STREAM_ROWS:  # one long row, at any alignment
                v = _sq_streamed(a[p, r0:r1], b[p, r0:r1], ga[p, r0:r1], gb[p, r0:r1], w)
            elif ga.size:
                v = _sq_grad(a[p, r0:r1], b[p, r0:r1], ga[p, r0:r1], gb[p, r0:r1], w)
            else:
                v = _sq(a[p, r0:r1], b[p, r0:r1])
            if pos.size:
                pos[p, k] = v
            s, e = neumaier(s, e, 0.5 * v)
        sums[c] = s
        comps[c] = e


def rows_vjp(a, b, g, ga, gb, S, sums, comps, c0, c1, nchunks):
    """ga[p] = g[p] * b[p], gb[p] = g[p] * a[p]."""
    P, R = a.shape
    seg = -(-R // S)
    for c in range(c0, c1):
        lo, hi = bounds(c, nchunks, P * S)
        if STREAM_ROWS:  # S == 1
            _vjp_rows_streamed(a, b, g, ga, gb, lo, hi)
            continue
        if PACKED_ROWS and hi - lo >= BLOCK:  # S == 1
            _packed(a, b, np.empty(0), g, ga, gb, 1.0, lo, hi)
            continue
        for t in range(lo, hi):
            p, _, r0, r1 = _segment(t, S, seg, R)
            if SHORT_ROWS:  # S == 1
                _row_scaled(a.dtype.type(g[p]), a, b, ga, gb, p, True)
            else:
                _scaled(a.dtype.type(g[p]), a[p, r0:r1], b[p, r0:r1], ga[p, r0:r1],
                        gb[p, r0:r1])


@njit(**INLINE)
def _vjp_rows_streamed(a, b, g, ga, gb, lo, hi):
    """Rows [lo, hi) of rows_vjp, streamed (STREAM_ROWS)."""
    if lo == hi:
        return
    alead, atail = _lead(ga, lo)
    blead, btail = _lead(gb, lo)
    w = a.dtype.type(g[lo])
    _stream_first(ga, b, lo, w, alead)
    _stream_first(gb, a, lo, w, blead)
    for p in range(lo + 1, hi):
        wprev = w
        w = a.dtype.type(g[p])
        _stream_next(ga, b, p, w, wprev, atail)
        _stream_next(gb, a, p, w, wprev, btail)
    _stream_last(ga, b, hi - 1, w, atail)
    _stream_last(gb, a, hi - 1, w, btail)


def strided_dot(a, b, out, QB, sums, comps, c0, c1, nchunks):
    """out[p, k, q] = sum over segment k of a[p, :, q] * b[p, :, q]."""
    P, R, Q = a.shape
    S = out.shape[1]
    nqb = -(-Q // QB)
    ntiles = P * S * nqb
    none = np.empty((1, 1, 0), a.dtype)  # _cols writes no gradients here
    for c in range(c0, c1):
        acc, tot, cmp = _column_sums(QB, a.dtype)
        lo, hi = bounds(c, nchunks, ntiles)
        for t in range(lo, hi):
            p, k, r0, r1, q0, q1 = _tile(t, S, nqb, R, Q, QB)
            _cols(a, b, none, none, p, r0, r1, q0, q1, a.dtype.type(1), False, acc, tot, cmp,
                  (acc, 0, 0, 0, False))
            out[p, k, q0:q1] = tot[:q1 - q0]


def strided_corr_grad(a, b, pos, ga, gb, scale, QB, stream, sums, comps, c0, c1, nchunks):
    """Fused corr loss over (P, R, Q); see rows_corr_grad. A tile's gradients need its
    finished sums, so they are written while the next tile is summed (_cols), the last
    tile's at the end: reads and stores in one stream of work took the kernel from 0.75x
    to 0.82x the triad (two passes over each tile measured the time of the loss and the VJP
    apart). A tile is sized to stay in cache till then; the gradients stream where the
    launcher says (vectors.py)."""
    P, R, Q = a.shape
    nqb = -(-Q // QB)
    ntiles = P * nqb
    acc, tot, cmp = _column_sums(QB, a.dtype)
    w = np.empty(QB, a.dtype)
    pp, pq0, pq1 = 0, 0, 0  # the tile before, whose gradients are written meanwhile
    for c in range(c0, c1):
        s = 0.0
        e = 0.0
        lo, hi = bounds(c, nchunks, ntiles)
        for t in range(lo, hi):
            p, _, _, _, q0, q1 = _tile(t, 1, nqb, R, Q, QB)
            n = q1 - q0
            _cols(a, b, ga, gb, p, 0, R, q0, q1, a.dtype.type(1), False, acc, tot, cmp,
                  (w, pp, pq0, pq1, stream))
            for i in range(n):
                d = tot[i]
                if pos.size:
                    pos[p, q0 + i] = d
                s, e = neumaier(s, e, 0.5 * d * d)
                w[i] = scale * d
            if ga.size:
                pp, pq0, pq1 = p, q0, q1
        sums[c] = s
        comps[c] = e
    if pq1 > pq0:
        _scaled_tile(w, a, b, ga, gb, pp, 0, R, pq0, pq1, stream)


def strided_product(a, b, pos, ga, gb, scale, S, QB, sums, comps, c0, c1, nchunks):
    """Product loss over (P, R, Q); pos[p, k, q] <- sum((a*b)**2) over segment k."""
    P, R, Q = a.shape
    nqb = -(-Q // QB)
    ntiles = P * S * nqb
    for c in range(c0, c1):
        acc, tot, cmp = _column_sums(QB, a.dtype)
        s = 0.0
        e = 0.0
        lo, hi = bounds(c, nchunks, ntiles)
        for t in range(lo, hi):
            p, k, r0, r1, q0, q1 = _tile(t, S, nqb, R, Q, QB)
            _cols(a, b, ga, gb, p, r0, r1, q0, q1, a.dtype.type(scale), True, acc, tot, cmp,
                  (acc, 0, 0, 0, False))
            n = q1 - q0
            if pos.size:
                pos[p, k, q0:q1] = tot[:n]
            for i in range(n):
                s, e = neumaier(s, e, 0.5 * tot[i])
        sums[c] = s
        comps[c] = e


def strided_vjp(a, b, g, ga, gb, S, QB, stream, sums, comps, c0, c1, nchunks):
    """ga[p, :, q] = g[p, q] * b[p, :, q], gb[p, :, q] = g[p, q] * a[p, :, q], streamed where
    the launcher says."""
    P, R, Q = a.shape
    nqb = -(-Q // QB)
    ntiles = P * S * nqb
    for c in range(c0, c1):
        w = np.empty(QB, a.dtype)
        lo, hi = bounds(c, nchunks, ntiles)
        for t in range(lo, hi):
            p, _, r0, r1, q0, q1 = _tile(t, S, nqb, R, Q, QB)
            n = q1 - q0
            for i in range(n):
                w[i] = g[p, q0 + i]
            _scaled_tile(w, a, b, ga, gb, p, r0, r1, q0, q1, stream)


_KERNELS = {}


def register(*fns):
    """Compile kernels for `launch` (lazily, for the types they meet); the cost-volume module
    registers its own."""
    for fn in fns:
        _KERNELS[fn.__name__] = njit(fastmath=FASTMATH, **OPTIONS)(fn)


def _variant(fn, *flags):
    """fn again, compiled with these module flags (SHORT_ROWS, STREAM_ROWS, LOSS_ONLY) true,
    named fn.__name__ + "_short", "_stream", "_loss" as they are. A constant folds
    its branches away before LLVM vectorises; passed as an argument, the flag made the rows
    kernels' ordinary path 1.15-1.25x slower. Its own name gives it its own cache entries."""
    name = fn.__name__ + "".join("_" + f.split("_")[0].lower() for f in flags)
    variant = types.FunctionType(fn.__code__.replace(co_name=name, co_qualname=name),
                                 dict(fn.__globals__, **dict.fromkeys(flags, True)), name)
    variant.__qualname__ = name
    return variant


register(
    rows_dot,
    rows_corr_grad,
    rows_product,
    rows_vjp,
    _variant(rows_dot, "SHORT_ROWS"),
    _variant(rows_product, "STREAM_ROWS"),
    _variant(rows_product, "LOSS_ONLY"),
    *(_variant(fn, flag) for fn in (rows_vjp, rows_corr_grad)
      for flag in ("SHORT_ROWS", "STREAM_ROWS")),
    _variant(rows_corr_grad, "SHORT_ROWS", "STREAM_ROWS"),
    *(_variant(fn, "SHORT_ROWS", "PACKED_ROWS") for fn in (rows_dot, rows_corr_grad, rows_vjp)),
    strided_dot,
    strided_corr_grad,
    strided_product,
    strided_vjp,
)


def dispatchers():
    """The kernels' Numba dispatchers (their signatures and cache statistics)."""
    return [*_KERNELS.values(), small_vjp]


def launch(name, parallel, *args):
    """Run kernel `name` over its chunks (its last argument is nchunks), on the threads a call
    from this thread may use where parallel; returns the combined float64 loss."""
    nchunks = args[-1]
    sums, comps = threads.run(_KERNELS[name], args[:-1], nchunks,
                              threads.get_num_threads() if parallel else 1)
    return combine(sums, comps)


def _plan(shape, itemsize, fused=False, writes=False):
    """Tiling of a (P, R, Q) problem: (parallel, S segments of R, QB columns a tile, nchunks),
    all fixed by the problem: whether to run in parallel (writes: the call writes gradients,
    two more passes) changes which threads compute the chunks, never the chunks."""
    P, R, Q = shape
    moved = P * R * Q * itemsize * (4 if writes else 2)
    return (moved >= PARALLEL_BYTES,) + _tiling(P, R, Q, itemsize, fused)


@lru_cache(maxsize=1024)
def _tiling(P, R, Q, itemsize, fused):
    """(S, QB, nchunks). A fused tile must stay in cache between its two passes; other tiles
    take the longest runs that still leave four chunks a core of this machine (os.cpu_count:
    not NUMBA_NUM_THREADS nor the process's CPU affinity, so that the tiling, and the bits,
    are the same for any thread setting). R is split into segments only where the positions
    alone cannot make that many."""
    chunks = 4 * (os.cpu_count() or 1) if P * R * Q >= PARALLEL_MIN else 1
    QB = 1
    if Q > 1:
        QB = min(Q, MAX_RUN)
        if fused:
            QB = min(QB, max(MIN_RUN, TILE_BYTES // (2 * itemsize * max(R, 1)) // 64 * 64))
        while P * -(-Q // QB) < chunks and QB >= 2 * MIN_RUN:
            QB //= 2
    if chunks == 1:
        return 1, QB, 1
    tiles = P * -(-Q // QB)
    S = 1
    if tiles < chunks:
        S = max(1, min(-(-chunks // max(tiles, 1)), R // (8 * BLOCK)))
    return S, QB, max(1, min(tiles * S, chunks))


_F64 = np.dtype(np.float64)
_UNWANTED = {}


def _unwanted(dtype, ndim):
    """The empty array that tells a kernel not to write an output: shaped (1, ..., 1, 0), so
    that the kernels can still take (empty) slices of it."""
    try:
        return _UNWANTED[dtype, ndim]
    except KeyError:
        return _UNWANTED.setdefault((dtype, ndim), np.empty((1,) * (ndim - 1) + (0,), dtype))


def _rows(x):
    return x[:, :, 0]


def _short(kernel, S, R, itemsize, *rows, stream=False):
    """The rows kernel for rows of R elements: its SHORT_ROWS variant for rows of one cache
    line or less, not split into segments, of unit stride in the 2-D (P, R) `rows` given;
    its STREAM_ROWS variant where stream (rows_stream) and not split, which is also short
    where such a variant exists (one with dot products: rows_corr_grad)."""
    short = S == 1 and R * itemsize <= LINE and all(
        x.strides[1] == x.itemsize for x in rows if x.size)
    if stream and S == 1:
        both = kernel + "_short_stream"
        return both if short and both in _KERNELS else kernel + "_stream"
    packed = kernel + "_short_packed"
    if short and packed in _KERNELS and 2 * R * itemsize <= LINE and all(
            x.strides[0] == R * itemsize for x in rows if x.size):
        return packed
    return kernel + "_short" * short


# --------------------------------------------------------------------------- the contract
# a, b: (P, R, Q) arrays of one float dtype, any strides. Outputs are C-contiguous arrays
# allocated by the caller; pos and the gradients may be None when not wanted; losses are
# added into total[0] (float64).


def _partials(a, b, out=None):
    """Dot products of the segments of R, (P, S, Q) float64; into out (P, Q) where S == 1."""
    P, R, Q = a.shape
    parallel, S, QB, nchunks = _plan(a.shape, a.itemsize)
    part = out[:, None, :] if out is not None and S == 1 else np.empty((P, S, Q))
    if Q == 1:
        ra, rb = _rows(a), _rows(b)
        launch(_short("rows_dot", S, R, a.itemsize, ra, rb), parallel, ra, rb, _rows(part),
               nchunks)
    else:
        launch("strided_dot", parallel, a, b, part, QB, nchunks)
    return part, S


def _empty(a, *sums):
    """Whether there is nothing to compute; then the sums over an empty axis are zeros."""
    if a.size:
        return False
    for x in sums:
        if x is not None:
            x[...] = 0
    return True


def correlation(a, b, out):
    """out (P, Q) <- sum_r a[p, r, q] * b[p, r, q], rounded once to out's dtype."""
    if _empty(a, out):
        return
    part, S = _partials(a, b, out)
    if S > 1:
        np.sum(part, axis=1, out=out)


def correlation_vjp(a, b, g, ga, gb):
    """ga = g * b and gb = g * a, with g (P, Q), float64 or of a's dtype, broadcast along R."""
    if _empty(a):
        return
    parallel, S, QB, nchunks = _plan(a.shape, a.itemsize, writes=True)
    if a.shape[2] == 1:
        rows = (_rows(a), _rows(b), _rows(ga), _rows(gb))
        stream = rows_stream(rows[2], rows[1]) and rows_stream(rows[3], rows[0])
        launch(_short("rows_vjp", S, a.shape[1], a.itemsize, *rows, stream=stream), parallel,
               rows[0], rows[1], g[:, 0], rows[2], rows[3], S, nchunks)
    else:
        stream = streams(ga, b) and streams(gb, a)
        launch("strided_vjp", parallel, a, b, g, ga, gb, S, QB, stream, nchunks)


def corr_loss_grad(a, b, scale, pos, ga, gb, total):
    """total[0] += sum(0.5 * corr**2); pos (P, Q) float64 <- corr; ga, gb <- scale*corr*(b, a)."""
    if not _empty(a, pos):
        total[0] += _corr_loss_grad(a, b, scale, pos, ga, gb)


def _corr_loss_grad(a, b, scale, pos, ga, gb):
    P, R, Q = a.shape
    # without gradients there is no second pass to keep tiles in cache for: the longest runs
    parallel, S, QB, nchunks = _plan(a.shape, a.itemsize, fused=ga is not None,
                                     writes=ga is not None)
    if S > 1:
        # Too few positions to keep the threads busy: sum over R in parallel segments, then
        # write the gradients in a second pass (the data cannot stay in cache between them).
        corr = _partials(a, b)[0].sum(axis=1)
        if pos is not None:
            pos[...] = corr
        if ga is not None:
            correlation_vjp(a, b, scale * corr, ga, gb)
        return 0.5 * float(np.sum(np.square(corr)))
    if Q > 1:
        pos = _unwanted(_F64, 2) if pos is None else pos
        ga, gb = (_unwanted(a.dtype, 3),) * 2 if ga is None else (ga, gb)
        stream = streams(ga, b) and streams(gb, a)
        return launch("strided_corr_grad", parallel, a, b, pos, ga, gb, scale, QB, stream,
                      nchunks)
    pos = _unwanted(_F64, 1) if pos is None else pos[:, 0]
    ga, gb = (_unwanted(a.dtype, 2),) * 2 if ga is None else (_rows(ga), _rows(gb))
    a, b = _rows(a), _rows(b)
    stream = ga.size > 0 and rows_stream(ga, b) and rows_stream(gb, a)
    return launch(_short("rows_corr_grad", S, R, a.itemsize, a, b, ga, gb, stream=stream),
                  parallel, a, b, pos, ga, gb, scale, nchunks)


def product_loss_grad(a, b, scale, pos, ga, gb, total):
    """total[0] += sum(0.5 * (a*b)**2); pos (P, Q) float64 <- sum_r (a*b)**2; ga, gb <- the
    gradients scale*a*b**2, scale*a**2*b."""
    if not _empty(a, pos):
        total[0] += _product_loss_grad(a, b, scale, pos, ga, gb)


def _product_loss_grad(a, b, scale, pos, ga, gb):
    if pos is None and a.size >= PARALLEL_MIN and all(
        x is None or x.flags.c_contiguous for x in (a, b, ga, gb)
    ):
        # Only the total is wanted, and it is elementwise: one long row cut into segments.
        a, b = a.reshape(1, -1, 1), b.reshape(1, -1, 1)
        if ga is not None:
            ga, gb = ga.reshape(a.shape), gb.reshape(a.shape)
    P, R, Q = a.shape
    parallel, S, QB, nchunks = _plan(a.shape, a.itemsize, writes=ga is not None)
    if P * Q == 1:
        S = max(S, -(-R // FLAT_RUN))
        nchunks = min(S, nchunks)
    part = np.empty((P, S, Q)) if pos is not None else None
    if Q > 1:
        part = _unwanted(_F64, 3) if part is None else part
        if ga is None:
            ga = gb = _unwanted(a.dtype, 3)
        loss = launch("strided_product", parallel, a, b, part, ga, gb, scale, S, QB, nchunks)
    else:
        rpart = _unwanted(_F64, 2) if part is None else _rows(part)
        a, b = _rows(a), _rows(b)
        ga, gb = (_unwanted(a.dtype, 2),) * 2 if ga is None else (_rows(ga), _rows(gb))
        # one long row (the flat case above) streams at any alignment: segments of FLAT_RUN
        stream = P == 1 and ga.size > 0 and more_streams(ga, b) and more_streams(gb, a)
        kernel = "rows_product" + ("_stream" if stream else "_loss" * (ga.size == 0))
        loss = launch(kernel, parallel, a, b, rpart, ga, gb, scale, S, nchunks)
    if pos is not None:
        np.sum(part, axis=1, out=pos)
    return loss


def serial_plan(op, prq, dtype, scale=1.0):
    """For small inputs of one (P, R, Q) shape, the cheapest call of an operation on this
    thread, giving the bits of the launchers above: (kernel shape, run) with, for C-ordered
    arrays of that shape, run(a, b, out (P, Q)) for the correlation and run(a, b, ga, gb) ->
    loss for the losses (ga, gb of that shape, or of none of its elements: no gradients),
    each on the kernel and tiling the launchers choose. The API keeps these per call
    signature, so a repeated small call skips the planning. Each run calls the compiled
    kernel directly (see _entry): every array it is handed must be behaved (`flags.carray`),
    of the dtype and number of dimensions planned for. correlation_vjp's plan is vjp_plan."""
    P, R, Q = prq
    _, S, QB, _ = _plan(prq, dtype.itemsize, fused=op == "corr_loss_and_grad")
    rows = Q == 1
    kshape = (P, R) if rows else prq
    x = np.empty(kshape, dtype)  # arrays of the types the plan will be handed

    def k(name):
        if not rows:
            return _KERNELS["strided_" + name]
        # the variant the launchers choose for C-ordered rows (S is 1 at these sizes)
        return _KERNELS[_short("rows_" + name, S, R, dtype.itemsize) if name != "product"
                        else "rows_product"]
    if op == "correlation":
        if rows:
            kern = _entry(k("dot"), x, x, np.empty((P, Q), dtype), *_NO_SUMS)
            return kshape, lambda a, b, out: kern(a, b, out, *_NO_SUMS)
        kern = _entry(k("dot"), x, x, np.empty((P, 1, Q), dtype), QB, *_NO_SUMS)
        return kshape, lambda a, b, out: kern(a, b, out.reshape(P, 1, Q), QB, *_NO_SUMS)
    if op.startswith("corr_loss"):
        if rows:
            return kshape, _serial(k("corr_grad"), x, _unwanted(_F64, 1), scale)
        return kshape, _serial(k("corr_grad"), x, _unwanted(_F64, 2), scale, QB, False)
    if not rows:
        return kshape, _serial(k("product"), x, _unwanted(_F64, 3), scale, S, QB)
    S = max(S, -(-R // FLAT_RUN)) if P == 1 else S
    return kshape, _serial(k("product"), x, _unwanted(_F64, 2), scale, S)


def vjp_plan(prq, shape, dtype, gshape):
    """The plan of correlation_vjp for behaved a and b of `shape` and dtype, and g of
    `gshape`: plan(a, b, g) -> (ga, gb), one call of small_vjp. g goes in as it is where it
    is behaved and of a's dtype (the same object) or float64, else as a float64 copy."""
    P, R, Q = prq
    x = np.empty(shape, dtype)
    same, wide = (_entry(small_vjp, P, R, Q, x, x, np.empty(gshape, t), x, x)
                  for t in (dtype, _F64))

    def plan(a, b, g):
        if g.dtype is not dtype and g.dtype is not _F64 or not g.flags.carray:
            g = np.array(g, _F64, order="C")
        ga, gb = np.empty(shape, dtype), np.empty(shape, dtype)
        (same if g.dtype is dtype else wide)(P, R, Q, a, b, g, ga, gb)
        return ga, gb
    return plan


def _entry(kernel, *args):
    """The compiled function kernel(*args) dispatches to, for arguments of exactly the types
    of args: plans call it directly, skipping the dispatcher's typing of every argument, a
    third of a 13-argument kernel call at the classic (1, 3, 3, 4) size. It checks nothing:
    an array of another dtype, number of dimensions or layout would be misread."""
    return kernel.compile(tuple(typeof(v) for v in args))


@njit(**OPTIONS)
def small_vjp(P, R, Q, a, b, g, ga, gb):
    """correlation_vjp of small C-ordered a, b, ga and gb of one shape, seen as (P, R, Q). Each
    element is the one product the VJP kernels compute, dtype(float64(g)) * x, so the bits
    are theirs; at such sizes a kernel launch and the reshapes around it cost more Python
    than NumPy's two broadcast products (and arrays made here cost more to hand back to
    Python than arrays made there)."""
    if Q == 1:  # rows: one loop along each (a loop of one element costs its set-up each)
        x, y = a.reshape((P, R)), b.reshape((P, R))
        gx, gy = ga.reshape((P, R)), gb.reshape((P, R))
        for p in range(P):
            s = a.dtype.type(np.float64(g.flat[p]))
            for r in range(R):
                gx[p, r] = s * y[p, r]
                gy[p, r] = s * x[p, r]
        return
    x, y = a.reshape((P, R, Q)), b.reshape((P, R, Q))
    gx, gy = ga.reshape((P, R, Q)), gb.reshape((P, R, Q))
    w = g.reshape((P, Q))
    for p in range(P):
        for r in range(R):
            for q in range(Q):
                s = a.dtype.type(np.float64(w[p, q]))
                gx[p, r, q] = s * y[p, r, q]
                gy[p, r, q] = s * x[p, r, q]


# The partial sums of a kernel that sums no loss: never written, so shared.
_NO_SUMS = (np.zeros(1), np.zeros(1), 0, 1, 1)


def _serial(kernel, x, pos, *fixed):
    """run(a, b, ga, gb) -> the loss of kernel(a, b, pos, ga, gb, *fixed) over its one chunk,
    on this thread, for a, b, ga and gb of the types of x. A loss kernel writes every chunk's
    partial sums, so they need no zeros."""
    sums = np.empty(1)
    kernel = _entry(kernel, x, x, pos, x, x, *fixed, sums, sums, 0, 1, 1)

    def run(a, b, ga, gb):
        sums, comps = np.empty(1), np.empty(1)
        kernel(a, b, pos, ga, gb, *fixed, sums, comps, 0, 1, 1)
        s = sums[0]
        return s + comps[0] if math.isfinite(s) else s
    return run
