"""The `fastcorr` command: `fastcorr bench` (fastcorr against NumPy and its peers, side by
side) and `fastcorr info` (what this installation has and can use)."""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from . import __version__


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastcorr", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fastcorr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _bench_parser(sub.add_parser(
        "bench", help="time fastcorr against NumPy and the installed peers",
        description="Time each operation with fastcorr, the NumPy reference and every peer "
                    "installed (PyTorch eager, torch.compile, jax.jit, CuPy on the GPU), on "
                    "data already where it computes. Each peer's result is checked against "
                    "fastcorr's first; the first call (compilation) is timed apart."))
    _volume_parser(sub.add_parser(
        "bench-volume", help="time the cost volume against PyTorch and the installed peers",
        description="Time correlation_volume (forward, forward+backward, and the fused "
                    "0.5*||volume||**2 loss) against the NumPy reference, PyTorch's autograd "
                    "of the plain formulation (eager and torch.compile) and "
                    "spatial-correlation-sampler where installed, on the CPU. The default "
                    "layer is FlowNetC's correlation."))
    sub.add_parser("info", help="versions, threading, cache, and whether CUDA is usable")
    sub.add_parser("stereo", add_help=False,
                   help="disparity of a stereo pair with the cost volume (fastcorr stereo -h)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["stereo"]:  # its own options: fastcorr.stereo is also a runnable example
        from . import stereo

        return stereo.main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "info":
        print(_format_info(info()))
        return 0
    if args.command == "bench-volume":
        return bench_volume(args)
    return bench(args)


# --------------------------------------------------------------------------- info


def info():
    """What this installation has: versions, threads, cache, CUDA (and why not)."""
    import numba

    d = {"fastcorr": __version__, "python": platform.python_version(), "numpy": np.__version__,
         "numba": numba.__version__, "machine": _machine()}
    # the threading layer is chosen at the first parallel launch: make one
    a = np.ones(1 << 17, np.float32)
    from . import correlation

    correlation(a, a, backend="cpu")
    d["threading layer"] = numba.threading_layer()
    d["threads"] = numba.get_num_threads()
    d["kernel cache"] = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.path.dirname(__file__), "_kernels", "__pycache__")
    d["cuda"] = _cuda_status()
    d["peers"] = {name: _version(module) for name, module in
                  (("torch", "torch"), ("jax", "jax"), ("cupy", "cupy"))}
    return d


def _version(module):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module if module != "cupy" else "cupy-cuda12x")
    except PackageNotFoundError:
        try:
            return __import__(module).__version__
        except ImportError:
            return None


def _cuda_status():
    try:
        from ._kernels import cuda as kernels
    except ImportError as exc:
        return {"usable": False, "why": f"numba.cuda cannot be imported ({exc}); install "
                                        "the 'cuda' extra"}
    why = kernels.reason_unusable()
    if why:
        return {"usable": False, "why": why, "numba-cuda": _version("numba-cuda")}
    from numba import cuda

    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    return {"usable": True, "gpu": name, "numba-cuda": _version("numba-cuda"),
            "simulator": os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"}


def _machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory GiB": mem and round(mem, 1),
            "system": platform.platform()}


def _format_info(d, indent=""):
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"{indent}{k}:")
            lines.append(_format_info(v, indent + "  "))
        else:
            lines.append(f"{indent}{k}: {'not installed' if v is None else v}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- bench


def _shape(text):
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is integers joined by commas, not {text!r}")
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"a shape needs positive sizes, not {text!r}")
    return shape


def _axis(text):
    try:
        return None if text == "None" else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an axis is an integer or None, not {text!r}")


