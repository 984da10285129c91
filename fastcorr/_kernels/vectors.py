"""The kernels' explicit vector code, where Numba's vectoriser does not reach: rows of one
cache line or less, and streaming stores.

Rows of one line or less (16 float32, 8 float64: NHWC with few channels). A loop over so few
elements runs scalar (LLVM's vectorised loop wants more iterations than that), so the dot
product and the gradients of a short row are one masked vector each here: a masked load of
the row, a multiply, and a sum of its lanes (`line_dot`); or a multiply and a masked store
(`line_scale`). Lanes past the row are neither read nor written; a lane the mask leaves out
adds -0.0 to the sum: nothing. The sum is rounded in another order than the loop's, within
the same bound. Rows of half a line or less that lie one after another go several to a
vector (`rows_dots`, `rows_scaled`), each row summed in `line_dot`'s order: the same bits.
Those kernels prefetch the lines ahead of their rows (`ahead`), which the hardware did not.

Streaming stores. An ordinary store first reads the line it writes (write-allocate): a
kernel that reads two arrays and writes two moves six arrays' worth of memory, not four. A
non-temporal store of a whole 64-byte line skips that read. The strided corr-loss and VJP
kernels write their gradients this way (`streams`); where measured faster (not on AMD's Zen
cores), the product loss (`more_streams`) too, and for larger outputs (`STREAM_MORE_MIN`)
the rows kernels along the last axis (`rows_stream`) (docs/design.md, "Kernel contract").

- Only whole, aligned lines are streamed; the partial lines at either end of a run are
  written with ordinary stores, so that no line is written both ways (a streaming store to a
  line in cache evicts it). A line two rows share takes both rows' weights in one streaming
  store (`line_straddle`).
- The writers take byte addresses, not array slices: a slice inside the loop brings Numba's
  reference counting with it, and its locked instructions wait until every pending streaming
  store has reached memory (measured on rows of 64 floats: 8x slower than ordinary stores).

Values are the same products, in the same dtype, as the ordinary loops compute: streaming
changes how the bits reach memory, never the bits.
"""

import glob
import os
import sys

from llvmlite import ir
from llvmlite.binding import get_host_cpu_name
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LINE = 64  # bytes: the cache line, the unit a streaming store must fill, and a short row
# Below this many bytes of output a call's lines may still be in cache when the caller reads
# them, and write-allocate is cheap: the ordinary stores win.
STREAM_MIN = 8 << 20
# Bytes ahead of a row that the kernels over rows of a line or less prefetch (`ahead`): their
# reads, a few bytes a row, did not keep the hardware prefetchers ahead (on the Intel Xeon
# VM the packed kernels' rows took 2.2x the time from DRAM that they took from L2 without
# it, 1.1x with it; 1024 and 4096 measured level or slower).
AHEAD = 2048
# Runs shorter than this have too many partial lines at their ends (streamed rows of 64
# floats measured slower than ordinary stores). 4 KiB until 2026-12-08: on the Intel Xeon
# VM, runs of 1-4 KiB along axis 1 (NHWC with W * C of 256 to 1000 float32) measured
# 1.3-1.6x faster streamed for the fused corr loss and 1.1-1.4x for the VJP, alternately
# with the 4 KiB threshold; 256-byte runs still slower for the VJP.
RUN_MIN = 1 << 10


