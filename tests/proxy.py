"""A loopback TCP proxy that can stop forwarding: a server that "freezes" while its clients stay connected.

Used by the deadline tests (issue 10): ``freeze()`` keeps every connection open but forwards nothing in either
direction, which is what a client sees of a SIGSTOPped server or a network path that silently drops packets;
``thaw()`` forwards again. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType

__all__ = ["FreezableProxy"]


class FreezableProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>`` until :meth:`close`."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        if target_host not in ("127.0.0.1", "localhost"):
            raise ValueError("the proxy forwards to loopback only")
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._frozen = threading.Event()
        self._paused = threading.Event()  # set by the loop once it has seen the freeze
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        """Stop forwarding in both directions; connections stay open and new ones are accepted but not served.

        Returns once the forwarding loop has stopped, so that nothing is forwarded after this call.
        """
        self._paused.clear()
        self._frozen.set()
        if not self._paused.wait(timeout=5):
            raise RuntimeError("the proxy did not stop forwarding")

    def thaw(self) -> None:
        """Forward again."""
        self._frozen.clear()

    def drop_connections(self) -> None:
        """Close every proxied connection (both sides), as a server restart would."""
        with self._lock:
            for sock in list(self._peers):
                self._close_pair(sock)

    def _close_pair(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            self._peers.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            s.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._frozen.is_set():
                self._paused.set()
                self._stop.wait(0.01)
                continue
            for key, _ in self._selector.select(timeout=0.05):
                with self._lock:
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._forward(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(False)
            self._selector.register(s, selectors.EVENT_READ, None)
        self._peers[client] = upstream
        self._peers[upstream] = client

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_pair(sock)
            return
        try:
            peer.setblocking(True)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._close_pair(sock)

    def close(self) -> None:
        """Stop the proxy and close every connection."""
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for sock in list(self._peers):
                self._close_pair(sock)
        self._selector.close()
        self._listener.close()

    def __enter__(self) -> FreezableProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
