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
    # Equal up to rounding: vectorised sums may round differently at another alignment.
    eps = 64 * np.finfo(dtype).eps
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(to_host(g), w, rtol=eps, atol=eps * np.max(np.abs(w),
                                                                             initial=0),
                                   err_msg=f"{func} output {i}: {name} shares memory with "
                                   f"out[{slot}] ({mode})")
