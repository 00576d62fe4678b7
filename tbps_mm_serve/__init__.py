"""Serving tbps_mm search over HTTP: the search page, its JSON API and the
uvicorn settings it is served with.

Kept outside the core library (``tbps_mm``): it needs the ``[serve]`` extra
(FastAPI, uvicorn) and only uses ``tbps_mm.apis.TBPSInferencer``'s public
entry points. ``tools/serve.py`` runs it.
"""

from .local_server import MAX_HEAD_BYTES, LocalServer, uvicorn_config
from .search_app import create_app

__all__ = ['LocalServer', 'MAX_HEAD_BYTES', 'create_app', 'uvicorn_config']
