"""The live editing page (`stylerelight serve`): a FastAPI app serving one static page that drives
the Editor over HTTP (uploads) and a WebSocket (slider moves, newest request wins)."""

from .app import MAX_UPLOAD_BYTES, create_app

__all__ = ["MAX_UPLOAD_BYTES", "create_app"]
