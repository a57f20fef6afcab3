# A small validator of JSON values against the OpenAPI 3.1 schemas of
# test/conformance/openai-schemas.json (the keywords those schemas use).
"""validate(name, value) returns the list of what is wrong with VALUE as an
instance of the schema NAME (empty: valid). Every keyword of a schema is
checked or is a known annotation: a keyword it does not know is an error of
the validator, never skipped, so no part of a schema goes unchecked."""
import json
import os

SCHEMAS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "conformance", "openai-schemas.json")
PREFIX = "#/components/schemas/"
# Keywords that say nothing about validity (format is an annotation in
# JSON Schema 2020-12; discriminator only names the branch oneOf checks).
ANNOTATIONS = {"description", "title", "example", "examples", "default",
               "deprecated", "format", "discriminator", "readOnly", "writeOnly"}

_doc = None


def document():
    global _doc
    if _doc is None:
        with open(SCHEMAS) as f:
            _doc = json.load(f)
    return _doc


def _type_ok(t, v):
    if t == "null":
        return v is None
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":
        return (isinstance(v, int) and not isinstance(v, bool)) or \
            (isinstance(v, float) and v.is_integer())
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "string":
        return isinstance(v, str)
    if t == "array":
        return isinstance(v, list)
    if t == "object":
        return isinstance(v, dict)
    raise ValueError(f"unknown type {t!r}")


def _check(schema, v, path, errs):
    if schema is True or schema == {}:
        return
    if schema is False:
        errs.append(f"{path}: no value is allowed here")
        return
    for k in schema:
        if k in ANNOTATIONS or k.startswith("x-"):
            continue
        if k not in ("$ref", "type", "enum", "const", "properties", "required",
                     "additionalProperties", "items", "anyOf", "oneOf", "allOf",
                     "nullable", "minimum", "maximum", "minItems", "maxItems"):
            raise ValueError(f"{path}: the validator does not know keyword {k!r}")
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith(PREFIX), ref
        _check(document()["schemas"][ref[len(PREFIX):]], v, path, errs)
    if v is None and schema.get("nullable"):
        return
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(t, v) for t in types):
            errs.append(f"{path}: {json.dumps(v)[:80]} is not of type {types}")
            return
    if "enum" in schema and v not in schema["enum"]:
        errs.append(f"{path}: {json.dumps(v)[:80]} is not one of {schema['enum']}")
    if "const" in schema and v != schema["const"]:
        errs.append(f"{path}: {json.dumps(v)[:80]} is not {schema['const']!r}")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in schema and v < schema["minimum"]:
            errs.append(f"{path}: {v} < {schema['minimum']}")
        if "maximum" in schema and v > schema["maximum"]:
            errs.append(f"{path}: {v} > {schema['maximum']}")
    if isinstance(v, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in v:
                errs.append(f"{path}: required member {name!r} is missing")
        extra = schema.get("additionalProperties", True)
        for name, value in v.items():
            if name in props:
                _check(props[name], value, f"{path}.{name}", errs)
            elif extra is False:
                errs.append(f"{path}: member {name!r} is not allowed")
            elif isinstance(extra, dict):
                _check(extra, value, f"{path}.{name}", errs)
    if isinstance(v, list):
        if "minItems" in schema and len(v) < schema["minItems"]:
            errs.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(v) > schema["maxItems"]:
            errs.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(v):
                _check(schema["items"], item, f"{path}[{i}]", errs)
    for sub in schema.get("allOf", []):
        _check(sub, v, path, errs)
    for kw, want in (("anyOf", lambda n: n >= 1), ("oneOf", lambda n: n == 1)):
        if kw in schema:
            results = []
            for sub in schema[kw]:
                e = []
                _check(sub, v, path, e)
                results.append(e)
            ok = sum(1 for e in results if not e)
            if not want(ok):
                detail = "; ".join(e[0] for e in results if e)
                errs.append(f"{path}: {ok} of the {kw} branches match ({detail})")


def validate(name, value):
    errs = []
    _check({"$ref": PREFIX + name}, value, name, errs)
    return errs
