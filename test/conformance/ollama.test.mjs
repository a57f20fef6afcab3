// Ollama's native API of the gateway (LLMApi ollama, /api) driven by the
// official `ollama` npm client exactly as user code would, once per backend
// dialect.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Ollama } from "ollama";

import {
  GATEWAY, MODELS, N_TOKENS, SEED, UNKNOWN_MODEL, WEATHER_ARGS, WEATHER_TOOL,
  assertClose, assertEmbedding, assertObject, mockLacksFault, rejection, userMessages,
} from "./lib.mjs";

const ollama = new Ollama({ host: GATEWAY });

/** The SDK's ResponseError (not exported by name: recognised by its shape). */
function assertResponseError(e, status) {
  assert.equal(e?.name, "ResponseError", `expected a ResponseError, got ${e?.constructor?.name}: ${e}`);
  assert.equal(e.status_code, status, `status_code ${e.status_code}, expected ${status}: ${e.message}`);
  assert.equal(typeof e.error, "string");
  assert.ok(e.message, "empty error message");
  // The message is the server's "error" string, not the SDK's fallback
  // ("Error 404: Not Found") for bodies it could not read.
  assert.doesNotMatch(e.message, /^Error \d{3}:/);
}

/** Everything a streamed chat or generate sent, put together. */
async function collect(stream, field) {
  const parts = [];
  for await (const part of stream) parts.push(part);
  assert.ok(parts.length > 0, "empty stream");
  const last = parts.at(-1);
  for (const p of parts.slice(0, -1)) assert.equal(p.done, false, `done before the end: ${JSON.stringify(p)}`);
  assert.equal(last.done, true, `last part not done: ${JSON.stringify(last)}`);
  const text = parts.map((p) => (field === "message" ? p.message?.content : p.response) ?? "").join("");
  const toolCalls = parts.flatMap((p) => p.message?.tool_calls ?? []);
  return { parts, last, text, toolCalls };
}

test("list() lists both routes' models", async () => {
  const r = await ollama.list();
  assert.ok(Array.isArray(r.models), `no models array: ${JSON.stringify(r)}`);
  const names = r.models.map((m) => m.name);
  for (const { model } of MODELS) {
    assert.ok(names.includes(model), `${model} not in ${JSON.stringify(names)}`);
  }
  for (const m of r.models) {
    assert.equal(m.model, m.name);
    assert.equal(typeof m.modified_at, "string");
  }
});

test("version() and ps()", async () => {
  const v = await ollama.version();
  assert.equal(typeof v.version, "string");
  assert.match(v.version, /^\d+\.\d+\.\d+/);
  await ollama.chat({ model: "ollama-small", options: { num_predict: 1 }, messages: userMessages("load") });
  const ps = await ollama.ps();
  assert.ok(Array.isArray(ps.models));
  // What the Ollama backends have loaded, under the gateway's names.
  const small = ps.models.find((m) => m.name === "ollama-small");
  assert.ok(small, `ollama-small not in ${JSON.stringify(ps.models.map((m) => m.name))}`);
  assert.ok(small.size > 0 && small.digest && small.expires_at, JSON.stringify(small));
});

test("list() has the Ollama backends' sizes and digests", async () => {
  const r = await ollama.list();
  const small = r.models.find((m) => m.name === "ollama-small");
  assert.ok(small.size > 0 && small.digest, JSON.stringify(small));
  assert.equal(small.details.family, "mock");
});

test("pull, push, create, copy, delete: ResponseError 501, model files are not managed", async () => {
  for (const call of [
    () => ollama.pull({ model: "mock-small" }),
    () => ollama.push({ model: "mock-small" }),
    () => ollama.create({ model: "mine", from: "mock-small" }),
    () => ollama.copy({ source: "mock-small", destination: "mine" }),
    () => ollama.delete({ model: "mock-small" }),
  ]) {
    const e = await rejection(call());
    assertResponseError(e, 501);
    assert.match(e.message, /does not manage model files/);
  }
});

test("unknown model: ResponseError 404 naming the model", async () => {
  const e = await rejection(ollama.chat({ model: UNKNOWN_MODEL, messages: userMessages("hello") }));
  assertResponseError(e, 404);
  assert.match(e.message, new RegExp(UNKNOWN_MODEL));
});

test("unknown model, streamed: ResponseError 404 before any part", async () => {
  const e = await rejection(ollama.chat({
    model: UNKNOWN_MODEL, messages: userMessages("hello"), stream: true,
  }));
  assertResponseError(e, 404);
});

