"""Validation of API responses against the shipped OpenAPI document (jsonschema)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from jsonschema import Draft7Validator

from wazuhcluster.api.service import SPEC_PATH

with open(SPEC_PATH, encoding="utf-8") as _f:
    DOCUMENT: dict[str, Any] = yaml.safe_load(_f)


def _template(method: str, path: str) -> str:
    """The document's path template matching a concrete ``path``."""
    exact = [t for t in DOCUMENT["paths"] if t == path]
    if exact and method.lower() in DOCUMENT["paths"][exact[0]]:
        return exact[0]
    for template, ops in DOCUMENT["paths"].items():
        pattern = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in ops:
            return str(template)
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def validate(method: str, path: str, status: int, content_type: str, body: bytes) -> Any:
    """Check one response against the document; return the decoded body."""
    path = path.split("?")[0]
    op = DOCUMENT["paths"][_template(method, path)][method.lower()]
    responses = op["responses"]
    response = responses.get(str(status)) or responses.get("default")
    if response is None:
        raise AssertionError(f"{method} {path}: status {status} is not documented")
    media = content_type.split(";")[0].strip()
    if media not in response["content"]:
        raise AssertionError(f"{method} {path} {status}: content type {media} is not documented "
                             f"({sorted(response['content'])})")
    schema = response["content"][media]["schema"]
    if media.endswith("json"):
        decoded = json.loads(body)
        wrapped = {**schema, "components": DOCUMENT["components"]}
        errors = sorted(Draft7Validator(wrapped).iter_errors(decoded), key=str)
        if errors:
            raise AssertionError(f"{method} {path} {status}: {errors[0].message} at "
                                 f"{list(errors[0].absolute_path)}\nbody: {decoded}")
        return decoded
    return body.decode("utf-8")
