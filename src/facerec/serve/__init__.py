"""``facerec serve``: label, train and recognise in the browser, and a REST API.

- :mod:`facerec.serve.app`: the FastAPI application (:func:`create_app`: state, security, error
  handler, routers) and :func:`run_server`.
- :mod:`facerec.serve.state`: :class:`ServeConfig`, the shared :class:`~facerec.serve.state.
  ServeState` and the ``State`` dependency every route takes.
- :mod:`facerec.serve.security`: token, Host and Origin checks (one HTTP middleware).
- :mod:`facerec.serve.routes`: one ``APIRouter`` per page or resource (pages, files, health,
  people, predict, train).
- :mod:`facerec.serve.files`: serving files from inside the work folder only.
- :mod:`facerec.serve.people`: listing the folders and crops of ``processed/`` (paged).
- :mod:`facerec.serve.recognise`: the model the server predicts with (loaded once, one at a time).
- :mod:`facerec.serve.training`: :func:`facerec.workflow.train_and_evaluate` jobs in a background
  thread.

Needs the ``serve`` extra (``pip install "facerec[serve]"``: FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

from facerec.serve.app import ServeConfig, create_app, run_server

__all__ = ["ServeConfig", "create_app", "run_server"]
