"""Check real HTTP traffic against wizard/openapi.json.

The document is the contract; this module reads it and answers two
questions about one exchange: did the request use the API as documented,
and does the response (status, headers, media type, body) match what the
document promises for that operation and status::

    >>> contract = Contract.load()
    >>> contract.check_response("GET", "/whoami", call(app, "GET", "/whoami"))  # doctest: +SKIP

Schemas are JSON Schema 2020-12 (the dialect of OpenAPI 3.1), checked with
``jsonschema``; every ``$ref`` is resolved inside the document, which is
registered under one base URI with ``referencing``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from wizard.api import OPENAPI_PATH

#: The URI the document is registered under, so "#/components/..." resolves.
BASE_URI = "urn:wizard:openapi"

#: HTTP methods an OpenAPI path item may hold (OpenAPI 3.1 §4.8.9).
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def pointer(*segments: str) -> str:
    """A JSON Pointer (RFC 6901) from unescaped segments: ``/`` → ``~1``."""
    return "".join("/" + s.replace("~", "~0").replace("/", "~1") for s in segments)


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type into its lowercased essence and its parameters."""
    essence, *raw_params = header.split(";")
    params = {}
    for raw in raw_params:
        name, _, value = raw.strip().partition("=")
        params[name.lower()] = value.strip('"')
    return essence.strip().lower(), params


def _media_matches(key: str, content_type: str) -> bool:
    """True if the content key (a type, a range like ``image/*``, maybe with
    parameters) covers ``content_type``; a key's parameters must all be in it."""
    key_essence, key_params = media_type(key)
    essence, params = media_type(content_type)
    if key_essence == "*/*":
        pass
    elif key_essence.endswith("/*"):
        if not essence.startswith(key_essence[:-1]):
            return False
    elif key_essence != essence:
        return False
    return all(params.get(name) == value for name, value in key_params.items())


def _is_json(essence: str) -> bool:
    return essence == "application/json" or essence.endswith("+json")


