"""The playground page at ``/``: type a review, see the label, scores and latency.

One static file with inline script and style (no CDN: it works offline and behind strict
proxies); it calls ``POST /v1/sentiment`` like any other client.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse


def router() -> APIRouter:
    page = files("sentiserve.serve").joinpath("static/playground.html").read_text("utf-8")
    api = APIRouter()

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    return api
