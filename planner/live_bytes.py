"""Live storage bytes of every tensor torch creates, as a dispatch mode: the counter the
fake-tensor trace (planner/fake_trace.py) measures a training step with.

Works on fake and real tensors alike. Importing this module costs nothing: torch is
imported inside the functions that need it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["LiveBytesCounter"]


class LiveBytesCounter:
    """Bookkeeping of live storage bytes; `active()` installs it as a dispatch mode.

    Every output tensor of every aten op is looked at: a storage not seen before is added
    (``nbytes``) and a finalizer on its Python object subtracts it when it dies (torch keeps
    a storage's Python object alive as long as the storage itself). A storage that grew
    (``resize_``, ``out=`` ops) is re-measured.
    """

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self.phase = "setup"
        self.phase_peak: dict[str, int] = {}
        self._phase_max = 0
        self._sizes: dict[int, int] = {}

    # -- phases -----------------------------------------------------------------------
    def set_phase(self, name: str) -> None:
        """Start a phase; its peak starts at the bytes live now."""
        self._close_phase()
        self.phase = name
        self._phase_max = self.live

    def _close_phase(self) -> None:
        self.phase_peak[self.phase] = max(self.phase_peak.get(self.phase, 0), self._phase_max)

    def finish(self) -> None:
        """Record the peak of the phase in progress."""
        self._close_phase()

    # -- storages ---------------------------------------------------------------------
    def track(self, tensor: torch.Tensor) -> None:
        """Count ``tensor``'s storage if it is new (or grew); meta tensors hold no bytes."""
        if tensor.is_meta:  # a real meta tensor (a fake one reports its fake device)
            return
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse, nested: no plain storage
            return
        key = storage._cdata
        nbytes = storage.nbytes()
        previous = self._sizes.get(key)
        if previous is None:
            self._sizes[key] = nbytes
            weakref.finalize(storage, self._release, key).atexit = False
            self.live += nbytes
        elif previous != nbytes:
            self._sizes[key] = nbytes
            self.live += nbytes - previous
        else:
            return
        if self.live > self._phase_max:
            self._phase_max = self.live
            if self.live > self.peak:
                self.peak = self.live

    def track_outputs(self, out: object) -> None:
        """Count the storages of every tensor in an op's output (tensor, tuple or list)."""
        import torch

        if isinstance(out, torch.Tensor):
            self.track(out)
        elif isinstance(out, (tuple, list)):
            for item in out:
                self.track_outputs(item)

    def _release(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def storage_bytes(self, tensors: Iterator[torch.Tensor] | Sequence[torch.Tensor]) -> int:
        """Bytes of the distinct storages behind ``tensors``."""
        seen: dict[int, int] = {}
        for t in tensors:
            storage = t.untyped_storage()
            seen[storage._cdata] = storage.nbytes()
        return sum(seen.values())

    @contextmanager
    def active(self) -> Iterator[LiveBytesCounter]:
        """Count the outputs of every op dispatched inside the block."""
        with _make_mode(self):
            yield self


def _make_mode(counter: LiveBytesCounter) -> Any:
    from torch.utils._python_dispatch import TorchDispatchMode

    class _CountingMode(TorchDispatchMode):  # type: ignore[no-untyped-call]
        def __torch_dispatch__(
            self,
            func: Any,
            types: Any,
            args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            out = func(*args, **(kwargs or {}))
            counter.track_outputs(out)
            return out

    return _CountingMode()  # type: ignore[no-untyped-call]
