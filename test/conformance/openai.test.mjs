// The OpenAI API of the gateway (LLMApi openai, /v1) driven by the official
// `openai` npm client exactly as user code would, once per backend dialect.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI, {
  APIError, BadRequestError, InternalServerError, NotFoundError, RateLimitError,
} from "openai";

import {
  GATEWAY, MODELS, N_TOKENS, SEED, TIMEOUT_MS, UNKNOWN_MODEL, WEATHER_ARGS, WEATHER_TOOL,
  assertClose, assertEmbedding, assertObject, mockLacksFault, rejection, userMessages,
} from "./lib.mjs";

// No retries: a retried request would hide the status the gateway answered.
const client = new OpenAI({
  baseURL: `${GATEWAY}/v1`,
  apiKey: "conformance-unused",
  maxRetries: 0,
  timeout: TIMEOUT_MS,
});

/** A streamed chat completion put together: text, finish_reason, usage, ids, models. */
async function collectChat(stream) {
  let text = "", finish = null, usage = null, chunks = 0;
  const ids = new Set(), models = new Set();
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, "chat.completion.chunk");
    ids.add(chunk.id);
    models.add(chunk.model);
    for (const choice of chunk.choices) {
      text += choice.delta?.content ?? "";
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  return { text, finish, usage, chunks, ids: [...ids], models: [...models] };
}

/** An OpenAI id: the object's prefix, once, then the id proper. */
function assertId(id, prefix) {
  assert.equal(typeof id, "string");
  assert.match(id, new RegExp(`^${prefix}-(?!${prefix}-)\\S+$`), `id ${JSON.stringify(id)}`);
}

test("models.list() lists both routes' models", async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, "model");
    ids.push(m.id);
  }
  for (const { model } of MODELS) {
    assert.ok(ids.includes(model), `${model} not in ${JSON.stringify(ids)}`);
  }
});

test("unknown model: NotFoundError (404, model_not_found)", async () => {
  const e = await rejection(client.chat.completions.create({
    model: UNKNOWN_MODEL, messages: userMessages("hello"),
  }));
  assert.ok(e instanceof NotFoundError, `expected NotFoundError, got ${e?.constructor?.name}: ${e}`);
  assert.equal(e.status, 404);
  assert.equal(e.code, "model_not_found");
  assert.equal(e.param, "model");
  assert.match(e.message, new RegExp(UNKNOWN_MODEL));
});

test("unknown model, streamed: NotFoundError before any chunk", async () => {
  const e = await rejection(client.chat.completions.create({
    model: UNKNOWN_MODEL, messages: userMessages("hello"), stream: true,
  }));
  assert.ok(e instanceof NotFoundError, `expected NotFoundError, got ${e?.constructor?.name}: ${e}`);
  assert.equal(e.status, 404);
});

test("models.retrieve() of an unknown model: NotFoundError", async () => {
  const e = await rejection(client.models.retrieve(UNKNOWN_MODEL));
  assert.ok(e instanceof NotFoundError, `expected NotFoundError, got ${e?.constructor?.name}: ${e}`);
  assert.equal(e.status, 404);
});

