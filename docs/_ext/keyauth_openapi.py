"""Pages of the documentation that the package itself writes.

At build time this builds a small app on the package's defaults (SQLite in
memory, ``memory://`` limits), fetches ``/settings/api-keys/api/openapi.json``
the way a client would, and writes under ``docs/_generated/``:

- ``openapi.md``, every path and operation with its parameters, request
  body, responses and the schemas they use, included by ``api.md``;
- ``openapi.json``, the document itself, offered for download there;
- ``configuration.md``, every ``KEYAUTH_*`` setting with its default and
  its ``#:`` comment from ``flask_keyauth/config.py``, included by
  ``configuration.md``.

Nothing is fetched from the network. :func:`render_markdown` and
:func:`render_settings` are plain functions, so the tests check them
without Sphinx.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

PREFIX = "/settings/api-keys"
DOCUMENT_PATH = f"{PREFIX}/api/openapi.json"


def build_document() -> dict[str, Any]:
    """The OpenAPI document an app with the default settings serves."""
    from flask import Flask

    from flask_keyauth import KeyAuth, blueprint

    app = Flask("keyauth_docs")
    app.config.update(
        SECRET_KEY="documentation",  # noqa: S106 - a throwaway app that signs nothing
        SQLALCHEMY_DATABASE_URI="sqlite://",
        RATELIMIT_STORAGE_URI="memory://",
    )
    KeyAuth(app)
    app.register_blueprint(blueprint, url_prefix=PREFIX)
    response = app.test_client().get(DOCUMENT_PATH)
    if response.status_code != 200:
        raise RuntimeError(f"{DOCUMENT_PATH} answered {response.status}")
    document: dict[str, Any] = response.get_json()
    return document


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell, on one line."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _label(kind: str, name: str) -> str:
    return f"openapi-{kind}-{name.lower()}"


def _ref_name(ref: str) -> tuple[str, str]:
    """``#/components/schemas/Key`` → ``("schemas", "Key")``."""
    _, _, kind, name = ref.split("/", 3)
    return kind, name


def _link(ref: str) -> str:
    kind, name = _ref_name(ref)
    return f"{{ref}}`{name} <{_label(kind, name)}>`"


def type_of(schema: dict[str, Any]) -> str:
    """A short reading of a schema's type: ``string or null``, ``array of Key``."""
    if "$ref" in schema:
        return _link(schema["$ref"])
    if "allOf" in schema:
        return " and ".join(type_of(part) for part in schema["allOf"] if part.get("$ref"))
    if "const" in schema:
        return f"always {_code(schema['const'])}"
    kinds = schema.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    words = []
    for kind in kinds:
        if kind == "array":
            items = schema.get("items", {})
            words.append(f"array of {type_of(items)}" if items else "array")
        elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            words.append(f"object of {type_of(schema['additionalProperties'])}")
        else:
            words.append(kind)
    text = " or ".join(words)
    if "format" in schema:
        text += f" ({schema['format']})"
    return text


def constraints(schema: dict[str, Any]) -> list[str]:
    """What a schema allows beyond its type, in words."""
    found = []
    if "enum" in schema:
        found.append("one of " + ", ".join(_code(value) for value in schema["enum"]))
    items = schema.get("items", {})
    if isinstance(items, dict) and "enum" in items:
        found.append("each one of " + ", ".join(_code(value) for value in items["enum"]))
    for word, key in (
        ("at least", "minimum"),
        ("at most", "maximum"),
        ("characters: at least", "minLength"),
        ("characters: at most", "maxLength"),
        ("items: at least", "minItems"),
        ("items: at most", "maxItems"),
    ):
        if key in schema:
            found.append(f"{word} {schema[key]}")
    if "pattern" in schema:
        found.append(f"matches {_code(schema['pattern'])}")
    if "default" in schema:
        found.append(f"default {_code(schema['default'])}")
    examples = schema.get("examples")
    if not examples and isinstance(items, dict):
        examples = items.get("examples")
    if examples:
        found.append("e.g. " + ", ".join(_code(value) for value in examples))
    return found


