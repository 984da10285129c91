"""Shared fixtures, and a summary table after the run: time, GB/s, ratio to the NumPy reference
and fraction of the streaming bandwidth measured in the same run."""

import os
import platform
import sys

import numpy as np
import pytest

from fastcorr._bench_run import check, prepare

sys.path.insert(0, os.path.dirname(__file__))
import workloads  # noqa: E402


@pytest.fixture(scope="session")
def bandwidth():
    """The streaming bandwidth now, in bytes/s (a triad on the CPU, a device copy on the
    GPU): this machine is shared, so each timed case is set against one measured just before
    it rather than once for the whole run."""
    n = int(np.prod(workloads.SHAPE))
    return lambda: workloads.bandwidth(workloads.BACKEND, n)


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
    yard = [b for b in rows if b.group == "bandwidth"]
    stream = (yard[0].extra_info["bytes"] / yard[0].stats.median) if yard else None
    w = terminalreporter.write_line
    w("")
    w(f"fastcorr benchmark summary ({platform.processor() or platform.machine()}, "
      f"{os.cpu_count()} cores, numpy {np.__version__})")
    if stream:
        w(f"streaming bandwidth ({yard[0].name}): {stream / 1e9:.1f} GB/s; each row's % of "
          "bandwidth is against one measured just before it (in brackets, GB/s)")
    groups = {}
    for b in rows:
        groups.setdefault(b.group, []).append(b)
    for group, items in groups.items():
        if group == "bandwidth":
            continue
        ref = [b for b in items if b.name.startswith("numpy")]  # the ratio column's base
        ref_t = ref[0].stats.median if ref else None
        w(f"  {group}")
        for b in sorted(items, key=lambda b: b.stats.median):
            st = b.stats
            line = f"    {b.name:<22} {st.median * 1e3:9.3f} ms (IQR {st.iqr * 1e3:7.3f})"
            nb = b.extra_info.get("bytes")
            if nb:
                gbs = nb / st.median / 1e9
                line += f" {gbs:6.1f} GB/s"
                now = b.extra_info.get("bandwidth_bytes_per_s", stream)
                if now:
                    line += f" {100 * nb / st.median / now:4.0f}% of bw"
                    line += f" ({now / 1e9:4.1f})"
            if ref_t:
                line += f"  {ref_t / st.median:6.2f}x numpy"
            w(line)


VARIANTS = [name for name, impl in workloads.IMPLS.items()
            if workloads.BACKEND in impl.backends]


def impl_benchmark(benchmark, impls, name, p, group, rounds, nbytes=None, bandwidth=None):
    """Implementation `name` of `impls` on problem p, once its results match fastcorr's;
    bandwidth(), where given, is measured just before the timing."""
    why = impls[name].unavailable(p.backend)
    if why:
        pytest.skip(why)
    data = p.inputs()
    fn, sync, _, got = prepare(impls[name], p, data)
    if not name.startswith("fastcorr"):
        check(p, got, prepare(impls["fastcorr"], p, data)[3])
    if bandwidth:
        benchmark.extra_info["bandwidth_bytes_per_s"] = bandwidth()

    def call():
        fn()
        sync()
    run(benchmark, call, group, name, nbytes=nbytes, rounds=rounds)


def op_benchmark(benchmark, bandwidth, op, axis, variant, rounds=7):
    """One operation at the default shape, by one implementation (fastcorr._bench.IMPLS)."""
    p = workloads.Problem(op, workloads.SHAPE, np.float32, axis, workloads.BACKEND)
    impl_benchmark(benchmark, workloads.IMPLS, variant, p,
                   f"{op} axis={axis} {p.shape} {p.dtype} {p.backend}", rounds,
                   nbytes=p.nbytes, bandwidth=bandwidth)
