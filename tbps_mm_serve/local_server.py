"""``uvicorn_config`` and ``LocalServer``: how the search page is served.

:func:`uvicorn_config` holds the server settings every way of serving the
page shares (``tools/serve.py``, the tests, ``benchmarks/page_load.py``): the
h11 protocol with a bounded request head (:data:`MAX_HEAD_BYTES`; larger
heads are refused by the parser before the application sees them).
:class:`LocalServer` runs an application on uvicorn in a background thread
on a free loopback port, for tests and benchmarks that need a real server.

Example:
    >>> with LocalServer(create_app(inferencer)) as url:  # doctest: +SKIP
    ...     urllib.request.urlopen(url + '/api/search?q=a+red+coat')
"""

import socket
import threading
import time
from typing import Optional

__all__ = ['LocalServer', 'MAX_HEAD_BYTES', 'uvicorn_config']

#: Largest request head (request line and headers) the server reads, in bytes.
MAX_HEAD_BYTES = 16 * 1024


def uvicorn_config(app, host: str = '127.0.0.1', port: int = 8000, **kwargs):
    """The uvicorn settings the search page is served with.

    Args:
        app: The ASGI application (``create_app``'s result).
        host (str): Address to listen on. Defaults to localhost.
        port (int): Port. Defaults to 8000.
        **kwargs: Other ``uvicorn.Config`` arguments.

    Returns:
        uvicorn.Config: h11 (whose head limit applies; httptools has none
        configurable), :data:`MAX_HEAD_BYTES`, warnings-only logging.

    Example:
        >>> uvicorn.Server(uvicorn_config(app)).run()  # doctest: +SKIP
    """
    import uvicorn

    kwargs.setdefault('log_level', 'warning')
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http='h11',
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        **kwargs,
    )


class LocalServer:
    """An application on uvicorn in a thread, on a free 127.0.0.1 port.

    Args:
        app: The ASGI application.
        start_timeout_s (float): Most seconds to wait for the server to
            listen. Defaults to 60.

    Example:
        >>> with LocalServer(app) as url:  # doctest: +SKIP
        ...     print(url)
        http://127.0.0.1:40123
    """

    def __init__(self, app, start_timeout_s: float = 60.0) -> None:
        self.app = app
        self.start_timeout_s = start_timeout_s
        self.url: Optional[str] = None
        self._server = None
        self._thread: Optional[threading.Thread] = None
        self._sock: Optional[socket.socket] = None

    def __enter__(self) -> str:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(('127.0.0.1', 0))
        port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn_config(self.app, port=port))
        self._thread = threading.Thread(
            target=self._server.run, kwargs=dict(sockets=[self._sock]), daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError('the local server did not start')
            time.sleep(0.02)
        self.url = f'http://127.0.0.1:{port}'
        return self.url

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self.start_timeout_s)
        if self._sock is not None:
            self._sock.close()
