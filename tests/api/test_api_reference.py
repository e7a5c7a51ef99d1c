"""The interactive API reference README links (/schema/swagger) works offline: the page
loads Swagger UI's files from the app itself, never from a CDN, and shows the published
OpenAPI document (request bodies from ``schemas/``)."""

from __future__ import annotations

import re

from litestar import Litestar
from litestar.testing import TestClient

Client = TestClient[Litestar]
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def test_swagger_page_and_its_files_come_from_the_app(client: Client) -> None:
    del client.headers["Authorization"]  # documentation is open, like the document
    page = client.get("/schema/swagger")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    links = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(links) == 4, links  # the script, its preset, the style sheet, the icon
    for link in links:
        assert link.startswith("/schema/swagger-ui/"), f"not served by the app: {link}"
        asset = client.get(link)
        assert asset.status_code == 200, link
        suffix = link[link.rindex(".") :]
        assert asset.headers["content-type"].startswith(ASSET_TYPES[suffix]), link
        assert len(asset.content) > 500, link
    bundle = client.get("/schema/swagger-ui/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle
    # the page shows the published document: request bodies are the schemas/ files
    assert '"title":"Purchase return"' in page.text
    assert client.get("/schema/openapi.json").status_code == 200


def test_only_swagger_ui_files_are_served(client: Client) -> None:
    for name in ("swagger-editor-bundle.js", "index.html", "LICENSE", "..%2F__init__.py"):
        answer = client.get(f"/schema/swagger-ui/{name}")
        assert answer.status_code == 404, name
        assert answer.headers["content-type"] == "application/problem+json"


def test_the_console_is_not_in_the_openapi_document(client: Client) -> None:
    """The console (/console) and the redirect of / serve people, not integrators: the
    published document holds the API only."""
    document = client.get("/schema/openapi.json").json()
    paths = set(document["paths"])
    assert all(p.startswith("/v1/") or p in ("/health", "/metrics") for p in paths), paths
    assert "console" not in client.get("/schema/openapi.json").text
    assert client.get("/console/", follow_redirects=False).status_code == 303  # it exists
