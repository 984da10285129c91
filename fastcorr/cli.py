"""The `fastcorr` command: `fastcorr bench` and `fastcorr bench-volume` (fastcorr against
NumPy and its peers, side by side), `fastcorr info` (what this installation has and can use),
`fastcorr compile` (the CPU kernels into Numba's cache, ahead of time) and `fastcorr stereo`."""

# The benchmarks' options are parsed and resolved into settings here; the workloads are
# defined in _bench and _bench_volume, timed by _bench_run.run, and shown by _bench_render.

import argparse
import math
import os
import platform
import sys
import time

import numpy as np

from . import __version__


class Parser(argparse.ArgumentParser):
    """A mistake on the command line is one line and exit status 2, never a usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


# What a command raises on a user's mistake (a missing file, a bad value, a dependency that is
# not installed, CUDA asked for where it cannot run): said in one line, exit status 1.
MISTAKES = (OSError, ValueError, TypeError, RuntimeError, ImportError)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and not argv[0].startswith("-") else ""
    try:
        return _main(argv)
    except MISTAKES as exc:
        print(f"fastcorr {command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fastcorr {command}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it


def _main(argv):
    parser = Parser(prog="fastcorr", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fastcorr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _bench_parser(sub.add_parser(
        "bench", help="time fastcorr against NumPy and the installed peers",
        description="Time each operation with fastcorr, the NumPy reference and every peer "
                    "installed (PyTorch eager, torch.compile, jax.jit, CuPy on the GPU), on "
                    "data already where it computes. Each peer's result is checked against "
                    "fastcorr's first; the time to the first result (compilation included) "
                    "is shown apart."))
    _volume_parser(sub.add_parser(
        "bench-volume", help="time the cost volume against PyTorch and the installed peers",
        description="Time correlation_volume (forward, forward+backward, and the fused "
                    "0.5*||volume||**2 loss) against the NumPy reference, PyTorch's autograd "
                    "of the plain formulation (eager and torch.compile) and "
                    "spatial-correlation-sampler where installed, on the CPU. The default "
                    "layer is FlowNetC's correlation."))
    sub.add_parser("info", help="versions, threading, cache, and whether CUDA is usable")
    compile_ = sub.add_parser(
        "compile", help="compile the CPU kernels ahead of time into Numba's cache",
        description="Compile (or load) the CPU kernels every operation uses for these dtypes, "
                    "into Numba's on-disk cache (next to the package, or NUMBA_CACHE_DIR): "
                    "run it once when building a Docker image or a cluster's environment, "
                    "and later processes start without compiling.")
    compile_.add_argument("--dtype", nargs="+", default=["float32", "float64"],
                          choices=["float16", "float32", "float64"],
                          help="input dtypes (default: float32 float64; float16 computes in "
                               "float32, integers in float64)")
    compile_.add_argument("--no-volume", action="store_true",
                          help="leave out the cost volume's kernels")
    sub.add_parser("stereo", add_help=False,
                   help="disparity of a stereo pair with the cost volume (fastcorr stereo -h)")
    if argv[:1] == ["stereo"]:  # its own options: fastcorr.stereo is also a runnable example
        from . import stereo

        return stereo.main(argv[1:], Parser)
    args = parser.parse_args(argv)
    if args.command == "info":
        print(_format_info(info()))
        return 0
    if args.command == "compile":
        from ._precompile import precompile

        started = time.perf_counter()
        n = precompile(args.dtype, volume=not args.no_volume)
        print(f"{n} kernel specialisations compiled or loaded in "
              f"{time.perf_counter() - started:.1f} s; cache: {info()['kernel cache']}")
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
    from . import get_num_threads

    d["threads"] = f"{get_num_threads()} (fastcorr's pool; NUMBA_NUM_THREADS caps it)"
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
    return {"usable": True, "gpu": _gpu_name(), "numba-cuda": _version("numba-cuda"),
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


# --------------------------------------------------------------------------- parsing


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


def _threads(text):
    from ._kernels.threads import max_threads

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of threads is an integer, not {text!r}")
    if not 1 <= n <= max_threads():
        raise argparse.ArgumentTypeError(f"the number of threads must be between 1 and "
                                         f"{max_threads()} (NUMBA_NUM_THREADS); got {n}")
    return n


def _count(text, least=1):
    try:
        n = int(text)
    except ValueError:
        n = least - 1
    if n < least:
        raise argparse.ArgumentTypeError(f"expected an integer of at least {least}, not "
                                         f"{text!r}")
    return n


def _output(text):
    """A file written at the end of a run, checked before it: not a folder, in one."""
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text) or not os.path.isdir(folder):
        why = "it is a folder" if os.path.isdir(text) else f"no folder {folder}"
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {why}")
    return text


def _common_options(p, repeats):
    p.add_argument("--threads", type=_threads, help="CPU threads for fastcorr and torch")
    p.add_argument("--repeats", type=_count, help=f"timed calls per row (default {repeats})")
    p.add_argument("--json", metavar="PATH", type=_output,
                   help="write the results, with the machine, here")


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
    _common_options(p, "7, --quick 5")
    p.add_argument("--quick", action="store_true", help="a small run: under a minute on 2 cores")
    p.add_argument("--load", type=lambda t: _count(t, 0), default=0, metavar="N",
                   help="time beside N busy processes (a loaded machine: N = the number of "
                   "cores), and add fastcorr on 1 thread, the yardstick of a loaded machine")
    p.add_argument("--plot", metavar="PATH", type=_output,
                   help="write a PNG of time against problem size "
                   "(corr_loss_and_grad if it runs, else the first op; the first axis), with "
                   "the bandwidth ceiling")
    p.add_argument("--no-out", dest="with_out", action="store_false",
                   help="leave out the fastcorr out= rows")


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
    _common_options(p, 5)
    p.add_argument("--quick", action="store_true",
                   help="a small layer, without torch.compile (minutes of compilation) unless "
                        "--peers names it: under a minute")


def _bench_settings(args):
    from . import _bench

    quick = args.quick
    s = {
        "shape": args.shape or (_bench.QUICK_SHAPE if quick else _bench.SHAPE),
        "dtype": args.dtype,
        "axes": args.axis or ([-1] if quick else [-1, 1]),
        "ops": args.ops or list(_bench.OPS),
        "repeats": args.repeats or (5 if quick else 7),
        "threads": args.threads,
        "backends": args.backends or (["cpu"] + (["cuda"] if _cuda_status()["usable"] else [])),
    }
    if args.peers is not None:
        s["peers"] = args.peers
    else:
        s["peers"] = (["numpy", "torch", "jax.jit"] if quick
                      else list(_bench.PEERS) + list(_bench.ADAPTERS))
    serial = [_bench.SERIAL] if args.load else []
    s["impls"] = (["fastcorr out="] if args.with_out else []) + ["fastcorr"] + serial + \
        s["peers"]
    s["load"] = args.load
    return s


def _volume_settings(args):
    from . import _bench_volume as bv

    params = dict(bv.QUICK_PARAMS if args.quick else bv.PARAMS)
    for name in ("max_displacement", "stride2", "pad", "kernel_size", "stride1", "direction"):
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    if args.max_displacement is not None and args.pad is None:
        params.pop("pad", None)  # the default: the border
    # --quick leaves out torch.compile: its graphs take minutes to compile (name it in --peers
    # to keep it)
    left_out = ("numpy", "torch.compile") if args.quick else ("numpy",)
    peers = [n for n in bv.PEERS if n not in left_out] if args.peers is None else args.peers
    return {"shape": args.shape or (bv.QUICK_SHAPE if args.quick else bv.SHAPE),
            "params": params, "backend": args.backend, "ops": args.ops,
            "impls": ["fastcorr"] + peers, "repeats": args.repeats or 5,
            "threads": args.threads}


# --------------------------------------------------------------------------- the benchmarks


def bench(args):
    from . import _bench
    from ._bench_render import bench_table, plot
    from ._bench_run import run, set_threads

    s = _bench_settings(args)
    if s["threads"]:
        set_threads(s["threads"])
    problems = [_bench.Problem(op, s["shape"], s["dtype"], axis, backend)
                for backend in s["backends"] for op in s["ops"] for axis in s["axes"]]
    bandwidths = {}

    def measure(p):  # before each problem: this machine's bandwidth moves
        bw = _bench.bandwidth(p.backend, math.prod(p.shape), p.dtype)
        bandwidths.setdefault(p.backend, []).append(bw)
        return {"bandwidth_bytes_per_s": bw}

    started = time.perf_counter()
    with _bench.Load(s["load"]):
        rows, skipped = run(problems, _bench.IMPLS, s["impls"], s["repeats"], before=measure)
    _bench.add_rates(rows)
    scaling = None
    if args.plot and problems:
        # the headline operation where it was run, else the first
        p = next((p for p in problems if p.op == "corr_loss_and_grad"), problems[0])
        scaling = _bench.scaling(p.op, p.axis, s["shape"], s["dtype"], s["backends"],
                                 ["fastcorr"] + s["peers"], s["repeats"])
    elapsed = time.perf_counter() - started
    print(bench_table(rows, skipped, s, bandwidths, _where(gpu=False), elapsed))
    _write_json(args, "bench", rows, skipped, elapsed, settings=s,
                bandwidth_bytes_per_s=bandwidths, scaling=scaling)
    if scaling:
        plot(scaling, args.plot)
    return 0


def bench_volume(args):
    from . import _bench_volume as bv
    from ._bench_render import volume_table
    from ._bench_run import run, set_threads

    s = _volume_settings(args)
    if s["threads"]:
        set_threads(s["threads"])
    started = time.perf_counter()
    problems = [bv.Problem(op, s["shape"], s["params"], backend=s["backend"])
                for op in s["ops"]]
    rows, skipped = run(problems, bv.IMPLS, s["impls"], s["repeats"], budget=60.0)
    bv.add_ratios(rows)
    # fastcorr's host memory; on the GPU the arrays are not NumPy's
    memory = bv.memory(s["shape"], s["params"]) if s["backend"] == "cpu" else None
    elapsed = time.perf_counter() - started
    print(volume_table(rows, skipped, s, memory, _where(s["backend"] == "cuda"), elapsed))
    _write_json(args, "bench-volume", rows, skipped, elapsed, shape=list(s["shape"]),
                params=s["params"], memory_bytes=memory)
    return 0


def _write_json(args, command, rows, skipped, elapsed, **fields):
    from ._bench_render import write_json

    if args.json:
        write_json(args.json, {f"fastcorr {command}": __version__, "info": info(), **fields,
                               "results": rows, "skipped": skipped, "seconds": elapsed})


def _where(gpu):
    """The machine a table's times come from."""
    if gpu:
        return _gpu_name()
    m = _machine()
    return f"{m['cpu']}, {m['cores']} cores"


def _gpu_name():
    from numba import cuda

    name = getattr(cuda.get_current_device(), "name", "the CUDA simulator")
    return name.decode() if isinstance(name, bytes) else str(name)


if __name__ == "__main__":
    sys.exit(main())
