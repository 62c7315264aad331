"""docs_ui.py: /docs is Swagger UI from the pod's own files, naming no other host."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from housing_api.docs_ui import STATIC_URL, mount_docs


def docs_app() -> FastAPI:
    app = FastAPI(title="t", docs_url=None, redoc_url=None)
    mount_docs(app)
    return app


def test_the_page_loads_its_assets_from_the_pod_and_names_no_other_host() -> None:
    with TestClient(docs_app()) as c:
        page = c.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
        assert urls and all(u.startswith(("/docs/static/", "/openapi.json")) for u in urls), urls
        assert '"validatorUrl": null' in page.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
            assert c.get(f"{STATIC_URL}/{asset}").status_code == 200, asset


def test_behind_a_path_prefix_the_page_points_under_it() -> None:
    with TestClient(docs_app(), root_path="/api") as c:
        page = c.get("/docs").text
    assert "/api/docs/static/swagger-ui-bundle.js" in page and "/api/openapi.json" in page
