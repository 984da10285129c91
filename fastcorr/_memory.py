"""Fresh outputs without fresh pages (docs/design.md, "Fresh outputs").

A large new NumPy array is fresh memory from the operating system, which hands over and zeroes
every page on first touch: for a fused loss that writes its gradients once, that costs as much
as the kernel. So fastcorr keeps the buffers of the large arrays it returned once the caller
has dropped them (every view of them included), and hands them out again for the next call's
outputs of the same size, as CuPy's and PyTorch's memory pools do. A returned array is never
written again by fastcorr: its buffer comes back only when nothing refers to it any more.
"""

import math
import os
import threading

import numpy as np

MIN_BYTES = 1 << 20  # smaller arrays come from the allocator, whose free lists reuse them


class _Lease:
    """The buffer of one returned array: NumPy views it (`__array_interface__`), and when the
    last view is gone the buffer goes back to the pool."""

    __slots__ = ("__array_interface__", "buf", "pool")

    def __init__(self, buf, shape, dtype, pool):
        self.buf, self.pool = buf, pool
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "version": 3,
                                    "data": (buf.ctypes.data, False)}

    def __del__(self):
        self.pool.give_back(self.buf)


class OutputPool:
    """The buffers of fastcorr's large outputs, kept for reuse once the caller drops them.

    limit: the bytes it may keep (default 1 GiB; the longest unused go first); 0 keeps
    nothing, so that every output is fresh memory. held: the bytes it keeps now. free():
    releases them all to the operating system."""

    def __init__(self, limit=1 << 30):
        self.limit = limit
        self._kept = {}  # id -> buffer, longest unused first
        self._by_size = {}  # nbytes -> ids, most recently returned last
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self):
        return self._held

    def free(self):
        """Release every kept buffer; returns the bytes released."""
        with self._lock:
            released = self._held
            self._kept.clear()
            self._by_size.clear()
            self._held = 0
        return released

    def empty(self, shape, dtype):
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
            buf = np.empty(nbytes, np.uint8)
        return np.asarray(_Lease(buf, tuple(shape), dtype, self))

    def give_back(self, buf):
        with self._lock:
            if buf.nbytes > self.limit:
                return
            self._kept[id(buf)] = buf
            self._by_size.setdefault(buf.nbytes, []).append(id(buf))
            self._held += buf.nbytes
            while self._held > self.limit:  # the longest unused go
                old = next(iter(self._kept))
                gone = self._kept.pop(old)
                self._by_size[gone.nbytes].remove(old)
                self._held -= gone.nbytes

    def _after_fork_in_child(self):
        self._lock = threading.Lock()  # another thread may have held it at the fork


output_pool = OutputPool()
os.register_at_fork(after_in_child=output_pool._after_fork_in_child)