@dataclass(frozen=True)
class Contract:
    """The OpenAPI document plus a registry that resolves its ``$ref``s."""

    document: dict
    registry: Registry

    @classmethod
    def load(cls) -> Contract:
        """Read wizard/openapi.json (the file GET /openapi.json serves)."""
        document = json.loads(OPENAPI_PATH.read_text())
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        return cls(document, Registry().with_resource(BASE_URI, resource))

    # --- walking the document ----------------------------------------------

    def at(self, where: str) -> Any:
        """The node at JSON Pointer ``where``."""
        node = self.document
        for segment in where.split("/")[1:]:
            key = segment.replace("~1", "/").replace("~0", "~")
            node = node[int(key)] if isinstance(node, list) else node[key]
        return node

    def follow(self, where: str) -> tuple[str, dict]:
        """Follow ``$ref``s from ``where``; returns the final pointer and object."""
        node = self.at(where)
        while "$ref" in node:
            where = node["$ref"].removeprefix("#")
            node = self.at(where)
        return where, node

    def operations(self) -> set[tuple[str, str]]:
        """Every (METHOD, path template) the document describes."""
        return {
            (method.upper(), path)
            for path, item in self.document["paths"].items()
            for method in METHODS
            if method in item
        }

    def statuses(self, method: str, template: str) -> set[int]:
        """The statuses documented for one operation."""
        responses = self.document["paths"][template][method.lower()]["responses"]
        return {int(status) for status in responses}

    def validator(self, where: str) -> Draft202012Validator:
        """A 2020-12 validator for the schema at pointer ``where``."""
        root = {"$ref": BASE_URI + "#" + quote(where, safe="/~")}
        return Draft202012Validator(
            root, registry=self.registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    def assert_valid(self, where: str, value: Any, what: str) -> None:
        """Raise AssertionError listing every way ``value`` breaks the schema."""
        errors = sorted(self.validator(where).iter_errors(value), key=lambda e: list(e.path))
        problems = [f"  at {'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors]
        assert not problems, f"{what} does not match {where}:\n" + "\n".join(problems)

    # --- requests ----------------------------------------------------------

    def check_request(
        self,
        method: str,
        template: str,
        *,
        query: dict[str, str] | None = None,
        body: bytes = b"",
        content_type: str = "",
    ) -> None:
        """Assert that a request uses the operation as documented: required
        parameters present, each query parameter valid for its schema, and a
        body of a documented media type that matches its schema."""
        op_pointer = pointer("paths", template, method.lower())
        operation = self.at(op_pointer)
        query = query or {}
        for index, _ in enumerate(operation.get("parameters", [])):
            where, parameter = self.follow(f"{op_pointer}/parameters/{index}")
            if parameter["in"] != "query":
                continue
            name = parameter["name"]
            if name not in query:
                assert not parameter.get("required"), f"{method} {template} needs ?{name}"
                continue
            value = self._deserialize(where + "/schema", query[name])
            self.assert_valid(where + "/schema", value, f"query parameter {name}")
        if body:
            self._check_request_body(op_pointer, body, content_type)

    def _check_request_body(self, op_pointer: str, body: bytes, content_type: str) -> None:
        content = self.at(op_pointer + "/requestBody")["content"]
        keys = [key for key in content if _media_matches(key, content_type)]
        assert keys, f"request body of type {content_type!r} is not documented"
        essence, _ = media_type(content_type)
        if _is_json(essence):
            value = json.loads(body)
        else:
            value = dict(parse_qsl(body.decode(), keep_blank_values=True))
        where = op_pointer + "/requestBody" + pointer("content", keys[0], "schema")
        self.assert_valid(where, value, "request body")

    def _deserialize(self, schema_pointer: str, raw: str) -> Any:
        """A query/header value (text) as the type its schema names."""
        _, schema = self.follow(schema_pointer)
        kinds = schema.get("type", "string")
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if "string" in kinds:
            return raw
        if "integer" in kinds:
            try:
                return int(raw)
            except ValueError:
                # Not a whole number: let the schema report it as a string.
                return raw
        return raw

    # --- responses ---------------------------------------------------------

    def check_response(self, method: str, template: str, response) -> Any:
        """Assert that ``response`` (tests.support.WsgiResponse) is one the
        document promises for ``method template``. Returns the decoded body
        (JSON value, text, or bytes)."""
        responses = pointer("paths", template, method.lower(), "responses")
        status = str(response.status)
        assert status in self.at(responses), (
            f"{method} {template} answered {status}, which the document does not describe: "
            f"{response.body[:300]!r}"
        )
        return self.check_against(responses + pointer(status), response)

    def check_against(self, where: str, response) -> Any:
        """Assert that ``response`` matches the Response Object at ``where``
        (following ``$ref``): required headers, media type and body schema."""
        where, described = self.follow(where)
        headers = {name.lower(): value for name, value in response.headers.items()}
        for name in described.get("headers", {}):
            header_pointer, header = self.follow(where + pointer("headers", name))
            raw = headers.get(name.lower())
            if raw is None:
                assert not header.get("required"), f"header {name} is missing"
                continue
            value = self._deserialize(header_pointer + "/schema", raw)
            self.assert_valid(header_pointer + "/schema", value, f"header {name}: {raw!r}")
        content = described.get("content")
        if not content:
            assert not response.body, "a response documented without content has a body"
            return response.body
        content_type = headers.get("content-type", "")
        keys = [key for key in content if _media_matches(key, content_type)]
        assert keys, f"Content-Type {content_type!r} is not among {sorted(content)}"
        schema_pointer = where + pointer("content", keys[0], "schema")
        return self._check_body(schema_pointer, content_type, response)

    def _check_body(self, schema_pointer: str, content_type: str, response) -> Any:
        essence, _ = media_type(content_type)
        if _is_json(essence):
            body = json.loads(response.body)
        elif essence.startswith("text/"):
            body = response.body.decode("utf-8")
        else:
            return response.body
        self.assert_valid(schema_pointer, body, f"the {response.status} body")
        return body
