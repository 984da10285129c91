"""What `fastcorr bench` and `fastcorr bench-volume` share: the problem and implementation
model, and the one loop that times them.

A *problem* is one operation at one shape and dtype on one backend (each suite subclasses
`Problem`). An *implementation* makes, for a problem and its inputs, a pair (fn, sync): fn()
runs one call on data already where it computes and returns its results, sync() waits for
the device. The first implementation that runs on a problem gives the results every other
one must match before its time counts. Nothing here is imported by `import fastcorr`.
"""

import importlib.util
import sys
import time

import numpy as np


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


def installed(module):
    return importlib.util.find_spec(module) is not None


def set_threads(n):
    """CPU threads for fastcorr (and the bandwidth triad, which runs on its threads), for
    Numba's own parallel code and for torch, which keeps a pool of its own."""
    import numba

    import fastcorr

    fastcorr.set_num_threads(n)
    numba.set_num_threads(n)
    if installed("torch"):
        import torch

        torch.set_num_threads(n)


class Problem:
    def __init__(self, op, shape, dtype, backend):
        self.op, self.shape, self.dtype, self.backend = op, tuple(shape), np.dtype(dtype), backend

    def grad_shape(self):
        """The upstream gradient's shape, for the operations that take one; else None."""
        return None

    def inputs(self, seed=0):
        """a, b and the upstream gradient (or None), on the host."""
        rng = np.random.default_rng(seed)
        a = rng.standard_normal(self.shape, np.float32).astype(self.dtype)
        b = rng.standard_normal(self.shape, np.float32).astype(self.dtype)
        shape = self.grad_shape()
        g = None if shape is None else rng.standard_normal(shape, np.float32).astype(self.dtype)
        return a, b, g

    def label(self):
        return self.op

    def fields(self):
        """What a result row says about its problem."""
        return {"backend": self.backend, "op": self.op, "shape": list(self.shape),
                "dtype": str(self.dtype)}


class Impl:
    def __init__(self, make, backends=("cpu", "cuda"), needs=None, missing=None):
        self.make, self.backends, self.needs = make, backends, needs
        self.missing = missing or f"{needs} is not installed"

    def unavailable(self, backend):
        """Why this cannot run on `backend` here, or None."""
        if backend not in self.backends:
            return f"not a {backend} implementation"
        if self.needs and not installed(self.needs):
            return self.missing
        if backend == "cuda" and self.needs == "torch":
            import torch

            if not torch.cuda.is_available():
                return "torch has no CUDA here"
        if backend == "cuda" and self.needs == "jax":
            import jax

            try:
                jax.devices("gpu")
            except RuntimeError:
                return "jax has no GPU backend here"
        return None


# --------------------------------------------------------------------------- helpers of makes


def nothing():
    pass


def cuda_sync():
    from numba import cuda

    cuda.synchronize()


def placed(backend, *xs):
    """(xs where `backend` computes, None kept; the sync that waits for it). On the GPU: CuPy
    arrays where CuPy is installed, else Numba device arrays."""
    if backend != "cuda":
        return xs, nothing
    if installed("cupy"):
        import cupy

        put = cupy.asarray
    else:
        from numba import cuda

        put = cuda.to_device
    return tuple(None if x is None else put(x) for x in xs), cuda_sync


def torch_calls(p, a, b, f, grad=None, value=True):
    """(fn, sync) of f(x, y) on PyTorch tensors of a and b on p's device: for a forward
    operation its result, computed without autograd; otherwise, with torch.autograd's
    gradients of it (of sum(grad * f) when a grad is given), returned after the value if
    `value`."""
    import torch

    dev = "cuda" if p.backend == "cuda" else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else nothing
    x, y = torch.as_tensor(a, device=dev), torch.as_tensor(b, device=dev)
    if p.op in ("correlation", "forward"):
        def fn():
            with torch.no_grad():
                return f(x, y)
        return fn, sync
    x.requires_grad_(True)
    y.requires_grad_(True)
    w = None if grad is None else torch.as_tensor(grad, device=dev)

    def fn():
        out = f(x, y)
        ga, gb = torch.autograd.grad(out, (x, y), w)
        return (out.detach(), ga, gb) if value else (ga, gb)
    return fn, sync


