/* test_probe.c: the probe readers on answers shaped as the real servers
 * send them (each sample names where it comes from), on every prefix of
 * those answers, and on garbage, wrong types and oversized input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include "llmgw_probe.h"
#include "llmgw_prom.h"
#include "test_core.h"

/* ollama/ollama docs/api.md, "List Running Models" (GET /api/ps). */
static const char ollama_ps[] =
    "{\n"
    "  \"models\": [\n"
    "    {\n"
    "      \"name\": \"mistral:latest\",\n"
    "      \"model\": \"mistral:latest\",\n"
    "      \"size\": 5137025024,\n"
    "      \"digest\": \"2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0"
    "aa7ae4490e6d8\",\n"
    "      \"details\": {\n"
    "        \"parent_model\": \"\",\n"
    "        \"format\": \"gguf\",\n"
    "        \"family\": \"llama\",\n"
    "        \"families\": [\n"
    "          \"llama\"\n"
    "        ],\n"
    "        \"parameter_size\": \"7.2B\",\n"
    "        \"quantization_level\": \"Q4_0\"\n"
    "      },\n"
    "      \"expires_at\": \"2024-06-04T14:38:31.83753-07:00\",\n"
    "      \"size_vram\": 5137025024\n"
    "    }\n"
    "  ]\n"
    "}";

/* ollama/ollama docs/api.md, "List Local Models" (GET /api/tags). */
static const char ollama_tags[] =
    "{\n"
    "  \"models\": [\n"
    "    {\n"
    "      \"name\": \"deepseek-r1:latest\",\n"
    "      \"model\": \"deepseek-r1:latest\",\n"
    "      \"modified_at\": \"2025-05-10T08:06:48.639712648-07:00\",\n"
    "      \"size\": 4683075271,\n"
    "      \"digest\": \"0a8c266910232fd3291e71e5ba1e058cc5af9d411192cf88b6d"
    "30e92b6e73163\",\n"
    "      \"details\": {\n"
    "        \"parent_model\": \"\",\n"
    "        \"format\": \"gguf\",\n"
    "        \"family\": \"qwen2\",\n"
    "        \"families\": [\n"
    "          \"qwen2\"\n"
    "        ],\n"
    "        \"parameter_size\": \"7.6B\",\n"
    "        \"quantization_level\": \"Q4_K_M\"\n"
    "      }\n"
    "    },\n"
    "    {\n"
    "      \"name\": \"llama3.2:latest\",\n"
    "      \"model\": \"llama3.2:latest\",\n"
    "      \"modified_at\": \"2025-05-04T17:37:44.706015396-07:00\",\n"
    "      \"size\": 2019393189,\n"
    "      \"digest\": \"a80c4f17acd5dc6b8e9ad5e4c2f1b0a9\",\n"
    "      \"details\": {\n"
    "        \"format\": \"gguf\",\n"
    "        \"family\": \"llama\",\n"
    "        \"families\": null,\n"
    "        \"parameter_size\": \"3.2B\",\n"
    "        \"quantization_level\": \"Q4_K_M\"\n"
    "      }\n"
    "    }\n"
    "  ]\n"
    "}";

/* ggml-org/llama.cpp tools/server/README.md, "GET /slots", the example
 * with 2 slots (params shortened to a few of their members). */
static const char llamacpp_slots[] =
    "[\n"
    "  {\n"
    "    \"id\": 0,\n"
    "    \"id_task\": 135,\n"
    "    \"n_ctx\": 65536,\n"
    "    \"speculative\": false,\n"
    "    \"is_processing\": true,\n"
    "    \"params\": {\n"
    "      \"n_predict\": -1,\n"
    "      \"seed\": 4294967295,\n"
    "      \"temperature\": 0.800000011920929,\n"
    "      \"samplers\": [\"penalties\", \"dry\", \"top_k\"],\n"
    "      \"speculative.n_max\": 16,\n"
    "      \"lora\": []\n"
    "    },\n"
    "    \"next_token\": {\n"
    "      \"has_next_token\": true,\n"
    "      \"has_new_line\": false,\n"
    "      \"n_remain\": -1,\n"
    "      \"n_decoded\": 0\n"
    "    }\n"
    "  },\n"
    "  {\n"
    "    \"id\": 1,\n"
    "    \"id_task\": 0,\n"
    "    \"n_ctx\": 65536,\n"
    "    \"speculative\": false,\n"
    "    \"is_processing\": false,\n"
    "    \"params\": {\n"
    "      \"n_predict\": -1,\n"
    "      \"lora\": []\n"
    "    },\n"
    "    \"next_token\": {\n"
    "      \"has_next_token\": true,\n"
    "      \"has_new_line\": true,\n"
    "      \"n_remain\": -1,\n"
    "      \"n_decoded\": 136\n"
    "    }\n"
    "  }\n"
    "]";

/* llama.cpp examples/server/server.cpp of early 2024: each slot had
 * "state" 0 (idle) or 1 (processing) and "task_id" (trimmed). */
static const char llamacpp_slots_2024[] =
    "[{\"n_ctx\":2048,\"model\":\"models/7B/ggml-model.gguf\",\"id\":0,"
    "\"task_id\":-1,\"state\":0,\"prompt\":\"\",\"next_token\":{"
    "\"has_next_token\":true,\"n_remain\":-1,\"num_tokens_predicted\":0,"
    "\"stopped_eos\":false,\"stopped_word\":false,\"stopped_limit\":false,"
    "\"stopping_word\":\"\"}},"
    "{\"n_ctx\":2048,\"id\":1,\"task_id\":7,\"state\":1,\"prompt\":\"x\"},"
    "{\"n_ctx\":2048,\"id\":2,\"task_id\":9,\"state\":1,\"prompt\":\"y\"}]";

