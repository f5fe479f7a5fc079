"""The routes of ``facerec serve``, one :class:`fastapi.APIRouter` per page or resource, in the
order :func:`facerec.serve.app.create_app` includes them. Every route gets the server's shared
objects as ``state: State`` (:mod:`facerec.serve.state`); a :class:`~facerec.errors.FacerecError`
it raises is answered with its class's HTTP status (:data:`facerec.errors.ERROR_STATUS`).

- :mod:`.pages`: ``/`` (redirects to ``/people``), ``/people``, ``/train``, ``/recognise``,
  ``/favicon.ico`` (the static files under ``/static`` are mounted by ``create_app``);
- :mod:`.files`: ``/files/{path}`` (images inside WORK_DIR), ``/photos/{path}`` (the source
  photos, only with ``--photos``);
- :mod:`.health`: ``GET /api/health``;
- :mod:`.people`: ``GET /api/people``, ``GET /api/crops``, ``GET /api/crops/info``,
  ``POST /api/people/{name}/rename``, ``POST /api/moves``, ``POST /api/undo``;
- :mod:`.predict`: ``POST /api/predict``;
- :mod:`.train`: ``POST /api/train``, ``GET /api/train/{job_id}``, ``GET /api/train``.
"""