for (const { model, dialect, upstream } of MODELS) {
  describe(`openai SDK -> ${model} (dialect=${dialect})`, () => {
    const base = { model, max_tokens: N_TOKENS, seed: SEED };

    test("models.retrieve()", async () => {
      const m = await client.models.retrieve(model);
      assert.equal(m.id, model);
      assert.equal(m.object, "model");
    });

    test("chat", async () => {
      const r = await client.chat.completions.create({
        ...base, messages: userMessages("say hello to the conformance suite"),
      });
      assert.equal(r.object, "chat.completion");
      assert.equal(typeof r.id, "string");
      assert.equal(typeof r.model, "string");
      assert.equal(r.choices.length, 1);
      const c = r.choices[0];
      assert.equal(c.index, 0);
      assert.equal(c.message.role, "assistant");
      assert.equal(typeof c.message.content, "string");
      assert.ok(c.message.content.trim(), "empty content");
      assert.equal(c.finish_reason, "length");
      assert.equal(r.usage.completion_tokens, N_TOKENS);
      assert.ok(r.usage.prompt_tokens > 0);
      assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    });

    test("streamed chat: the pieces make the non-streamed content", async () => {
      const req = { ...base, messages: userMessages("stream to the conformance suite") };
      const plain = await client.chat.completions.create(req);
      const s = await collectChat(await client.chat.completions.create({ ...req, stream: true }));
      assert.ok(s.chunks >= N_TOKENS, `only ${s.chunks} chunks`);
      assert.equal(s.text, plain.choices[0].message.content);
      assert.equal(s.finish, "length");
      assert.equal(s.usage, null, "usage chunk sent without stream_options.include_usage");
      assert.equal(s.ids.length, 1, `chunk ids ${JSON.stringify(s.ids)}`);
    });

    test("streamed chat with include_usage: a usage chunk", async () => {
      const s = await collectChat(await client.chat.completions.create({
        ...base, messages: userMessages("count the conformance tokens"),
        stream: true, stream_options: { include_usage: true },
      }));
      assert.ok(s.usage, "no usage chunk");
      assert.equal(s.usage.completion_tokens, N_TOKENS);
      assert.ok(s.usage.prompt_tokens > 0);
    });

    test("chat.completions.stream() helper: finalChatCompletion()", async () => {
      const req = { ...base, messages: userMessages("use the stream helper") };
      const plain = await client.chat.completions.create(req);
      const final = await client.chat.completions.stream(req).finalChatCompletion();
      assert.equal(final.choices[0].message.content, plain.choices[0].message.content);
      assert.equal(final.choices[0].finish_reason, "length");
    });

    test("completions", async () => {
      const req = { ...base, prompt: "complete this conformance prompt" };
      const r = await client.completions.create(req);
      assert.equal(r.object, "text_completion");
      assert.equal(r.choices.length, 1);
      assert.equal(typeof r.choices[0].text, "string");
      assert.ok(r.choices[0].text.trim(), "empty text");
      assert.equal(r.choices[0].finish_reason, "length");
      assert.equal(r.usage.completion_tokens, N_TOKENS);

      let text = "", finish = null;
      for await (const chunk of await client.completions.create({ ...req, stream: true })) {
        for (const c of chunk.choices) {
          text += c.text ?? "";
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
      assert.equal(text, r.choices[0].text);
      assert.equal(finish, "length");
    });

    test("embeddings: the SDK's default base64 decodes to the float answer", async () => {
      const input = ["conformance one", "conformance two"];
      // No encoding_format: the SDK asks for base64 and decodes it.
      const b64 = await client.embeddings.create({ model, input });
      assert.equal(b64.object, "list");
      assert.equal(b64.data.length, 2);
      const asFloat = await client.embeddings.create({ model, input, encoding_format: "float" });
      assert.equal(asFloat.data.length, 2);
      for (let i = 0; i < 2; i++) {
        assert.equal(b64.data[i].index, i);
        assertEmbedding(b64.data[i].embedding, `base64 data[${i}]`);
        assertEmbedding(asFloat.data[i].embedding, `float data[${i}]`);
        assertClose(b64.data[i].embedding, asFloat.data[i].embedding, `data[${i}]`);
      }
      assert.notDeepEqual(b64.data[0].embedding, b64.data[1].embedding);
      assert.ok(b64.usage.prompt_tokens > 0);
    });

    test("embeddings: a single string input", async () => {
      const r = await client.embeddings.create({ model, input: "conformance one" });
      assert.equal(r.data.length, 1);
      assertEmbedding(r.data[0].embedding, "data[0]");
    });

    test("tool call: tool_calls[0].function.name and JSON arguments", async () => {
      const req = {
        model, seed: SEED, tools: [WEATHER_TOOL],
        messages: userMessages("What is the weather in Paris today?"),
      };
      const r = await client.chat.completions.create(req);
      const c = r.choices[0];
      assert.equal(c.finish_reason, "tool_calls", `no tool call: ${JSON.stringify(c)}`);
      assert.ok(Array.isArray(c.message.tool_calls) && c.message.tool_calls.length >= 1,
                `no tool_calls: ${JSON.stringify(c.message)}`);
      const call = c.message.tool_calls[0];
      assert.equal(call.type, "function");
      assert.equal(typeof call.id, "string");
      assert.ok(call.id, "empty tool call id");
      assert.equal(call.function.name, "get_weather");
      assert.equal(typeof call.function.arguments, "string");
      assertObject(JSON.parse(call.function.arguments), "arguments");
      assert.deepEqual(JSON.parse(call.function.arguments), WEATHER_ARGS);
      assert.equal(r.usage.completion_tokens, 3);

      // The same call, streamed and put together by the SDK's helper.
      const final = await client.chat.completions.stream(req).finalChatCompletion();
      const fc = final.choices[0];
      assert.equal(fc.finish_reason, "tool_calls");
      assert.equal(fc.message.tool_calls[0].function.name, "get_weather");
      assert.deepEqual(JSON.parse(fc.message.tool_calls[0].function.arguments),
                       JSON.parse(call.function.arguments));
    });

    test("tool call round trip: the tool's result back, a text answer", async () => {
      const messages = userMessages("What is the weather in Paris today?");
      const first = await client.chat.completions.create({
        model, seed: SEED, tools: [WEATHER_TOOL], messages,
      });
      const call = first.choices[0].message.tool_calls?.[0];
      assert.ok(call, `no tool call: ${JSON.stringify(first.choices[0])}`);
      const r = await client.chat.completions.create({
        ...base, tools: [WEATHER_TOOL],
        messages: [
          ...messages,
          first.choices[0].message,
          { role: "tool", tool_call_id: call.id, content: JSON.stringify({ sky: "clear", celsius: 21 }) },
        ],
      });
      const c = r.choices[0];
      assert.equal(c.finish_reason, "length");
      assert.ok(!c.message.tool_calls?.length, `another tool call: ${JSON.stringify(c.message)}`);
      assert.ok(c.message.content?.trim(), "empty content");
    });

    test("JSON mode: response_format json_object gives parseable content", async () => {
      const req = {
        ...base, max_tokens: undefined, response_format: { type: "json_object" },
        messages: userMessages("Answer in JSON: what is a gateway?"),
      };
      const r = await client.chat.completions.create(req);
      const content = r.choices[0].message.content;
      let doc;
      assert.doesNotThrow(() => { doc = JSON.parse(content); }, `not JSON: ${content}`);
      assertObject(doc, "content");
      assert.equal(typeof doc.answer, "string", `no "answer" string in ${content}`);

      const s = await collectChat(await client.chat.completions.create({ ...req, stream: true }));
      assert.equal(s.text, content);
    });

    test("structured output: response_format json_schema gives parseable content", async () => {
      const r = await client.chat.completions.create({
        ...base,
        response_format: {
          type: "json_schema",
          json_schema: {
            name: "answer", strict: true,
            schema: {
              type: "object", additionalProperties: false, required: ["answer"],
              properties: { answer: { type: "string" } },
            },
          },
        },
        messages: userMessages("Answer with the schema: what is a gateway?"),
      });
      const doc = JSON.parse(r.choices[0].message.content);
      assertObject(doc, "content");
      assert.equal(typeof doc.answer, "string");
      assert.equal(doc.answer.split(" ").length, N_TOKENS);
    });

    test("ids: chatcmpl- / cmpl- once, one id per stream", async () => {
      const messages = userMessages("which id is this?");
      assertId((await client.chat.completions.create({ ...base, messages })).id, "chatcmpl");
      const s = await collectChat(await client.chat.completions.create({ ...base, messages, stream: true }));
      assert.equal(s.ids.length, 1, `chunk ids ${JSON.stringify(s.ids)}`);
      assertId(s.ids[0], "chatcmpl");
      assertId((await client.completions.create({ ...base, prompt: "which id is this?" })).id, "cmpl");
    });

    test("the answer's model is the backend's (docs: LLMUpstreamModel)", async () => {
      const messages = userMessages("which model answers?");
      const r = await client.chat.completions.create({ ...base, messages });
      assert.equal(r.model, upstream, "chat");
      const s = await collectChat(await client.chat.completions.create({ ...base, messages, stream: true }));
      assert.deepEqual(s.models, [upstream], "streamed chat");
      const c = await client.completions.create({ ...base, prompt: "which model answers?" });
      assert.equal(c.model, upstream, "completions");
    });

    test("client leaves mid-stream: the next request is served", async () => {
      const stream = await client.chat.completions.create(
        { ...base, max_tokens: 64, messages: userMessages("a long answer to walk away from"), stream: true },
        { headers: { "X-Mock-TPS": "50" } },
      );
      let seen = 0;
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta?.content && ++seen === 2) break;   // aborts the request
      }
      assert.equal(seen, 2);
      const r = await client.chat.completions.create({ ...base, messages: userMessages("still there?") });
      assert.ok(r.choices[0].message.content);
    });

    test("chat without messages: BadRequestError (400)", async () => {
      const e = await rejection(client.chat.completions.create({ model }));
      assert.ok(e instanceof BadRequestError, `expected BadRequestError, got ${e?.constructor?.name}: ${e}`);
      assert.equal(e.status, 400);
      assert.equal(e.param, "messages");
      assert.equal(e.code, "missing_required_parameter");
      assert.ok(e.message);
    });

    test("backend cuts the stream: the SDK throws an APIError, no silent end", async () => {
      const stream = await client.chat.completions.create(
        { ...base, messages: userMessages("cut me off"), stream: true },
        { headers: { "X-Mock-Fault": "cut" } },
      );
      let text = "";
      const e = await rejection((async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
      })());
      assert.ok(e instanceof APIError, `expected APIError, got ${e?.constructor?.name}: ${e}`);
      assert.ok(e.message, "empty error message");
      assert.ok(text.length > 0, "no content before the cut");
    });

    test("backend ends the stream after its finish without [DONE]: all of it, no error", async () => {
      const req = { ...base, messages: userMessages("never says done") };
      const plain = await client.chat.completions.create(req);
      const stream = await client.chat.completions.create(
        { ...req, stream: true, stream_options: { include_usage: true } },
        { headers: { "X-Mock-Fault": "nodone" } },
      );
      let text = "", usage = null, finish = null;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta?.content ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
        usage = chunk.usage ?? usage;
      }
      assert.equal(text, plain.choices[0].message.content);
      assert.equal(finish, plain.choices[0].finish_reason);
      assert.equal(usage?.completion_tokens, plain.usage.completion_tokens);
    });

    test("backend 200 with JSON cut short: InternalServerError 502, not a SyntaxError", async () => {
      const e = await rejection(client.chat.completions.create(
        { ...base, messages: userMessages("half an answer") },
        { headers: { "X-Mock-Fault": "badjson" } },
      ));
      assert.ok(e instanceof InternalServerError, `expected InternalServerError, got ${e?.constructor?.name}: ${e}`);
      assert.equal(e.status, 502);
      assert.equal(e.code, "upstream_error");
    });

    test("backend 500: InternalServerError with the backend's message", async () => {
      const e = await rejection(client.chat.completions.create(
        { ...base, messages: userMessages("fail me") },
        { headers: { "X-Mock-Fault": "500" } },
      ));
      assert.ok(e instanceof InternalServerError, `expected InternalServerError, got ${e?.constructor?.name}: ${e}`);
      assert.equal(e.status, 500);
      assert.match(e.message, /mock internal error/);
    });

    test("backend drops the connection: InternalServerError 502 upstream_error", async () => {
      // Twice, each after a good request on the same (kept-alive) connection,
      // as an application's client does.
      for (let round = 0; round < 2; round++) {
        await client.chat.completions.create({ ...base, messages: userMessages(`before drop ${round}`) });
        const e = await rejection(client.chat.completions.create(
          { ...base, messages: userMessages(`drop ${round}`) },
          { headers: { "X-Mock-Fault": "reset" } },
        ));
        assert.ok(e instanceof InternalServerError,
                  `round ${round}: expected InternalServerError, got ${e?.constructor?.name}: ${e}`);
        assert.equal(e.status, 502, `round ${round}`);
        assert.equal(e.code, "upstream_error", `round ${round}`);
      }
    });

    test("backend 429: RateLimitError", async (t) => {
      const e = await rejection(client.chat.completions.create(
        { ...base, messages: userMessages("rate limit me") },
        { headers: { "X-Mock-Fault": "429" } },
      ));
      if (e instanceof BadRequestError && mockLacksFault(e.message)) {
        t.skip(`the mock cannot produce a 429 (X-Mock-Fault: 429 -> 400 "${e.message}")`);
        return;
      }
      assert.ok(e instanceof RateLimitError, `expected RateLimitError, got ${e?.constructor?.name}: ${e}`);
      assert.equal(e.status, 429);
      assert.ok(e.message);
    });
  });
}