test("unknown model: generate, embed and show answer 404 too", async () => {
  assertResponseError(await rejection(ollama.generate({ model: UNKNOWN_MODEL, prompt: "hi" })), 404);
  assertResponseError(await rejection(ollama.embed({ model: UNKNOWN_MODEL, input: "hi" })), 404);
  assertResponseError(await rejection(ollama.show({ model: UNKNOWN_MODEL })), 404);
});

for (const { model, dialect, upstream } of MODELS) {
  describe(`ollama SDK -> ${model} (dialect=${dialect})`, () => {
    const options = { num_predict: N_TOKENS, seed: SEED };

    test("show()", async () => {
      const r = await ollama.show({ model });
      assertObject(r, "show");
      assert.ok(Array.isArray(r.capabilities), `no capabilities: ${JSON.stringify(r)}`);
      assert.ok(r.capabilities.includes("completion"));
      if (dialect === "ollama") {
        // The backend's own card: what it says of the upstream model.
        assert.ok(r.capabilities.includes("tools"), `capabilities ${r.capabilities}`);
        assert.equal(r.details.family, "mock");
        assert.ok(r.template && r.parameters, `no template or parameters: ${JSON.stringify(r)}`);
      }
    });

    test("chat", async () => {
      const r = await ollama.chat({
        model, options, messages: userMessages("say hello to the conformance suite"),
      });
      assert.equal(r.done, true);
      assert.equal(r.done_reason, "length");
      assert.equal(r.message.role, "assistant");
      assert.equal(typeof r.message.content, "string");
      assert.ok(r.message.content.trim(), "empty content");
      assert.equal(r.eval_count, N_TOKENS);
      assert.ok(r.prompt_eval_count > 0);
      assert.equal(typeof r.created_at, "string");
      assert.ok(!Number.isNaN(Date.parse(r.created_at)), `created_at ${r.created_at}`);
    });

    test("streamed chat: the pieces make the non-streamed content", async () => {
      const req = { model, options, messages: userMessages("stream to the conformance suite") };
      const plain = await ollama.chat(req);
      const s = await collect(await ollama.chat({ ...req, stream: true }), "message");
      assert.ok(s.parts.length > N_TOKENS, `only ${s.parts.length} parts`);
      assert.equal(s.text, plain.message.content);
      assert.equal(s.last.done_reason, "length");
      assert.equal(s.last.eval_count, N_TOKENS);
    });

    test("generate, plain and streamed", async () => {
      const req = { model, options, prompt: "complete this conformance prompt" };
      const r = await ollama.generate(req);
      assert.equal(r.done, true);
      assert.equal(r.done_reason, "length");
      assert.equal(typeof r.response, "string");
      assert.ok(r.response.trim(), "empty response");
      assert.equal(r.eval_count, N_TOKENS);
      const s = await collect(await ollama.generate({ ...req, stream: true }), "response");
      assert.equal(s.text, r.response);
      assert.equal(s.last.done_reason, "length");
    });

    test("embed, and the legacy embeddings()", async () => {
      const r = await ollama.embed({ model, input: ["conformance one", "conformance two"] });
      assert.ok(Array.isArray(r.embeddings) && r.embeddings.length === 2,
                `embeddings: ${JSON.stringify(r).slice(0, 300)}`);
      assertEmbedding(r.embeddings[0], "embeddings[0]");
      assertEmbedding(r.embeddings[1], "embeddings[1]");
      assert.notDeepEqual(r.embeddings[0], r.embeddings[1]);
      const one = await ollama.embed({ model, input: "conformance one" });
      assert.equal(one.embeddings.length, 1);
      assertClose(one.embeddings[0], r.embeddings[0], "single input");
      const legacy = await ollama.embeddings({ model, prompt: "conformance one" });
      assertEmbedding(legacy.embedding, "embedding");
      assertClose(legacy.embedding, r.embeddings[0], "legacy embeddings");
    });

    test("tool call: tool_calls[0].function.name and object arguments", async () => {
      const req = {
        model, options: { seed: SEED }, tools: [WEATHER_TOOL],
        messages: userMessages("What is the weather in Paris today?"),
      };
      const r = await ollama.chat(req);
      assert.equal(r.done, true);
      const calls = r.message.tool_calls;
      assert.ok(Array.isArray(calls) && calls.length >= 1, `no tool_calls: ${JSON.stringify(r.message)}`);
      assert.equal(calls[0].function.name, "get_weather");
      assertObject(calls[0].function.arguments, "arguments");
      assert.deepEqual(calls[0].function.arguments, WEATHER_ARGS);
      assert.equal(r.eval_count, 3);

      const s = await collect(await ollama.chat({ ...req, stream: true }), "message");
      assert.ok(s.toolCalls.length >= 1, `no tool_calls in the stream: ${JSON.stringify(s.parts)}`);
      assert.equal(s.toolCalls[0].function.name, "get_weather");
      assert.deepEqual(s.toolCalls[0].function.arguments, calls[0].function.arguments);
    });

    test("tool call round trip: the tool's result back, a text answer", async () => {
      const messages = userMessages("What is the weather in Paris today?");
      const first = await ollama.chat({ model, options: { seed: SEED }, tools: [WEATHER_TOOL], messages });
      assert.ok(first.message.tool_calls?.length, `no tool call: ${JSON.stringify(first.message)}`);
      const r = await ollama.chat({
        model, options, tools: [WEATHER_TOOL],
        messages: [
          ...messages,
          first.message,
          { role: "tool", tool_name: "get_weather", content: JSON.stringify({ sky: "clear", celsius: 21 }) },
        ],
      });
      assert.equal(r.done_reason, "length");
      assert.ok(!r.message.tool_calls?.length, `another tool call: ${JSON.stringify(r.message)}`);
      assert.ok(r.message.content.trim(), "empty content");
    });

    test("JSON mode: format \"json\" gives parseable content", async () => {
      const req = {
        model, options: { seed: SEED }, format: "json",
        messages: userMessages("Answer in JSON: what is a gateway?"),
      };
      const r = await ollama.chat(req);
      let doc;
      assert.doesNotThrow(() => { doc = JSON.parse(r.message.content); },
                          `not JSON: ${r.message.content}`);
      assertObject(doc, "content");
      assert.equal(typeof doc.answer, "string", `no "answer" string in ${r.message.content}`);

      const s = await collect(await ollama.chat({ ...req, stream: true }), "message");
      assert.equal(s.text, r.message.content);

      const g = await ollama.generate({ model, format: "json", options: { seed: SEED },
                                        prompt: "Answer in JSON: what is a gateway?" });
      assertObject(JSON.parse(g.response), "generate response");
    });

    test("structured output: format as a JSON schema gives parseable content", async () => {
      const r = await ollama.chat({
        model, options,
        format: {
          type: "object", required: ["answer"],
          properties: { answer: { type: "string" } },
        },
        messages: userMessages("Answer with the schema: what is a gateway?"),
      });
      const doc = JSON.parse(r.message.content);
      assertObject(doc, "content");
      assert.equal(typeof doc.answer, "string");
      assert.equal(doc.answer.split(" ").length, N_TOKENS);
    });

    test("the answer's model is the backend's (docs: LLMUpstreamModel)", async () => {
      const messages = userMessages("which model answers?");
      assert.equal((await ollama.chat({ model, options, messages })).model, upstream, "chat");
      const s = await collect(await ollama.chat({ model, options, messages, stream: true }), "message");
      assert.deepEqual([...new Set(s.parts.map((p) => p.model))], [upstream], "streamed chat");
      assert.equal((await ollama.generate({ model, options, prompt: "which model?" })).model, upstream,
                   "generate");
    });

    test("client leaves mid-stream: the next request is served", async () => {
      const slow = new Ollama({ host: GATEWAY, headers: { "X-Mock-TPS": "50" } });
      const stream = await slow.chat({
        model, options: { num_predict: 64 }, stream: true,
        messages: userMessages("a long answer to walk away from"),
      });
      let seen = 0;
      for await (const part of stream) {
        if (part.message?.content && ++seen === 2) {
          stream.abort();
          break;
        }
      }
      assert.equal(seen, 2);
      const r = await ollama.chat({ model, options, messages: userMessages("still there?") });
      assert.ok(r.message.content);
    });

    test("chat without messages loads the model; keep_alive 0 unloads it", async () => {
      const r = await ollama.chat({ model, messages: [] });
      assert.equal(r.done, true);
      assert.equal(r.done_reason, "load");
      assert.deepEqual(r.message, { role: "assistant", content: "" });
      const u = await ollama.chat({ model, messages: [], keep_alive: 0 });
      assert.equal(u.done_reason, "unload");
    });

    test("generate without prompt loads the model", async () => {
      const r = await ollama.generate({ model, prompt: "" });
      assert.equal(r.done, true);
      assert.equal(r.done_reason, "load");
      assert.equal(r.response, "");
    });

    test("durations in nanoseconds, created_at to the sub-second", async () => {
      const slow = new Ollama({ host: GATEWAY, headers: { "X-Mock-TTFT-Ms": "20", "X-Mock-TPS": "200" } });
      const r = await slow.chat({ model, options, messages: userMessages("time this answer") });
      // 20 ms to the first token, then 8 tokens at 200/s: the answer is
      // whole 60 ms after the request at the earliest.
      assert.ok(r.total_duration >= 60e6, `total_duration ${r.total_duration}`);
      assert.ok(r.eval_duration > 0, `eval_duration ${r.eval_duration}`);
      assert.ok(r.total_duration < 60e9, `total_duration ${r.total_duration}`);
      const s = await collect(await slow.chat({ model, options, stream: true,
                                                messages: userMessages("time this stream") }), "message");
      // Only what cannot be otherwise: no token before the 20 ms, the last
      // not before 20 + 7 * 5 ms (how the rest is split depends on when the
      // gateway's thread ran, on a busy machine).
      const { prompt_eval_duration: pe, eval_duration: ev, total_duration: total } = s.last;
      assert.ok(pe >= 20e6, `prompt_eval_duration ${pe}`);
      assert.ok(ev >= 0 && total >= 55e6 && total >= pe + ev, `durations ${pe} ${ev} ${total}`);
      const stamps = s.parts.map((p) => p.created_at);
      assert.ok(stamps.some((t) => /\.\d+Z$/.test(t)), `no fraction in ${stamps}`);
    });

    test("backend cuts the stream: the SDK throws the gateway's error line", async () => {
      const cut = new Ollama({ host: GATEWAY, headers: { "X-Mock-Fault": "cut" } });
      const stream = await cut.chat({ model, options, messages: userMessages("cut me off"), stream: true });
      let text = "";
      const e = await rejection((async () => {
        for await (const part of stream) text += part.message?.content ?? "";
      })());
      assert.ok(e instanceof Error, `expected an Error, got ${e}`);
      // Not the SDK's own complaint about a stream that just stopped.
      assert.doesNotMatch(e.message, /Did not receive done/);
      assert.ok(e.message, "empty error message");
      assert.ok(text.length > 0, "no content before the cut");
    });

    test("backend 500: ResponseError 500 with the backend's message", async () => {
      const failing = new Ollama({ host: GATEWAY, headers: { "X-Mock-Fault": "500" } });
      const e = await rejection(failing.chat({ model, options, messages: userMessages("fail me") }));
      assertResponseError(e, 500);
      assert.match(e.message, /mock internal error/);
    });

    test("backend drops the connection: ResponseError 502", async () => {
      // Twice, each after a good request on the same (kept-alive) connection,
      // as an application's client does.
      const dropping = new Ollama({ host: GATEWAY, headers: { "X-Mock-Fault": "reset" } });
      for (let round = 0; round < 2; round++) {
        await ollama.chat({ model, options, messages: userMessages(`before drop ${round}`) });
        const e = await rejection(dropping.chat({ model, options, messages: userMessages(`drop ${round}`) }));
        assert.equal(e?.name, "ResponseError",
                     `round ${round}: expected a ResponseError, got ${e?.constructor?.name}: ${e} (${e?.cause ?? ""})`);
        assertResponseError(e, 502);
      }
    });

    test("backend 429: ResponseError 429", async (t) => {
      const limited = new Ollama({ host: GATEWAY, headers: { "X-Mock-Fault": "429" } });
      const e = await rejection(limited.chat({ model, options, messages: userMessages("rate limit me") }));
      if (e?.status_code === 400 && mockLacksFault(e.message)) {
        t.skip(`the mock cannot produce a 429 (X-Mock-Fault: 429 -> 400 "${e.message}")`);
        return;
      }
      assertResponseError(e, 429);
    });
  });
}

