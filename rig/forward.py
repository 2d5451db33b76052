"""A TCP forwarder: the machines reach a server of the control machine that listens on
127.0.0.1 (moto) through the bridge's gateway address, and only there.

``Forwarder(listen, target).start()`` serves in a thread of its own until ``stop()``;
each connection is copied both ways until either side closes it. It counts the HTTP
requests the machines send (``requests``: API calls by their ``Action``, and metadata
reads), so a test can tell how many AWS calls the machines made.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable

BUFFER = 65536
# A request line, and the Action of an EC2 query-API body (form-encoded).
REQUEST_LINE = re.compile(rb"(GET|POST|PUT|HEAD|DELETE) (\S+) HTTP/1\.[01]\r\n")
ACTION = re.compile(rb"(?:^|\r\n\r\n)Action=([A-Za-z0-9]+)")


class Forwarder:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen, self.target = listen, target
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    @property
    def requests(self) -> dict[str, int]:
        """Requests forwarded so far: ``api`` (every API call) and ``api:<Action>``
        by action, ``metadata`` (reads of the instance metadata stand-in)."""
        with self._lock:
            return dict(self._counts)

    def _count(self, data: bytes) -> None:
        """Counts the request lines of a chunk, and the ``Action`` a form body starts
        with (it may come in a chunk of its own, after the headers)."""
        found: list[str] = []
        for match in REQUEST_LINE.finditer(data):
            found.append("metadata" if match.group(2).startswith(b"/latest/") else "api")
        found += [f"api:{m.group(1).decode()}" for m in ACTION.finditer(data)]
        if found:
            with self._lock:
                self._counts.update(found)

    def start(self) -> None:
        server = socket.create_server(self.listen, reuse_port=False)
        server.settimeout(0.5)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="rig-forward", daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._thread is not None:
            self._thread.join(5)

    def _serve(self) -> None:
        while self._server is not None:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        client.settimeout(None)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream, self._count)


def _pipe(source: socket.socket, sink: socket.socket,
          inspect: Callable[[bytes], None] | None = None) -> None:
    try:
        while data := source.recv(BUFFER):
            if inspect is not None:
                inspect(data)
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            source.close()