def _about(schema: dict[str, Any]) -> str:
    """A schema's description, then its constraints as one sentence."""
    found = "; ".join(constraints(schema))
    if found:
        found = found[0].upper() + found[1:] + "."
    description = schema.get("description", "")
    if description and not description.endswith((".", "!", "?")):
        description += "."
    return _cell(f"{description} {found}".strip())


def _properties_table(schema: dict[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    if not properties:
        return []
    required = set(schema.get("required", ()))
    lines = ["| field | type | required | meaning and limits |", "|---|---|---|---|"]
    for name, field in properties.items():
        lines.append(
            f"| `{name}` | {_cell(type_of(field))} | {'yes' if name in required else 'no'} "
            f"| {_about(field)} |"
        )
    return lines


def _schema_section(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"({_label('schemas', name)})=", f"#### `{name}`", ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    if "properties" not in schema:
        lines += [f"Type: {type_of(schema)}.", ""]
    table = _properties_table(schema)
    if table:
        lines += [*table, ""]
    rules = []
    if schema.get("additionalProperties") is False:
        rules.append("Any other field is refused (400).")
    exclusive = schema.get("not", {}).get("required")
    if exclusive:
        rules.append("Not both " + " and ".join(f"`{field}`" for field in exclusive) + ".")
    if rules:
        lines += [" ".join(rules), ""]
    for field, value in schema.get("properties", {}).items():
        nested = value.get("items", {}) if value.get("type") == "array" else value
        if isinstance(nested, dict) and nested.get("properties"):
            lines += [f"Each item of `{field}`:" if nested is not value else f"`{field}`:", ""]
            lines += [*_properties_table(nested), ""]
    return lines


def _who(requirements: list[dict[str, list[str]]], schemes: dict[str, Any]) -> str:
    if not requirements:
        return "anyone: no key and no session needed."

    def scheme(name: str) -> str:
        spec = schemes[name]
        if spec.get("type") == "http" and spec.get("scheme") == "bearer":
            return "`Authorization: Bearer <key>`"
        where = {"header": "header", "cookie": "cookie", "query": "query parameter"}
        return f"the `{spec['name']}` {where.get(spec.get('in', ''), '')}".rstrip()

    ways = []
    for requirement in requirements:
        names = " and ".join(scheme(name) for name in requirement)
        scopes = sorted({scope for values in requirement.values() for scope in values})
        if scopes:
            names += " (a key holding " + ", ".join(f"`{s}`" for s in scopes) + ")"
        ways.append(names)
    return "; or ".join(ways) + "."


def _operation_section(
    path: str, method: str, operation: dict[str, Any], document: dict[str, Any]
) -> list[str]:
    components = document["components"]
    lines = [
        f"({_label('operation', operation['operationId'])})=",
        f"#### `{method.upper()} {path}`",
        "",
        f"**{operation['summary']}.** {operation.get('description', '')}".rstrip(),
        "",
        f"Operation id `{operation['operationId']}`. Who may call: "
        + _who(operation.get("security", []), components["securitySchemes"]),
        "",
    ]
    parameters = [
        components["parameters"][_ref_name(p["$ref"])[1]] if "$ref" in p else p
        for p in operation.get("parameters", [])
    ]
    if parameters:
        lines += [
            "| parameter | in | type | required | meaning and limits |",
            "|---|---|---|---|---|",
        ]
        for p in parameters:
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_cell(type_of(p['schema']))} "
                f"| {'yes' if p.get('required') else 'no'} | {_about({**p['schema'], **p})} |"
            )
        lines.append("")
    body = operation.get("requestBody")
    if body:
        schema = body["content"]["application/json"]["schema"]
        need = "required" if body.get("required") else "optional"
        lines += [f"Request body ({need}, `application/json`): {type_of(schema)}.", ""]
    lines += ["| status | meaning | body |", "|---|---|---|"]
    for status, response in operation["responses"].items():
        if "$ref" in response:
            shared = components["responses"][_ref_name(response["$ref"])[1]]
            lines.append(
                f"| {status} | {_cell(shared['description'])} | {_link(response['$ref'])} |"
            )
            continue
        content = response.get("content", {}).get("application/json")
        shape = type_of(content["schema"]) if content else ""
        lines.append(f"| {status} | {_cell(response['description'])} | {shape} |")
    lines.append("")
    for status, response in operation["responses"].items():
        headers = response.get("headers")
        if headers and "$ref" not in response:
            names = ", ".join(f"`{name}`" for name in headers)
            lines += [f"Headers of the {status} response: {names}.", ""]
    return lines


def _response_section(name: str, response: dict[str, Any]) -> list[str]:
    lines = [f"({_label('responses', name)})=", f"#### `{name}`", "", response["description"], ""]
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    if schema:
        lines += [f"Body: {type_of(schema)}.", ""]
    if response.get("headers"):
        lines += ["Headers: " + ", ".join(f"`{h}`" for h in response["headers"]) + ".", ""]
    return lines


def render_markdown(document: dict[str, Any]) -> str:
    """The document as MyST Markdown: operations, shared responses, schemas."""
    info = document["info"]
    servers = ", ".join(f"`{server['url']}`" for server in document.get("servers", []))
    lines = [
        f"OpenAPI {document['openapi']}, \"{info['title']}\" version {info['version']}, "
        f"served under {servers} (the blueprint's `url_prefix`; here the default app's).",
        "",
        info.get("description", ""),
        "",
        "### Operations",
        "",
    ]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            lines += _operation_section(path, method, operation, document)
    lines += ["### Error responses", ""]
    for name, response in document["components"]["responses"].items():
        lines += _response_section(name, response)
    lines += ["### Schemas", ""]
    for name, schema in document["components"]["schemas"].items():
        lines += _schema_section(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def settings() -> list[tuple[str, str, str]]:
    """``(KEYAUTH_NAME, default as written, comment)`` of every setting, in
    the order ``config.py`` names them."""
    from flask_keyauth import config

    source = Path(config.__file__).read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if not isinstance(target, ast.Name) or not target.id.isupper():
            continue
        name = f"KEYAUTH_{target.id}"
        if name not in config.DEFAULTS or node.value is None:
            continue
        comment = []
        number = node.lineno - 2
        while number >= 0 and lines[number].lstrip().startswith("#:"):
            comment.insert(0, lines[number].lstrip()[2:].strip())
            number -= 1
        default = ast.get_source_segment(source, node.value) or ""
        default = re.sub(r",\s*([}\]])", r"\1", " ".join(default.split()))
        default = re.sub(r"([{\[])\s+", r"\1", default)
        found.append((name, default, " ".join(comment)))
    return found


def render_settings(rows: list[tuple[str, str, str]]) -> str:
    """The settings as a Markdown table (reST literals become code spans)."""
    out = ["| setting | default | meaning |", "|---|---|---|"]
    for name, default, comment in rows:
        text = re.sub(r"``(.+?)``", r"`\1`", comment).replace(" -> ", " → ")
        out.append(f"| `{name}` | {_cell(_code(default))} | {_cell(text)} |")
    return "\n".join(out) + "\n"


def _write(path: Path, text: str) -> None:
    """Write only what changed, so Sphinx rebuilds only what it must."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(srcdir: Path) -> None:
    document = build_document()
    out = srcdir / "_generated"
    _write(out / "openapi.md", render_markdown(document))
    _write(out / "openapi.json", json.dumps(document, indent=2, sort_keys=True) + "\n")
    _write(out / "configuration.md", render_settings(settings()))


def _on_config_inited(app: Any, config: Any) -> None:
    generate(Path(app.srcdir))


def setup(app: Any) -> dict[str, Any]:
    # Before any page is read: api.md includes what this writes.
    app.connect("config-inited", _on_config_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
