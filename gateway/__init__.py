"""Portico's gateway: an OpenAI-compatible HTTP service in front of vLLM engines.

Build it with :func:`gateway.app.create_app`; run it with
``uvicorn --factory gateway.app:create_app``. Importing any module here starts
nothing and reads no environment.
"""

__version__ = "0.1.0"
