"""How the REST Structs point at each other in the OpenAPI document."""

from __future__ import annotations

from typing import Any

REF_TEMPLATE = "#/components/schemas/{name}"
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def ref(name: str) -> dict[str, Any]:
    return {"$ref": REF_TEMPLATE.format(name=name)}