def _more_min():
    """The bytes of an output from which the rows kernels (rows_stream) stream too, not only
    the strided kernels; sys.maxsize where neither they nor the product loss stream at all
    (more_streams). At (8, 256, 256, 64) float32 (128 MiB an output) on an Intel Xeon VM
    (2 cores, AVX-512, 480 MiB of L3) it took the fused corr loss and the VJP along the last
    axis from 0.7x to 1.1x the triad's bandwidth. Smaller outputs may still be in the last-level
    cache when the caller reads them: a Dask task's 16 MiB gradients, summed by the next task,
    made the threaded run 0.8x as fast streamed there. So: an eighth of the L3 (a share of
    it that other work leaves), and never on AMD's Zen cores, where the EPYC VM of earlier
    measurements ran these kernels level or slower streamed (down to 0.8x)."""
    if get_host_cpu_name().startswith("znver"):
        return sys.maxsize
    return max(STREAM_MIN, _l3_bytes() // 8)


def _l3_bytes(cpu="/sys/devices/system/cpu/cpu0/cache"):
    """The size of the level 3 cache, from Linux's sysfs; 0 where it does not say."""
    for index in glob.glob(os.path.join(cpu, "index*")):
        try:
            with open(os.path.join(index, "level")) as f:
                if f.read().strip() != "3":
                    continue
            with open(os.path.join(index, "size")) as f:
                size = f.read().strip()
        except OSError:
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        if size[-1:] in units and size[:-1].isdigit():
            return int(size[:-1]) * units[size[-1]]
        if size.isdigit():
            return int(size)
    return 0


STREAM_MORE_MIN = _more_min()


@intrinsic
def address(typingctx, arr):
    """The byte address of arr's first element, as a signed integer (Numba computes mixed
    signed and unsigned integers in float64)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, context.get_value_type(types.intp))

    return types.intp(arr), codegen


def _splat(builder, value, vector_type):
    """value in every lane of a vector_type."""
    lanes = vector_type.count
    v = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                               ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                                    [0] * lanes))


def _lanes(builder, like, n):
    """The lane count of one line of like's dtype, and the mask of its first n lanes."""
    lanes = LINE // (like.bitwidth // 8)
    iota = ir.Constant(ir.VectorType(ir.IntType(64), lanes), list(range(lanes)))
    return lanes, builder.icmp_signed("<", iota, _splat(builder, n, iota.type))


def _masked_load(context, builder, like, addr, n, fill):
    t = context.get_value_type(like)
    lanes, mask = _lanes(builder, like, n)
    vt = ir.VectorType(t, lanes)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vt, [vt.as_pointer(), ir.IntType(32), mask.type, vt]),
        f"llvm.masked.load.v{lanes}f{like.bitwidth}.p0v{lanes}f{like.bitwidth}")
    return builder.call(fn, [builder.inttoptr(addr, vt.as_pointer()),
                             ir.Constant(ir.IntType(32), like.bitwidth // 8), mask,
                             ir.Constant(vt, [fill] * lanes)]), mask


@intrinsic
def line_dot(typingctx, x, y, like, n):
    """sum(x[:n] * y[:n]) in like's dtype, for n <= LINE / itemsize unit-stride elements at
    byte addresses x and y: one masked vector, its lanes summed in one fixed order, halves
    added till one lane is left, with no fast-math flags. LLVM's own reduction (reassoc)
    summed them in an order of its choosing, which differed between kernels: the streamed
    and the ordinary fused corr loss gave other bits for the same rows."""
    def codegen(context, builder, signature, args):
        xv, _ = _masked_load(context, builder, like, args[0], args[3], -0.0)
        yv, _ = _masked_load(context, builder, like, args[1], args[3], 0.0)
        v = builder.fmul(xv, yv)
        lanes = v.type.count
        while lanes > 1:
            lanes //= 2
            half = [ir.Constant(ir.VectorType(ir.IntType(32), lanes), list(range(i, i + lanes)))
                    for i in (0, lanes)]
            v = builder.fadd(*(builder.shuffle_vector(v, v, h) for h in half))
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))

    return like(types.intp, types.intp, like, types.intp), codegen


def _moved(builder, v, h, down):
    """v's lanes moved h lanes: lane i <- lane i + h (down) or i - h; the lanes that would
    come from past either end keep an end lane (they are never used)."""
    lanes = v.type.count
    idx = [min(i + h, lanes - 1) if down else max(i - h, 0) for i in range(lanes)]
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), lanes), idx))


def _below(builder, h, R):
    """Whether the constant h is below R (a step of h that does anything)."""
    return builder.icmp_signed("<", ir.Constant(R.type, h), R)