def _bench_parser(p):
    from ._bench import ADAPTERS, OPS, PEERS

    p.add_argument("--shape", type=_shape, help="NHWC shape, e.g. 8,256,256,64 (the default; "
                   "--quick: 2,128,128,64)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--axis", type=_axis, nargs="+", help="reduced axes to run (default: -1 1; "
                   "--quick: -1)")
    p.add_argument("--ops", nargs="+", choices=OPS, default=None, help="default: all four")
    p.add_argument("--backends", nargs="+", choices=["cpu", "cuda"],
                   help="default: cpu, and cuda where a GPU is usable")
    p.add_argument("--peers", nargs="*", choices=PEERS + ADAPTERS,
                   help="default: every one installed, and fastcorr's framework adapters "
                   "(--quick: numpy, torch and jax.jit, leaving out torch.compile's long "
                   "compilations); give none for fastcorr alone")
    p.add_argument("--threads", type=int, help="CPU threads for fastcorr and torch")
    p.add_argument("--repeats", type=int, help="timed calls per row (default 7, --quick 5)")
    p.add_argument("--quick", action="store_true", help="a small run: under a minute on 2 cores")
    p.add_argument("--json", metavar="PATH", help="write the results, with the machine, here")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of time against problem size "
                   "(corr_loss_and_grad if it runs, else the first op; the first axis), with "
                   "the bandwidth ceiling")
    p.add_argument("--no-out", dest="with_out", action="store_false",
                   help="leave out the fastcorr out= rows")


def _settings(args):
    from . import _bench

    quick = args.quick
    s = {
        "shape": args.shape or (_bench.QUICK_SHAPE if quick else _bench.SHAPE),
        "dtype": args.dtype,
        "axes": args.axis or ([-1] if quick else [-1, 1]),
        "ops": args.ops or list(_bench.OPS),
        "repeats": args.repeats or (5 if quick else 7),
        "threads": args.threads,
    }
    if args.backends:
        s["backends"] = args.backends
    else:
        s["backends"] = ["cpu"] + (["cuda"] if _cuda_status()["usable"] else [])
    if args.peers is not None:
        s["peers"] = args.peers
    else:
        s["peers"] = (["numpy", "torch", "jax.jit"] if quick
                      else list(_bench.PEERS) + list(_bench.ADAPTERS))
    s["impls"] = (["fastcorr out="] if args.with_out else []) + ["fastcorr"] + s["peers"]
    return s


def _progress(msg):
    print(msg, file=sys.stderr, flush=True)


def bench(args):
    from . import _bench

    s = _settings(args)
    if s["threads"]:
        import numba

        numba.set_num_threads(s["threads"])
        if _bench._installed("torch"):
            import torch

            torch.set_num_threads(s["threads"])
    n_elements = int(np.prod(s["shape"]))
    problems = [_bench.Problem(op, s["shape"], s["dtype"], axis, backend)
                for backend in s["backends"] for op in s["ops"] for axis in s["axes"]]
    total = len(problems) * len(s["impls"])
    rows, skipped, k = [], [], 0
    bandwidths = {}
    started = time.perf_counter()
    for p in problems:
        data = p.inputs()
        want = None
        bw = _bench.bandwidth(p.backend, n_elements, p.dtype)
        bandwidths.setdefault(p.backend, []).append(bw)
        for name in s["impls"]:
            k += 1
            if p.backend not in _bench.IMPLS[name][1]:  # CuPy on the CPU: nothing to say
                continue
            why = _bench.unavailable(name, p.backend)
            if why:
                skipped.append({"backend": p.backend, "impl": name, "why": why})
                continue
            _progress(f"[{k}/{total}] {p.backend} {p.label()} {name}")
            fn, sync, first = _bench.prepare(name, p, data)
            result = fn()
            if want is None:
                want = result  # fastcorr's (the first implementation)
            else:
                try:
                    _bench.check(p, result, want)
                except AssertionError as exc:
                    skipped.append({"backend": p.backend, "impl": name,
                                    "why": f"its results differ from fastcorr's: {exc}"})
                    continue
            t = np.array(_bench.times(fn, sync, s["repeats"]))
            rows.append({"backend": p.backend, "op": p.op, "axis": p.axis, "impl": name,
                         "shape": list(p.shape), "dtype": str(p.dtype),
                         "median_s": float(np.median(t)),
                         "q1_s": float(np.percentile(t, 25)), "q3_s": float(np.percentile(t, 75)),
                         "min_s": float(t.min()), "calls": len(t), "first_call_s": first,
                         "bytes": p.nbytes, "bandwidth_bytes_per_s": bw})
    _ratios(rows)
    scaling = None
    if args.plot:
        # the headline operation where it was run, else the first
        first = [p for p in problems if p.op == "corr_loss_and_grad"] or problems
        scaling = _scaling(s, first[0] if first else None)
    elapsed = time.perf_counter() - started
    print(_table(rows, skipped, s, bandwidths, elapsed))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"fastcorr bench": __version__, "info": info(), "settings": s,
                       "bandwidth_bytes_per_s": bandwidths,
                "results": rows, "skipped": skipped, "scaling": scaling,
                "seconds": elapsed}, f, indent=1, default=str)
        _progress(f"results written to {args.json}")
    if args.plot and scaling:
        _plot(scaling, args.plot)
        _progress(f"plot written to {args.plot}")
    return 0


