#!/usr/bin/env python3
# extract_openai_schemas.py: writes openai-schemas.json, the schemas of
# OpenAI's published OpenAPI document that test_openai_schema.py checks the
# gateway's answers against, with the closure of their $refs.
"""Usage: extract_openai_schemas.py [REPO]

REPO is a git checkout (or bare mirror) of github.com/openai/openai-openapi,
default /work/.mirror/openai+openai-openapi/repo. Reads openapi.yaml at its
HEAD and writes openai-schemas.json beside this script: the source commit,
and under "schemas" each schema named in ROOTS and every schema those refer
to ($ref "#/components/schemas/NAME", kept as they are). The data is MIT
licensed (LICENSE.openai-openapi beside it)."""
import json
import os
import subprocess
import sys

import yaml

ROOTS = ["CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
         "CreateCompletionResponse", "CreateEmbeddingResponse",
         "ListModelsResponse", "Model", "ErrorResponse"]
PREFIX = "#/components/schemas/"
HERE = os.path.dirname(os.path.abspath(__file__))


def git(repo, *args):
    return subprocess.run(["git", "--git-dir", git_dir(repo), *args], check=True,
                          capture_output=True).stdout


def git_dir(repo):
    dot = os.path.join(repo, ".git")
    return dot if os.path.exists(dot) else repo


def refs_of(node, found):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                if not v.startswith(PREFIX):
                    raise SystemExit(f"a $ref outside the schemas: {v}")
                found.add(v[len(PREFIX):])
            else:
                refs_of(v, found)
    elif isinstance(node, list):
        for v in node:
            refs_of(v, found)


def closure(schemas, roots):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in schemas:
            raise SystemExit(f"no schema {name} in the document")
        seen.add(name)
        found = set()
        refs_of(schemas[name], found)
        todo += sorted(found - seen)
    return {n: schemas[n] for n in sorted(seen)}


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else "/work/.mirror/openai+openai-openapi/repo"
    commit = git(repo, "rev-parse", "HEAD").decode().strip()
    doc = yaml.safe_load(git(repo, "show", "HEAD:openapi.yaml"))
    out = {
        "source": {"repository": "https://github.com/openai/openai-openapi",
                   "commit": commit, "file": "openapi.yaml",
                   "openapi": doc.get("openapi"),
                   "version": doc.get("info", {}).get("version"),
                   "license": "MIT, see LICENSE.openai-openapi"},
        "roots": ROOTS,
        "schemas": closure(doc["components"]["schemas"], ROOTS),
    }
    with open(os.path.join(HERE, "openai-schemas.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(HERE, "LICENSE.openai-openapi"), "wb") as f:
        f.write(git(repo, "show", "HEAD:LICENSE"))
    print(f"openai-schemas.json: {len(out['schemas'])} schemas from {commit[:12]}")


if __name__ == "__main__":
    main()