/* llama.cpp of mid 2024 (after PR 9283): "is_processing" and "state"
 * with the stages of a task (4: generating). */
static const char llamacpp_slots_both[] =
    "[{\"id\":0,\"id_task\":3,\"is_processing\":true,\"state\":4},"
    "{\"id\":1,\"id_task\":-1,\"is_processing\":false,\"state\":0}]";

/* vLLM V1 (vllm/v1/metrics/loggers.py: labels model_name and engine),
 * prometheus_client text with HELP/TYPE lines, a histogram, a counter
 * with an extra label and Python's own metrics; engine 1 for data
 * parallelism, and the deprecated gpu_cache_usage_perc beside the new
 * kv_cache_usage_perc. */
static const char vllm_v1[] =
    "# HELP python_gc_objects_collected_total Objects collected during gc\n"
    "# TYPE python_gc_objects_collected_total counter\n"
    "python_gc_objects_collected_total{generation=\"0\"} 12345.0\n"
    "python_info{implementation=\"CPython\",major=\"3\",minor=\"12\","
    "patchlevel=\"3\",version=\"3.12.3\"} 1.0\n"
    "# HELP vllm:num_requests_running Number of requests in model "
    "execution batches.\n"
    "# TYPE vllm:num_requests_running gauge\n"
    "vllm:num_requests_running{engine=\"0\",model_name=\"Qwen/Qwen3-0.6B\"}"
    " 3.0\n"
    "vllm:num_requests_running{engine=\"1\",model_name=\"Qwen/Qwen3-0.6B\"}"
    " 2.0\n"
    "# HELP vllm:num_requests_waiting Number of requests waiting to be "
    "processed.\n"
    "# TYPE vllm:num_requests_waiting gauge\n"
    "vllm:num_requests_waiting{engine=\"0\",model_name=\"Qwen/Qwen3-0.6B\"}"
    " 1.0\n"
    "vllm:num_requests_waiting{engine=\"1\",model_name=\"Qwen/Qwen3-0.6B\"}"
    " 0.0\n"
    "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 "
    "percent usage.DEPRECATED: Use vllm:kv_cache_usage_perc instead.\n"
    "# TYPE vllm:gpu_cache_usage_perc gauge\n"
    "vllm:gpu_cache_usage_perc{engine=\"0\",model_name=\"Qwen/Qwen3-0.6B\"}"
    " 0.9\n"
    "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent "
    "usage.\n"
    "# TYPE vllm:kv_cache_usage_perc gauge\n"
    "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"Qwen/Qwen3-0.6B\"}"
    " 0.25\n"
    "vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"Qwen/Qwen3-0.6B\"}"
    " 0.5\n"
    "# HELP vllm:request_success_total Count of successfully processed "
    "requests.\n"
    "# TYPE vllm:request_success_total counter\n"
    "vllm:request_success_total{engine=\"0\",finished_reason=\"stop\","
    "model_name=\"Qwen/Qwen3-0.6B\"} 42.0\n"
    "# TYPE vllm:time_to_first_token_seconds histogram\n"
    "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.001\","
    "model_name=\"Qwen/Qwen3-0.6B\"} 0.0\n"
    "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"+Inf\","
    "model_name=\"Qwen/Qwen3-0.6B\"} 42.0\n"
    "vllm:time_to_first_token_seconds_sum{engine=\"0\","
    "model_name=\"Qwen/Qwen3-0.6B\"} 1.5e+00\n";

/* vLLM V0 0.6 (a /metrics capture in the public llm_benchmarking
 * notes): model_name only, a path as the name, gpu_cache_usage_perc. */
static const char vllm_v0[] =
    "# HELP vllm:num_requests_running Number of requests currently running "
    "on GPU.\n"
    "# TYPE vllm:num_requests_running gauge\n"
    "vllm:num_requests_running{model_name=\"/gpfs/scratch/models/llama/"
    "llama-2-7b\"} 0.0\n"
    "# HELP vllm:num_requests_swapped Number of requests swapped to CPU.\n"
    "# TYPE vllm:num_requests_swapped gauge\n"
    "vllm:num_requests_swapped{model_name=\"/gpfs/scratch/models/llama/"
    "llama-2-7b\"} 0.0\n"
    "# HELP vllm:num_requests_waiting Number of requests waiting to be "
    "processed.\n"
    "# TYPE vllm:num_requests_waiting gauge\n"
    "vllm:num_requests_waiting{model_name=\"/gpfs/scratch/models/llama/"
    "llama-2-7b\"} 7.0\n"
    "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 "
    "percent usage.\n"
    "# TYPE vllm:gpu_cache_usage_perc gauge\n"
    "vllm:gpu_cache_usage_perc{model_name=\"/gpfs/scratch/models/llama/"
    "llama-2-7b\"} 0.0625\n";

/* vLLM's /v1/models (vllm/entrypoints/openai/protocol.py ModelCard). */
static const char vllm_models[] =
    "{\"object\":\"list\",\"data\":[{\"id\":\"Qwen/Qwen3-0.6B\","
    "\"object\":\"model\",\"created\":1735142223,\"owned_by\":\"vllm\","
    "\"root\":\"Qwen/Qwen3-0.6B\",\"parent\":null,\"max_model_len\":40960,"
    "\"permission\":[{\"id\":\"modelperm-1\",\"object\":\"model_permission\","
    "\"allow_sampling\":true}]}]}";

/* ggml-org/llama.cpp tools/server/README.md: /v1/models of one model,
 * and the router's /models with a status per model. */