def _ratios(rows):
    """x numpy: the NumPy reference's median over each row's, for the same op and axis."""
    ref = {(r["op"], r["axis"]): r["median_s"] for r in rows if r["impl"] == "numpy"}
    for r in rows:
        t = ref.get((r["op"], r["axis"]))
        r["gb_per_s"] = r["bytes"] / r["median_s"] / 1e9
        r["of_bandwidth"] = r["bytes"] / r["median_s"] / r["bandwidth_bytes_per_s"]
        r["x_numpy"] = t / r["median_s"] if t else None


def _table(rows, skipped, s, bandwidths, elapsed):
    m = _machine()
    shape = "x".join(map(str, s["shape"]))
    out = [f"fastcorr {__version__} bench: {shape} {s['dtype']}, median of "
           f"{s['repeats']} calls; {m['cpu']}, {m['cores']} cores"]
    for backend, bws in bandwidths.items():
        what = "device-to-device copy (2 arrays)" if backend == "cuda" else \
            "parallel triad z = x + s*y (3 arrays)"
        out.append(f"{backend} bandwidth: {what}, {min(bws) / 1e9:.1f}-{max(bws) / 1e9:.1f} "
                   "GB/s over the run; each group is set against the one measured just "
                   "before it")
    header = (f"  {'':<15}{'median':>10}{'IQR':>9}{'MB/call':>9}{'GB/s':>8}"
              f"{'of bw':>7}{'x numpy':>9}{'first call':>12}")
    groups = {}
    for r in rows:
        groups.setdefault((r["backend"], r["op"], r["axis"]), []).append(r)
    for (backend, op, axis), items in groups.items():
        out.append("")
        out.append(f"{op}  axis={axis}  [{backend}, bandwidth "
                   f"{items[0]['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s]")
        out.append(header)
        for r in sorted(items, key=lambda r: r["median_s"]):
            x = f"{r['x_numpy']:8.2f}x" if r["x_numpy"] else f"{'':9}"
            out.append(f"  {r['impl']:<15}{_ms(r['median_s']):>10}"
                       f"{_ms(r['q3_s'] - r['q1_s']):>9}{r['bytes'] / 1e6:9.1f}"
                       f"{r['gb_per_s']:8.1f}{100 * r['of_bandwidth']:6.0f}%{x}"
                       f"{r['first_call_s']:11.2f}s")
    if skipped:
        out.append("")
        seen = set()
        for sk in skipped:
            key = (sk["backend"], sk["impl"], sk["why"])
            if key not in seen:
                seen.add(key)
                out.append(f"skipped: {sk['impl']} on {sk['backend']}: {sk['why']}")
    out.append("")
    out.append("MB/call and GB/s count the memory-traffic floor: a and b read, the gradients "
               "written (DESIGN.md section 1). 'first call' includes compilation and is not "
               f"in the timings. {elapsed:.0f} s in all.")
    return "\n".join(out)


def _ms(seconds):
    return f"{seconds * 1e3:.3f}ms" if seconds < 1 else f"{seconds:.2f}s"


# --------------------------------------------------------------------------- bench-volume


