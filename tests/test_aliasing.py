"""Outputs that share memory with an operand: the result equals that of separate buffers.

For every function that takes `out=` and every output slot, hypothesis makes that output
share memory with each operand it is computed from (a, b, grad) in turn: the very same
memory, an overlapping window at an offset, or (on the host) an operand read with a stride
through the output's memory. The call must return the `out` arrays themselves, holding what
the same call gives with separate buffers. (The contract: README, "Errors and edge cases".)
"""

import math

import numpy as np
import pytest
from helpers import BACKENDS, DEVICE, SIMULATOR, device_array, to_host
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastcorr

# name: (the operands it reads, number of outputs)
OPS = {
    "correlation": (("a", "b"), 1),
    "correlation_vjp": (("a", "b", "grad"), 2),
    "corr_loss_and_grad": (("a", "b"), 2),
    "product_loss_and_grad": (("a", "b"), 2),
    "correlation_volume": (("a", "b"), 1),
    "correlation_volume_vjp": (("a", "b", "grad"), 2),
    "correlation_volume_loss_and_grad": (("a", "b"), 2),
}
ALIAS_BACKENDS = [b for b in BACKENDS if b in ("cpu", "reference", "cuda", DEVICE)]
SETTINGS = settings(max_examples=4 if SIMULATOR else 25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# every (function, output slot, operand) that can share memory
SHARINGS = [(func, slot, name) for func, (names, n_outs) in OPS.items()
            for slot in range(n_outs) for name in names]


@st.composite
def problems(draw, func):
    """(operand shapes, keyword arguments, output shapes) for func."""
    if "volume" in func:
        shape = (draw(st.integers(1, 2)), draw(st.integers(2, 6)), draw(st.integers(2, 7)),
                 draw(st.integers(1, 3)))
        kw = dict(max_displacement=draw(st.integers(0, 2)),
                  kernel_size=draw(st.sampled_from([1, 3])), stride1=draw(st.integers(1, 2)),
                  stride2=draw(st.integers(1, 2)), pad=draw(st.one_of(st.none(),
                                                                      st.integers(0, 3))),
                  direction=draw(st.sampled_from(["2d", "x"])))
        try:
            vol = fastcorr.correlation_volume(np.zeros(shape), np.zeros(shape), **kw,
                                              backend="reference").shape
        except ValueError:
            assume(False)
        shapes = {"a": shape, "b": shape, "grad": vol}
        outs = [vol] if func == "correlation_volume" else [shape, shape]
        if func == "correlation_volume_loss_and_grad":
            kw["reduction"] = draw(st.sampled_from(["sum", "mean", "none"]))
        return shapes, kw, outs
    shape_a = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    shape_b = tuple(1 if draw(st.booleans()) and draw(st.booleans()) else n for n in shape_a)
    ndim = len(shape_a)
    axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                          st.lists(st.integers(0, ndim - 1), unique=True, min_size=1,
                                   max_size=ndim).map(tuple)))
    kw = {"axis": axis}
    corr = fastcorr.correlation(np.zeros(shape_a), np.zeros(shape_b), axis,
                                backend="reference").shape
    shapes = {"a": shape_a, "b": shape_b, "grad": corr}
    outs = [corr] if func == "correlation" else [shape_a, shape_b]
    if func.endswith("loss_and_grad"):
        kw["reduction"] = draw(st.sampled_from(["sum", "mean", "none"]))
    return shapes, kw, outs


def run(func, ops, kw, out, backend):
    f = getattr(fastcorr, func)
    args = [ops[name] for name in OPS[func][0]]
    if backend == DEVICE:
        backend = "auto"
    return f(*args, **kw, out=out, backend=backend)


def place(lib, dtype, n_op, n_out, mode, shift, step):
    """A buffer holding an operand of n_op elements (read every `step`-th element) and an
    output of n_out elements whose memory overlaps it: (buffer, operand slice, out slice)."""
    span = step * (n_op - 1) + 1
    # out starts `shift` elements after the operand; any shift in (-n_out, span) overlaps
    shift = 0 if mode == "whole" else shift % (span + n_out - 1) - (n_out - 1)
    lo = min(0, shift)
    size = max(span, shift + n_out) - lo
    buf = lib(np.zeros(size, dtype))
    op = buf[-lo:-lo + span:step]
    out = buf[shift - lo:shift - lo + n_out]
    return op, out


@pytest.mark.parametrize("backend", ALIAS_BACKENDS)
@pytest.mark.parametrize("func,slot,name", SHARINGS)
@SETTINGS
@given(data=st.data(), dtype=st.sampled_from([np.float64, np.float32]),
       mode=st.sampled_from(["whole", "offset", "strided"]), shift=st.integers(0, 10**6),
       seed=st.integers(0, 2**16))