static const char llamacpp_models[] =
    "{\n"
    "    \"object\": \"list\",\n"
    "    \"data\": [\n"
    "        {\n"
    "            \"id\": \"../models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf\","
    "\n"
    "            \"object\": \"model\",\n"
    "            \"created\": 1735142223,\n"
    "            \"owned_by\": \"llamacpp\",\n"
    "            \"meta\": {\n"
    "                \"vocab_type\": 2,\n"
    "                \"n_vocab\": 128256,\n"
    "                \"n_ctx_train\": 131072,\n"
    "                \"n_embd\": 4096,\n"
    "                \"n_params\": 8030261312,\n"
    "                \"size\": 4912898304\n"
    "            }\n"
    "        }\n"
    "    ]\n"
    "}";

static const char llamacpp_router[] =
    "{\"data\":[{\"id\":\"ggml-org/gemma-3-4b-it-GGUF:Q4_K_M\","
    "\"path\":\"/cache/gemma.gguf\",\"status\":{\"value\":\"loaded\","
    "\"args\":[\"llama-server\",\"-ctx\",\"4096\"]}},"
    "{\"id\":\"a\",\"status\":{\"value\":\"loading\",\"args\":[]}},"
    "{\"id\":\"b\",\"status\":{\"value\":\"unloaded\",\"failed\":true,"
    "\"exit_code\":1}},"
    "{\"id\":\"c\",\"status\":{\"value\":\"sleeping\"}}]}";

static llmgw_probe_t *parse(llmgw_probe_kind_t kind, int status,
                            const char *body)
{
    return llmgw_probe_parse(test_pool, kind, status, body, strlen(body));
}

static const llmgw_probe_model_t *model(const llmgw_probe_t *r, int i)
{
    ck_assert_int_lt(i, r->models->nelts);
    return &APR_ARRAY_IDX(r->models, i, llmgw_probe_model_t);
}

static void refused(const llmgw_probe_t *r)
{
    ck_assert_int_eq(r->ok, 0);
    ck_assert_int_eq(r->state, LLMGW_HS_DOWN);
    ck_assert_uint_eq(r->knows, 0);
    ck_assert_int_eq(r->models->nelts, 0);
    ck_assert_ptr_nonnull(r->why);
}

/* r is a good answer of a ready backend that tells what knows says. */
static void ready_knowing(const llmgw_probe_t *r, unsigned knows)
{
    ck_assert_int_eq(r->ok, 1);
    ck_assert_int_eq(r->state, LLMGW_HS_READY);
    ck_assert_uint_eq(r->knows, knows);
}

START_TEST(ollama_ps_and_tags)
{
    llmgw_probe_t *r = parse(LLMGW_PROBE_OLLAMA_PS, 200, ollama_ps);
    apr_time_t want;

    ready_knowing(r, LLMGW_PK_STATE | LLMGW_PK_LOADED);
    ck_assert_int_eq(r->models->nelts, 1);
    ck_assert_str_eq(model(r, 0)->name, "mistral:latest");
    ck_assert_uint_eq(model(r, 0)->flags, LLMGW_PM_LOADED);
    ck_assert_int_eq(model(r, 0)->size, 5137025024LL);
    ck_assert_int_eq(model(r, 0)->size_vram, 5137025024LL);
    /* 2024-06-04T21:38:31.837530Z */
    want = apr_time_from_sec(1717537111) + 837530;
    ck_assert_int_eq(model(r, 0)->expires_at, want);

    r = parse(LLMGW_PROBE_OLLAMA_TAGS, 200, ollama_tags);
    ck_assert_int_eq(r->ok, 1);
    ck_assert_uint_eq(r->knows, LLMGW_PK_STATE | LLMGW_PK_AVAILABLE);
    ck_assert_int_eq(r->models->nelts, 2);
    ck_assert_str_eq(model(r, 1)->name, "llama3.2:latest");
    ck_assert_uint_eq(model(r, 1)->flags, LLMGW_PM_AVAILABLE);
    ck_assert_int_eq(model(r, 1)->size, 2019393189LL);
    ck_assert_int_eq(model(r, 1)->size_vram, -1);

    r = parse(LLMGW_PROBE_OLLAMA_PS, 200, "{\"models\":[]}");
    ck_assert_int_eq(r->ok, 1);
    ck_assert_int_eq(r->models->nelts, 0);
}
END_TEST

START_TEST(ollama_refuses_what_does_not_read)
{
    static const char *const bad[] = {
        "",
        "null",
        "[]",
        "{}",
        "{\"models\":{}}",
        "{\"models\":[1]}",
        "{\"models\":[{}]}",
        "{\"models\":[{\"name\":\"\"}]}",
        "{\"models\":[{\"name\":7}]}",
        "{\"models\":[{\"name\":\"a\",\"size\":-1}]}",
        "{\"models\":[{\"name\":\"a\",\"size\":\"5\"}]}",
        "{\"models\":[{\"name\":\"a\",\"size\":1.5}]}",
        "{\"models\":[{\"name\":\"a\",\"size_vram\":true}]}",
        "{\"models\":[{\"name\":\"a\",\"expires_at\":5}]}",
        "{\"models\":[{\"name\":\"a\",\"expires_at\":\"tomorrow\"}]}",
        "{\"models\":[{\"name\":\"a\"}],}",
        "{\"models\":[{\"name\":\"a\"}]} x",
        "{'models':[]}",
        "<html>502 Bad Gateway</html>",
    };
    apr_size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        refused(parse(LLMGW_PROBE_OLLAMA_PS, 200, bad[i]));
        refused(parse(LLMGW_PROBE_OLLAMA_TAGS, 200, bad[i]));
    }
    /* "model" stands in for a missing "name". */
    ck_assert_int_eq(
        parse(LLMGW_PROBE_OLLAMA_PS, 200, "{\"models\":[{\"model\":\"m\"}]}")
            ->ok,
        1);
    refused(parse(LLMGW_PROBE_OLLAMA_PS, 500, "{\"error\":\"boom\"}"));
    refused(parse(LLMGW_PROBE_OLLAMA_PS, 404, "404 page not found"));
    ck_assert_int_eq(parse(LLMGW_PROBE_OLLAMA_PS, 429, "")->state,
                     LLMGW_HS_BUSY);
}
END_TEST

