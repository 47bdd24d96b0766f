"""The one way the local servers (``hub.LocalHub``, ``openai_server.ScriptedServer``) listen: a
threaded stdlib HTTP server on a free loopback port, served from a daemon thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve_in_thread(handler: type[BaseHTTPRequestHandler], name: str, port: int = 0) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Start ``handler`` on ``127.0.0.1`` (``port``, or a free one for 0) in a daemon thread; returns
    the server and its thread (``server.shutdown()`` then ``server.server_close()`` stop it).

    Raises:
        OSError: ``port`` is taken.
    """
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    return server, thread