def _offsets(builder, offs, count):
    """The lane offsets within their rows, count int32 at byte address offs."""
    vt = ir.VectorType(ir.IntType(32), count)
    return builder.load(builder.inttoptr(offs, vt.as_pointer()), align=4)


@intrinsic
def rows_dots(typingctx, dst, x, y, offs, like, R, n):
    """The dot products of n rows of R elements, n * R at most a line's lanes, contiguous at
    byte addresses x and y, into the lanes that start the rows (0, R, 2R, ...) of the line at
    byte address dst; offs: the address of each lane's offset within its row (int32). One
    masked vector: each row's lanes summed as line_dot sums a row's, whose lanes past the
    row add -0.0 (nothing): at each step h (half a line's lanes, then a quarter, ...) lane o
    of a row adds lane o + h of the same row where o + h < R. So the bits are line_dot's."""
    def codegen(context, builder, signature, args):
        dst, x, y, offs, _, R, n = args
        xv, _ = _masked_load(context, builder, like, x, builder.mul(R, n), -0.0)
        yv, _ = _masked_load(context, builder, like, y, builder.mul(R, n), 0.0)
        v = builder.fmul(xv, yv)
        count = v.type.count
        o = _offsets(builder, offs, count)
        rows = _splat(builder, builder.trunc(R, ir.IntType(32)), o.type)
        zero = ir.Constant(v.type, [-0.0] * count)
        h = count // 2
        while h:  # a step of h >= R adds nothing: skipped (LLVM branches around it)
            inside = builder.icmp_signed("<", builder.add(o, ir.Constant(o.type, [h] * count)),
                                         rows)
            step = builder.fadd(v, builder.select(inside, _moved(builder, v, h, True), zero))
            v = builder.select(_below(builder, h, R), step, v)
            h //= 2
        builder.store(v, builder.inttoptr(dst, v.type.as_pointer()), align=like.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(types.intp, types.intp, types.intp, types.intp, like, types.intp,
                      types.intp), codegen


@intrinsic
def rows_scaled(typingctx, gx, gy, x, y, lanes, offs, like, R, n, scale):
    """The corr loss's gradients of the n rows of rows_dots: gx <- w * y and gy <- w * x,
    each row's w = like(scale * its dot product), from the line at byte address lanes
    (rows_dots' dst) spread over its row's lanes (lane i takes lane i - its offset, one bit
    of the offset a step); one masked load and store each, lanes past the rows neither read
    nor written. The corr loss's weights are made here from the line of sums, in the vector:
    written one by one and read as a vector, they waited on a failed store forwarding each
    time (the VJP writes its g so, with scale 1, and has no sums to wait for)."""
    def codegen(context, builder, signature, args):
        gx, gy, x, y, lanes, offs, _, R, n, scale = args
        size = like.bitwidth // 8
        xv, mask = _masked_load(context, builder, like, x, builder.mul(R, n), 0.0)
        yv, _ = _masked_load(context, builder, like, y, builder.mul(R, n), 0.0)
        count = xv.type.count
        dv = builder.load(builder.inttoptr(lanes, xv.type.as_pointer()), align=size)
        wide = ir.VectorType(ir.DoubleType(), count)
        wv = builder.fptrunc(builder.fmul(_splat(builder, scale, wide),
                                          builder.fpext(dv, wide)), xv.type)
        o = _offsets(builder, offs, count)
        h = 1
        while h < count:  # offsets are below R: a step of h >= R moves nothing, skipped
            bit = builder.and_(o, ir.Constant(o.type, [h] * count))
            take = builder.icmp_signed("!=", bit, ir.Constant(o.type, [0] * count))
            step = builder.select(take, _moved(builder, wv, h, False), wv)
            wv = builder.select(_below(builder, h, R), step, wv)
            h *= 2
        _masked_store(builder, builder.fmul(wv, yv), gx, mask, size)
        _masked_store(builder, builder.fmul(wv, xv), gy, mask, size)
        return context.get_dummy_value()

    return types.void(types.intp, types.intp, types.intp, types.intp, types.intp, types.intp,
                      like, types.intp, types.intp, types.float64), codegen


def _masked_store(builder, value, addr, mask, size):
    vt = value.type
    fn = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(ir.VoidType(), [vt, vt.as_pointer(), ir.IntType(32), mask.type]),
        f"llvm.masked.store.v{vt.count}f{size * 8}.p0v{vt.count}f{size * 8}")
    builder.call(fn, [value, builder.inttoptr(addr, vt.as_pointer()),
                      ir.Constant(ir.IntType(32), size), mask])