def _volume_parser(p):
    from ._bench_volume import OPS, PEERS

    p.add_argument("--shape", type=_shape, help="NHWC shape (default 4,48,64,256)")
    p.add_argument("--max-displacement", type=int, help="default 20 (--quick: 4)")
    p.add_argument("--stride2", type=int, help="default 2 (--quick: 1)")
    p.add_argument("--pad", type=int, help="default: max displacement + kernel_size // 2")
    p.add_argument("--kernel-size", type=int, default=1)
    p.add_argument("--stride1", type=int, default=1)
    p.add_argument("--direction", choices=["2d", "x"], default="2d")
    p.add_argument("--backend", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: fastcorr's CUDA kernels and torch on the GPU")
    p.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    p.add_argument("--peers", nargs="*", choices=PEERS, default=None,
                   help="default: all but numpy (minutes at the default size)")
    p.add_argument("--threads", type=int, help="CPU threads for fastcorr and torch")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per row (default 5)")
    p.add_argument("--quick", action="store_true", help="a small layer: about a minute")
    p.add_argument("--json", metavar="PATH", help="write the results, with the machine, here")


def bench_volume(args):
    from . import _bench_volume as bv

    if args.threads:
        import numba

        numba.set_num_threads(args.threads)
        if bv.importlib.util.find_spec("torch"):
            import torch

            torch.set_num_threads(args.threads)
    params = dict(bv.QUICK_PARAMS if args.quick else bv.PARAMS)
    shape = args.shape or (bv.QUICK_SHAPE if args.quick else bv.SHAPE)
    for name in ("max_displacement", "stride2", "pad", "kernel_size", "stride1", "direction"):
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    if args.max_displacement is not None and args.pad is None:
        params.pop("pad", None)  # the default: the border
    peers = [n for n in bv.PEERS if n != "numpy"] if args.peers is None else args.peers
    started = time.perf_counter()
    rows = []
    for op in args.ops:
        rows += bv.run(bv.Problem(op, shape, params, backend=args.backend), peers,
                       args.repeats, progress=_progress)
    memory = _volume_memory(shape, params) if args.backend == "cpu" else None
    elapsed = time.perf_counter() - started
    print(_volume_table(rows, shape, params, args.repeats, memory, elapsed, args.backend))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"fastcorr bench-volume": __version__, "info": info(),
                       "shape": list(shape), "params": params, "results": rows,
                       "memory_bytes": memory, "seconds": elapsed}, f, indent=1, default=str)
        _progress(f"results written to {args.json}")
    return 0


def _volume_memory(shape, params):
    """Peak NumPy allocations (tracemalloc) of forward+backward, which stores the volume,
    and of the fused loss, which does not; with the sizes of the volume and the inputs."""
    import tracemalloc

    from . import _bench_volume as bv
    from . import correlation_volume, correlation_volume_loss_and_grad, correlation_volume_vjp

    problem = bv.Problem("forward+backward", shape, params)
    a, b, g = problem.inputs()
    runs = {"forward+backward": lambda: (correlation_volume(a, b, **params),
                                         correlation_volume_vjp(a, b, g, **params)),
            "loss_and_grad (fused)": lambda: correlation_volume_loss_and_grad(a, b, **params)}
    memory = {}
    for label, fn in runs.items():
        tracemalloc.start()
        fn()
        memory[label] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    memory["volume"] = problem.volume_bytes()
    memory["inputs"] = a.nbytes + b.nbytes
    return memory


def _gpu_name():
    from numba import cuda

    name = getattr(cuda.get_current_device(), "name", "the CUDA simulator")
    return name.decode() if isinstance(name, bytes) else str(name)


