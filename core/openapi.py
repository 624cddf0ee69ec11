"""The OpenAPI schema's account of errors: every operation documents the one error shape
(core.exceptions.error_body) for the statuses any API view can answer with, so that clients
(and the schema fuzzing in the tests) know them."""

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {
                "status": {"type": "integer", "description": "The HTTP status, repeated."},
                "code": {"type": "string", "description": "A stable machine code."},
                "message": {"type": "string", "description": "What went wrong, in words."},
                "fields": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "Validation errors only: each bad parameter's messages.",
                },
            },
        }
    },
}
# Status -> when. Every operation can meet these (authentication, permissions, throttling, a
# malformed parameter, an unknown object or page).
COMMON_ERRORS = {
    "400": "A parameter or the body is invalid (`fields` says which).",
    "401": "Not authenticated.",
    "403": "Authenticated, but without the permission (or the CSRF token) this needs.",
    "404": "No such object (or page).",
    "411": "A request body without Content-Length (chunked).",
    "413": "The request body is larger than MAX_REQUEST_BODY_BYTES.",
    "429": "Too many requests; retry after the `Retry-After` header's seconds.",
}
# Status -> when, for the operations that read a request body.
BODY_ERRORS = {
    "415": "The body's media type is not one this operation reads (JSON, a form).",
}


def error_responses(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: add the Error component and the common error
    responses to every operation that does not describe them itself."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            errors = COMMON_ERRORS | (BODY_ERRORS if "requestBody" in operation else {})
            for status, description in errors.items():
                responses.setdefault(status, {"description": description, "content": reference})
    return result
