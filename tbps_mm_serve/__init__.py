"""Serving tbps_mm search over HTTP: the search pages (image folders, video
tracks), their JSON APIs and the uvicorn settings they are served with.

Kept outside the core library (``tbps_mm``): it needs the ``[serve]`` extra
(FastAPI, uvicorn) and only uses public entry points of ``tbps_mm.apis``
(``TBPSInferencer``, ``TrackGallery``). ``tools/serve.py`` runs it.
"""

from .local_server import MAX_HEAD_BYTES, LocalServer, uvicorn_config
from .search_app import create_app
from .track_search_app import create_track_app

__all__ = [
    'LocalServer',
    'MAX_HEAD_BYTES',
    'create_app',
    'create_track_app',
    'uvicorn_config',
]