def _volume_table(rows, shape, params, repeats, memory, elapsed, backend="cpu"):
    m = _machine()
    desc = ", ".join(f"{k}={v}" for k, v in params.items())
    where = f"{m['cpu']}, {m['cores']} cores" if backend == "cpu" else _gpu_name()
    out = [f"fastcorr {__version__} bench-volume: {'x'.join(map(str, shape))} float32, {desc}; "
           f"median of {repeats} calls; {where}"]
    header = f"  {'':<30}{'median':>10}{'IQR':>10}{'x fastcorr':>12}{'first call':>12}"
    skipped = []
    for op in dict.fromkeys(r["op"] for r in rows):
        items = [r for r in rows if r["op"] == op and "times" in r]
        skipped += [r for r in rows if r["op"] == op and "skipped" in r]
        base = float(np.median(items[0]["times"]))
        out += ["", op, header]
        for r in sorted(items, key=lambda r: np.median(r["times"])):
            t = np.array(r["times"])
            med = float(np.median(t))
            iqr = float(np.percentile(t, 75) - np.percentile(t, 25))
            out.append(f"  {r['name']:<30}{_ms(med):>10}{_ms(iqr):>10}{med / base:11.2f}x"
                       f"{r['first']:11.2f}s")
    out.append("")
    for why in dict.fromkeys(f"skipped: {r['name']}: {r['skipped']}" for r in skipped):
        out.append(why)
    mb = {k: v / 1e6 for k, v in (memory or {}).items()}
    if mb:
        out.append(f"memory (tracemalloc peak of fastcorr's NumPy allocations): "
                   f"forward+backward {mb['forward+backward']:.1f} MB, the fused loss "
                   f"{mb['loss_and_grad (fused)']:.1f} MB; the volume is "
                   f"{mb['volume']:.1f} MB, the inputs {mb['inputs']:.1f} MB.")
    out.append(f"'x fastcorr' is each row's time over fastcorr's; 'first call' includes "
               f"compilation and is not in the timings. {elapsed:.0f} s in all.")
    return "\n".join(out)


# --------------------------------------------------------------------------- scaling


def _scaling(s, p0):
    """Time per call against problem size for p0's op and axis, NHWC (N, S, S, C) growing
    from where call overhead dominates to where bandwidth does."""
    from . import _bench

    if p0 is None:
        return None
    C = s["shape"][-1]
    biggest = int(np.prod(s["shape"]))
    sizes = []
    side = 1
    while side * side * C <= biggest:
        sizes.append((1, side, side, C))
        side *= 2
    curves = {}
    for backend in s["backends"]:
        bw = _bench.bandwidth(backend, biggest, np.dtype(s["dtype"]))
        curves[backend] = {"bandwidth_bytes_per_s": bw, "lines": {}}
        for name in ["fastcorr"] + s["peers"]:
            if _bench.unavailable(name, backend):
                continue
            line = []
            for shape in sizes:
                p = _bench.Problem(p0.op, shape, s["dtype"], p0.axis, backend)
                _progress(f"scaling: {backend} {p.label()} {name} {shape}")
                fn, sync, _ = _bench.prepare(name, p, p.inputs())
                t = _bench.times(fn, sync, max(s["repeats"], 9), budget=2.0)
                line.append({"shape": list(shape), "bytes": p.nbytes,
                             "median_s": float(np.median(t))})
            curves[backend]["lines"][name] = line
    return {"op": p0.op, "axis": p0.axis, "dtype": s["dtype"], "curves": curves}


def _plot(scaling, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib (or the bench extra)")
    fig, ax = plt.subplots(figsize=(7, 5))
    styles = {"cpu": "-", "cuda": "--"}
    for backend, curve in scaling["curves"].items():
        xs_all = []
        for name, line in curve["lines"].items():
            xs = [pt["bytes"] for pt in line]
            xs_all += xs
            ax.loglog(xs, [pt["median_s"] for pt in line], styles.get(backend, "-"),
                      marker="o", ms=3, label=f"{name} ({backend})",
                      lw=2.5 if name == "fastcorr" else 1.2)
        if xs_all:
            bw = curve["bandwidth_bytes_per_s"]
            xs = np.array(sorted(set(xs_all)), float)
            ax.loglog(xs, xs / bw, ":", color="black",
                      label=f"bandwidth ceiling ({backend}, {bw / 1e9:.0f} GB/s)")
    ax.set_xlabel("bytes moved per call (memory-traffic floor)")
    ax.set_ylabel("time per call (s)")
    ax.set_title(f"{scaling['op']} axis={scaling['axis']} {scaling['dtype']}, "
                 "NHWC (1, S, S, C)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
