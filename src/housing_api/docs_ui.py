"""/docs served from the pod itself, so the API's documentation works wherever the API does.

FastAPI's default pages load Swagger UI and ReDoc from a public CDN: on an air-gapped cluster, or
behind a network policy that allows no egress, /docs is a blank page. The JavaScript and CSS come
from the fastapi-offline package instead (its wheel ships the Swagger UI bundle); the HTML is
FastAPI's own, pointed at those files, as FastAPI's "self-hosting JavaScript and CSS for docs"
guide describes. Nothing on the page names another host: the favicon is local and Swagger UI's
online validator badge is off.

There is no /redoc: the ReDoc bundle draws its "API docs by Redocly" logo from cdn.redoc.ly
whatever the page says (the browser test caught it), and Swagger UI already shows everything.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
# Under /docs so that whatever routes /docs (the prod VirtualService matches it as a prefix)
# also routes the page's assets.
STATIC_URL = "/docs/static"
# The bundled assets: swagger-ui-bundle.js, swagger-ui.css, favicon.png (and redoc.standalone.js, unused).
STATIC_DIR = Path(str(files("fastapi_offline") / "static"))
SWAGGER_UI_PARAMETERS = {
    "validatorUrl": None,  # the default badge would ask validator.swagger.io about our schema
    "displayRequestDuration": True,
}


def mount_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs from local files (create the app with docs_url=None, redoc_url=None)."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="docs-static")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