# --------------------------------------------------------------------------- timing


def host(x):
    """A result of any implementation as a float64 NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "copy_to_host"):
        x = x.copy_to_host()
    elif hasattr(x, "get"):
        x = x.get()
    return np.asarray(x, np.float64)


def check(p, got, want):
    """A peer's results must match fastcorr's before its time counts."""
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    if len(got) != len(want):
        raise AssertionError(f"{len(got)} results, fastcorr gives {len(want)}")
    tol = 1e-3 if p.dtype == np.float32 else 1e-9
    for g, w in zip(got, want):
        g, w = host(g), host(w)
        scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
        np.testing.assert_allclose(g.reshape(w.shape), w, rtol=tol, atol=tol * 0.1 * scale)


def prepare(impl, p, data):
    """(fn, sync, seconds to the first result, its results): making the call (data put where
    it computes, any warm-up call: fastcorr's out= rows make their arrays with one) and the
    first call, compilations included, timed apart from the timings."""
    t = time.perf_counter()
    fn, sync = impl.make(p, *data)
    result = fn()
    sync()
    return fn, sync, time.perf_counter() - t, result


def times(fn, sync, repeats, budget=None):
    """Seconds per call, repeats of them (fewer if budget seconds run out after three)."""
    return in_turn([(fn, sync)], repeats, budget)[0]


def in_turn(calls, repeats, budget=None):
    """Seconds per call of each (fn, sync) in calls, called in turn, one call each a round,
    repeats rounds: on a shared machine the rows of a problem then meet the same moments of
    its load and bandwidth, and their ratios hold (timed one after another, a burst of other
    work fell on one row). A call stops taking turns once its own calls have taken budget
    seconds, after three."""
    out = [[] for _ in calls]
    spent = [0.0] * len(calls)
    for _ in range(repeats):
        for i, (fn, sync) in enumerate(calls):
            if budget is not None and len(out[i]) >= 3 and spent[i] > budget:
                continue
            t = time.perf_counter()
            fn()
            sync()
            out[i].append(time.perf_counter() - t)
            spent[i] += out[i][-1]
    return out


def run(problems, impls, names, repeats, budget=None, before=None, say=progress):
    """Time implementations `names` (keys of `impls`) on each problem, in turn (`in_turn`).
    Returns (rows, skipped): a row per problem and implementation timed, and why each other
    one was not (an implementation for another backend is left out silently: CuPy on the
    CPU). before(problem), run ahead of each problem, returns fields for its rows."""
    rows, skipped = [], []
    total = sum(p.backend in impls[name].backends for p in problems for name in names)
    k = 0
    for p in problems:
        data = p.inputs()
        extra = before(p) if before else {}
        want = None
        ready = []
        for name in names:
            impl = impls[name]
            if p.backend not in impl.backends:
                continue
            k += 1
            why = impl.unavailable(p.backend)
            say(f"[{k}/{total}] {p.backend} {p.label()} {name}" + (" (skipped)" if why else ""))
            if not why:
                fn, sync, first, got = prepare(impl, p, data)
                if want is None:
                    want = got
                else:
                    try:
                        check(p, got, want)
                    except AssertionError as exc:
                        why = f"its results differ from fastcorr's: {exc}"
            if why:
                skipped.append({"backend": p.backend, "op": p.op, "impl": name, "why": why})
                continue
            ready.append((name, fn, sync, first))
        timed = in_turn([(fn, sync) for _, fn, sync, _ in ready], repeats, budget)
        for (name, _, _, first), t in zip(ready, timed):
            rows.append({**p.fields(), "impl": name, "median_s": float(np.median(t)),
                         "q1_s": float(np.percentile(t, 25)),
                         "q3_s": float(np.percentile(t, 75)), "min_s": float(min(t)),
                         "calls": len(t), "first_result_s": first, "times": t, **extra})
    return rows, skipped


def problem_of(row):
    """The key of the problem a row belongs to: the table groups and compares rows by it."""
    return row["backend"], row["op"], row.get("axis"), tuple(row["shape"])


def medians_of(rows, impl):
    """{problem: median} of implementation `impl`, the base of a ratio column."""
    return {problem_of(r): r["median_s"] for r in rows if r["impl"] == impl}
