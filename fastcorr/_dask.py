"""The public functions on Dask arrays: lazy, chunk by chunk through the same kernels.

Every check of the public contract (dtypes, broadcasting, axes, reduction, backend, the shape
of `grad`) runs here, when the graph is built, on the arrays' shapes and dtypes. The graph
then runs the public functions themselves on each pair of chunks, so NumPy chunks take the
CPU kernels and CuPy chunks the CUDA ones.

Where every reduced axis is one chunk, each task is one fused call. Where a reduced axis is
split, the correlation is summed from per-chunk partial correlations (in float64, as a tree),
and the gradients are then computed from it chunk by chunk: a second read of a and b, which
is what a split reduction costs. No array is rechunked except where a and b differ.

Inside a task the CPU kernels run on one thread: Dask runs one task per core (or per worker
thread), and a kernel that also spread over every core would oversubscribe them.
"""

import operator

import dask.array as da
import numpy as np

from . import reference
from ._call import Call
from ._kernels.threads import num_threads
from ._validate import NO_REDUCTION, check_real, is_dask_array

_F64 = np.dtype(np.float64)


# --------------------------------------------------------------------------- one task


def _task(f, *args, **kw):
    """The public function f(*args, **kw) on one chunk, the CPU kernels on this thread
    alone."""
    if type(args[0]) is not np.ndarray or kw.get("backend") == "reference":
        return f(*args, **kw)
    with num_threads(1):
        return f(*args, **kw)


def _task_tuple(f, *args, **kw):
    """_task, its result always a tuple (a loss alone becomes a 1-tuple)."""
    result = _task(f, *args, **kw)
    return result if isinstance(result, tuple) else (result,)


# --------------------------------------------------------------------------- checks


def _dask(func, name, x):
    """x as a Dask array of known chunk sizes and a real dtype."""
    if not is_dask_array(x):
        x = da.asarray(x)
    if any(np.isnan(s) for s in x.shape):
        raise ValueError(f"{func}: {name} has chunks of unknown size (shape {x.shape}); "
                         "call compute_chunk_sizes() on it first")
    check_real(func, name, x.dtype)
    return x



class _Lazy(Call):
    """A Call on Dask arrays (the same checks, run when the graph is built, on shapes and
    dtypes): a and b broadcast against each other, in the compute dtype, with common
    chunks."""

    def __init__(self, api, func, a, b, axis, backend, reduction=NO_REDUCTION, out=None):
        if out is not None:
            raise TypeError(f"{func}: out= is not supported with Dask arrays, which are not "
                            "written in place; store the results with dask.array.store")
        self.api = api  # the public functions, by name: what each task runs
        self.reduction = reduction
        super().__init__(func, a, b, axis, backend, reduction)
        self.backend = backend  # "auto": each chunk's own type chooses its kernels
        self.ndim = len(self.shape)
        self.positions = self.layout.positions
        # the reduced axes in as many chunks as they have, each of size 1
        self.kept_chunks = tuple((1,) * len(c) if i in self.axes else c
                                 for i, c in enumerate(self.a.chunks))
        # one chunk of size 1 along the reduced axes: broadcast against every chunk of them
        self.one_chunks = tuple((1,) if i in self.axes else c
                                for i, c in enumerate(self.a.chunks))
        self.split = any(len(self.a.chunks[i]) > 1 for i in self.axes)

    def inputs(self, a, b, device):
        return _dask(self.func, "a", a), _dask(self.func, "b", b)

    def executor(self, a, b, x, y, device):
        x, y = x.astype(self.dtype), y.astype(self.dtype)  # lazy; no-ops when already so
        if x.shape != self.shape or y.shape != self.shape:
            x, y = da.broadcast_arrays(x, y)
        idx = tuple(range(x.ndim))
        _, (self.a, self.b) = da.core.unify_chunks(x, idx, y, idx)

    def meta(self, dtype):
        """An empty array of the chunks' library (NumPy, CuPy): what the results hold."""
        return da.utils.meta_from_array(self.a, self.ndim, dtype)

    def scale(self):
        return self.layout.scale(self.reduction)

    def finish_loss(self, total):
        """A float64 0-d sum as the loss of the reduction, in the result dtype."""
        if self.reduction == "mean":
            total = total / self.positions if self.positions else total * np.nan
        return total.astype(self.result)

    def grads(self, ga, gb):
        """Gradients in the shapes of a and b (summed over broadcast axes), result dtype."""
        return tuple(reference.unbroadcast(g, s).astype(self.result)
                     for g, s in zip((ga, gb), self.shapes))


# --------------------------------------------------------------------------- building blocks


def _per_chunk(call, name, *arrays, **kw):
    """fastcorr.<name> on every chunk of the broadcast inputs: an array of result tuples."""
    return da.map_blocks(_task_tuple, call.api[name], *arrays, call.axes, **kw, dtype=object,
                         meta=np.empty((0,) * call.ndim, object))


def _item(parts, i, call, dtype):
    """Item i of each chunk's result tuple: a gradient, with the chunks of the inputs."""
    return parts.map_blocks(operator.itemgetter(i), dtype=dtype,
                            meta=call.meta(dtype))


