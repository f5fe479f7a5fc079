"""``/docs``: the OpenAPI page (Swagger UI), from pinned local files.

FastAPI's own page loads Swagger UI from a CDN: a third-party script next to the token cookie,
and a blank page offline. Here the two files it needs come from the ``swagger-ui-bundle-v2``
package (pinned in the ``serve`` extra; its folder found with ``importlib.util.find_spec``, the
package is never imported) and are served under ``/docs/assets/``; the page's start-up code is a
static file (``/static/docs.js``), not an inline script, so the CSP's ``script-src 'self'`` holds.
"""

from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from facerec.errors import MissingExtraError, NotFoundError

#: the package that ships Swagger UI's files, and the Swagger UI version of its pinned release
SWAGGER_PACKAGE = "swagger_ui_bundle"
SWAGGER_UI = "5.31.0"
#: the files the page loads, and their types
ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
          "swagger-ui.css": "text/css; charset=utf-8"}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>facerec API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body>
</html>
"""

router = APIRouter()


@lru_cache(maxsize=1)
def swagger_folder() -> Path | None:
    """The folder of Swagger UI's files in the installed ``swagger-ui-bundle-v2`` (the pinned
    version's, else any 5.x: OpenAPI 3.1 needs 5), or None when it is not installed."""
    spec = find_spec(SWAGGER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        vendor = Path(location) / "vendor"
        for folder in [vendor / f"swagger-ui-{SWAGGER_UI}", *sorted(vendor.glob("swagger-ui-5.*"))]:
            if all((folder / name).is_file() for name in ASSETS):
                return folder
    return None


def _need_swagger() -> Path:
    folder = swagger_folder()
    if folder is None:
        raise MissingExtraError("the API docs page needs swagger-ui-bundle-v2 (pip install "
                                "'facerec[serve]'); the API itself works without it")
    return folder


@router.get("/docs", include_in_schema=False)
def docs_page():
    _need_swagger()
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})


@router.get("/docs/assets/{name}", include_in_schema=False)
def docs_asset(name: str):
    if name not in ASSETS:
        raise NotFoundError("not found")
    return FileResponse(_need_swagger() / name, media_type=ASSETS[name],
                        headers={"Cache-Control": "max-age=86400"})