@intrinsic
def line_scale(typingctx, dst, x, w, n):
    """dst[:n] = w * x[:n] for n <= LINE / itemsize unit-stride elements at byte addresses,
    one masked vector: the elements past n are not touched."""
    def codegen(context, builder, signature, args):
        xv, mask = _masked_load(context, builder, w, args[1], args[3], 0.0)
        wv = _splat(builder, args[2], xv.type)
        _masked_store(builder, builder.fmul(wv, xv), args[0], mask, w.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(types.intp, types.intp, w, types.intp), codegen


@intrinsic
def line_straddle(typingctx, dst, x, w0, w1, k):
    """The line at aligned byte address dst <- w0 times the elements at x for its first k
    lanes, w1 times them for the rest: the line two rows share, each with its own weight;
    one non-temporal store."""
    def codegen(context, builder, signature, args):
        t = context.get_value_type(w0)
        lanes, first = _lanes(builder, w0, args[4])
        vt = ir.VectorType(t, lanes)
        xv = builder.load(builder.inttoptr(args[1], vt.as_pointer()), align=w0.bitwidth // 8)
        wv = builder.select(first, _splat(builder, args[2], vt), _splat(builder, args[3], vt))
        st = builder.store(builder.fmul(wv, xv), builder.inttoptr(args[0], vt.as_pointer()),
                           align=LINE)
        st.set_metadata("nontemporal", builder.module.add_metadata(
            [ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.void(types.intp, types.intp, w0, w0, types.intp), codegen


def _product(stream, square=False):
    """An intrinsic store(dst, x, y, off, like): the element at byte address dst + off <- the
    one at x + off times the one at y + off, in like's dtype, as the ordinary loops compute it;
    or times y itself where y is a number (a weight for the whole run). With square, like is
    the product loss's scale and the element its gradient (like * (x*y)) * y. With stream, one
    whole line at an aligned dst + off, non-temporal; without, one element, an ordinary store."""
    @intrinsic
    def store(typingctx, dst, x, y, off, like):
        size = like.bitwidth // 8
        weight = isinstance(y, types.Float)

        def codegen(context, builder, signature, args):
            ty = context.get_value_type(like)
            if stream:
                ty = ir.VectorType(ty, LINE // size)
            ptr = lambda addr: builder.inttoptr(builder.add(addr, args[3]), ty.as_pointer())
            if weight:
                yv = _splat(builder, args[2], ty) if stream else args[2]
            else:
                yv = builder.load(ptr(args[2]), align=size)
            xv = builder.load(ptr(args[1]), align=size)
            if square:
                scale = _splat(builder, args[4], ty) if stream else args[4]
                value = builder.fmul(builder.fmul(scale, builder.fmul(xv, yv)), yv)
            else:
                value = builder.fmul(yv, xv)
            st = builder.store(value, ptr(args[0]), align=LINE if stream else size)
            if stream:
                st.set_metadata("nontemporal", builder.module.add_metadata(
                    [ir.Constant(ir.IntType(32), 1)]))
            return context.get_dummy_value()

        return types.void(types.intp, types.intp, y, types.intp, like), codegen

    return store


@intrinsic
def _size(typingctx, like):
    """The size in bytes of like's type."""
    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, like.bitwidth // 8)

    return types.intp(like), codegen


def _run(square):
    put, line = _product(False, square), _product(True, square)

    @njit(inline="always", nogil=True, error_model="numpy")
    def run(start, x, y, n, like):
        size = _size(like)
        end = start + n * size
        first = min(end, start + (-start) % LINE)
        last = first + (end - first) // LINE * LINE
        for d in range(start, first, size):
            put(start, x, y, d - start, like)
        for d in range(first, last, LINE):
            line(start, x, y, d - start, like)
        for d in range(last, end, size):
            put(start, x, y, d - start, like)

    return run


# n elements from byte address start <- those at the same offsets from x times those from y
# (or times y, a number), in like's dtype: whole lines streamed, the partial lines at either
# end stored the ordinary way.
run_product = _run(False)
# The same, of the product loss's gradient (like * (x*y)) * y, like its scale.
run_square = _run(True)
_line = _product(True)  # one whole line, streamed
_square_line = _product(True, True)  # one whole line of the product loss's gradient, streamed


@njit(inline="always", nogil=True, error_model="numpy")
def run_lines(dst, x, w, n):
    """n whole lines from the aligned byte address dst <- w times the elements at the same
    offsets from x, streamed: a plain count, for rows of a few lines, where run_product's
    search for the ends cost as much as the stores (cpu._stream_next)."""
    for j in range(n):
        _line(dst, x, w, j * LINE, w)


@njit(inline="always", nogil=True, error_model="numpy")
def square_lines(dst, x, y, n, like):
    """n whole lines from the aligned byte address dst <- the product loss's gradient
    (like * (x*y)) * y of the elements at the same offsets from x and y, streamed: the lines
    one block of cpu._sq_streamed completes."""
    for j in range(n):
        _square_line(dst, x, y, j * LINE, like)


def more_streams(g, x):
    """Whether the product loss streams writes of g computed from x (see streams): wherever
    the rows kernels stream at all (not on Zen, `_more_min`), from STREAM_MIN. It streams in
    one pass with its reads (cpu._sq_streamed), which measured 1.45-1.6x faster than
    ordinary stores from 16 MiB outputs up (1.07x at 8 MiB), and 1.24-1.33x with the
    gradients summed after the call, as a Dask task's are (the Intel Xeon VM)."""
    return STREAM_MORE_MIN < sys.maxsize and streams(g, x)


def streams(g, x):
    """Whether the launchers stream writes of g (None: not wanted) computed from x: large,
    C-contiguous, element-aligned (LINE is a multiple of every itemsize), with rows of RUN_MIN
    bytes or more (the kernels' runs are rows, or tiles of rows of at least MIN_RUN elements)."""
    return (g is not None and g.nbytes >= STREAM_MIN and g.flags.c_contiguous
            and x.flags.c_contiguous and g.shape[-1] * g.itemsize >= RUN_MIN
            and g.ctypes.data % g.itemsize == 0)


def rows_stream(g, x):
    """Whether the rows kernels stream the rows of g (P, R) computed from x (P, R): large,
    contiguous rows of whole lines (each row then starts at the same place in a line, and
    the line two rows share is written with the second, cpu._stream_next), x laid out alike.
    The kernels that take them are not split into segments of rows."""
    size = g.itemsize
    return (g.nbytes >= STREAM_MORE_MIN and g.strides == (g.shape[1] * size, size)
            and g.shape[1] * size % LINE == 0 and g.ctypes.data % size == 0
            and x.strides == g.strides)


def _prefetch(write):
    @intrinsic
    def prefetch(typingctx, addr):
        def codegen(context, builder, signature, args):
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                "llvm.prefetch.p0i8")
            addr = builder.add(args[0], ir.Constant(args[0].type, AHEAD))
            builder.call(fn, [builder.inttoptr(addr, i8p), ir.Constant(i32, write),
                              ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(types.intp), codegen

    return prefetch


# ahead(addr): the line AHEAD bytes past byte address addr asked for, to be read; a hint that
# never faults, past the end of an array too. ahead_write: to be written (the line read for
# ownership before the store comes).
ahead = _prefetch(0)
ahead_write = _prefetch(1)