test("both dialects give the same answers to the same requests", async () => {
  const [a, b] = MODELS.map((m) => m.model);
  const chat = (model, extra = {}) => client.chat.completions.create({
    model, max_tokens: N_TOKENS, seed: SEED, messages: userMessages("one request, two dialects"), ...extra,
  });
  assert.equal((await chat(b)).choices[0].message.content, (await chat(a)).choices[0].message.content, "chat");
  const json = { response_format: { type: "json_object" } };
  assert.equal((await chat(b, json)).choices[0].message.content,
               (await chat(a, json)).choices[0].message.content, "JSON mode");
  const tools = { tools: [WEATHER_TOOL], messages: userMessages("weather in Paris?") };
  assert.deepEqual((await chat(b, tools)).choices[0].message.tool_calls,
                   (await chat(a, tools)).choices[0].message.tool_calls, "tool call");
  const cmpl = (model) => client.completions.create({
    model, max_tokens: N_TOKENS, seed: SEED, prompt: "one prompt, two dialects",
  });
  assert.equal((await cmpl(b)).choices[0].text, (await cmpl(a)).choices[0].text, "completions");
  const emb = (model) => client.embeddings.create({ model, input: ["one input", "two dialects"] });
  const [ea, eb] = [await emb(a), await emb(b)];
  for (let i = 0; i < 2; i++) assertClose(eb.data[i].embedding, ea.data[i].embedding, `embedding ${i}`);
});
