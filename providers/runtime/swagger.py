"""``GET /swagger.json``: the service's OpenAPI document, Swagger 2.0 or OpenAPI 3.0/3.1.

Same documents as Azure's server, so tooling built on them keeps working: a user file
``swagger.json``/``swagger2.json``/``swagger3.json`` in the app root wins; otherwise the document
is generated, with the input/output schemas of an ``inference_schema``-decorated ``run()`` or an
empty object schema. Built once per worker, after ``init()``, and served as bytes.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("mlops.runtime")

VERSION_ALIASES = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}
"""Accepted ``?version=`` values and the document each names."""
_SCHEMA_VERSION = {"2": "2.0", "3": "3.0", "3.1": "3.1"}
"""Our document names -> inference_schema's version names."""

_ERROR_SCHEMA = {"type": "object", "properties": {"message": {"type": "string"}}}
_DEFAULT_INPUT = {
    "type": "object",
    "properties": {"param": {"type": "object", "additionalProperties": {"type": "object"}}},
}
_DEFAULT_OUTPUT = {"type": "object", "additionalProperties": {"type": "object"}}
_HEALTH_DESCRIPTION = "If service is up and running, this response will be returned with the content 'Healthy'"
_SCORE_DESCRIPTION = "The service processed the input correctly and provided a result prediction, if applicable."
_FAILED = "The service failed to execute due to an error."
_BEARER = {
    "type": "apiKey",
    "name": "Authorization",
    "in": "header",
    "description": "For example: Bearer abc123",
}


class SwaggerNotFound(Exception):
    """The requested version is unknown or unavailable; the message is Azure's 404 text."""


def _swagger2(title: str, version: str, prefix: str, inp: Any, out: Any) -> dict[str, Any]:
    error = {"description": _FAILED, "schema": {"$ref": "#/definitions/ErrorResponse"}}
    return {
        "swagger": "2.0",
        "info": {
            "title": title,
            "description": f"API specification for the Azure Machine Learning service {title}",
            "version": version,
        },
        "schemes": ["https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {"Bearer": dict(_BEARER)},
        "paths": {
            f"{prefix}/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Simple health check endpoint to ensure the service is up at any given point.",
                    "responses": {
                        "200": {
                            "description": _HEALTH_DESCRIPTION,
                            "schema": {"type": "string"},
                            "examples": {"application/json": "Healthy"},
                        },
                        "default": error,
                    },
                }
            },
            f"{prefix}/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": "Run web service's model and get the prediction output",
                    "security": [{"Bearer": []}],
                    "parameters": [
                        {
                            "name": "serviceInputPayload",
                            "in": "body",
                            "description": "The input payload for executing the real-time machine learning service.",
                            "schema": {"$ref": "#/definitions/ServiceInput"},
                        }
                    ],
                    "responses": {
                        "200": {"description": _SCORE_DESCRIPTION, "schema": {"$ref": "#/definitions/ServiceOutput"}},
                        "default": error,
                    },
                }
            },
            f"{prefix}/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": "Get the Swagger specification.",
                    "parameters": [
                        {"name": "version", "in": "query", "required": False, "type": "integer", "enum": [2, 3]}
                    ],
                    "responses": {
                        "200": {"description": "The Swagger specification.", "schema": {"type": "string"}},
                        "default": error,
                    },
                }
            },
        },
        "definitions": {"ServiceInput": inp, "ServiceOutput": out, "ErrorResponse": _ERROR_SCHEMA},
    }


def _openapi3(title: str, version: str, prefix: str, inp: Any, out: Any) -> dict[str, Any]:
    def json_ref(name: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}

    error = {"description": _FAILED, "content": json_ref("ErrorResponse")}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "description": f"API specification for the Azure Machine Learning service {title}",
            "version": version,
        },
        "security": [{"Bearer": []}],
        "paths": {
            f"{prefix}/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Simple health check endpoint to ensure the service is up at any given point.",
                    "responses": {
                        "200": {
                            "description": _HEALTH_DESCRIPTION,
                            "content": {"text/plain": {"schema": {"type": "string", "example": "Healthy"}}},
                        },
                        "default": error,
                    },
                }
            },
            f"{prefix}/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": "Run web service's model and get the prediction output",
                    "security": [{"Bearer": []}],
                    "requestBody": {
                        "description": "The input payload for executing the real-time machine learning service.",
                        "content": json_ref("ServiceInput"),
                    },
                    "responses": {
                        "200": {"description": _SCORE_DESCRIPTION, "content": json_ref("ServiceOutput")},
                        "default": error,
                    },
                }
            },
            f"{prefix}/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": "Get the Swagger specification.",
                    "parameters": [
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "enum": [2, 3]},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The Swagger specification.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "default": error,
                    },
                }
            },
        },
        "components": {
            "schemas": {"ServiceInput": inp, "ServiceOutput": out, "ErrorResponse": _ERROR_SCHEMA},
            "securitySchemes": {"Bearer": dict(_BEARER)},
        },
    }


def _user_file(app_root: Path, name: str) -> dict[str, Any] | None:
    try:
        document = json.loads((app_root / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    log.info("using the user's %s from %s", name, app_root)
    return document  # type: ignore[no-any-return]


def _schemas(run: Callable[..., Any], decorated: bool) -> tuple[Any, Any, list[str]]:
    """Input schema, output schema and the versions inference_schema can express for ``run``."""
    util = sys.modules.get("inference_schema.schema_util")
    if not decorated or util is None:
        return {"type": "object", "example": {}}, {"type": "object", "example": {}}, list(_SCHEMA_VERSION)
    supported = set(util.get_supported_versions(run))
    names = [name for name, schema_version in _SCHEMA_VERSION.items() if schema_version in supported]
    return util.get_input_schema(run), util.get_output_schema(run), names


class Swagger:
    """The documents a worker serves, encoded once."""

    def __init__(
        self,
        app_root: Path,
        run: Callable[..., Any],
        decorated: bool,
        *,
        title: str = "ML service",
        version: str = "1.0",
        path_prefix: str = "",
    ) -> None:
        prefix = f"/{path_prefix.strip('/')}" if path_prefix.strip("/") else ""
        inp, out, generated = _schemas(run, decorated)
        documents: dict[str, dict[str, Any]] = {}
        for name in _SCHEMA_VERSION:
            files = ["swagger.json", "swagger2.json"] if name == "2" else [f"swagger{name}.json"]
            user = next((d for d in map(lambda f: _user_file(app_root, f), files) if d), None)
            if user is not None:
                documents[name] = user
            elif name in generated:
                document = (_swagger2 if name == "2" else _openapi3)(title, version, prefix, inp, out)
                if name == "3.1":
                    document["openapi"] = "3.1.0"
                documents[name] = document
        self.supported = sorted(documents)
        self._encoded = {name: json.dumps(doc).encode() for name, doc in documents.items()}

    def get(self, requested: str | None) -> bytes:
        """The encoded document for ``?version=`` (default 2); raises SwaggerNotFound."""
        requested = "2" if requested is None else requested
        listed = ", ".join(self.supported)
        name = VERSION_ALIASES.get(requested)
        if name is None:
            raise SwaggerNotFound(f"Swagger version [{requested}] is not valid. Supported versions: [{listed}].")
        if name not in self._encoded:
            raise SwaggerNotFound(
                f"Swagger version [{requested}] is not supported for the scoring script. "
                f"Supported swagger versions: [{listed}]."
            )
        return self._encoded[name]
