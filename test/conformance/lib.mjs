// Shared settings of the conformance tests: where the gateway is, which
// models to drive, and the deterministic requests every case reuses.
import assert from "node:assert/strict";

const raw = process.env.LLMGW_URL;
if (!raw) {
  throw new Error("LLMGW_URL is not set: export LLMGW_URL=http://127.0.0.1:PORT " +
                  "(the gateway's base URL, without /v1)");
}
/** The gateway's base URL, e.g. http://127.0.0.1:8080 (no trailing slash). */
export const GATEWAY = raw.replace(/\/+$/, "");

/**
 * The models driven through both front APIs, one per backend dialect:
 * mock-small goes to the mocks' OpenAI API (dialect=openai), ollama-small to
 * their Ollama API (dialect=ollama, upstream name mock-small), llamacpp-small
 * to a llama.cpp-flavoured mock (dialect=llamacpp: timings, slots).
 */
export const MODELS = [
  { model: "mock-small", dialect: "openai", upstream: "mock-small" },
  { model: "ollama-small", dialect: "ollama", upstream: "mock-small" },
  { model: "llamacpp-small", dialect: "llamacpp", upstream: "mock-small" },
];

/** What the mock's canned tool call passes (see test/mockllm/README.md). */
export const WEATHER_ARGS = { city: "Paris" };

/** A model no route serves. */
export const UNKNOWN_MODEL = "no-such-model-conformance";

/** Per-request timeout for the clients, in ms. */
export const TIMEOUT_MS = 30000;

export const SEED = 42;
export const N_TOKENS = 8;

export function userMessages(text) {
  return [{ role: "user", content: text }];
}

/** The mock answers with a tool call when the last user message says "weather". */
export const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather for a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", description: "the city" } },
      required: ["city"],
    },
  },
};

/** The error a promise rejects with (fails when it resolves). */
export async function rejection(promise) {
  try {
    const value = await promise;
    assert.fail(`expected an error, got ${JSON.stringify(value).slice(0, 300)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    return e;
  }
}

/** A JSON object (not an array, not null). */
export function assertObject(v, what) {
  assert.equal(typeof v, "object", `${what}: expected an object, got ${JSON.stringify(v)}`);
  assert.ok(v !== null && !Array.isArray(v), `${what}: expected an object, got ${JSON.stringify(v)}`);
}

/** A unit-length vector of numbers in [-1, 1], as the mock's embeddings are. */
export function assertEmbedding(v, what) {
  assert.ok(Array.isArray(v), `${what}: expected an array, got ${typeof v}`);
  assert.ok(v.length > 0, `${what}: empty embedding`);
  for (const x of v) {
    assert.equal(typeof x, "number", `${what}: ${JSON.stringify(x)} is not a number`);
    assert.ok(Number.isFinite(x) && x >= -1 && x <= 1, `${what}: ${x} out of [-1, 1]`);
  }
  const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  assert.ok(Math.abs(norm - 1) < 1e-4, `${what}: norm ${norm}, expected 1`);
}

/** Two embeddings equal up to float32 rounding (base64 carries float32). */
export function assertClose(a, b, what) {
  assert.equal(a.length, b.length, `${what}: lengths ${a.length} != ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) < 1e-5, `${what}: [${i}] ${a[i]} != ${b[i]}`);
  }
}

/**
 * Whether a backend error says the mock does not know the fault it was asked
 * for (its old versions answer a malformed X-Mock-* header with a 400).
 */
export function mockLacksFault(message) {
  return /x-mock/i.test(String(message ?? ""));
}
