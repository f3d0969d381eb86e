"""The contract kit's asyncio face through a native async backend: one per sync backend, closed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from persist_core.async_backend import AsyncBackend
from persist_core.backend import Backend
from persist_core.testing import async_face

# The native backend of each sync backend the kit made in the current test (keyed by id, checked by identity).
_natives: dict[int, tuple[Backend, AsyncBackend]] = {}


class NativeAsyncFace:
    """Mix into a kit class (before it): every store clause runs on the asyncio face, through :meth:`native_for`.

    The kit asks for the async backend at each ``store()`` call; one is built per sync backend (on the same
    storage) and opens lazily in the kit's event loop at its first call.
    """

    face = "async"

    @classmethod
    def native_for(cls, backend: Backend) -> AsyncBackend:
        """The native async backend beside ``backend`` (unopened)."""
        raise NotImplementedError

    @classmethod
    def async_backend_for(cls, backend: Backend) -> AsyncBackend:
        entry = _natives.get(id(backend))
        if entry is None or entry[0] is not backend:
            entry = _natives[id(backend)] = (backend, cls.native_for(backend))
        return entry[1]

    @pytest.fixture(autouse=True)
    def _close_natives(self) -> Iterator[None]:
        yield
        natives = list(_natives.values())
        _natives.clear()
        for _, native in natives:
            async_face.run(native.close())
