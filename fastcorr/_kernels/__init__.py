"""The kernels of each backend, on one contract (docs/design.md, "Kernel contract").

`load("cpu")` and `load("cuda")` give namespaces with the same launchers, taking the same
arguments in the same order (the CUDA ones also take `stream=`): operands as (P, R, Q) arrays
of one float dtype, outputs allocated by the caller, None for an output that is not wanted,
and every loss added into `total[0]` (a float64 array), so that nothing waits for a device.
The modules are imported on first use: `import fastcorr` compiles and loads nothing.
"""

import importlib

_MODULES = {"cpu": ("cpu", "volume_cpu"), "cuda": ("cuda", "volume_cuda")}
_LOADED: "dict[str, Kernels]" = {}


class Kernels:
    """The launchers of one backend: the six functions' kernels, then the cost volume's
    (`volume_*`), whose module is imported only when one is asked for."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, name):
        core, volume = _MODULES[self.backend]
        module = importlib.import_module(f"{__name__}.{volume if name.startswith('volume_') else core}")
        fn = getattr(module, name)
        setattr(self, name, fn)
        return fn


def load(backend, func="fastcorr"):
    """The launchers of `backend` ("cpu" or "cuda"); for CUDA, a RuntimeError naming `func`
    that says why where it cannot run."""
    kernels = _LOADED.get(backend)
    if kernels is None:
        if backend == "cuda":
            why = None
            try:
                from . import cuda
            except ImportError as exc:
                why = (f"numba.cuda cannot be imported ({exc}); install the 'cuda' extra "
                       "(numba-cuda)")
            else:
                why = cuda.reason_unusable()
            if why:
                raise RuntimeError(f"{func}: backend='cuda' is not usable: {why}")
        kernels = _LOADED[backend] = Kernels(backend)
    return kernels