START_TEST(llamacpp_health_states)
{
    llmgw_probe_t *r;

    /* tools/server/README.md: 200 {"status": "ok" }, 503 loading. */
    r = parse(LLMGW_PROBE_LLAMACPP_HEALTH, 200, "{\"status\": \"ok\" }");
    ready_knowing(r, LLMGW_PK_STATE);
    r = parse(LLMGW_PROBE_LLAMACPP_HEALTH, 503,
              "{\"error\": {\"code\": 503, \"message\": \"Loading model\", "
              "\"type\": \"unavailable_error\"}}");
    ck_assert_int_eq(r->ok, 1);
    ck_assert_int_eq(r->state, LLMGW_HS_LOADING);
    /* The server of early 2024. */
    r = parse(LLMGW_PROBE_LLAMACPP_HEALTH, 503,
              "{\"status\": \"loading model\"}");
    ck_assert_int_eq(r->state, LLMGW_HS_LOADING);
    r = parse(LLMGW_PROBE_LLAMACPP_HEALTH, 200,
              "{\"status\":\"ok\",\"slots_idle\":3,\"slots_processing\":1}");
    ck_assert_uint_eq(r->knows, LLMGW_PK_STATE | LLMGW_PK_SLOTS);
    ck_assert_int_eq(r->slots_total, 4);
    ck_assert_int_eq(r->slots_busy, 1);
    r = parse(LLMGW_PROBE_LLAMACPP_HEALTH, 503,
              "{\"status\":\"no slot available\",\"slots_idle\":0,"
              "\"slots_processing\":2}");
    ck_assert_int_eq(r->state, LLMGW_HS_BUSY);
    r = parse(LLMGW_PROBE_LLAMACPP_HEALTH, 500, "{\"status\":\"error\"}");
    refused(r);
    refused(parse(LLMGW_PROBE_LLAMACPP_HEALTH, 503,
                  "{\"error\":{\"code\":503,\"message\":\"overloaded\"}}"));
    refused(parse(LLMGW_PROBE_LLAMACPP_HEALTH, 503, "Service Unavailable"));
    refused(parse(LLMGW_PROBE_LLAMACPP_HEALTH, 200, ""));
    refused(parse(LLMGW_PROBE_LLAMACPP_HEALTH, 200, "{\"status\":\"OK!\"}"));
    refused(parse(LLMGW_PROBE_LLAMACPP_HEALTH, 200,
                  "{\"status\":\"ok\",\"slots_idle\":1}"));
    refused(parse(LLMGW_PROBE_LLAMACPP_HEALTH, 200,
                  "{\"status\":\"ok\",\"slots_idle\":-1,"
                  "\"slots_processing\":1}"));
    r = llmgw_probe_unreachable(test_pool, LLMGW_PROBE_LLAMACPP_HEALTH,
                                "connection refused");
    refused(r);
    ck_assert_str_eq(r->why, "connection refused");
    refused(parse(LLMGW_PROBE_LLAMACPP_HEALTH, 0, "{\"status\":\"ok\"}"));
}
END_TEST

START_TEST(llamacpp_slots_over_versions)
{
    llmgw_probe_t *r = parse(LLMGW_PROBE_LLAMACPP_SLOTS, 200, llamacpp_slots);

    ready_knowing(r, LLMGW_PK_STATE | LLMGW_PK_SLOTS);
    ck_assert_int_eq(r->slots_total, 2);
    ck_assert_int_eq(r->slots_busy, 1);

    r = parse(LLMGW_PROBE_LLAMACPP_SLOTS, 200, llamacpp_slots_2024);
    ck_assert_int_eq(r->slots_total, 3);
    ck_assert_int_eq(r->slots_busy, 2);
    r = parse(LLMGW_PROBE_LLAMACPP_SLOTS, 200, llamacpp_slots_both);
    ck_assert_int_eq(r->slots_total, 2);
    ck_assert_int_eq(r->slots_busy, 1);

    r = parse(LLMGW_PROBE_LLAMACPP_SLOTS, 200,
              "[{\"id\":0,\"is_processing\":true}]");
    ck_assert_int_eq(r->state, LLMGW_HS_BUSY);
    /* Loading: llama.cpp answers 503 on every endpoint. */
    r = parse(LLMGW_PROBE_LLAMACPP_SLOTS, 503,
              "{\"error\":{\"code\":503,\"message\":\"Loading model\","
              "\"type\":\"unavailable_error\"}}");
    ck_assert_int_eq(r->state, LLMGW_HS_LOADING);
    /* --no-slots (README, "When /metrics or /slots endpoint is
     * disabled"): up, slots unknown. */
    r = parse(LLMGW_PROBE_LLAMACPP_SLOTS, 501,
              "{\"error\":{\"code\":501,\"message\":\"This server does not "
              "support slots endpoint.\",\"type\":\"not_supported_error\"}}");
    ready_knowing(r, LLMGW_PK_STATE);
    ck_assert_int_eq(r->slots_total, -1);

    refused(parse(LLMGW_PROBE_LLAMACPP_SLOTS, 200, "[]"));
    refused(parse(LLMGW_PROBE_LLAMACPP_SLOTS, 200, "{}"));
    refused(parse(LLMGW_PROBE_LLAMACPP_SLOTS, 200, "[{\"id\":0}]"));
    refused(parse(LLMGW_PROBE_LLAMACPP_SLOTS, 200,
                  "[{\"id\":0,\"is_processing\":1}]"));
    refused(
        parse(LLMGW_PROBE_LLAMACPP_SLOTS, 200, "[{\"id\":0,\"state\":-1}]"));
    refused(parse(LLMGW_PROBE_LLAMACPP_SLOTS, 200,
                  "[{\"id\":0,\"state\":\"idle\"}]"));
    refused(parse(LLMGW_PROBE_LLAMACPP_SLOTS, 200, "[0]"));
}
END_TEST