test("both dialects give the same answers to the same requests", async () => {
  const [a, b] = MODELS.map((m) => m.model);
  const chat = (model, extra = {}) => ollama.chat({
    model, options: { num_predict: N_TOKENS, seed: SEED },
    messages: userMessages("one request, two dialects"), ...extra,
  });
  assert.equal((await chat(b)).message.content, (await chat(a)).message.content, "chat");
  assert.equal((await chat(b, { format: "json" })).message.content,
               (await chat(a, { format: "json" })).message.content, "JSON mode");
  const tools = { tools: [WEATHER_TOOL], messages: userMessages("weather in Paris?") };
  const names = async (model) => (await chat(model, tools)).message.tool_calls
    ?.map((c) => [c.function.name, c.function.arguments]);
  assert.deepEqual(await names(b), await names(a), "tool call");
  const gen = (model) => ollama.generate({
    model, options: { num_predict: N_TOKENS, seed: SEED }, prompt: "one prompt, two dialects",
  });
  assert.equal((await gen(b)).response, (await gen(a)).response, "generate");
  const emb = (model) => ollama.embed({ model, input: ["one input", "two dialects"] });
  const [ea, eb] = [await emb(a), await emb(b)];
  for (let i = 0; i < 2; i++) assertClose(eb.embeddings[i], ea.embeddings[i], `embedding ${i}`);
});
