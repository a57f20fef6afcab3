# Fidelity on the OpenAI side (issue 13): what a client sends reaches the
# backend as JSON whatever it was labelled, and what a backend answers reaches
# the client whole and well-formed, or as an error that says so.
import json

import llmgw_env as env
from llmgw_env import chat_body, parse_sse

CHAT = "/v1/chat/completions"


def sent_by_gateway(mocks, r):
    """What the member that served R got from the gateway."""
    return mocks[r.headers.get("x-mock-backend")].last()


def test_mock_refuses_form_body_as_fastapi_does(mocks):
    # The emulated backend is as strict as a FastAPI server (vLLM): a body
    # labelled as form data is not read as JSON. Without this the tests
    # below could not fail.
    body = json.dumps(chat_body(max_tokens=2))
    c = env.curl(mocks["a"].port, "-d", body, CHAT)
    assert c.status == 400, c.body
    assert json.loads(c.body)["error"]["type"] == "invalid_request_error"
    assert env.curl(mocks["a"].port, "-H", "Content-Type: application/json",
                    "-d", body, CHAT).status == 200


def test_curl_d_without_content_type_openai(gw, mocks):
    body = json.dumps(chat_body(max_tokens=4))
    c = gw.curl("-d", body, CHAT)
    assert c.rc == 0, c.stderr
    assert c.status == 200, c.body
    doc = json.loads(c.body)
    assert doc["choices"][0]["message"]["content"] == \
        env.mock_text("mock-small", chat_body()["messages"], 4)
    sent = sent_by_gateway(mocks, c)
    assert sent["headers"]["Content-Type"] == "application/json"


def test_curl_d_without_content_type_ollama_api(gw, mocks):
    # The README's Ollama example: curl -d, streamed NDJSON by default,
    # translated to an OpenAI backend that reads JSON only.
    body = json.dumps({"model": "mock-small", "options": {"num_predict": 3},
                       "messages": chat_body()["messages"]})
    c = gw.curl("-d", body, "/api/chat")
    assert c.rc == 0, c.stderr
    assert c.status == 200, c.body
    lines = [json.loads(l) for l in c.body.splitlines() if l.strip()]
    assert lines[-1]["done"] is True, lines
    text = "".join(l["message"]["content"] for l in lines)
    assert text == env.mock_text("mock-small", chat_body()["messages"], 3)
    assert sent_by_gateway(mocks, c)["headers"]["Content-Type"] == "application/json"


def test_curl_d_without_content_type_ollama_dialect(gw, mocks):
    # To an Ollama backend too (Ollama reads any body, but says what it is).
    body = json.dumps({"model": "ollama-small", "stream": False,
                       "messages": chat_body()["messages"]})
    c = gw.curl("-d", body, "/api/chat")
    assert c.status == 200, c.body
    sent = sent_by_gateway(mocks, c)
    assert sent["path"] == "/api/chat"
    assert sent["headers"]["Content-Type"] == "application/json"
