"""The playground page at ``/``: type a review, see the label, scores and latency.

One static file with inline script and style (no CDN: it works offline and behind strict
proxies); it calls ``POST /v1/sentiment`` like any other client. It is served with a
Content-Security-Policy that allows exactly its own inline script and style (by their
sha256), requests to this server only, and nothing else: no other script, frame, form
target or plugin can run in it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse


def content_security_policy(page: str) -> str:
    """The page's CSP, pinning each inline ``<script>`` and ``<style>`` by its hash."""

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        digests = (hashlib.sha256(b.encode()).digest() for b in blocks)
        return " ".join(f"'sha256-{base64.b64encode(d).decode()}'" for d in digests)

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def router() -> APIRouter:
    page = files("sentiserve.serve").joinpath("static/playground.html").read_text("utf-8")
    headers = {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": content_security_policy(page),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    api = APIRouter()

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    return api
