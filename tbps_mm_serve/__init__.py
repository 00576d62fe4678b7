"""Serving tbps_mm search over HTTP: the search page and its JSON API.

Kept outside the core library (``tbps_mm``): it needs the ``[serve]`` extra
(FastAPI, uvicorn) and only uses ``tbps_mm.apis.TBPSInferencer``'s public
entry points. ``tools/serve.py`` runs it.
"""

from .search_app import create_app

__all__ = ['create_app']
