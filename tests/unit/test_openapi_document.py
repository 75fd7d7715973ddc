"""The OpenAPI document describes exactly the Flask routes under /v1 (so it cannot drift)."""

from __future__ import annotations

import re

import pytest

from web_service.app import create_app
from web_service.openapi import document
from web_service.settings import Settings


def _openapi_paths(rule: str) -> list[str]:
    """``/v1/<any(a, b):x>/<y>`` -> ``/v1/a/{y}``, ``/v1/b/{y}`` (any() is a set of literals)."""
    alternatives = re.search(r"<any\(([^)]*)\):\w+>", rule)
    if alternatives:
        return [p for lit in alternatives.group(1).split(",")
                for p in _openapi_paths(rule.replace(alternatives.group(0), lit.strip()))]
    return [re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)]


@pytest.fixture(scope="module")
def flask_routes(tmp_path_factory):
    # No Redis is contacted until a request: a dead URL is fine for reading the url_map.
    db = tmp_path_factory.mktemp("openapi") / "registry.db"
    app = create_app(Settings(database_url=f"sqlite:///{db}", redis_url="redis://127.0.0.1:1/0"))
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1"):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            for path in _openapi_paths(rule.rule):
                routes.add((method.lower(), path))
    return routes


def test_every_route_is_documented_and_nothing_else(flask_routes):
    doc = document()
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert flask_routes - documented == set(), "routes missing from web_service/openapi.py"
    assert documented - flask_routes == set(), "documented operations the service does not have"


def test_every_operation_has_responses_with_schemas_and_bodies_where_the_route_reads_one():
    for path, ops in document()["paths"].items():
        for method, op in ops.items():
            assert any(s.startswith("2") for s in op["responses"]), (method, path)
            for status, resp in op["responses"].items():
                # JSON everywhere, except what the HTTP server itself answers (414, 431: HTML)
                # and an object's bytes (200, 206).
                kind = "text/html" if status in ("414", "431") else "application/json"
                if path == "/v1/objects/{object_id}/data" and method == "get" and status in ("200", "206"):
                    kind = "application/octet-stream"
                assert "schema" in resp["content"][kind], (method, path, status)
            if method in ("put",) or (method == "post" and path not in ("/v1/tasks/{task_id}/cancel",)):
                assert "requestBody" in op, (method, path)
            for name in re.findall(r"{(\w+)}", path):
                assert any(p["in"] == "path" and p["name"] == name for p in op.get("parameters", [])), (method, path, name)


def test_every_schema_reference_resolves():
    doc = document()
    refs = set(re.findall(r"#/components/schemas/(\w+)", repr(doc)))
    assert refs <= set(doc["components"]["schemas"])


def test_only_version_health_and_openapi_are_public():
    public = {(m, p) for p, ops in document()["paths"].items() for m, op in ops.items() if op.get("security") == []}
    assert public == {("get", "/v1/version"), ("get", "/v1/health"), ("get", "/v1/openapi.json")}