# The functions a graph runs are module-level, with small arguments: Dask names a task by
# hashing what it runs, and a closure over the call would be pickled whole, the inputs'
# graph (and any in-memory array in it) included.


def _scalar_sum(parts, i, call):
    """Item i of each chunk's results, a scalar, summed over the chunks in float64: in one
    task where there are up to _FLAT_SUM chunks (Dask's default is a tree of pairs along each
    axis, 15 tasks for 16 chunks, each of which costs a worker more than the adds it does)."""
    one = tuple((1,) * len(c) for c in call.a.chunks)
    blocks = parts.map_blocks(_scalar_block, i, call.ndim, chunks=one, dtype=_F64,
                              meta=call.meta(_F64))
    flat = {k: max(2, n) for k, n in enumerate(blocks.numblocks)}
    return blocks.sum(dtype=_F64, split_every=flat if blocks.npartitions <= _FLAT_SUM else None)


_FLAT_SUM = 1024


def _scalar_block(t, i, ndim):
    """A chunk's scalar as a one-element block, for a tree sum over the chunks."""
    return np.reshape(np.float64(t[i]), (1,) * ndim)


def _positions_sum(parts, i, call):
    """Item i of each chunk's results, per position with the reduced axes kept, summed over
    the chunks of the reduced axes in float64."""
    kept = parts.map_blocks(_kept_block, i, call.axes, chunks=call.kept_chunks, dtype=_F64,
                            meta=call.meta(_F64))
    return kept.sum(axis=call.axes, keepdims=True, dtype=_F64)


def _kept_block(t, i, axes):
    return np.expand_dims(t[i], axes).astype(_F64)


def _correlation(call):
    """The correlation with the reduced axes kept (size 1), float64 where it is summed over
    chunks of a split axis, else in the compute dtype."""
    partial = da.map_blocks(_task, call.api["correlation"], call.a, call.b, call.axes,
                            keepdims=True,
                            backend=call.backend, chunks=call.kept_chunks, dtype=call.dtype,
                            meta=call.meta(call.dtype))
    if not call.split:
        return partial
    return partial.sum(axis=call.axes, keepdims=True, dtype=_F64)


def _vjp(call, g):
    """(g * b, g * a) chunk by chunk, g with the reduced axes kept; broadcast shape."""
    parts = _per_chunk(call, "correlation_vjp", call.a, call.b, g.astype(call.dtype),
                       backend=call.backend)
    return _item(parts, 0, call, call.dtype), _item(parts, 1, call, call.dtype)


def _squeeze(call, x):
    return x.reshape(call.layout.reduced)


# --------------------------------------------------------------------------- the functions


def run(api, func, a, b, axis=-1, *, grad=None, keepdims=False, reduction=NO_REDUCTION,
        out=None, backend="auto"):
    """The public function `func` on Dask arrays (any input may be one): its graph, checked
    when it is built. api: the public functions by name, which the tasks run on chunks."""
    call = _Lazy(api, func, a, b, axis, backend, reduction, out)
    if func == "correlation":
        corr = _correlation(call).astype(call.result)
        return corr if keepdims else _squeeze(call, corr)
    if func == "correlation_vjp":
        g = _dask(func, "grad", grad)
        target = call.layout.grad_target(func, g.shape)
        g = da.broadcast_to(g, target).reshape(call.layout.kept).rechunk(call.one_chunks)
        return call.grads(*_vjp(call, g))
    grads = func.endswith("_and_grad")
    if func.startswith("corr_loss"):
        return _corr_loss(call, grads)
    return _fused(call, "product_loss", grads)


def _corr_loss(call, grads):
    if not call.split:
        return _fused(call, "corr_loss", grads)
    # a reduced axis in several chunks: the correlation first, then the gradients from it
    corr = _correlation(call)
    per = 0.5 * corr ** 2
    if call.reduction == "none":
        loss = _squeeze(call, per).astype(call.result)
    else:
        loss = call.finish_loss(per.sum(dtype=_F64))
    if not grads:
        return loss
    return (loss, *call.grads(*_vjp(call, corr * call.scale())))


def _fused(call, op, grads):
    """The loss (and gradients) with one fused call per chunk: the product loss always, the
    corr loss where every reduced axis is one chunk. Per-position losses are summed over the
    chunks of the reduced axes, scalar ones over all chunks; the gradients are those of the
    sum, scaled once for reduction="mean"."""
    per_position = call.reduction == "none"
    parts = _per_chunk(call, op + "_and_grad" if grads else op, call.a, call.b,
                       reduction="none" if per_position else "sum", backend=call.backend)
    if per_position:
        loss = _squeeze(call, _positions_sum(parts, 0, call)).astype(call.result)
    else:
        loss = call.finish_loss(_scalar_sum(parts, 0, call))
    if not grads:
        return loss
    ga, gb = _item(parts, 1, call, call.dtype), _item(parts, 2, call, call.dtype)
    if call.reduction == "mean":
        s = call.scale()
        ga, gb = ga * s, gb * s
    return (loss, *call.grads(ga, gb))
