"""The three pages (plain HTML in ``serve/static``, no build step) and the redirect to the first."""

from pathlib import Path
from string import Template

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

STATIC = Path(__file__).resolve().parents[1] / "static"
PAGES = ("people", "train", "recognise")

router = APIRouter()


def render_page(name: str) -> str:
    """Page NAME: its body (static/NAME.html) in the shell every page shares (static/page.html:
    head, scripts, navigation)."""
    here = {other: ' class="here"' if other == name else "" for other in PAGES}
    nav = "".join(f'<a{here[other]} href="/{other}">{other.capitalize()}</a>' for other in PAGES)
    shell = Template((STATIC / "page.html").read_text(encoding="utf-8"))
    return shell.substitute(name=name, nav=nav, body=(STATIC / f"{name}.html").read_text(encoding="utf-8"))


@router.get("/", include_in_schema=False)
def index():
    return RedirectResponse("/people", status_code=303)


def _page_handler(name: str):
    html = render_page(name)  # once, when the router is made

    def handler():
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})
    return handler


for _name in PAGES:
    router.add_api_route(f"/{_name}", _page_handler(_name), methods=["GET"], include_in_schema=False)


@router.get("/favicon.ico", include_in_schema=False)
def favicon():
    return Response(status_code=204)  # no icon; spares the browser console a 404
