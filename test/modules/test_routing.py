# Routing by model name and where the gateway acts: /v1/models lists exact names
# and aliases in config order, globs resolve on lookup, other locations untouched.
import time

import llmgw_env as env
from llmgw_env import assert_openai_error, chat_body

EXPECTED_IDS = ["mock-small", "small", "mock-large", "dead-model", "slow-model",
                "ollama-small", "llamacpp-small",
                # learnt from the backends (LLMDiscover), after the names
                "disc-alpha", "disc-beta", "ollama-gamma"]


def test_list_models(gw):
    r = gw.get("/v1/models")
    assert r.status == 200, r.body
    assert r.content_type == "application/json"
    doc = r.json()
    assert doc["object"] == "list"
    assert [m["id"] for m in doc["data"]] == EXPECTED_IDS
    for m in doc["data"]:
        assert m["object"] == "model", m


CONFIGURED = EXPECTED_IDS[:7]


def test_discovered_models_are_served_and_refreshed(gw, mocks, workdir, ports):
    # disc-alpha is only known from its backend's /v1/models (OpenAI
    # dialect), ollama-gamma from /api/tags (Ollama dialect).
    for model, backend in (("disc-alpha", "disc"), ("ollama-gamma", "disc2")):
        body = chat_body(model, max_tokens=2)
        r = gw.post("/v1/chat/completions", body)
        assert r.status == 200, (model, r.body)
        assert r.header("X-Mock-Backend") == backend, (model, r.headers)
        doc = r.json()
        assert doc["model"] == model
        assert doc["choices"][0]["message"]["content"] == \
            env.mock_text(model, body["messages"], 2), doc
    tags = [m["name"] for m in gw.get("/api/tags").json()["models"]]
    assert tags == EXPECTED_IDS
    without_disc = [m for m in EXPECTED_IDS if not m.startswith("disc-")]
    # A backend that stops answering leaves the configured names listed,
    # and what it said last (in each child that heard it).
    mocks["disc"].stop()
    try:
        time.sleep(1.2)         # interval=1: the next listing fetches again
        ids = [m["id"] for m in gw.get("/v1/models").json()["data"]]
        assert ids in (EXPECTED_IDS, without_disc), ids
        # Back with other models: every child's list is older than the
        # interval, so whichever answers fetches the new one.
        other = env.MockBackend(env.mockllm_path(), workdir, "disc-other", ports["disc"],
                                ["--models", "disc-beta,disc-delta"]).start()
        try:
            time.sleep(1.2)
            for path, key, field in (("/v1/models", "data", "id"),
                                     ("/api/tags", "models", "name")):
                listed = [m[field] for m in gw.get(path).json()[key]]
                assert listed == CONFIGURED + ["disc-beta", "disc-delta", "ollama-gamma"], \
                    (path, listed)
        finally:
            other.stop()
    finally:
        mocks["disc"].start()
    time.sleep(1.2)
    assert [m["id"] for m in gw.get("/v1/models").json()["data"]] == EXPECTED_IDS


def listed_card(gw, name):
    """A model's entry as /v1/models lists it, with NAME as its id."""
    first = gw.get("/v1/models").json()["data"][0]
    return dict(first, id=name)


def test_get_model_by_alias(gw):
    r = gw.get("/v1/models/small")
    assert r.status == 200, r.body
    assert r.content_type == "application/json"
    assert r.json() == listed_card(gw, "small")
    assert set(r.json()) == {"id", "object", "created", "owned_by"}, r.json()
    assert r.json()["object"] == "model"


def test_get_model_by_glob(gw):
    r = gw.get("/v1/models/gpt-4o")
    assert r.status == 200, r.body
    assert r.content_type == "application/json"
    assert r.json() == listed_card(gw, "gpt-4o")


def test_get_unknown_model(gw):
    assert_openai_error(gw.get("/v1/models/nope"), 404, code="model_not_found")


def test_alias_uses_route_of_name(gw):
    mark = gw.log_mark()
    r = gw.post("/v1/chat/completions", chat_body("small", max_tokens=2))
    assert r.status == 200, r.body
    line = gw.wait_log_one(lambda l: l.model == "small", since=mark)
    assert line.route == "mock-small"
    assert line.upstream_model == "mock-small"


def test_glob_does_not_match_prefix_only(gw):
    # "gpt-*" needs the dash: "gpt4" must not be routed.
    assert_openai_error(gw.post("/v1/chat/completions", chat_body("gpt4")), 404,
                        code="model_not_found")


def test_exact_name_is_not_a_prefix(gw):
    assert_openai_error(gw.post("/v1/chat/completions", chat_body("mock-small-2")), 404,
                        code="model_not_found")


def assert_not_gateway(r):
    """httpd's own answer: an HTML page, not the gateway's JSON."""
    assert r.content_type == "text/html", (r.status, r.content_type, r.body[:200])
    assert not r.body.lstrip().startswith(b"{"), r.body[:200]


def test_plain_location_untouched(gw):
    r = gw.get("/plain/missing.html")
    assert r.status == 404
    assert_not_gateway(r)
    # Even an OpenAI-looking request is not handled outside LLMApi locations.
    r = gw.post("/plain/v1/chat/completions", chat_body())
    assert r.status == 404
    assert_not_gateway(r)


def test_llmapi_off_location_untouched(gw):
    r = gw.post("/v1/off/chat/completions", chat_body())
    assert r.status == 404
    assert_not_gateway(r)
    assert r.header("X-Mock-Backend") is None
