"""The CUDA kernels' launches, recorded under the simulator and compiled for real GPUs.

    python tests/cuda_launches.py record FILE   (with NUMBA_ENABLE_CUDASIM=1)
    python tests/cuda_launches.py compile FILE  (without it)

`record` runs the public functions with backend="cuda" over a spread of dtypes, axes,
reductions, broadcasting and cost-volume geometries, and pickles the argument types of every
kernel launch. `compile` compiles each recorded signature to PTX with numba.cuda's own
compiler (NVRTC and NVVM from the nvidia-cuda-nvrtc and nvidia-cuda-nvcc wheels; no GPU or
driver is needed), for the compute capabilities of the GPUs the project targets. It prints a
line per failure, exits 1 if any failed and 3 if the compiler is not installed.
tests/test_cuda_compile.py runs both.
"""

import importlib
import pickle
import sys
import types

import numpy as np

CCS = ((8, 0), (9, 0))  # A100, H100/H200
MODULES = ("fastcorr._kernels.cuda", "fastcorr._kernels.volume_cuda")


def _record(path):
    from numba import typeof
    from numba import types as nt
    from numba.cuda.simulator import kernel as sim

    import fastcorr

    seen = {}
    launch = sim.FakeCUDAKernel.__call__

    def arg_type(x):
        if type(x).__name__ == "FakeCUDAArray":  # a device array: any strides
            return nt.Array(typeof(np.empty(0, x.dtype)).dtype, x.ndim, "A")
        return typeof(x)

    def recording(self, *args):
        if self.fn.__module__ in MODULES and not self._device:
            seen[(self.fn.__module__, self.fn.__name__, tuple(map(arg_type, args)))] = None
        return launch(self, *args)

    sim.FakeCUDAKernel.__call__ = recording
    rng = np.random.default_rng(0)
    for dt in (np.float16, np.float32, np.float64, np.int32):
        for shape, axis in (((2, 3, 4, 5), -1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), (1, 2)),
                            ((3, 4), None)):
            a = (rng.standard_normal(shape) * 3).astype(dt)
            b = (rng.standard_normal(shape) * 3).astype(dt)
            c = fastcorr.correlation(a, b, axis, backend="cuda")
            fastcorr.correlation_vjp(a, b, np.ones_like(c), axis, backend="cuda")
            fastcorr.correlation_vjp(a, b[:1], np.ones((), dt), axis, backend="cuda")
            for red in ("sum", "mean", "none"):
                for f in (fastcorr.corr_loss, fastcorr.product_loss,
                          fastcorr.corr_loss_and_grad, fastcorr.product_loss_and_grad):
                    f(a, b, axis, reduction=red, backend="cuda")
                fastcorr.corr_loss_and_grad(a, b[:1], axis, reduction=red, backend="cuda")
        a = rng.standard_normal((1, 6, 7, 3)).astype(dt)
        b = rng.standard_normal((1, 6, 7, 3)).astype(dt)
        for k in (1, 3):
            for direction in ("2d", "x"):
                kw = dict(max_displacement=2, kernel_size=k, stride1=2, direction=direction,
                          backend="cuda")
                v = fastcorr.correlation_volume(a, b, **kw)
                fastcorr.correlation_volume_vjp(a, b, np.ones_like(v), **kw)
                for red in ("sum", "none"):
                    fastcorr.correlation_volume_loss(a, b, reduction=red, **kw)
                    fastcorr.correlation_volume_loss_and_grad(a, b, reduction=red, **kw)
    with open(path, "wb") as f:
        pickle.dump(list(seen), f)
    print(f"{len(seen)} launch signatures of {len({k[:2] for k in seen})} kernels")


def _compile(path):
    from numba import cuda
    from numba.cuda import dispatcher

    with open(path, "rb") as f:
        launches = pickle.load(f)
    kernels = {(m, name) for m in MODULES for name, k in vars(importlib.import_module(m)).items()
               if isinstance(k, dispatcher.CUDADispatcher) and not k.targetoptions.get("device")}
    failed = 0
    for m, name in sorted(kernels - {k[:2] for k in launches}):
        print(f"NOT LAUNCHED {m}.{name}: add a case that runs it")
        failed += 1
    for cc in CCS:
        # a device function compiles for the current device's capability when first called;
        # with no driver there is none, so say it is the one compiled for
        dispatcher.get_current_device = lambda cc=cc: types.SimpleNamespace(
            compute_capability=cc)
        for m, name, args in launches:
            try:
                cuda.compile_ptx(getattr(importlib.import_module(m), name).py_func, args, cc=cc)
            except Exception as exc:
                if "libnvrtc" in str(exc) or "libnvvm" in str(exc):
                    print(f"NO COMPILER: {exc}")
                    sys.exit(3)
                failed += 1
                print(f"FAILED sm_{cc[0]}{cc[1]} {m}.{name}{args}: {type(exc).__name__}: {exc}")
    print(f"{len(launches)} launch signatures of {len(kernels)} kernels, compiled for "
          f"{', '.join(f'sm_{a}{b}' for a, b in CCS)}: {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    {"record": _record, "compile": _compile}[sys.argv[1]](sys.argv[2])
