# The notes the gateway leaves for mod_log_config, as seen in the access log:
# model, route, upstream model, stream flag, token counts, TTFT and error codes.
from llmgw_env import chat_body

CHAT = "/v1/chat/completions"


def assert_tokens(line, usage):
    assert (line.prompt_tokens, line.completion_tokens, line.total_tokens) == (
        str(usage["prompt_tokens"]), str(usage["completion_tokens"]),
        str(usage["total_tokens"])), line.raw


def logged_chat(gw, model, **kw):
    """A chat with MODEL that succeeds, and the access log line it left."""
    mark = gw.log_mark()
    r = gw.post(CHAT, chat_body(model, **kw))
    assert r.status == 200, r.body
    return r, gw.wait_log_one(lambda l: l.model == model, since=mark)


def test_log_plain_request(gw):
    r, line = logged_chat(gw, "mock-small", content="count my words please",
                          max_tokens=5)
    assert line.request.startswith("POST /v1/chat/completions ")
    assert line.status == "200"
    assert line.route == "mock-small"
    assert line.upstream_model == "mock-small"
    assert line.stream == "0"
    assert line.error == "-"
    assert_tokens(line, r.json()["usage"])


def test_log_large_response_tokens(gw, uniq):
    # ~40 KB of answer arrives in many pieces: usage is still read from
    # the end of the body.
    r, line = logged_chat(gw, f"gpt-large-{uniq}", max_tokens=5000)
    assert len(r.body) > 20000
    assert r.json()["usage"]["completion_tokens"] == 5000
    assert_tokens(line, r.json()["usage"])


def test_log_glob_route_and_rename(gw, uniq):
    r, line = logged_chat(gw, f"gpt-log-{uniq}", max_tokens=4)
    assert line.route == "gpt-*"
    assert line.upstream_model == "mock-large"
    assert_tokens(line, r.json()["usage"])


def test_log_stream_tokens_without_client_usage(gw, uniq):
    model = f"gpt-stream-{uniq}"
    body = chat_body(model, content="stream me some words", max_tokens=9)
    usage = gw.post(CHAT, body).json()["usage"]
    mark = gw.log_mark()
    s = gw.stream(CHAT, dict(body, stream=True))
    assert s.status == 200 and s.data()[-1] == "[DONE]"
    line = gw.wait_log_one(lambda l: l.model == model and l.stream == "1", since=mark)
    assert line.status == "200"
    # The client never saw usage, yet the gateway counted it.
    assert_tokens(line, usage)
    assert float(line.ttft_ms) >= 0, line.raw
    assert line.error == "-"


def test_log_stream_ttft_reflects_backend_delay(gw, uniq):
    model = f"gpt-ttft-{uniq}"
    mark = gw.log_mark()
    s = gw.stream(CHAT, chat_body(model, stream=True, max_tokens=3),
                  headers={"X-Mock-TTFT-Ms": "400"})
    assert s.status == 200
    line = gw.wait_log_one(lambda l: l.model == model, since=mark)
    assert 350 <= float(line.ttft_ms) < 5000, line.raw


def test_log_stream_with_client_usage(gw, uniq):
    model = f"gpt-usage-{uniq}"
    mark = gw.log_mark()
    s = gw.stream(CHAT, chat_body(model, stream=True, max_tokens=7,
                                  stream_options={"include_usage": True}))
    usage = [c for c in s.chunks() if c.get("choices") == []][0]["usage"]
    line = gw.wait_log_one(lambda l: l.model == model, since=mark)
    assert_tokens(line, usage)


def test_log_unknown_model_error(gw, uniq):
    model = f"nope-{uniq}"
    mark = gw.log_mark()
    assert gw.post(CHAT, chat_body(model)).status == 404
    line = gw.wait_log_one(lambda l: l.status == "404" and l.request.startswith("POST /v1/chat"),
                           since=mark)
    assert line.error == "model_not_found", line.raw


def test_log_invalid_json_error(gw):
    mark = gw.log_mark()
    assert gw.post(CHAT, b"{not json").status == 400
    line = gw.wait_log_one(lambda l: l.status == "400", since=mark)
    assert line.error == "invalid_json", line.raw
    assert line.model == "-"


def test_log_no_backend_error(gw):
    mark = gw.log_mark()
    assert gw.post(CHAT, chat_body("dead-model")).status == 503
    line = gw.wait_log_one(lambda l: l.model == "dead-model", since=mark)
    assert line.status == "503"
    assert line.route == "dead-model"
    assert line.error == "no_backend_available", line.raw


def test_log_models_listing_has_no_model(gw):
    mark = gw.log_mark()
    assert gw.get("/v1/models").status == 200
    line = gw.wait_log_one(lambda l: l.request.startswith("GET /v1/models "), since=mark)
    assert line.status == "200"
    assert line.model == "-" and line.total_tokens == "-", line.raw
    assert line.error == "-"
