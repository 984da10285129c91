"""fastcorr: fused Numba kernels for the correlation of two NHWC tensors and its two losses.

See README.md for the contract and docs/design.md for how it is built; `fastcorr.reference`
is the plain-NumPy oracle.
"""

from . import reference
from ._api import (
    corr_loss,
    corr_loss_and_grad,
    correlation,
    correlation_vjp,
    product_loss,
    product_loss_and_grad,
)
from ._kernels.threads import get_num_threads, num_threads, set_num_threads
from ._memory import output_pool
from ._volume import (
    correlation_volume,
    correlation_volume_loss,
    correlation_volume_loss_and_grad,
    correlation_volume_vjp,
)

__version__ = "0.1.0"

__all__ = [
    "correlation",
    "correlation_vjp",
    "corr_loss",
    "corr_loss_and_grad",
    "product_loss",
    "product_loss_and_grad",
    "correlation_volume",
    "correlation_volume_vjp",
    "correlation_volume_loss",
    "correlation_volume_loss_and_grad",
    "set_num_threads",
    "get_num_threads",
    "num_threads",
    "output_pool",
    "reference",
    "__version__",
]