START_TEST(too_many_slots_refused)
{
    char *body = malloc(LLMGW_PROBE_MAX_SLOTS * 24 + 64);
    apr_size_t n = 0;
    int i;

    body[n++] = '[';
    for (i = 0; i <= LLMGW_PROBE_MAX_SLOTS; i++) {
        n += (apr_size_t)sprintf(body + n, "%s{\"state\":0}", i ? "," : "");
    }
    body[n++] = ']';
    refused(llmgw_probe_parse(test_pool, LLMGW_PROBE_LLAMACPP_SLOTS, 200, body,
                              n));
    free(body);
}
END_TEST

START_TEST(vllm_metrics_v1_and_v0)
{
    llmgw_probe_t *r = parse(LLMGW_PROBE_VLLM_METRICS, 200, vllm_v1);

    ck_assert_int_eq(r->ok, 1);
    ck_assert_uint_eq(r->knows, LLMGW_PK_STATE | LLMGW_PK_QUEUE | LLMGW_PK_KV
                                    | LLMGW_PK_LOADED);
    ck_assert_int_eq(r->running, 5); /* both engines */
    ck_assert_int_eq(r->waiting, 1);
    ck_assert_double_eq_tol(r->kv_usage, 0.5, 1e-9); /* new name wins */
    ck_assert_int_eq(r->models->nelts, 1);
    ck_assert_str_eq(model(r, 0)->name, "Qwen/Qwen3-0.6B");
    ck_assert_uint_eq(model(r, 0)->flags, LLMGW_PM_LOADED);
    ck_assert_int_eq(model(r, 0)->running, 5);
    ck_assert_int_eq(model(r, 0)->waiting, 1);

    r = parse(LLMGW_PROBE_VLLM_METRICS, 200, vllm_v0);
    ck_assert_int_eq(r->ok, 1);
    ck_assert_int_eq(r->running, 0);
    ck_assert_int_eq(r->waiting, 7);
    ck_assert_double_eq_tol(r->kv_usage, 0.0625, 1e-9);
    ck_assert_str_eq(model(r, 0)->name,
                     "/gpfs/scratch/models/llama/llama-2-7b");

    /* Two models (the mock serves several), one without labels. */
    r = parse(LLMGW_PROBE_VLLM_METRICS, 200,
              "vllm:num_requests_running{model_name=\"a\"} 1\n"
              "vllm:num_requests_running{model_name=\"b\"} 2\r\n"
              "vllm:num_requests_waiting 4 1700000000000\n"
              "  \t\n");
    ck_assert_int_eq(r->ok, 1);
    ck_assert_uint_eq(r->knows,
                      LLMGW_PK_STATE | LLMGW_PK_QUEUE | LLMGW_PK_LOADED);
    ck_assert_int_eq(r->running, 3);
    ck_assert_int_eq(r->waiting, 4);
    ck_assert_double_eq(r->kv_usage, -1.0);
    ck_assert_int_eq(r->models->nelts, 2);
    ck_assert_int_eq(model(r, 1)->running, 2);
    ck_assert_int_eq(model(r, 1)->waiting, -1);
}
END_TEST

START_TEST(vllm_metrics_refused)
{
    static const char *const bad[] = {
        "",
        "# only comments\n",
        "process_cpu_seconds_total 1.5\n", /* no vLLM gauges */
        "vllm:num_requests_running{model_name=\"a\"}\n",
        "vllm:num_requests_running{model_name=\"a\" 1\n",
        "vllm:num_requests_running{model_name=a} 1\n",
        "vllm:num_requests_running{model_name=\"a\\x\"} 1\n",
        "vllm:num_requests_running{model_name=\"a} 1\n",
        "vllm:num_requests_running{=\"a\"} 1\n",
        "vllm:num_requests_running{1a=\"a\"} 1\n",
        "vllm:num_requests_running 1 2 3\n",
        "vllm:num_requests_running 1 12x\n",
        "vllm:num_requests_running one\n",
        "vllm:num_requests_running -1\n",
        "vllm:num_requests_running NaN\n",
        "vllm:num_requests_running +Inf\n",
        "vllm:num_requests_running 1e300\n",
        "vllm:kv_cache_usage_perc 1.5\n",
        "vllm:gpu_cache_usage_perc -0.1\n",
        "1vllm 1\n",
        "vllm:num_requests_running{model_name=\"a\"} 1\ngarbage line\n",
        "vllm:num_requests_running 1e\n",
        "vllm:num_requests_running .\n",
    };
    apr_size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        llmgw_probe_t *r = parse(LLMGW_PROBE_VLLM_METRICS, 200, bad[i]);

        if (r->ok) {
            ck_abort_msg("accepted: %s", bad[i]);
        }
        refused(r);
    }
    /* A NUL inside a line is no Prometheus text (nor in a name). */
    refused(llmgw_probe_parse(test_pool, LLMGW_PROBE_VLLM_METRICS, 200,
                              "vllm:num_requests_running\0 1\n", 29));
    refused(llmgw_probe_parse(test_pool, LLMGW_PROBE_VLLM_METRICS, 200,
                              "vllm:num_requests_running{model_name=\"a\0b\"}"
                              " 1\n",
                              46));
    refused(parse(LLMGW_PROBE_VLLM_METRICS, 404, "Not Found"));
    /* Values as Go reads them; other metrics may be NaN or Inf. */
    ck_assert_int_eq(parse(LLMGW_PROBE_VLLM_METRICS, 200,
                           "x NaN\ny -Inf\nvllm:num_requests_waiting +2.5e0"
                           "\n")
                         ->waiting,
                     3);
}
END_TEST

