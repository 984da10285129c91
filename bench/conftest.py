"""Shared fixtures, and a summary table after the run: time, GB/s, ratio to the NumPy reference
and fraction of the streaming bandwidth measured in the same run."""

import os
import platform
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import workloads  # noqa: E402


@pytest.fixture(scope="session")
def data():
    return workloads.arrays()


@pytest.fixture(scope="session")
def triad():
    """The streaming bandwidth now, in bytes/s: this machine is shared, so each timed case
    is set against a triad measured just before it rather than once for the whole run."""
    n = int(np.prod(workloads.SHAPE))
    fn = workloads.triad_call(n)
    nbytes = 3 * workloads.nbytes((n,))

    def measure(rounds=9):
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return nbytes / float(np.median(times))
    return measure


def run(benchmark, fn, group, name, nbytes=None, rounds=None):
    """Time fn under pytest-benchmark, labelled for the summary table."""
    benchmark.group = group
    benchmark.name = name
    if nbytes:
        benchmark.extra_info["bytes"] = nbytes
    if rounds is None:
        return benchmark(fn)
    return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    rows = [b for b in session.benchmarks if b.stats and b.stats.rounds]
    triad = [b for b in rows if b.group == "bandwidth"]
    stream = (triad[0].extra_info["bytes"] / triad[0].stats.median) if triad else None
    w = terminalreporter.write_line
    w("")
    w(f"fastcorr benchmark summary ({platform.processor() or platform.machine()}, "
      f"{os.cpu_count()} cores, numpy {np.__version__})")
    if stream:
        w(f"streaming bandwidth (parallel triad, 3 arrays): {stream / 1e9:.1f} GB/s; each row's "
          "% of triad is against a triad measured just before it (in brackets, GB/s)")
    groups = {}
    for b in rows:
        groups.setdefault(b.group, []).append(b)
    for group, items in groups.items():
        if group == "bandwidth":
            continue
        ref = [b for b in items if b.name.startswith("numpy")]
        ref_t = ref[0].stats.median if ref else None
        w(f"  {group}")
        for b in sorted(items, key=lambda b: b.stats.median):
            st = b.stats
            line = f"    {b.name:<22} {st.median * 1e3:9.3f} ms (IQR {st.iqr * 1e3:7.3f})"
            nb = b.extra_info.get("bytes")
            if nb:
                gbs = nb / st.median / 1e9
                line += f" {gbs:6.1f} GB/s"
                now = b.extra_info.get("triad_bytes_per_s", stream)
                if now:
                    line += f" {100 * nb / st.median / now:4.0f}% of triad"
                    line += f" ({now / 1e9:4.1f})"
            if ref_t:
                line += f"  {ref_t / st.median:6.2f}x numpy"
            w(line)


VARIANTS = ["fastcorr out=", "fastcorr", "numpy reference", "jax.jit", "torch.compile",
            "torch eager"]


def op_benchmark(benchmark, data, triad, op, axis, variant, rounds=7):
    """One operation at the default shape, by one implementation."""
    a, b = data
    group = f"{op} axis={axis} {a.shape} {a.dtype}"
    nbytes = workloads.PASSES[op] * a.nbytes
    if variant == "fastcorr out=":
        if op == "correlation":
            out = np.empty_like(workloads.fastcorr_call(op, a, b, axis)())
        else:
            out = (np.empty_like(a), np.empty_like(b))
        fn = workloads.fastcorr_call(op, a, b, axis, out=out)
    elif variant == "fastcorr":
        fn = workloads.fastcorr_call(op, a, b, axis)
    elif variant == "numpy reference":
        fn = workloads.numpy_call(op, a, b, axis)
    else:
        pytest.importorskip({"jax.jit": "jax"}.get(variant, "torch"))
        fn = workloads.PEERS[variant](op, a, b, axis)
        workloads.check_against_fastcorr(op, a, b, axis, fn())
    benchmark.extra_info["triad_bytes_per_s"] = triad()
    run(benchmark, fn, group, variant, nbytes=nbytes, rounds=rounds)
