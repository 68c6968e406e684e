"""The browser side the gateway serves: the meeting page, the operator's page and the
JavaScript client.

``GET /`` is the meeting page, for people in a meeting (``web/index.html`` with
``page.js``); ``GET /ops`` the operator's (``ops.html``, ``ops.js``: any task, queue
depths); both share ``ui.js`` (words in English and Chinese, notices, the connection)
and ``page.css``. Replies render as Markdown through the two libraries kept in
``web/vendor`` (marked, and DOMPurify to sanitise). ``GET /client.js`` is the client
module any web app may import (``web/client.d.ts`` its types; ``web/package.json``
makes the folder an npm package). Only these files are served, read once at start;
nothing is built.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

WEB = Path(__file__).with_name("web")

#: URL path -> (file in web/, media type).
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
    "/client.js": ("client.js", "text/javascript; charset=utf-8"),
    "/client.d.ts": ("client.d.ts", "application/typescript; charset=utf-8"),
    "/ops": ("ops.html", "text/html; charset=utf-8"),
    "/ops.js": ("ops.js", "text/javascript; charset=utf-8"),
    "/ui.js": ("ui.js", "text/javascript; charset=utf-8"),
    "/vendor/marked.js": ("vendor/marked.js", "text/javascript; charset=utf-8"),
    "/vendor/purify.js": ("vendor/purify.js", "text/javascript; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    # Browsers and tools that ask for it without reading the page's <link rel="icon">.
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}


def routes() -> list[Route]:
    return [_route(path, name, media_type) for path, (name, media_type) in FILES.items()]


#: Headers of every file served: no script but our own files (no inline script or style),
#: WebSockets to this gateway only, never in a frame, no referrer (a URL may hold a token).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _route(path: str, name: str, media_type: str) -> Route:
    body = (WEB / name).read_bytes()
    headers = {"Cache-Control": "no-cache", **SECURITY_HEADERS}

    async def serve(request: Request) -> Response:
        return Response(body, media_type=media_type, headers=headers)

    return Route(path, serve, methods=["GET", "HEAD"])