/* Escapes in label values: \\, \" and \n, and a model name with them. */
START_TEST(prom_escapes_and_shapes)
{
    const char text[] =
        "# HELP m a \\ help text with \"quotes\"\n"
        "m{a=\"x\\\\y\",b=\"q\\\"r\",c=\"l1\\nl2\",} 1.5e-3 -12\n"
        "  m  {  a = \"\" }\t7\n"
        "m_total 0\n";
    const char *pos = text, *end = text + sizeof(text) - 1;
    llmgw_prom_sample_t s;
    llmgw_probe_t *r;

    ck_assert_int_eq(llmgw_prom_next(test_pool, &pos, end, &s), 1);
    ck_assert_uint_eq(s.name_len, 1);
    ck_assert_int_eq(s.nlabels, 3);
    ck_assert_uint_eq(s.label_value_len[0], 3);
    ck_assert_mem_eq(s.label_value[0], "x\\y", 3);
    ck_assert_mem_eq(s.label_value[1], "q\"r", 3);
    ck_assert_mem_eq(s.label_value[2], "l1\nl2", 5);
    ck_assert_double_eq_tol(s.value, 0.0015, 1e-12);
    ck_assert_int_eq(llmgw_prom_next(test_pool, &pos, end, &s), 1);
    ck_assert_int_eq(s.nlabels, 1);
    ck_assert_uint_eq(s.label_value_len[0], 0);
    ck_assert_double_eq(s.value, 7.0);
    ck_assert_int_eq(llmgw_prom_next(test_pool, &pos, end, &s), 1);
    ck_assert_uint_eq(s.name_len, 7);
    ck_assert_int_eq(llmgw_prom_next(test_pool, &pos, end, &s), 0);

    r = parse(LLMGW_PROBE_VLLM_METRICS, 200,
              "vllm:num_requests_running{model_name=\"we\\\"ird\\\\n\"} 2\n");
    ck_assert_int_eq(r->ok, 1);
    ck_assert_str_eq(model(r, 0)->name, "we\"ird\\n");
}
END_TEST

/* Many labels, many lines, huge input: bounded, and past the bounds
 * refused. */
START_TEST(prom_bounds)
{
    apr_size_t cap = LLMGW_PROBE_MAX_METRICS + 4096, n = 0;
    char *big = malloc(cap);
    char line[64 * 8 + 64];
    apr_size_t ln = 0;
    llmgw_probe_t *r;
    int i;

    /* 65 labels: one too many. */
    ln = (apr_size_t)sprintf(line, "m{");
    for (i = 0; i <= LLMGW_PROM_MAX_LABELS; i++) {
        ln += (apr_size_t)sprintf(line + ln, "l%d=\"v\",", i);
    }
    ln += (apr_size_t)sprintf(line + ln, "} 1\nvllm:num_requests_running 1\n");
    refused(
        llmgw_probe_parse(test_pool, LLMGW_PROBE_VLLM_METRICS, 200, line, ln));

    /* Just under the limit of other metrics, then one gauge: read. */
    while (n + 64 < LLMGW_PROBE_MAX_METRICS) {
        n += (apr_size_t)sprintf(big + n, "python_gc_objects{g=\"%zu\"} 1\n",
                                 n % 1000);
    }
    n += (apr_size_t)sprintf(big + n, "vllm:num_requests_waiting 2\n");
    ck_assert_uint_le(n, LLMGW_PROBE_MAX_METRICS);
    r = llmgw_probe_parse(test_pool, LLMGW_PROBE_VLLM_METRICS, 200, big, n);
    ck_assert_int_eq(r->ok, 1);
    ck_assert_int_eq(r->waiting, 2);
    /* One byte over. */
    memset(big, '\n', cap);
    refused(llmgw_probe_parse(test_pool, LLMGW_PROBE_VLLM_METRICS, 200, big,
                              LLMGW_PROBE_MAX_METRICS + 1));

    /* More models than kept: refused. */
    for (n = 0, i = 0; i <= LLMGW_PROBE_MAX_MODELS; i++) {
        n += (apr_size_t)sprintf(big + n,
                                 "vllm:num_requests_running{model_name="
                                 "\"m%d\"} 1\n",
                                 i);
    }
    refused(
        llmgw_probe_parse(test_pool, LLMGW_PROBE_VLLM_METRICS, 200, big, n));
    free(big);
}
END_TEST

