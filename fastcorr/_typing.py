"""The types of the public signatures, for type checkers.

The public modules import this module only under `typing.TYPE_CHECKING` (their annotations
are strings: `from __future__ import annotations`), so `import fastcorr` does not import it
and no call pays for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, TypedDict, TypeVar, Union, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Axis", "Backend", "CudaArray", "Direction", "FloatArray", "Input", "Loss",
           "LossAndGrad", "LossFunction", "MaxDisplacement", "Reduction", "SumReduction",
           "VolumeParams"]

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


class Loss(Protocol):
    """corr_loss and product_loss: one signature, one function (`_api._loss_function`)."""

    @overload
    def __call__(self, a: NDArray[Any], b: NDArray[Any], axis: Axis = -1, *,
                 reduction: SumReduction = "sum", backend: Backend = "auto"
                 ) -> np.floating[Any]: ...
    @overload
    def __call__(self, a: NDArray[Any], b: NDArray[Any], axis: Axis = -1, *,
                 reduction: Literal["none"], backend: Backend = "auto") -> FloatArray: ...
    @overload
    def __call__(self, a: Input, b: Input, axis: Axis = -1, *, reduction: Reduction = "sum",
                 backend: Backend = "auto") -> Any: ...


class LossAndGrad(Protocol):
    """corr_loss_and_grad and product_loss_and_grad: ``(loss, grad_a, grad_b)``."""

    @overload
    def __call__(self, a: NDArray[Any], b: NDArray[Any], axis: Axis = -1, *,
                 reduction: SumReduction = "sum", out: Sequence[FloatArray] | None = None,
                 backend: Backend = "auto") -> tuple[np.floating[Any], FloatArray, FloatArray]:
        ...
    @overload
    def __call__(self, a: NDArray[Any], b: NDArray[Any], axis: Axis = -1, *,
                 reduction: Literal["none"], out: Sequence[FloatArray] | None = None,
                 backend: Backend = "auto") -> tuple[FloatArray, FloatArray, FloatArray]: ...
    @overload
    def __call__(self, a: Input, b: Input, axis: Axis = -1, *, reduction: Reduction = "sum",
                 out: Sequence[Any] | None = None, backend: Backend = "auto"
                 ) -> tuple[Any, Any, Any]: ...


class _Displacement(TypedDict):
    max_displacement: MaxDisplacement


class VolumeParams(_Displacement, total=False):
    """The cost volume's geometry, as the keywords of its four functions' overloads
    (``**params: Unpack[VolumeParams]``); their implementations spell the keywords out, with
    their defaults, for `inspect.signature` and `help`."""

    kernel_size: int
    stride1: int
    stride2: int
    pad: int | None
    direction: Direction
    normalize: bool