def test_output_sharing_an_operand(backend, func, slot, name, data, dtype, mode, shift, seed):
    shapes, kw, out_shapes = data.draw(problems(func), label="problem")
    names, n_outs = OPS[func]
    device = backend == DEVICE
    if device and mode == "strided":  # a device view is reshaped, which needs one stride
        mode = "offset"
    rng = np.random.default_rng(seed)
    values = {n: rng.standard_normal(shapes[n]).astype(dtype) for n in names}

    lib = device_array if device else np.asarray
    host = {n: lib(v) for n, v in values.items()}
    shape_op, shape_out = shapes[name], out_shapes[slot]
    step = 2 if mode == "strided" else 1

    def operand_and_out():
        op, out = place(lib, dtype, math.prod(shape_op), math.prod(shape_out), mode, shift,
                        step)
        op = op.reshape(shape_op)
        op[...] = values[name]
        return op, out.reshape(shape_out)

    def fresh_outs():
        outs = [lib(np.zeros(s, dtype)) for s in out_shapes]
        return outs[0] if n_outs == 1 else tuple(outs)

    # the same operand layout and separate out= buffers: only the sharing differs
    want = run(func, dict(host, **{name: operand_and_out()[0]}), kw, fresh_outs(), backend)
    want = tuple(to_host(w) for w in (want if isinstance(want, tuple) else (want,)))

    op, shared = operand_and_out()
    ops = dict(host, **{name: op})
    outs = [lib(np.zeros(s, dtype)) for s in out_shapes]
    outs[slot] = shared
    got = run(func, ops, kw, outs[0] if n_outs == 1 else tuple(outs), backend)
    got = got if isinstance(got, tuple) else (got,)
    for i, o in enumerate(outs):  # out= arrays are returned as themselves
        assert got[len(got) - n_outs + i] is o
    # The CPU kernels give the same bits wherever their outputs lie (docs/design.md,
    # "Accuracy"); NumPy's and the CUDA kernels' sums, equal up to rounding.
    eps = 0 if backend == "cpu" else 64 * np.finfo(dtype).eps
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(to_host(g), w, rtol=eps, atol=eps * np.max(np.abs(w),
                                                                             initial=0),
                                   err_msg=f"{func} output {i}: {name} shares memory with "
                                   f"out[{slot}] ({mode})")


# (shape, axis) of the rows and strided kernels, and cost-volume problems
BESIDE = [((1, 5, 1), 1), ((3, 17, 1), 1), ((1, 1, 19), -1), ((1, 5, 8), -1), ((4, 7), -1),
          ((2, 3, 19), 1), ((1, 70, 3), 1), ((33,), 0)]
BESIDE_VOLUME = [((1, 5, 7, 3), dict(max_displacement=1, kernel_size=3)),
                 ((2, 6, 6, 5), dict(max_displacement=2))]


@pytest.mark.parametrize("func", list(OPS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_right_beside_an_operand(func, dtype):
    """Outputs that do not overlap an operand but lie within a vector's length after it get
    the bits of outputs far from it, the loss included. A compiled loop that summed and
    stored at once was vectorised only behind a run-time check that its stores lie clear of
    its loads, and summed in another order where they did not: the product loss's last bit
    depended on where its gradients were allocated."""
    rng = np.random.default_rng(4)
    names, n_outs = OPS[func]
    f = getattr(fastcorr, func)
    if "volume" in func:
        cases = [(shape, kw, None) for shape, kw in BESIDE_VOLUME]
    else:
        cases = [(shape, {"axis": axis}, axis) for shape, axis in BESIDE]
    for shape, kw, axis in cases:
        corr = (fastcorr.correlation_volume(np.ones(shape), np.ones(shape), **kw) if "volume"
                in func else fastcorr.correlation(np.ones(shape), np.ones(shape), axis)).shape
        if func.endswith("loss_and_grad"):
            kw = dict(kw, reduction="sum")
        shapes = {"a": shape, "b": shape, "grad": corr}
        out_shapes = [corr] if n_outs == 1 and func != "correlation_vjp" else [shape, shape]
        out_shapes = out_shapes[:n_outs]
        values = {n: rng.standard_normal(shapes[n]).astype(dtype) for n in names}

        def bits(r):
            return [np.asarray(x).tobytes() for x in (r if isinstance(r, tuple) else (r,))]

        def call(ops, outs):
            return f(*(ops[n] for n in names), **kw,
                     out=outs[0] if n_outs == 1 else tuple(outs))
        want = bits(call(values, [np.zeros(s, dtype) for s in out_shapes]))
        for gap in range(9):  # elements between an operand's end and an output's start
            sizes = [math.prod(shapes[n]) for n in names] + [math.prod(s) for s in out_shapes]
            buf = np.zeros(sum(sizes) + 64 * len(sizes), dtype)
            ops, outs, at = {}, [], 0
            for i, n in enumerate(names):  # each operand, then (gap) an output
                ops[n] = buf[at:at + sizes[i]].reshape(shapes[n])
                ops[n][...] = values[n]
                at += sizes[i] + gap
                if i < n_outs:
                    k = len(names) + i
                    outs.append(buf[at:at + sizes[k]].reshape(out_shapes[i]))
                    at += sizes[k] + 32
            assert bits(call(ops, outs)) == want, (shape, gap)