START_TEST(openai_models_shapes)
{
    llmgw_probe_t *r = parse(LLMGW_PROBE_OPENAI_MODELS, 200, vllm_models);

    ck_assert_int_eq(r->ok, 1);
    ck_assert_uint_eq(r->knows, LLMGW_PK_STATE | LLMGW_PK_AVAILABLE);
    ck_assert_int_eq(r->models->nelts, 1);
    ck_assert_str_eq(model(r, 0)->name, "Qwen/Qwen3-0.6B");
    ck_assert_uint_eq(model(r, 0)->flags, LLMGW_PM_AVAILABLE);

    r = parse(LLMGW_PROBE_OPENAI_MODELS, 200, llamacpp_models);
    ck_assert_int_eq(r->ok, 1);
    ck_assert_str_eq(model(r, 0)->name,
                     "../models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf");

    r = parse(LLMGW_PROBE_OPENAI_MODELS, 200, llamacpp_router);
    ck_assert_int_eq(r->ok, 1);
    ck_assert_uint_eq(r->knows,
                      LLMGW_PK_STATE | LLMGW_PK_AVAILABLE | LLMGW_PK_LOADED);
    ck_assert_int_eq(r->models->nelts, 4);
    ck_assert_uint_eq(model(r, 0)->flags,
                      LLMGW_PM_AVAILABLE | LLMGW_PM_LOADED);
    ck_assert_uint_eq(model(r, 1)->flags,
                      LLMGW_PM_AVAILABLE | LLMGW_PM_LOADING);
    ck_assert_uint_eq(model(r, 2)->flags, LLMGW_PM_AVAILABLE);
    ck_assert_uint_eq(model(r, 3)->flags, LLMGW_PM_AVAILABLE);

    /* A status on some models only: what is loaded is not known. */
    r = parse(LLMGW_PROBE_OPENAI_MODELS, 200,
              "{\"data\":[{\"id\":\"a\",\"status\":{\"value\":\"loaded\"}},"
              "{\"id\":\"b\"}]}");
    ck_assert_uint_eq(r->knows, LLMGW_PK_STATE | LLMGW_PK_AVAILABLE);

    refused(parse(LLMGW_PROBE_OPENAI_MODELS, 200, "{\"data\":{}}"));
    refused(parse(LLMGW_PROBE_OPENAI_MODELS, 200, "{\"object\":\"list\"}"));
    refused(parse(LLMGW_PROBE_OPENAI_MODELS, 200, "{\"data\":[{}]}"));
    refused(
        parse(LLMGW_PROBE_OPENAI_MODELS, 200, "{\"data\":[{\"id\":null}]}"));
    refused(parse(LLMGW_PROBE_OPENAI_MODELS, 200,
                  "{\"data\":[{\"id\":\"a\",\"status\":\"loaded\"}]}"));
    refused(
        parse(LLMGW_PROBE_OPENAI_MODELS, 200,
              "{\"data\":[{\"id\":\"a\",\"status\":{\"value\":\"ok\"}}]}"));
    refused(parse(LLMGW_PROBE_OPENAI_MODELS, 401,
                  "{\"error\":{\"message\":\"Invalid API Key\"}}"));
}
END_TEST

/* Names: too long to keep is skipped and counted; too many models and
 * too large a body are refused. */
START_TEST(json_bounds)
{
    char *name = malloc(LLMGW_PROBE_MAX_NAME + 2);
    char *body;
    apr_size_t n, cap = LLMGW_PROBE_MAX_BODY + 64;
    llmgw_probe_t *r;
    int i;

    memset(name, 'x', LLMGW_PROBE_MAX_NAME + 1);
    name[LLMGW_PROBE_MAX_NAME + 1] = '\0';
    r = parse(LLMGW_PROBE_OLLAMA_TAGS, 200,
              apr_psprintf(test_pool,
                           "{\"models\":[{\"name\":\"%s\"},"
                           "{\"name\":\"ok\"}]}",
                           name));
    ck_assert_int_eq(r->ok, 1);
    ck_assert_int_eq(r->models->nelts, 1);
    ck_assert_uint_eq(r->models_skipped, 1);
    name[LLMGW_PROBE_MAX_NAME] = '\0'; /* exactly the bound */
    r = parse(LLMGW_PROBE_OPENAI_MODELS, 200,
              apr_psprintf(test_pool, "{\"data\":[{\"id\":\"%s\"}]}", name));
    ck_assert_int_eq(r->models->nelts, 1);
    ck_assert_uint_eq(r->models_skipped, 0);
    free(name);

    body = malloc(cap);
    n = (apr_size_t)sprintf(body, "{\"models\":[");
    for (i = 0; i <= LLMGW_PROBE_MAX_MODELS; i++) {
        n += (apr_size_t)sprintf(body + n, "%s{\"name\":\"m%d\"}",
                                 i ? "," : "", i);
    }
    n += (apr_size_t)sprintf(body + n, "]}");
    refused(
        llmgw_probe_parse(test_pool, LLMGW_PROBE_OLLAMA_TAGS, 200, body, n));
    /* Too large, even when it would read. */
    memset(body, ' ', cap);
    memcpy(body, "{\"models\":[]}", 13);
    refused(llmgw_probe_parse(test_pool, LLMGW_PROBE_OLLAMA_PS, 200, body,
                              LLMGW_PROBE_MAX_BODY + 1));
    ck_assert_int_eq(llmgw_probe_parse(test_pool, LLMGW_PROBE_OLLAMA_PS, 200,
                                       body, LLMGW_PROBE_MAX_BODY)
                         ->ok,
                     1);
    /* Deeper than the reader allows. */
    memset(body, '[', 1000);
    memset(body + 1000, ']', 1000);
    refused(llmgw_probe_parse(test_pool, LLMGW_PROBE_LLAMACPP_SLOTS, 200, body,
                              2000));
    free(body);
}
END_TEST

/* Every proper prefix of a real JSON answer is refused; of Prometheus
 * text it reads only when cut at a line's end. Nothing crashes (and
 * valgrind sees every byte read). */
START_TEST(truncated_answers)
{
    static const struct {
        llmgw_probe_kind_t kind;
        const char *body;
    } all[] = {
        { LLMGW_PROBE_OLLAMA_PS, ollama_ps },
        { LLMGW_PROBE_OLLAMA_TAGS, ollama_tags },
        { LLMGW_PROBE_LLAMACPP_SLOTS, llamacpp_slots },
        { LLMGW_PROBE_LLAMACPP_SLOTS, llamacpp_slots_2024 },
        { LLMGW_PROBE_OPENAI_MODELS, vllm_models },
        { LLMGW_PROBE_OPENAI_MODELS, llamacpp_router },
        { LLMGW_PROBE_LLAMACPP_HEALTH, "{\"status\": \"ok\" }" },
    };
    apr_size_t i, k, len;

    for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        len = strlen(all[i].body);
        for (k = 0; k < len; k++) {
            /* A copy of just k bytes: a read past them is a fault. */
            char *cut = malloc(k ? k : 1);
            llmgw_probe_t *r;

            memcpy(cut, all[i].body, k);
            r = llmgw_probe_parse(test_pool, all[i].kind, 200, cut, k);
            /* Only the trailing white space of a JSON text may go. */
            if (r->ok && strspn(all[i].body + k, " \n") != len - k) {
                ck_abort_msg("prefix %zu of sample %zu read", k, i);
            }
            free(cut);
        }
    }
    len = strlen(vllm_v1);
    for (k = 0; k < len; k++) {
        char *cut = malloc(k ? k : 1);
        llmgw_probe_t *r;

        memcpy(cut, vllm_v1, k);
        r = llmgw_probe_parse(test_pool, LLMGW_PROBE_VLLM_METRICS, 200, cut,
                              k);
        if (r->ok) {
            ck_assert_int_le(r->running, 5);
            ck_assert_int_le(r->waiting, 1);
        }
        free(cut);
    }
}
END_TEST

