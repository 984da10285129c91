"""The public API as users call it, for mypy (pyproject.toml, [tool.mypy]): the annotations
checked from the users' side. Not a test module: mypy reads it, pytest does not collect it."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

import fastcorr
import fastcorr.jax
import fastcorr.torch

a: NDArray[np.float32] = np.ones((1, 4, 4, 8), np.float32)
b = np.ones((1, 4, 4, 8), np.float32)

corr: NDArray[np.floating] = fastcorr.correlation(a, b, axis=1, keepdims=True)
ga, gb = fastcorr.correlation_vjp(a, b, np.ones_like(corr), axis=1)
loss: np.floating = fastcorr.corr_loss(a, b, axis=(1, 2), reduction="mean")
per: NDArray[np.floating] = fastcorr.product_loss(a, b, reduction="none")
loss, ga, gb = fastcorr.corr_loss_and_grad(a, b, out=(ga, gb), backend="cpu")
total: float = float(fastcorr.product_loss_and_grad(a, b, axis=None)[0])

vol: NDArray[np.floating] = fastcorr.correlation_volume(
    a, b, max_displacement=(-2, 0), kernel_size=3, direction="x", normalize=False)
ga, gb = fastcorr.correlation_volume_vjp(a, b, vol, max_displacement=(-2, 0), kernel_size=3,
                                         direction="x", normalize=False)
loss = fastcorr.correlation_volume_loss(a, b, max_displacement=1)
loss, ga, gb = fastcorr.correlation_volume_loss_and_grad(a, b, max_displacement=1, stride2=1)
lazy = fastcorr.correlation([[1.0, 2.0]], 3.0)  # array-likes give Any

fastcorr.set_num_threads(fastcorr.get_num_threads())
with fastcorr.num_threads(1):
    pass
held: int = fastcorr.output_pool.held

t: torch.Tensor = fastcorr.torch.corr_loss(torch.ones(2, 3), torch.ones(2, 3), reduction="sum")
j = fastcorr.jax.product_loss(np.ones(3), np.ones(3), axis=0)
