"""The types of the public signatures, for type checkers.

The public modules import this module only under `typing.TYPE_CHECKING` (their annotations
are strings: `from __future__ import annotations`), so `import fastcorr` does not import it
and no call pays for it.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypeVar, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Axis", "Backend", "CudaArray", "Direction", "FloatArray", "Input",
           "LossFunction", "MaxDisplacement", "Reduction", "SumReduction"]

Backend = Literal["auto", "cpu", "cuda", "reference"]
Reduction = Literal["sum", "mean", "none"]
SumReduction = Literal["sum", "mean"]  # a scalar loss
Direction = Literal["2d", "x"]
Axis = Union[int, tuple[int, ...], None]
MaxDisplacement = Union[int, tuple[int, int], list[int]]

FloatArray = NDArray[np.floating[Any]]
"""What host inputs give: float16, float32 or float64 arrays."""


class CudaArray(Protocol):
    """A CUDA device array of any library: CuPy, PyTorch CUDA tensors, Numba device arrays."""

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]: ...


Input = Union[ArrayLike, CudaArray]
"""An input: anything `numpy.asarray` takes, a CUDA device array, or a Dask array."""


T_co = TypeVar("T_co", covariant=True)


class LossFunction(Protocol[T_co]):
    """A framework adapter's corr_loss or product_loss, returning the framework's array."""

    def __call__(self, a: Any, b: Any, axis: Axis = -1, *, reduction: Reduction = "sum"
                 ) -> T_co: ...