/* Random bytes and random mutations of real answers: never a crash. */
START_TEST(garbage_never_crashes)
{
    static const char *const seeds[] = {
        ollama_ps,
        llamacpp_slots,
        vllm_v1,
        llamacpp_router,
    };
    unsigned long rnd = 12345;
    char buf[4096];
    int round, kind;

    for (round = 0; round < 3000; round++) {
        const char *seed = seeds[round % 4];
        apr_size_t len = strlen(seed), i;

        if (len > sizeof(buf)) {
            len = sizeof(buf);
        }
        memcpy(buf, seed, len);
        for (i = 0; i < 1 + (apr_size_t)(round % 8); i++) {
            rnd = rnd * 6364136223846793005ul + 1442695040888963407ul;
            buf[(rnd >> 33) % len] = (char)(rnd >> 17);
        }
        for (kind = 0; kind < LLMGW_PROBE_KINDS; kind++) {
            llmgw_probe_t *r =
                llmgw_probe_parse(test_pool, (llmgw_probe_kind_t)kind,
                                  round % 3 ? 200 : 503, buf, len);

            ck_assert_ptr_nonnull(r);
            ck_assert(r->ok || r->state == LLMGW_HS_DOWN);
        }
    }
}
END_TEST

START_TEST(rfc3339)
{
    static const struct {
        const char *text;
        apr_time_t want;
    } good[] = {
        { "1970-01-01T00:00:00Z", 0 },
        { "2024-06-04T14:38:31.83753-07:00", APR_INT64_C(1717537111837530) },
        { "2025-05-10T08:06:48.639712648-07:00",
          APR_INT64_C(1746889608639712) },
        { "2000-02-29t23:59:60z", APR_INT64_C(951868799000000) },
        { "1969-12-31T23:59:59+00:00", APR_INT64_C(-1000000) },
        { "2024-01-01T05:30:00+05:30", APR_INT64_C(1704067200000000) },
        /* Go's zero time, as Ollama may send for a model still loading. */
        { "0001-01-01T00:00:00Z", APR_INT64_C(-62135596800000000) },
    };
    static const char *const bad[] = {
        "",
        "2024-06-04",
        "2024-06-04T14:38:31",
        "2024-06-04 14:38:31Z",
        "2024-13-04T14:38:31Z",
        "2023-02-29T00:00:00Z",
        "2024-06-31T00:00:00Z",
        "2024-06-04T24:00:00Z",
        "2024-06-04T14:60:00Z",
        "2024-06-04T14:38:61Z",
        "2024-06-04T14:38:31.Z",
        "2024-06-04T14:38:31+0700",
        "2024-06-04T14:38:31+24:00",
        "2024-06-04T14:38:31Zjunk",
        "0000-01-01T00:00:00Z",
        "2024-06-04T14:38:31.5",
        "+2024-06-04T14:38:31Z",
        "2024-6-04T14:38:31Z",
    };
    apr_size_t i;
    apr_time_t t;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ck_assert_int_eq(
            llmgw_probe_rfc3339(good[i].text, strlen(good[i].text), &t), 0);
        ck_assert_int_eq(t, good[i].want);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (llmgw_probe_rfc3339(bad[i], strlen(bad[i]), &t) == 0) {
            ck_abort_msg("accepted %s", bad[i]);
        }
    }
}
END_TEST

START_TEST(names_and_sets)
{
    llmgw_probe_kind_t k[LLMGW_PROBE_SET_MAX];

    ck_assert_int_eq(llmgw_probe_set("ollama", k), 2);
    ck_assert_str_eq(llmgw_probe_path(k[0]), "/api/ps");
    ck_assert_str_eq(llmgw_probe_path(k[1]), "/api/tags");
    ck_assert_int_eq(llmgw_probe_set("llamacpp", k), 2);
    ck_assert_str_eq(llmgw_probe_path(k[1]), "/slots");
    ck_assert_int_eq(llmgw_probe_set("vllm", k), 2);
    ck_assert_str_eq(llmgw_probe_path(k[0]), "/metrics");
    ck_assert_int_eq(llmgw_probe_set("openai", k), 1);
    ck_assert_str_eq(llmgw_probe_name(k[0]), "openai-models");
    ck_assert_int_eq(llmgw_probe_set("tgi", k), 0);
    ck_assert_ptr_null(llmgw_probe_path(LLMGW_PROBE_KINDS));
    ck_assert_str_eq(llmgw_hstate_name(LLMGW_HS_LOADING), "loading");
    ck_assert_str_eq(llmgw_hstate_name((llmgw_hstate_t)99), "unknown");
}
END_TEST

Suite *probe_suite(void)
{
    return test_suite(
        "probe", "core", 60,
        TESTS(ollama_ps_and_tags, ollama_refuses_what_does_not_read,
              llamacpp_health_states, llamacpp_slots_over_versions,
              too_many_slots_refused, vllm_metrics_v1_and_v0,
              vllm_metrics_refused, prom_escapes_and_shapes, prom_bounds,
              openai_models_shapes, json_bounds, truncated_answers,
              garbage_never_crashes, rfc3339, names_and_sets));
}
