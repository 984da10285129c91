"""Fresh outputs without fresh pages (docs/design.md, "Fresh outputs").

A large new NumPy array is fresh memory from the operating system, which hands over and zeroes
every page on first touch: for a fused loss that writes its gradients once, that costs as much
as the kernel. So fastcorr keeps the buffers of the large arrays it returned once the caller
has dropped them (every view of them included), and hands them out again for the next call's
outputs of the same size, as CuPy's and PyTorch's memory pools do. A returned array is never
written again by fastcorr: its buffer comes back only when nothing refers to it any more.
"""

from __future__ import annotations

import ctypes
import functools
import math
import mmap
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import DTypeLike, NDArray

MIN_BYTES = 1 << 20  # smaller arrays come from the allocator, whose free lists reuse them
# Kept buffers start on a 64-byte boundary (malloc gives 16): a cache line, and what
# TensorFlow (Eigen) asks of an array to take it as a tensor without copying it.
ALIGN = 64


class _Lease:
    """The buffer of one returned array: NumPy views it (`__array_interface__`), and when the
    last view is gone the buffer goes back to the pool."""

    __slots__ = ("__array_interface__", "buf", "pool")

    def __init__(self, buf: NDArray[np.uint8], shape: tuple[int, ...], dtype: np.dtype[Any],
                 pool: OutputPool) -> None:
        self.buf, self.pool = buf, pool
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "version": 3,
                                    "data": (buf.ctypes.data, False)}

    def __del__(self) -> None:
        self.pool.give_back(self.buf)


class OutputPool:
    """The buffers of fastcorr's large outputs, kept for reuse once the caller drops them.

    ``fastcorr.output_pool`` is the one instance. A large new NumPy array is fresh memory
    whose pages the operating system zeroes on first touch, which costs as much as a fused
    loss's kernel; so fastcorr keeps the buffers of the host arrays it returned (1 MiB and
    more) once every view of them is dropped, and hands them out again for the next call's
    outputs of the same size, as CuPy's and PyTorch's pools do. A returned array is never
    written again by fastcorr.

    Parameters
    ----------
    limit : int, optional
        The bytes it may keep (default 1 GiB).

    Attributes
    ----------
    limit : int
        The bytes it may keep; the longest unused buffers go first. 0 keeps nothing, so that
        every output is fresh memory.
    held : int
        The bytes it keeps now (read-only).

    Examples
    --------
    >>> import fastcorr
    >>> pool = fastcorr.output_pool
    >>> saved = pool.limit
    >>> pool.limit = 0  # off: every output is fresh memory
    >>> pool.free() >= 0  # releases what it kept, and says how many bytes
    True
    >>> pool.held
    0
    >>> pool.limit = saved
    """

    def __init__(self, limit: int = 1 << 30) -> None:
        self._kept: dict[int, NDArray[np.uint8]] = {}  # id -> buffer, longest unused first
        self._by_size: dict[int, list[int]] = {}  # nbytes -> ids, most recently returned last
        self._held = 0
        self._lock = threading.Lock()
        self.limit = limit

    @property
    def held(self) -> int:
        """The bytes kept now."""
        return self._held

    @property
    def limit(self) -> int:
        """The bytes it may keep; lowering it releases the longest unused buffers at once."""
        return self._limit

    @limit.setter
    def limit(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
            raise TypeError(f"output_pool.limit must be an int (bytes), not {limit!r}")
        if limit < 0:
            raise ValueError(f"output_pool.limit must be 0 or more bytes, not {limit}")
        with self._lock:
            self._limit = int(limit)
            self._trim()

    def free(self) -> int:
        """Release every kept buffer to the operating system.

        Returns
        -------
        int
            The bytes released.
        """
        with self._lock:
            released = self._held
            self._kept.clear()
            self._by_size.clear()
            self._held = 0
        return released

    def empty(self, shape: tuple[int, ...], dtype: DTypeLike) -> NDArray[Any]:
        """np.empty(shape, dtype), in a kept buffer of the size where one is free."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < MIN_BYTES or self.limit <= 0:
            return np.empty(shape, dtype)
        buf = None
        with self._lock:
            ids = self._by_size.get(nbytes)
            if ids:
                buf = self._kept.pop(ids.pop())
                self._held -= nbytes
        if buf is None:
            raw = np.empty(nbytes + ALIGN, np.uint8)
            start = -raw.ctypes.data % ALIGN
            buf = raw[start:start + nbytes]
        return np.asarray(_Lease(buf, tuple(shape), dtype, self))

    def give_back(self, buf: NDArray[np.uint8]) -> None:
        with self._lock:
            if buf.nbytes > self.limit:
                return
            self._kept[id(buf)] = buf
            self._by_size.setdefault(buf.nbytes, []).append(id(buf))
            self._held += buf.nbytes
            self._trim()

    def _trim(self) -> None:
        """Release the longest unused buffers until at most limit bytes are kept (the lock
        held)."""
        while self._held > self._limit:
            old = next(iter(self._kept))
            gone = self._kept.pop(old)
            self._by_size[gone.nbytes].remove(old)
            self._held -= gone.nbytes

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork


def advise_huge_pages(x: NDArray[Any]) -> None:
    """Ask Linux to back x's untouched memory with 2 MiB pages (madvise MADV_HUGEPAGE), as
    NumPy does for its own large arrays: a buffer allocated by another library (XLA's
    outputs) is otherwise mapped and zeroed 4 KiB at a time as the kernels first write it,
    which cost more than the kernel itself. Advice only: nothing where it is not supported."""
    if not _LINUX or x.nbytes < 2 * HUGE_PAGE:
        return
    start = x.__array_interface__["data"][0]
    lo, hi = -(-start // PAGE) * PAGE, (start + x.nbytes) // PAGE * PAGE
    _libc().madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_HUGEPAGE)


_LINUX = sys.platform.startswith("linux")
PAGE, HUGE_PAGE, _MADV_HUGEPAGE = mmap.PAGESIZE, 2 << 20, 14


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


output_pool = OutputPool()
os.register_at_fork(after_in_child=output_pool._after_fork_in_child)
