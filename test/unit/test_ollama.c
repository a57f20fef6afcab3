/* test_ollama.c: the Ollama dialect both ways: bodies, answers and errors
 * each way, and both stream translators fed at every byte boundary. */
#include <stdlib.h>
#include <string.h>

#include <apr_base64.h>
#include <apr_strings.h>

#include "llmgw_buf.h"
#include "llmgw_cache.h"
#include "llmgw_ollama.h"
#include "llmgw_stream.h"
#include "test_core.h"

/* Fixtures: bodies and streams as the servers send them, and what the
 * gateway must turn them into. */

static const char a_chat_in[] =
    "{\"model\":\"gpt\",\"messages\":[{\"role\":\"developer\","
    "\"content\":\"be brief\"},{\"role\":\"user\","
    "\"content\":[{\"type\":\"text\",\"text\":\"what\"},{\"type\":\"text\","
    "\"text\":\"is this?\"},{\"type\":\"image_url\","
    "\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}}]},"
    "{\"role\":\"assistant\",\"content\":null,"
    "\"tool_calls\":[{\"id\":\"call_9\",\"type\":\"function\","
    "\"function\":{\"name\":\"look\",\"arguments\":\"{\\\"x\\\":1}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"call_9\",\"content\":\"a cat\"}],"
    "\"temperature\":0.5,\"top_p\":0.9,\"seed\":7,\"stop\":\"END\","
    "\"max_tokens\":50,\"presence_penalty\":0.1,\"frequency_penalty\":0.2,"
    "\"response_format\":{\"type\":\"json_object\"},"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"look\","
    "\"parameters\":{}}}],\"keep_alive\":\"10m\",\"logprobs\":true,"
    "\"user\":\"u\"}";
static const char a_chat2_in[] =
    "{\"model\":\"gpt\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
    "\"stream\":true,\"response_format\":{\"type\":\"json_schema\","
    "\"json_schema\":{\"name\":\"x\",\"schema\":{\"type\":\"object\"}}},"
    "\"stop\":[\"a\",\"b\"],\"max_tokens\":5,\"max_completion_tokens\":9,"
    "\"reasoning_effort\":\"minimal\"}";
static const char a_gen_in[] =
    "{\"model\":\"gpt\",\"prompt\":[\"once\"],\"suffix\":\"end\","
    "\"max_tokens\":3,\"echo\":true}";
static const char a_emb_in[] =
    "{\"model\":\"e\",\"input\":[\"a\",\"b\"],\"dimensions\":8,"
    "\"encoding_format\":\"float\"}";
static const char r_tools_ol[] =
    "{\"model\":\"llama3\",\"message\":{\"role\":\"assistant\","
    "\"content\":\"\",\"thinking\":\"hmm\","
    "\"tool_calls\":[{\"function\":{\"name\":\"a\","
    "\"arguments\":{\"q\":\"x\"}}},{\"id\":\"own\",\"function\":{\"index\":1,"
    "\"name\":\"b\",\"arguments\":{}}}]},\"done\":true,"
    "\"done_reason\":\"stop\",\"prompt_eval_count\":10,\"eval_count\":4}";
static const char f_chat_in[] =
    "{\"model\":\"llama3\",\"messages\":[{\"role\":\"system\","
    "\"content\":\"sys\"},{\"role\":\"User\",\"content\":\"see\","
    "\"images\":[\"iVBORw0KGgoAAA\",\"/9j/4AAQ\"]},{\"role\":\"assistant\","
    "\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"w\","
    "\"arguments\":{\"city\":\"Paris\"}}},{\"function\":{\"name\":\"t\","
    "\"arguments\":{}}}]},{\"role\":\"tool\",\"tool_name\":\"t\","
    "\"content\":\"12:00\"},{\"role\":\"tool\",\"tool_name\":\"w\","
    "\"content\":\"sun\"}],\"options\":{\"temperature\":0.2,"
    "\"num_predict\":100,\"stop\":[\"x\"],\"top_k\":40,\"num_ctx\":4096},"
    "\"format\":\"json\",\"keep_alive\":\"5m\",\"think\":\"high\","
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"w\"}}]}";
static const char f_gen_in[] =
    "{\"model\":\"llama3\",\"prompt\":\"hi\",\"suffix\":\"end\","
    "\"stream\":false,\"format\":{\"type\":\"object\"},"
    "\"options\":{\"num_predict\":-1}}";
static const char b_chat_oa[] =
    "{\"id\":\"c\",\"object\":\"chat.completion\",\"created\":1,"
    "\"model\":\"m\",\"choices\":[{\"index\":0,"
    "\"message\":{\"role\":\"assistant\",\"content\":\"Hi\","
    "\"reasoning_content\":\"r\"},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,"
    "\"total_tokens\":4}}";
static const char b_tools_oa[] =
    "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
    "\"type\":\"function\",\"function\":{\"name\":\"w\","
    "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"
    "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":3,"
    "\"completion_tokens\":1,\"total_tokens\":4}}";
static const char a_chat_out[] =
    "{\"model\":\"llava:7b\",\"messages\":[{\"role\":\"system\","
    "\"content\":\"be brief\"},{\"role\":\"user\","
    "\"content\":\"what\\nis this?\",\"images\":[\"iVBORw0KGgo=\"]},"
    "{\"role\":\"assistant\",\"content\":\"\","
    "\"tool_calls\":[{\"id\":\"call_9\",\"function\":{\"name\":\"look\","
    "\"arguments\":{\"x\":1}}}]},{\"role\":\"tool\",\"content\":\"a cat\","
    "\"tool_name\":\"look\",\"tool_call_id\":\"call_9\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"look\","
    "\"parameters\":{}}}],\"format\":\"json\","
    "\"options\":{\"temperature\":0.5,\"top_p\":0.9,\"seed\":7,"
    "\"presence_penalty\":0.1,\"frequency_penalty\":0.2,\"num_predict\":50,"
    "\"stop\":[\"END\"]},\"stream\":false,\"keep_alive\":\"10m\"}";
static const char a_chat2_out[] =
    "{\"model\":\"gpt\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
    "\"format\":{\"type\":\"object\"},\"options\":{\"num_predict\":9,"
    "\"stop\":[\"a\",\"b\"]},\"think\":\"low\",\"stream\":true}";
static const char a_gen_out[] =
    "{\"model\":\"m\",\"prompt\":\"once\",\"suffix\":\"end\","
    "\"options\":{\"num_predict\":3},\"stream\":false}";
static const char a_emb_out[] =
    "{\"model\":\"nomic\",\"input\":[\"a\",\"b\"],\"dimensions\":8}";
static const char r_chat_out[] =
    "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\","
    "\"created\":1700000000,\"model\":\"gpt\",\"choices\":[{\"index\":0,"
    "\"message\":{\"role\":\"assistant\",\"content\":\"Hello!\","
    "\"refusal\":null},"
    "\"logprobs\":null,\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":26,\"completion_tokens\":3,"
    "\"total_tokens\":29}}";
static const char r_tools_out[] =
    "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\","
    "\"created\":1700000000,\"model\":\"gpt\",\"choices\":[{\"index\":0,"
    "\"message\":{\"role\":\"assistant\",\"content\":null,"
    "\"refusal\":null,\"reasoning_content\":\"hmm\",\"tool_calls\":[{\"id\":"
    "\"call_0\","
    "\"type\":\"function\",\"function\":{\"name\":\"a\","
    "\"arguments\":\"{\\\"q\\\":\\\"x\\\"}\"}},{\"id\":\"own\","
    "\"type\":\"function\",\"function\":{\"name\":\"b\","
    "\"arguments\":\"{}\"}}]},\"logprobs\":null,"
    "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":10,"
    "\"completion_tokens\":4,\"total_tokens\":14}}";
static const char r_gen_out[] =
    "{\"id\":\"cmpl-abc\",\"object\":\"text_completion\","
    "\"created\":1700000000,\"model\":\"gpt\",\"choices\":[{\"text\":\"yes\","
    "\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}],"
    "\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1,"
    "\"total_tokens\":3}}";
static const char r_emb_out[] =
    "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
    "\"embedding\":[0.5,-1]},{\"object\":\"embedding\",\"index\":1,"
    "\"embedding\":[2,0.25]}],\"model\":\"e\",\"usage\":{\"prompt_tokens\":4,"
    "\"total_tokens\":4}}";
static const char f_chat_out[] =
    "{\"model\":\"llama3\",\"messages\":[{\"role\":\"system\","
    "\"content\":\"sys\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\","
    "\"text\":\"see\"},{\"type\":\"image_url\","
    "\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgoAAA\"}},"
    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/jpeg;base64,"
    "/9j/4AAQ\"}}]},{\"role\":\"assistant\",\"content\":\"\","
    "\"tool_calls\":[{\"id\":\"call_0\",\"type\":\"function\","
    "\"function\":{\"name\":\"w\","
    "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},{\"id\":\"call_1\","
    "\"type\":\"function\",\"function\":{\"name\":\"t\","
    "\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"content\":\"12:00\","
    "\"tool_call_id\":\"call_1\"},{\"role\":\"tool\",\"content\":\"sun\","
    "\"tool_call_id\":\"call_0\"}],\"tools\":[{\"type\":\"function\","
    "\"function\":{\"name\":\"w\"}}],"
    "\"response_format\":{\"type\":\"json_object\"},\"temperature\":0.2,"
    "\"top_k\":40,\"max_tokens\":100,\"stop\":[\"x\"],"
    "\"reasoning_effort\":\"high\",\"stream\":true,"
    "\"stream_options\":{\"include_usage\":true}}";
static const char f_gen_out[] =
    "{\"model\":\"llama3\",\"prompt\":\"hi\",\"suffix\":\"end\","
    "\"response_format\":{\"type\":\"json_schema\","
    "\"json_schema\":{\"name\":\"schema\",\"schema\":{\"type\":\"object\"}}},"
    "\"stream\":false}";
static const char b_chat_out[] =
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"Hi\","
    "\"thinking\":\"r\"},\"done\":true,\"done_reason\":\"stop\","
    "\"total_duration\":0,\"load_duration\":0,\"prompt_eval_count\":3,"
    "\"prompt_eval_duration\":0,\"eval_count\":1,\"eval_duration\":0}";
static const char b_tools_out[] =
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"\","
    "\"tool_calls\":[{\"id\":\"call_1\",\"function\":{\"index\":0,"
    "\"name\":\"w\",\"arguments\":{\"city\":\"Paris\"}}}]},\"done\":true,"
    "\"done_reason\":\"stop\",\"total_duration\":0,\"load_duration\":0,"
    "\"prompt_eval_count\":3,\"prompt_eval_duration\":0,\"eval_count\":1,"
    "\"eval_duration\":0}";
static const char b_gen_out[] =
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"response\":\"abc\",\"done\":true,\"done_reason\":\"length\","
    "\"total_duration\":0,\"load_duration\":0,\"prompt_eval_count\":3,"
    "\"prompt_eval_duration\":0,\"eval_count\":1,\"eval_duration\":0}";
static const char b_embed_out[] =
    "{\"model\":\"llama3\",\"embeddings\":[[0.1,0.2],[0.3,0.4]],"
    "\"total_duration\":0,\"load_duration\":0,\"prompt_eval_count\":2}";

static const char ol_chat_in[] =
    "{\"model\":\"llama3\",\"created_at\":\"2024-05-01T10:00:00.123456789Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},"
    "\"done\":false}\n"
    "{\"model\":\"llama3\",\"created_at\":\"2024-05-01T10:00:00.123456789Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":false}\n"
    "{\"model\":\"llama3\",\"created_at\":\"2024-05-01T10:00:00.123456789Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"lo\"},"
    "\"done\":false}\r\n"
    "{\"model\":\"llama3\",\"created_at\":\"2024-05-01T10:00:01Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,"
    "\"done_reason\":\"stop\",\"total_duration\":1,\"load_duration\":1,"
    "\"prompt_eval_count\":5,\"prompt_eval_duration\":1,\"eval_count\":2,"
    "\"eval_duration\":1}\n";
static const char ol_chat_out[] =
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
    "\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"Hel\"},\"logprobs\":null,"
    "\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"lo\"},\"logprobs\":null,"
    "\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
    "\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,"
    "\"total_tokens\":7}}\n\n"
    "data: [DONE]\n\n";

/* The first chunk of a chat stream as run_sse's translator writes it
 * (id "abc", model "gpt-x", no usage asked for): the role alone. */
#define SSE_ROLE_CHUNK                                                       \
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","   \
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"  \
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null," \
    "\"finish_reason\":null}]}\n\n"

static const char ol_tools_in[] =
    "{\"model\":\"llama3\",\"created_at\":\"2024-05-01T10:00:00.123456789Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"\","
    "\"thinking\":\"let me\"},\"done\":false}\n"
    "{\"model\":\"llama3\",\"created_at\":\"2024-05-01T10:00:00.123456789Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"\","
    "\"tool_calls\":[{\"function\":{\"name\":\"f\","
    "\"arguments\":{\"a\":1}}}]},\"done\":false}\n"
    "{\"model\":\"llama3\",\"created_at\":\"2024-05-01T10:00:00.123456789Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"\","
    "\"tool_calls\":[{\"id\":\"own\",\"function\":{\"index\":1,\"name\":\"g\","
    "\"arguments\":{}}}]},\"done\":false}\n"
    "{\"model\":\"llama3\",\"message\":{\"role\":\"assistant\","
    "\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\","
    "\"prompt_eval_count\":9,\"eval_count\":4}\n";
static const char ol_tools_out[] = SSE_ROLE_CHUNK
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"reasoning_content\":\"let me\"},\"logprobs\":null,"
    "\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_0\","
    "\"type\":\"function\",\"function\":{\"name\":\"f\","
    "\"arguments\":\"{\\\"a\\\":1}\"}}]},\"logprobs\":null,"
    "\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"own\","
    "\"type\":\"function\",\"function\":{\"name\":\"g\","
    "\"arguments\":\"{}\"}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}]}\n\n"
    "data: [DONE]\n\n";

static const char ol_error_in[] =
    "{\"model\":\"llama3\",\"created_at\":\"2024-05-01T10:00:00.123456789Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"a\"},\"done\":false}\n"
    "{\"error\":\"CUDA out of memory\"}\n"
    "{\"model\":\"llama3\",\"created_at\":\"2024-05-01T10:00:00.123456789Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"b\"},\"done\":false}\n";
static const char ol_error_out[] = SSE_ROLE_CHUNK
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"a\"},\"logprobs\":null,"
    "\"finish_reason\":null}]}\n\n"
    "data: {\"error\":{\"message\":\"CUDA out of memory\","
    "\"type\":\"server_error\",\"param\":null,"
    "\"code\":\"upstream_error\"}}\n\n"
    "data: [DONE]\n\n";

static const char ol_gen_in[] =
    "{\"model\":\"llama3\",\"response\":\"once\",\"done\":false}\n"
    "{\"model\":\"llama3\",\"response\":\" upon\",\"thinking\":\"x\","
    "\"done\":false}\n"
    "{\"model\":\"llama3\",\"response\":\"\",\"done\":true,"
    "\"done_reason\":\"length\",\"context\":[1,2,3],\"prompt_eval_count\":1,"
    "\"eval_count\":2}\n";
static const char ol_gen_out[] =
    "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"text\":\"once\",\"logprobs\":null,\"finish_reason\":null}],"
    "\"usage\":null}\n\n"
    "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"text\":\" upon\",\"logprobs\":null,\"finish_reason\":null}],"
    "\"usage\":null}\n\n"
    "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"length\"}],"
    "\"usage\":null}\n\n"
    "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\","
    "\"created\":1700000000,\"model\":\"gpt-x\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,"
    "\"total_tokens\":3}}\n\n"
    "data: [DONE]\n\n";

static const char oa_chat_in[] =
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"finish_reason\":null}]}\n\n"
    "data:{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n"
    ": keep-alive\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"reasoning_content\":\"hm\"},"
    "\"finish_reason\":null}]}\r\n\r\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\" there\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\","
    "\"type\":\"function\",\"function\":{\"name\":\"w\","
    "\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"tool_calls\":[{\"index\":0,"
    "\"function\":{\"arguments\":\"{\\\"ci\"}}]},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"tool_calls\":[{\"index\":0,"
    "\"function\":{\"arguments\":\"ty\\\":\\\"Paris\\\"}\"}}]},"
    "\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},"
    "\"finish_reason\":\"tool_calls\"}]}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"m\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,"
    "\"total_tokens\":10}}\n\n"
    "data: [DONE]\n\n";
static const char oa_chat_out[] =
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n"
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"\","
    "\"thinking\":\"hm\"},\"done\":false}\n"
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\" there\"},"
    "\"done\":false}\n"
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"\","
    "\"tool_calls\":[{\"id\":\"call_a\",\"function\":{\"index\":0,"
    "\"name\":\"w\",\"arguments\":{\"city\":\"Paris\"}}}]},\"done\":false}\n"
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,"
    "\"done_reason\":\"stop\",\"total_duration\":0,\"load_duration\":0,"
    "\"prompt_eval_count\":7,\"prompt_eval_duration\":0,\"eval_count\":3,"
    "\"eval_duration\":0}\n";

static const char oa_gen_in[] =
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,"
    "\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"ab\","
    "\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,"
    "\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"c\","
    "\"finish_reason\":\"length\"}]}\n\n";
static const char oa_gen_out[] =
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"response\":\"ab\",\"done\":false}\n"
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"response\":\"c\",\"done\":false}\n"
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"response\":\"\",\"done\":true,\"done_reason\":\"length\","
    "\"total_duration\":0,\"load_duration\":0,\"prompt_eval_count\":0,"
    "\"prompt_eval_duration\":0,\"eval_count\":0,\"eval_duration\":0}\n";

static const char oa_error_in[] =
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n"
    "data: {\"error\":{\"message\":\"overloaded\","
    "\"type\":\"server_error\"}}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"late\"},\"finish_reason\":null}]}\n\n";
static const char oa_error_out[] =
    "{\"model\":\"llama3\",\"created_at\":\"2023-11-14T22:13:20Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n"
    "{\"error\":\"overloaded\"}\n";

/* ---------------------------------------------------------------------
 * Helpers
 */

static llmgw_json_t *json(const char *s)
{
    llmgw_json_err_t err;
    const char *msg;
    llmgw_json_t *j = llmgw_json_parse(test_pool, s, strlen(s), &err, &msg);

    ck_assert_msg(j != NULL, "not JSON: %s", s);
    return j;
}

/* A.1: an OpenAI body through llmgw_request_parse, then to Ollama. */
static int to_ollama(llmgw_endpoint_t ep, const char *body,
                     const char *upstream, const char **path, const char **out,
                     llmgw_error_t *err)
{
    llmgw_request_t req;
    apr_size_t len = 0;
    int rv;

    memset(err, 0, sizeof(*err));
    *out = NULL;
    *path = NULL;
    /* A type the gateway checks itself is refused before translation. */
    rv = llmgw_request_parse(test_pool, ep, body, strlen(body), &req, err);
    if (rv) {
        return rv;
    }
    rv = llmgw_ollama_request(test_pool, &req, upstream, path, out, &len, err);
    if (!rv) {
        ck_assert_uint_eq(len, strlen(*out));
    }
    return rv;
}

static int chat_error(const char *body, llmgw_error_t *err)
{
    const char *path, *out;

    return to_ollama(LLMGW_EP_CHAT, body, NULL, &path, &out, err);
}

/* What a translation gave: its output (NULL if none), its error, the
 * usage it counted and, from an Ollama request, the OpenAI request. */
typedef struct {
    const char *out;
    llmgw_error_t err;
    llmgw_usage_t u;
    llmgw_request_t req;
} got_t;

/* Before a translation: no output, no error. The usage and request
 * stay as they are, so that a test sees what the translation set. */
static void fresh(got_t *g)
{
    memset(&g->err, 0, sizeof(g->err));
    g->out = NULL;
}

/* The translation's own checks: it returned want, and with 0 an output
 * of the length it gave. Returns the output. */
static const char *translation(got_t *g, int rv, int want, apr_size_t len)
{
    ck_assert_int_eq(rv, want);
    if (!rv) {
        ck_assert_uint_eq(len, strlen(g->out));
    }
    return g->out;
}

/* The OpenAI request most answers here are for. */
static const char chat_req[] = "{\"model\":\"gpt\",\"messages\":[]}";

/* A.2: the answer to the OpenAI request 'request' for Ollama's answer
 * (status, answer), which must translate with want. */
static const char *from_ollama(got_t *g, llmgw_endpoint_t ep,
                               const char *request, int status,
                               const char *answer, int want)
{
    llmgw_request_t req;
    apr_size_t len = 0;
    int rv;

    fresh(g);
    ck_assert_int_eq(llmgw_request_parse(test_pool, ep, request,
                                         strlen(request), &req, &g->err),
                     0);
    rv = llmgw_ollama_response(test_pool, &req, status, answer, strlen(answer),
                               "abc", NULL, 1700000000, &g->out, &len, &g->u,
                               &g->err);
    return translation(g, rv, want, len);
}

/* B.4: an Ollama request for OpenAI, which must translate with want. */
static const char *front(got_t *g, llmgw_ollama_ep_t oep, const char *body,
                         int want)
{
    apr_size_t len = 0;
    int rv;

    fresh(g);
    rv = llmgw_ollama_front_request(test_pool, oep, body, strlen(body),
                                    &g->req, &g->out, &len, &g->err);
    return translation(g, rv, want, len);
}

/* B.5: an OpenAI answer (status, answer) for an Ollama client, which
 * must translate with want. */
static const char *front_answer(got_t *g, llmgw_ollama_ep_t oep, int status,
                                const char *answer, int want)
{
    apr_size_t len = 0;
    int rv;

    fresh(g);
    rv = llmgw_ollama_front_response(
        test_pool, oep, status, answer, strlen(answer), "llama3",
        apr_time_from_sec(1700000000), apr_time_from_sec(1700000000), &g->out,
        &len, &g->u, &g->err);
    return translation(g, rv, want, len);
}

/* A translation that must fail with want: of body, a request or an
 * answer (with the backend's status) for the endpoint ep (an
 * llmgw_endpoint_t or an llmgw_ollama_ep_t); and what its error must
 * hold (NULL: not looked at): its type, code and message, and a part of
 * the message. */
typedef struct {
    int ep;
    int status;
    const char *body;
    int want;
    const char *type;
    const char *code;
    const char *message;
    const char *has;
} bad_t;

static void error_is(const llmgw_error_t *err, const bad_t *w)
{
    if (w->type) {
        ck_assert_str_eq(err->type, w->type);
    }
    if (w->code) {
        ck_assert_str_eq(err->code, w->code);
    }
    if (w->message) {
        ck_assert_str_eq(err->message, w->message);
    }
    if (w->has) {
        ck_assert_ptr_nonnull(strstr(err->message, w->has));
    }
}

/* A count or flag not looked at. */
#define ANY (-1)

/* u holds these counts (each of them ANY: not looked at). */
static void usage_is(const llmgw_usage_t *u, int found, apr_int64_t prompt,
                     apr_int64_t completion, apr_int64_t total)
{
    if (found != ANY) {
        ck_assert_int_eq(u->found, found);
    }
    if (prompt != ANY) {
        ck_assert_int_eq(u->prompt, prompt);
    }
    if (completion != ANY) {
        ck_assert_int_eq(u->completion, completion);
    }
    if (total != ANY) {
        ck_assert_int_eq(u->total, total);
    }
}

/* What a stream translator left behind, read before its pool goes. */
typedef struct {
    int done;
    int failed;
    int content_events;
    llmgw_usage_t usage;
    const char *tail; /* its error tail for a made-up error */
} result_t;

/* r is of a stream that did (1) or did not (0) end, and that did or did
 * not fail. */
static void ended(const result_t *r, int done, int failed)
{
    ck_assert_int_eq(r->done, done);
    ck_assert_int_eq(r->failed, failed);
}

/* One call into a stream translator, either way: feeds it in[0..len),
 * or ends it (as at a clean EOS) when in is NULL. */
typedef apr_size_t (*feed_fn)(void *s, const char *in, apr_size_t len,
                              const char **ready);

static apr_size_t sse_feed(void *s, const char *in, apr_size_t len,
                           const char **ready)
{
    return in ? llmgw_ollama_sse_feed(s, in, len, ready)
              : llmgw_ollama_sse_end(s, ready);
}

static apr_size_t nd_feed(void *s, const char *in, apr_size_t len,
                          const char **ready)
{
    return in ? llmgw_ollama_ndjson_feed(s, in, len, ready)
              : llmgw_ollama_ndjson_end(s, ready);
}

/* The input in pieces: the first 'first' bytes (0: none), then pieces of
 * 'step' bytes. end: call the end function, as at a clean EOS. Returns
 * all the output, from test_pool. */
static const char *feed_pieces(apr_pool_t *p, feed_fn feed, void *s,
                               const char *in, apr_size_t first,
                               apr_size_t step, int end)
{
    llmgw_pbuf_t c = { NULL, 0, 0 };
    apr_size_t len = strlen(in), off = 0, n;
    const char *ready;

    while (off < len) {
        apr_size_t take = first && !off ? first : step;

        take = len - off < take ? len - off : take;
        n = feed(s, in + off, take, &ready);
        llmgw_pbuf_add(p, &c, ready, n);
        off += take;
    }
    if (end) {
        n = feed(s, NULL, 0, &ready);
        llmgw_pbuf_add(p, &c, ready, n);
    }
    return apr_pstrmemdup(test_pool, c.b ? c.b : "", c.len);
}

/* What translator s (of either kind: the members have the same names)
 * left behind, with its error tail. */
#define RESULT_OF(s, tail)                                                \
    ((result_t){ (s)->done, (s)->failed, (s)->content_events, (s)->usage, \
                 (tail) })

static const char *run_sse(llmgw_endpoint_t ep, int include_usage,
                           const char *in, apr_size_t first, apr_size_t step,
                           int end, result_t *r)
{
    apr_pool_t *p;
    llmgw_ollama_sse_t *s;
    const char *res;
    llmgw_error_t err;
    apr_size_t n;

    apr_pool_create(&p, test_pool);
    s = llmgw_ollama_sse_create(p, ep, "abc", "gpt-x", 1700000000,
                                include_usage);
    res = feed_pieces(p, sse_feed, s, in, first, step, end);
    llmgw_error_set(&err, 502, "server_error", NULL, "upstream_stream_error",
                    "broke");
    *r =
        RESULT_OF(s, apr_pstrdup(test_pool,
                                 llmgw_ollama_sse_error_tail(s, p, &err, &n)));
    apr_pool_destroy(p);
    return res;
}

/* The time every line of a translated stream is written at, so that
 * created_at and the durations are known. */
static apr_time_t fixed_clock(void)
{
    return apr_time_from_sec(1700000000);
}

static const char *run_nd(llmgw_ollama_ep_t oep, const char *in,
                          apr_size_t first, apr_size_t step, int end,
                          result_t *r)
{
    apr_pool_t *p;
    llmgw_ollama_ndjson_t *s;
    const char *res;
    apr_size_t n;

    apr_pool_create(&p, test_pool);
    s = llmgw_ollama_ndjson_create(p, oep, "llama3",
                                   apr_time_from_sec(1700000000));
    s->now = fixed_clock;
    res = feed_pieces(p, nd_feed, s, in, first, step, end);
    *r = RESULT_OF(s, apr_pstrdup(test_pool, llmgw_ollama_ndjson_error_tail(
                                                 s, p, "broke", &n)));
    apr_pool_destroy(p);
    return res;
}

/* Every way of cutting the input: pieces of 1..len bytes, and two
 * pieces cut at every offset. All must give the same bytes. */
static void every_boundary_sse(llmgw_endpoint_t ep, int include_usage,
                               const char *in, const char *want, result_t *r)
{
    apr_size_t k, len = strlen(in);

    for (k = 1; k <= len; k++) {
        const char *got = run_sse(ep, include_usage, in, 0, k, 1, r);

        ck_assert_msg(strcmp(got, want) == 0, "pieces of %lu bytes:\n%s",
                      (unsigned long)k, got);
        got = run_sse(ep, include_usage, in, k, len, 1, r);
        ck_assert_msg(strcmp(got, want) == 0, "cut at %lu:\n%s",
                      (unsigned long)k, got);
    }
}

static void every_boundary_nd(llmgw_ollama_ep_t oep, const char *in,
                              const char *want, result_t *r)
{
    apr_size_t k, len = strlen(in);

    for (k = 1; k <= len; k++) {
        const char *got = run_nd(oep, in, 0, k, 1, r);

        ck_assert_msg(strcmp(got, want) == 0, "pieces of %lu bytes:\n%s",
                      (unsigned long)k, got);
        got = run_nd(oep, in, k, len, 1, r);
        ck_assert_msg(strcmp(got, want) == 0, "cut at %lu:\n%s",
                      (unsigned long)k, got);
    }
}

/* ---------------------------------------------------------------------
 * A.1 OpenAI requests to Ollama
 */

/* body as an ep request, which must translate, for Ollama (with the
 * client's model name). Returns Ollama's body. */
static const char *translated(llmgw_endpoint_t ep, const char *body)
{
    const char *path, *out;
    llmgw_error_t err;

    ck_assert_int_eq(to_ollama(ep, body, NULL, &path, &out, &err), 0);
    return out;
}

/* in as an ep request goes to Ollama at path as out, with upstream as
 * the model name there. */
static void goes_to(llmgw_endpoint_t ep, const char *in, const char *upstream,
                    const char *path, const char *out)
{
    const char *at, *got;
    llmgw_error_t err;

    ck_assert_int_eq(to_ollama(ep, in, upstream, &at, &got, &err), 0);
    ck_assert_str_eq(got, out);
    ck_assert_str_eq(at, path);
}

/* A request refused with a 400, and what the error must name (NULL: not
 * looked at). */
typedef struct {
    const char *body;
    const char *param;
    const char *code;
} refusal_t;

static void refused(llmgw_endpoint_t ep, const refusal_t *t, apr_size_t n)
{
    apr_size_t i;

    for (i = 0; i < n; i++) {
        const char *path, *out;
        llmgw_error_t err;
        int rv = to_ollama(ep, t[i].body, NULL, &path, &out, &err);

        ck_assert_msg(rv == 400, "%d for %s", rv, t[i].body);
        if (t[i].param) {
            ck_assert_str_eq(err.param, t[i].param);
        }
        if (t[i].code) {
            ck_assert_str_eq(err.code, t[i].code);
        }
    }
}

#define REFUSED(ep, t) refused(ep, t, sizeof(t) / sizeof(t[0]))

START_TEST(chat_request_maps_every_field)
{
    /* Roles, parts, image, tool call and tool answer, every option;
     * logprobs and user dropped; the route's model name upstream. */
    goes_to(LLMGW_EP_CHAT, a_chat_in, "llava:7b", "/api/chat", a_chat_out);
    /* Stream on, json_schema, stop array, max_completion_tokens first,
     * reasoning effort; the client's model name when no upstream one. */
    ck_assert_str_eq(translated(LLMGW_EP_CHAT, a_chat2_in), a_chat2_out);
}
END_TEST

START_TEST(chat_request_stream_always_explicit)
{
    /* Ollama streams by default: a client that did not ask must not get
     * NDJSON. */
    const char *out = translated(LLMGW_EP_CHAT,
                                 "{\"model\":\"m\",\"messages\""
                                 ":[{\"role\":\"user\",\"content\":\"hi\"}]}");

    ck_assert_ptr_nonnull(strstr(out, "\"stream\":false"));
    ck_assert_lacks(out, "options", "format", "tools", "think");
}
END_TEST

START_TEST(chat_request_images)
{
    static const refusal_t bad[] = {
        /* A data: URL that is not base64 is no image for Ollama either. */
        { "{\"model\":\"m\",\"messages\":[{\"role\":"
          "\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{"
          "\"url\":\"data:image/svg+xml,<svg/>\"}}]}]}",
          "messages[0].content[0].image_url.url", NULL },
        { "{\"model\":\"m\",\"messages\":[{\"role\":"
          "\"user\",\"content\":[{\"type\":\"input_audio\",\"input_audio\":"
          "{}}]}]}",
          "messages[0].content[0].type", NULL },
        { "{\"model\":\"m\",\"messages\":[{\"role\":"
          "\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
          "messages[0].content[0].image_url.url", NULL },
    };
    llmgw_error_t err;
    llmgw_json_t *j;

    j = json(translated(
        LLMGW_EP_CHAT,
        "{\"model\":\"m\",\"messages\""
        ":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
        "\"image_url\":{\"url\":\"DATA:image/jpeg;BASE64,/9j/4AA=\","
        "\"detail\":\"low\"}},{\"type\":\"image_url\",\"image_url\":"
        "\"data:;base64,R0lGOD\"},{\"type\":\"text\",\"text\":"
        "\"both?\"}]}]}"));
    ck_assert_str_eq(
        llmgw_json_write(
            llmgw_json_getj(
                llmgw_json_array_get(llmgw_json_getj(j, "messages", NULL), 0),
                NULL),
            NULL),
        "{\"role\":\"user\",\"content\":\"both?\",\"images\":"
        "[\"/9j/4AA=\",\"R0lGOD\"]}");
    /* Ollama cannot fetch: a remote image is the client's to inline. */
    ck_assert_int_eq(
        chat_error(
            "{\"model\":\"m\",\"messages\":[{\"role\":"
            "\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":[{"
            "\"type\":\"text\",\"text\":\"see\"},{\"type\":\"image_url\","
            "\"image_url\":{\"url\":\"https://example.com/cat.png\"}}]}]}",
            &err),
        400);
    ck_assert_str_eq(err.param, "messages[1].content[1].image_url.url");
    ck_assert_str_eq(err.type, "invalid_request_error");
    ck_assert_str_eq(err.code, "unsupported_value");
    ck_assert_ptr_nonnull(strstr(err.message, "cannot fetch"));
    REFUSED(LLMGW_EP_CHAT, bad);
}
END_TEST

START_TEST(chat_request_tool_arguments)
{
    /* Broken JSON, or JSON that is no object, cannot reach Ollama. */
    static const refusal_t bad[] = {
        { "{\"model\":\"m\",\"messages\":[{\"role\":"
          "\"user\",\"content\":\"x\"},{\"role\":"
          "\"assistant\",\"tool_calls\":"
          "[{\"id\":\"a\",\"type\":\"function\","
          "\"function\":{\"name\":\"f\","
          "\"arguments\":\"{\\\"x\\\":\"}}]}]}",
          "messages[1].tool_calls[0].function.arguments", "invalid_value" },
        { "{\"model\":\"m\",\"messages\":[{\"role\":"
          "\"assistant\",\"tool_calls\":[{\"id\":\"a\",\"type\":"
          "\"function\","
          "\"function\":{\"name\":\"f\",\"arguments\":\"[1]\"}}]}]}",
          "messages[0].tool_calls[0].function.arguments", NULL },
        { "{\"model\":\"m\",\"messages\":[{\"role\":"
          "\"assistant\",\"tool_calls\":[{\"id\":\"a\","
          "\"type\":\"function\","
          "\"function\":{\"arguments\":\"{}\"}}]}]}",
          "messages[0].tool_calls[0].function.name", NULL },
    };
    llmgw_json_t *calls;

    /* "" means no arguments; an object is taken as it is. */
    calls = llmgw_json_getj(
        llmgw_json_array_get(
            llmgw_json_getj(
                json(translated(
                    LLMGW_EP_CHAT,
                    "{\"model\":\"m\",\"messages\""
                    ":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"a\","
                    "\"type\":\"function\",\"function\":{\"name\":\"now\","
                    "\"arguments\":\"\"}},{\"id\":\"b\",\"type\":\"function\","
                    "\"function\":{\"name\":\"f\",\"arguments\":{\"k\":[1,2]}"
                    "}},{\"id\":\"c\",\"type\":\"function\",\"function\":{"
                    "\"name\":\"g\",\"arguments\":\" {\\\"s\\\": "
                    "\\\"\\\\u00e9\\\"} \"}}]}]}")),
                "messages", NULL),
            0),
        "tool_calls", NULL);
    ck_assert_str_eq(
        llmgw_json_write(calls, NULL),
        "[{\"id\":\"a\",\"function\":{\"name\":\"now\",\"arguments\":{}}},"
        "{\"id\":\"b\",\"function\":{\"name\":\"f\",\"arguments\":{\"k\":"
        "[1,2]}}},{\"id\":\"c\",\"function\":{\"name\":\"g\",\"arguments\":"
        "{\"s\":\"\xc3\xa9\"}}}]");
    REFUSED(LLMGW_EP_CHAT, bad);
}
END_TEST

/* Member key of message i of msgs (a JSON array). */
static const char *member(llmgw_json_t *msgs, int i, const char *key)
{
    return llmgw_json_gets(llmgw_json_array_get(msgs, i), key, NULL);
}

START_TEST(chat_request_tool_names_resolved)
{
    llmgw_json_t *msgs;

    /* Ids repeat across turns ("call_0" twice): each tool answer takes
     * the name of the nearest call before it. A legacy function
     * message keeps its own name; an unknown id has no name. */
    msgs = llmgw_json_getj(
        json(translated(
            LLMGW_EP_CHAT,
            "{\"model\":\"m\",\"messages\""
            ":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"call_0\","
            "\"type\":\"function\",\"function\":{\"name\":\"weather\","
            "\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":"
            "\"call_0\",\"content\":\"sun\"},{\"role\":\"assistant\","
            "\"tool_calls\":[{\"id\":\"call_0\",\"type\":\"function\","
            "\"function\":{\"name\":\"time\",\"arguments\":\"{}\"}}]},"
            "{\"role\":\"tool\",\"tool_call_id\":\"call_0\",\"content\":"
            "\"9h\"},"
            "{\"role\":\"function\",\"name\":\"legacy\",\"content\":\"1\"},"
            "{\"role\":\"tool\",\"tool_call_id\":\"nope\",\"content\":\"?\"}]"
            "}")),
        "messages", NULL);
    ck_assert_str_eq(member(msgs, 1, "tool_name"), "weather");
    ck_assert_str_eq(member(msgs, 1, "tool_call_id"), "call_0");
    ck_assert_str_eq(member(msgs, 3, "tool_name"), "time");
    ck_assert_str_eq(member(msgs, 4, "role"), "tool");
    ck_assert_str_eq(member(msgs, 4, "tool_name"), "legacy");
    ck_assert_int_eq(
        llmgw_json_type(llmgw_json_array_get(msgs, 5), "tool_name", NULL),
        LLMGW_JSON_MISSING);
}
END_TEST

START_TEST(chat_request_rejections)
{
    static const refusal_t bad[] = {
        { "{\"model\":\"m\",\"messages\":[],\"stop\":"
          "[\"a\",1]}",
          "stop", NULL },
        { "{\"model\":\"m\",\"messages\":[],"
          "\"temperature\":\"hot\"}",
          "temperature", "invalid_type" },
        { "{\"model\":\"m\",\"messages\":[],"
          "\"max_tokens\":\"5\"}",
          "max_tokens", NULL },
        { "{\"model\":\"m\",\"messages\":[],"
          "\"response_format\":{\"type\":\"xml\"}}",
          "response_format.type", NULL },
        { "{\"model\":\"m\",\"messages\":[{\"role\":"
          "\"wizard\",\"content\":\"x\"}]}",
          "messages[0].role", NULL },
        { "{\"model\":\"m\",\"messages\":[{"
          "\"content\":\"x\"}]}",
          NULL, "missing_required_parameter" },
        { "{\"model\":\"m\",\"messages\":[{\"role\":"
          "\"user\",\"content\":5}]}",
          "messages[0].content", NULL },
    };
    llmgw_error_t err;

    ck_assert_int_eq(
        chat_error("{\"model\":\"m\",\"messages\":[],\"n\":2}", &err), 400);
    ck_assert_str_eq(err.param, "n");
    ck_assert_str_eq(err.message, "n>1 is not supported by the ollama "
                                  "dialect.");
    translated(LLMGW_EP_CHAT, "{\"model\":\"m\",\"messages\""
                              ":[],\"n\":1}");
    REFUSED(LLMGW_EP_CHAT, bad);
}
END_TEST

START_TEST(chat_request_tool_choice_none_and_effort)
{
    static const char tools[] = "\"tools\":[{\"type\":\"function\","
                                "\"function\":{\"name\":\"f\"}}]";
    const char *out;

    /* Ollama has no tool_choice: "none" is kept by sending no tools. */
    out = translated(LLMGW_EP_CHAT,
                     apr_pstrcat(test_pool,
                                 "{\"model\":\"m\",\"messages\":[],", tools,
                                 ",\"tool_choice\":"
                                 "\"none\",\"reasoning_effort\":\"none\"}",
                                 NULL));
    ck_assert_ptr_null(strstr(out, "tools"));
    ck_assert_ptr_nonnull(strstr(out, "\"think\":false"));
    out = translated(LLMGW_EP_CHAT,
                     apr_pstrcat(test_pool,
                                 "{\"model\":\"m\",\"messages\":[],", tools,
                                 ",\"tool_choice\":"
                                 "\"auto\",\"reasoning_effort\":\"high\"}",
                                 NULL));
    ck_assert_has(out, tools, "\"think\":\"high\"");
}
END_TEST

START_TEST(completions_request)
{
    static const refusal_t bad[] = {
        { "{\"model\":\"g\","
          "\"prompt\":[\"a\",\"b\"]}",
          "prompt", "unsupported_value" },
        { "{\"model\":\"g\","
          "\"prompt\":[1,2,3]}",
          "prompt", "invalid_type" },
        { "{\"model\":\"g\","
          "\"prompt\":[[1,2]]}",
          NULL, NULL },
        { "{\"model\":\"g\","
          "\"prompt\":\"x\",\"n\":3}",
          "n", NULL },
    };

    goes_to(LLMGW_EP_COMPLETIONS, a_gen_in, "m", "/api/generate", a_gen_out);
    REFUSED(LLMGW_EP_COMPLETIONS, bad);
}
END_TEST

START_TEST(embeddings_request)
{
    static const refusal_t bad[] = {
        { "{\"model\":\"e\","
          "\"input\":[[1,2]]}",
          "input", NULL },
    };

    goes_to(LLMGW_EP_EMBEDDINGS, a_emb_in, "nomic", "/api/embed", a_emb_out);
    ck_assert_str_eq(translated(LLMGW_EP_EMBEDDINGS,
                                "{\"model\":\"e\","
                                "\"input\":\"one\",\"keep_alive\":0}"),
                     "{\"model\":\"e\",\"input\":\"one\","
                     "\"keep_alive\":0}");
    REFUSED(LLMGW_EP_EMBEDDINGS, bad);
}
END_TEST

/* ---------------------------------------------------------------------
 * A.2 Ollama answers to OpenAI
 */

START_TEST(chat_answer)
{
    got_t g;

    from_ollama(
        &g, LLMGW_EP_CHAT, chat_req, 200,
        "{\"model\":\"llama3\",\"created_at\":"
        "\"2024-01-01T00:00:00.1Z\",\"message\":{\"role\":\"assistant\","
        "\"content\":\"Hello!\"},\"done\":true,\"done_reason\":\"stop\","
        "\"total_duration\":5,\"prompt_eval_count\":26,\"eval_count\":3}",
        0);
    ck_assert_str_eq(g.out, r_chat_out);
    usage_is(&g.u, 1, 26, 3, 29);
    /* Thinking, tool calls without and with an id of Ollama's. */
    from_ollama(&g, LLMGW_EP_CHAT, chat_req, 200, r_tools_ol, 0);
    ck_assert_str_eq(g.out, r_tools_out);
    ck_assert_int_eq(g.u.total, 14);
    /* Cut short with tool calls is still "length"; a prompt Ollama had
     * cached counts 0 (it leaves prompt_eval_count out). */
    from_ollama(
        &g, LLMGW_EP_CHAT, chat_req, 200,
        "{\"message\":{\"role\":\"assistant\","
        "\"content\":\"partial\",\"tool_calls\":[{\"function\":{\"name\":"
        "\"f\",\"arguments\":{}}}]},\"done\":true,\"done_reason\":"
        "\"length\",\"eval_count\":8}",
        0);
    ck_assert_has(g.out, "\"content\":\"partial\"",
                  "\"finish_reason\":\"length\"");
    usage_is(&g.u, ANY, 0, ANY, 8);
    /* Reasons Ollama has that OpenAI does not (load, unload): stop. */
    from_ollama(&g, LLMGW_EP_CHAT, chat_req, 200,
                "{\"message\":{\"role\":\"assistant\","
                "\"content\":\"\"},\"done\":true,\"done_reason\":\"load\"}",
                0);
    ck_assert_has(g.out, "\"content\":\"\",\"refusal\":null}",
                  "\"finish_reason\":\"stop\"");
    /* A generate answer to a chat request is no chat answer. */
    from_ollama(&g, LLMGW_EP_CHAT, chat_req, 200,
                "{\"response\":\"x\",\"done\":true}", 502);
    ck_assert_int_eq(g.u.found, 0);
}
END_TEST

START_TEST(completion_and_embedding_answers)
{
    got_t g;
    const char *b64;
    unsigned char raw[16];
    float f[2];

    from_ollama(&g, LLMGW_EP_COMPLETIONS,
                "{\"model\":\"gpt\","
                "\"prompt\":\"x\"}",
                200,
                "{\"model\":\"llama3\",\"response\":"
                "\"yes\",\"done\":true,\"done_reason\":\"length\",\"context\":"
                "[1,2],\"prompt_eval_count\":2,\"eval_count\":1}",
                0);
    ck_assert_str_eq(g.out, r_gen_out);
    from_ollama(&g, LLMGW_EP_EMBEDDINGS,
                "{\"model\":\"e\","
                "\"input\":[\"a\",\"b\"]}",
                200,
                "{\"model\":\"nomic\","
                "\"embeddings\":[[0.5,-1],[2,0.25]],\"prompt_eval_count\":4}",
                0);
    ck_assert_str_eq(g.out, r_emb_out);
    usage_is(&g.u, ANY, 4, 0, 4);
    /* base64 as OpenAI sends it: little-endian float32s. */
    from_ollama(&g, LLMGW_EP_EMBEDDINGS,
                "{\"model\":\"e\","
                "\"input\":\"a\",\"encoding_format\":\"base64\"}",
                200, "{\"model\":\"nomic\",\"embeddings\":[[1.5,-2]]}", 0);
    b64 = llmgw_json_gets(
        llmgw_json_array_get(llmgw_json_getj(json(g.out), "data", NULL), 0),
        "embedding", NULL);
    ck_assert_ptr_nonnull(b64);
    ck_assert_int_eq(apr_base64_decode_len(b64) >= 8, 1);
    ck_assert_int_eq(apr_base64_decode_binary(raw, b64), 8);
    ck_assert_int_eq(raw[3], 0x3f); /* 1.5f = 0x3fc00000, LE */
    ck_assert_int_eq(raw[2], 0xc0);
    memcpy(f, raw, sizeof(f));
    ck_assert(f[0] == 1.5f && f[1] == -2.0f);
}
END_TEST

START_TEST(backend_errors_in_openai_shape)
{
    /* Ollama's errors for a chat request, and what the client sees. */
    static const bad_t bad[] = {
        { LLMGW_EP_CHAT, 400, "{\"error\":\"invalid options\"}", 400,
          "invalid_request_error", NULL, "invalid options" },
        { LLMGW_EP_CHAT, 500,
          "{\"error\":\"llama runner process has terminated\"}", 500,
          "server_error", "upstream_error" },
        /* An error never passes as a success, and junk is the backend's. */
        { LLMGW_EP_CHAT, 200, "{\"error\":\"busy\"}", 502, NULL, NULL,
          "busy" },
        { LLMGW_EP_CHAT, 200, "<html>", 502, NULL, "upstream_error" },
        { LLMGW_EP_CHAT, 503, "no JSON", 503, NULL, NULL, NULL, "503" },
    };
    got_t g;
    apr_size_t i;

    from_ollama(&g, LLMGW_EP_CHAT, chat_req, 404,
                "{\"error\":"
                "\"model \\\"llama3\\\" not found, try pulling it first\"}",
                404);
    ck_assert_str_eq(
        llmgw_error_json(test_pool, &g.err),
        "{\"error\":{\"message\":\"model \\\"llama3\\\" not found, try "
        "pulling it first\",\"type\":\"invalid_request_error\",\"param\":"
        "\"model\",\"code\":\"model_not_found\"}}");
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        from_ollama(&g, bad[i].ep, chat_req, bad[i].status, bad[i].body,
                    bad[i].want);
        error_is(&g.err, &bad[i]);
    }
    /* An Ollama too old for the path: no model is missing. */
    from_ollama(&g, LLMGW_EP_CHAT, chat_req, 404, "404 page not found", 404);
    ck_assert_ptr_null(g.err.param);
    ck_assert_ptr_null(g.err.code);
    from_ollama(&g, LLMGW_EP_EMBEDDINGS,
                "{\"model\":\"e\","
                "\"input\":\"a\"}",
                200, "{\"model\":\"e\"}", 502);
    ck_assert_int_eq(g.u.found, 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * A.3 Ollama NDJSON streams to OpenAI SSE
 */

START_TEST(sse_chat_at_every_boundary)
{
    result_t r;

    /* Role chunk, text (the empty line sends nothing, CRLF is a line
     * end), finish, usage chunk, [DONE]. */
    every_boundary_sse(LLMGW_EP_CHAT, 1, ol_chat_in, ol_chat_out, &r);
    ended(&r, 1, 0);
    ck_assert_int_eq(r.content_events, 2);
    usage_is(&r.usage, 1, 5, 2, 7);
    ck_assert_str_eq(r.tail, "");
}
END_TEST

START_TEST(sse_tool_calls_and_thinking_at_every_boundary)
{
    result_t r;

    /* reasoning_content, two tool calls on two lines numbered 0 and 1
     * (ids: made up, then Ollama's own), finish_reason tool_calls; no
     * usage chunk and no usage members when not asked for. */
    every_boundary_sse(LLMGW_EP_CHAT, 0, ol_tools_in, ol_tools_out, &r);
    ck_assert_ptr_null(strstr(ol_tools_out, "usage"));
    ck_assert_int_eq(r.done, 1);
    ck_assert_int_eq(r.content_events, 3);
    /* Metered all the same. */
    usage_is(&r.usage, 1, ANY, ANY, 13);
}
END_TEST

START_TEST(sse_completions_at_every_boundary)
{
    result_t r;

    /* No role chunk; thinking has no place in completions. */
    every_boundary_sse(LLMGW_EP_COMPLETIONS, 1, ol_gen_in, ol_gen_out, &r);
    ck_assert_int_eq(r.done, 1);
    ck_assert_int_eq(r.usage.total, 3);
}
END_TEST

START_TEST(sse_error_line_mid_stream)
{
    result_t r;
    llmgw_ollama_sse_t *s;
    const char *out;
    apr_size_t n;

    /* The error ends the stream in the error tail's shape; what comes
     * after is not forwarded, and no second tail follows. */
    every_boundary_sse(LLMGW_EP_CHAT, 0, ol_error_in, ol_error_out, &r);
    ended(&r, 0, 1);
    ck_assert_str_eq(r.tail, "");
    s = llmgw_ollama_sse_create(test_pool, LLMGW_EP_CHAT, "abc", "gpt-x",
                                1700000000, 0);
    n = llmgw_ollama_sse_feed(s, ol_error_in, strlen(ol_error_in), &out);
    ck_assert_uint_eq(n, strlen(ol_error_out));
    n = llmgw_ollama_sse_feed(s, "{\"message\":{\"content\":\"x\"}}\n", 28,
                              &out);
    ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(sse_broken_stream_gets_the_error_tail)
{
    result_t r;
    const char *out, *ref_tail;
    llmgw_error_t err;
    apr_size_t n;
    static const char cut[] = "{\"message\":{\"content\":\"Hi\"},"
                              "\"done\":false}\n{\"message\":{\"cont";

    /* A line cut short is held back, never half forwarded. */
    out = run_sse(LLMGW_EP_CHAT, 0, cut, 0, 3, 0, &r);
    ck_assert_ptr_null(strstr(out, "cont\""));
    ck_assert_ptr_nonnull(strstr(out, "\"delta\":{\"content\":\"Hi\"}"));
    ended(&r, 0, 0);
    /* The same bytes as the OpenAI framer's error end. */
    llmgw_error_set(&err, 502, "server_error", NULL, "upstream_stream_error",
                    "broke");
    ref_tail = llmgw_sse_error_events(test_pool, &err, &n);
    ck_assert_str_eq(r.tail, ref_tail);
    /* At the end the cut line is read: not JSON, so the stream fails. */
    out = run_sse(LLMGW_EP_CHAT, 0, cut, 0, 3, 1, &r);
    ck_assert_int_eq(r.failed, 1);
    ck_assert_has(out, "not a JSON object", "data: [DONE]\n\n");
    ck_assert_ptr_null(strstr(out, "\"finish_reason\":\"error\""));
    /* A whole last line without its newline still counts. */
    out = run_sse(LLMGW_EP_COMPLETIONS, 0,
                  "{\"response\":\"a\",\"done\":"
                  "true,\"eval_count\":1}",
                  0, 4, 1, &r);
    ck_assert_int_eq(r.done, 1);
    ck_assert_ptr_nonnull(strstr(out, "data: [DONE]\n\n"));
    ck_assert_int_eq(r.usage.completion, 1);
    /* Completions end the same way. */
    run_sse(LLMGW_EP_COMPLETIONS, 0, "", 0, 1, 0, &r);
    ck_assert_has(r.tail, "data: {\"error\":", "data: [DONE]\n\n");
}
END_TEST

START_TEST(sse_long_stream_does_not_grow_the_pool)
{
    apr_pool_t *p;
    llmgw_ollama_sse_t *s;
    const char *out;
    apr_size_t n, before, i;
    static const char line[] = "{\"message\":{\"role\":\"assistant\","
                               "\"content\":\"token \"},\"done\":false}\n";

    apr_pool_create(&p, test_pool);
    s = llmgw_ollama_sse_create(p, LLMGW_EP_CHAT, "abc", "m", 1, 1);
    for (i = 0; i < 100; i++) {
        llmgw_ollama_sse_feed(s, line, sizeof(line) - 1, &out);
    }
    /* Pool memory only grows by blocks: fill what is left of the
     * current one, and see that 10000 more lines take no new block. */
    before = (apr_size_t)apr_palloc(p, 1);
    for (i = 0; i < 10000; i++) {
        n = llmgw_ollama_sse_feed(s, line, sizeof(line) - 1, &out);
        ck_assert_uint_gt(n, 0);
    }
    ck_assert_uint_eq((apr_size_t)apr_palloc(p, 1), before + 8);
    ck_assert_int_eq(s->content_events, 10100);
    apr_pool_destroy(p);
}
END_TEST

/* ---------------------------------------------------------------------
 * B.4 Ollama requests to OpenAI
 */

START_TEST(front_chat_request)
{
    got_t g;
    const char *up;
    apr_size_t len;
    int strip;

    /* Images as data: URLs of the right type, tool calls with ids and
     * string arguments, tool answers matched to them by name (in
     * another order), options, format, think; keep_alive and num_ctx
     * dropped; a stream by default, with usage. */
    front(&g, LLMGW_OLLAMA_EP_CHAT, f_chat_in, 0);
    ck_assert_str_eq(g.out, f_chat_out);
    ck_assert_int_eq(g.req.ep, LLMGW_EP_CHAT);
    ck_assert_str_eq(g.req.model, "llama3");
    ck_assert_int_eq(g.req.stream, 1);
    ck_assert_int_eq(g.req.wants_usage, 1);
    ck_assert_ptr_nonnull(g.req.body);
    /* Routing goes on as for OpenAI clients: renamed, nothing to strip. */
    up = llmgw_request_upstream_body(&g.req, "Qwen/Qwen2.5-7B", g.out,
                                     strlen(g.out), &len, &strip);
    ck_assert_int_eq(strip, 0);
    ck_assert_has(up, "{\"model\":\"Qwen/Qwen2.5-7B\",",
                  "\"include_usage\":true");
}
END_TEST

START_TEST(front_tool_answers_matched)
{
    got_t g;
    llmgw_json_t *msgs;

    /* Ids the client kept win; a tool answer without a name takes the
     * first open call; calls of an earlier turn are closed. */
    front(&g, LLMGW_OLLAMA_EP_CHAT,
          "{\"model\":\"m\","
          "\"stream\":false,\"messages\":[{\"role\":\"assistant\","
          "\"tool_calls\":[{\"id\":\"x1\",\"function\":{\"name\":\"a\","
          "\"arguments\":{}}}]},{\"role\":\"tool\",\"tool_name\":\"a\","
          "\"content\":\"1\"},{\"role\":\"assistant\",\"tool_calls\":[{"
          "\"function\":{\"name\":\"b\",\"arguments\":{}}},{\"function\":{"
          "\"name\":\"c\",\"arguments\":\"{\\\"q\\\":1}\"}}]},{\"role\":"
          "\"tool\",\"content\":\"2\"},{\"role\":\"tool\",\"tool_call_id\":"
          "\"mine\",\"content\":\"3\"},{\"role\":\"tool\",\"tool_name\":"
          "\"c\","
          "\"content\":\"4\"}]}",
          0);
    msgs = llmgw_json_getj(json(g.out), "messages", NULL);
    ck_assert_str_eq(member(msgs, 1, "tool_call_id"), "x1");
    ck_assert_str_eq(member(msgs, 3, "tool_call_id"), "call_1");
    ck_assert_str_eq(member(msgs, 4, "tool_call_id"), "mine");
    ck_assert_str_eq(member(msgs, 5, "tool_call_id"), "call_2");
    ck_assert_str_eq(
        llmgw_json_write(
            llmgw_json_getj(llmgw_json_array_get(msgs, 2), "tool_calls", NULL),
            NULL),
        "[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
        "\"b\",\"arguments\":\"{}\"}},{\"id\":\"call_2\",\"type\":"
        "\"function\",\"function\":{\"name\":\"c\",\"arguments\":"
        "\"{\\\"q\\\":1}\"}}]");
    ck_assert_ptr_null(strstr(g.out, "stream_options"));
    ck_assert_int_eq(g.req.stream, 0);
    ck_assert_int_eq(g.req.wants_usage, 0);
}
END_TEST

START_TEST(front_images_typed)
{
    got_t g;

    front(&g, LLMGW_OLLAMA_EP_CHAT,
          "{\"model\":\"m\","
          "\"messages\":[{\"role\":\"user\",\"images\":[\"R0lGODlh\","
          "\"UklGRh4A\",\"AAAA\",\"data:image/jpeg;base64,/9j/\"]}]}",
          0);
    ck_assert_ptr_nonnull(strstr(
        g.out,
        "\"content\":[{\"type\":\"image_url\","
        "\"image_url\":{\"url\":\"data:image/gif;base64,R0lGODlh\"}},{"
        "\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/webp;"
        "base64,UklGRh4A\"}},{\"type\":\"image_url\",\"image_url\":{\"url\":"
        "\"data:image/png;base64,AAAA\"}},{\"type\":\"image_url\","
        "\"image_url\":{\"url\":\"data:image/jpeg;base64,/9j/\"}}]"));
    front(&g, LLMGW_OLLAMA_EP_CHAT,
          "{\"model\":\"m\","
          "\"messages\":[{\"role\":\"user\",\"images\":[5]}]}",
          400);
}
END_TEST

START_TEST(front_generate_and_embed_requests)
{
    got_t g;

    /* A schema, no stream, num_predict -1 (no limit) left out. */
    front(&g, LLMGW_OLLAMA_EP_GENERATE, f_gen_in, 0);
    ck_assert_str_eq(g.out, f_gen_out);
    ck_assert_int_eq(g.req.ep, LLMGW_EP_COMPLETIONS);
    ck_assert_int_eq(g.req.stream, 0);
    front(&g, LLMGW_OLLAMA_EP_GENERATE,
          "{\"model\":\"m\","
          "\"prompt\":\"p\",\"raw\":true,\"system\":\"\",\"options\":{"
          "\"num_predict\":7,\"stop\":[\"\\n\"],\"seed\":3}}",
          0);
    ck_assert_str_eq(g.out, "{\"model\":\"m\",\"prompt\":\"p\",\"seed\":3,"
                            "\"max_tokens\":7,\"stop\":[\"\\n\"],\"stream\":"
                            "true,\"stream_options\":{\"include_usage\":"
                            "true}}");
    front(&g, LLMGW_OLLAMA_EP_EMBED,
          "{\"model\":\"nomic\","
          "\"input\":[\"a\",\"b\"],\"truncate\":true,\"dimensions\":64,"
          "\"keep_alive\":\"1m\"}",
          0);
    ck_assert_str_eq(g.out,
                     "{\"model\":\"nomic\",\"input\":[\"a\",\"b\"],"
                     "\"dimensions\":64,\"encoding_format\":\"float\"}");
    ck_assert_int_eq(g.req.ep, LLMGW_EP_EMBEDDINGS);
    ck_assert_int_eq(g.req.stream, 0);
    front(&g, LLMGW_OLLAMA_EP_EMBEDDINGS,
          "{\"model\":\"nomic\","
          "\"prompt\":\"a\"}",
          0);
    ck_assert_str_eq(g.out, "{\"model\":\"nomic\",\"input\":\"a\","
                            "\"encoding_format\":\"float\"}");
}
END_TEST

START_TEST(front_request_errors)
{
    static const bad_t bad[] = {
        { LLMGW_OLLAMA_EP_CHAT, 0, "[]", 400 },
        { LLMGW_OLLAMA_EP_CHAT, 0, "{\"model\":\"m\"}", 400, NULL, NULL, NULL,
          "a load request" },
        { LLMGW_OLLAMA_EP_CHAT, 0,
          "{\"model\":\"m\","
          "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":"
          "\"no\"}",
          400 },
        { LLMGW_OLLAMA_EP_CHAT, 0,
          "{\"model\":\"m\","
          "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"options\":"
          "{\"temperature\":\"hot\"}}",
          400, NULL, NULL, "option \"temperature\" must be a number" },
        { LLMGW_OLLAMA_EP_CHAT, 0,
          "{\"model\":\"m\","
          "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"format\":"
          "\"yaml\"}",
          400 },
        { LLMGW_OLLAMA_EP_CHAT, 0,
          "{\"model\":\"m\","
          "\"messages\":[{\"content\":\"x\"}]}",
          400 },
        { LLMGW_OLLAMA_EP_GENERATE, 0,
          "{\"model\":\"m\","
          "\"prompt\":\"p\",\"system\":\"be brief\"}",
          400, NULL, NULL, NULL, "/api/chat" },
        { LLMGW_OLLAMA_EP_GENERATE, 0,
          "{\"model\":\"m\","
          "\"prompt\":\"p\",\"images\":[\"AAAA\"]}",
          400 },
        { LLMGW_OLLAMA_EP_GENERATE, 0, "{\"model\":\"m\"}", 400 },
        { LLMGW_OLLAMA_EP_EMBED, 0,
          "{\"model\":\"m\","
          "\"input\":[1]}",
          400 },
        { LLMGW_OLLAMA_EP_NONE, 0, "{}", 404 },
    };
    got_t g;
    apr_size_t i;

    front(&g, LLMGW_OLLAMA_EP_CHAT, "{\"messages\":[]}", 400);
    ck_assert_str_eq(llmgw_ollama_error_json(test_pool, g.err.message),
                     "{\"error\":\"model is required\"}");
    front(&g, LLMGW_OLLAMA_EP_CHAT, "{\"model\":", 400);
    ck_assert_int_eq(strncmp(g.err.message, "invalid JSON", 12), 0);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        front(&g, bad[i].ep, bad[i].body, bad[i].want);
        error_is(&g.err, &bad[i]);
    }
    ck_assert_str_eq(llmgw_ollama_error_json(test_pool, "a \"b\""),
                     "{\"error\":\"a \\\"b\\\"\"}");
}
END_TEST

START_TEST(front_endpoints)
{
    ck_assert_int_eq(llmgw_ollama_endpoint_parse("/api/chat"),
                     LLMGW_OLLAMA_EP_CHAT);
    ck_assert_int_eq(llmgw_ollama_endpoint_parse("/generate"),
                     LLMGW_OLLAMA_EP_GENERATE);
    ck_assert_int_eq(llmgw_ollama_endpoint_parse("/api/embed"),
                     LLMGW_OLLAMA_EP_EMBED);
    ck_assert_int_eq(llmgw_ollama_endpoint_parse("/api/embeddings"),
                     LLMGW_OLLAMA_EP_EMBEDDINGS);
    ck_assert_int_eq(llmgw_ollama_endpoint_parse("/api/tags"),
                     LLMGW_OLLAMA_EP_NONE);
    ck_assert_int_eq(llmgw_ollama_openai_endpoint(LLMGW_OLLAMA_EP_EMBEDDINGS),
                     LLMGW_EP_EMBEDDINGS);
    ck_assert_int_eq(llmgw_ollama_openai_endpoint(LLMGW_OLLAMA_EP_GENERATE),
                     LLMGW_EP_COMPLETIONS);
}
END_TEST

START_TEST(round_trip_keeps_the_meaning)
{
    got_t g;
    const char *path, *ollama, *back;
    llmgw_json_t *j;

    /* OpenAI -> Ollama -> OpenAI gives back what matters. */
    ck_assert_int_eq(
        to_ollama(LLMGW_EP_CHAT, a_chat_in, "llava", &path, &ollama, &g.err),
        0);
    back = front(&g, LLMGW_OLLAMA_EP_CHAT, ollama, 0);
    j = json(back);
    ck_assert_int_eq(llmgw_json_getb(j, 1, "stream", NULL), 0);
    ck_assert_int_eq(llmgw_json_getl(j, 0, "max_tokens", NULL), 50);
    ck_assert_str_eq(llmgw_json_gets(j, "response_format", "type", NULL),
                     "json_object");
    ck_assert_str_eq(llmgw_json_write(llmgw_json_getj(j, "stop", NULL), NULL),
                     "[\"END\"]");
    ck_assert_has(back,
                  "\"tool_calls\":[{\"id\":\"call_9\","
                  "\"type\":\"function\",\"function\":{"
                  "\"name\":\"look\",\"arguments\":"
                  "\"{\\\"x\\\":1}\"}}]",
                  "{\"role\":\"tool\",\"content\":"
                  "\"a cat\",\"tool_call_id\":\"call_9\"}",
                  "\"url\":\"data:image/png;base64,"
                  "iVBORw0KGgo=\"");
}
END_TEST

/* ---------------------------------------------------------------------
 * B.5 OpenAI answers to Ollama
 */

START_TEST(front_answers)
{
    got_t g;

    front_answer(&g, LLMGW_OLLAMA_EP_CHAT, 200, b_chat_oa, 0);
    ck_assert_str_eq(g.out, b_chat_out);
    usage_is(&g.u, 1, ANY, ANY, 4);
    /* Arguments back to an object; "tool_calls" is Ollama's "stop". */
    front_answer(&g, LLMGW_OLLAMA_EP_CHAT, 200, b_tools_oa, 0);
    ck_assert_str_eq(g.out, b_tools_out);
    front_answer(
        &g, LLMGW_OLLAMA_EP_GENERATE, 200,
        "{\"choices\":[{\"index\":0,\"text\":\"abc\",\"finish_reason\":"
        "\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_"
        "tokens\":"
        "1,\"total_tokens\":4}}",
        0);
    ck_assert_str_eq(g.out, b_gen_out);
    front_answer(
        &g, LLMGW_OLLAMA_EP_EMBED, 200,
        "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\","
        "\"index\":"
        "0,\"embedding\":[0.1,0.2]},{\"object\":\"embedding\",\"index\":1,"
        "\"embedding\":[0.3,0.4]}],\"model\":\"m\",\"usage\":{"
        "\"prompt_tokens\":2,\"total_tokens\":2}}",
        0);
    ck_assert_str_eq(g.out, b_embed_out);
    ck_assert_int_eq(g.u.prompt, 2);
    front_answer(&g, LLMGW_OLLAMA_EP_EMBEDDINGS, 200,
                 "{\"object\":\"list\",\"data\":[{\"object\":"
                 "\"embedding\",\"index\":"
                 "0,\"embedding\":[0.1,0.2]}],\"model\":\"m\"}",
                 0);
    ck_assert_str_eq(g.out, "{\"embedding\":[0.1,0.2]}");
    ck_assert_int_eq(g.u.found, 0);
    /* No usage: counts 0, as Ollama sends when it did not count. */
    front_answer(
        &g, LLMGW_OLLAMA_EP_CHAT, 200,
        "{\"choices\":"
        "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
        "\"x\",\"reasoning\":\"r\"},\"finish_reason\":\"content_filter\"}]"
        "}",
        0);
    ck_assert_has(g.out, "\"thinking\":\"r\"", "\"done_reason\":\"stop\"",
                  "\"eval_count\":0");
}
END_TEST

START_TEST(front_answer_errors)
{
    static const bad_t bad[] = {
        /* vLLM's own shape, FastAPI's detail, a bare status. */
        { LLMGW_OLLAMA_EP_CHAT, 400,
          "{\"object\":"
          "\"error\",\"message\":\"too long\",\"type\":\"BadRequestError\","
          "\"code\":400}",
          400, NULL, NULL, "too long" },
        { LLMGW_OLLAMA_EP_CHAT, 422, "{\"detail\":\"bad\"}", 422, NULL, NULL,
          "bad" },
        { LLMGW_OLLAMA_EP_CHAT, 503, "<html>", 503 },
        { LLMGW_OLLAMA_EP_CHAT, 200, "{\"error\":{\"message\":\"late\"}}", 502,
          NULL, NULL, "late" },
        { LLMGW_OLLAMA_EP_CHAT, 200, "{}", 502 },
        { LLMGW_OLLAMA_EP_EMBED, 200, "{\"data\":[{\"embedding\":\"AAAA\"}]}",
          502 },
        /* A model's broken arguments are not passed off as an object. */
        { LLMGW_OLLAMA_EP_CHAT, 200,
          "{\"choices\":"
          "[{\"index\":0,\"message\":{\"role\":"
          "\"assistant\",\"content\":null,"
          "\"tool_calls\":[{\"id\":\"c\",\"type\":"
          "\"function\",\"function\":{"
          "\"name\":\"f\",\"arguments\":\"{\\\"a\\\":"
          "\"}}]},\"finish_reason\":"
          "\"tool_calls\"}]}",
          502, NULL, NULL, NULL, "arguments" },
    };
    got_t g;
    apr_size_t i;

    front_answer(&g, LLMGW_OLLAMA_EP_CHAT, 404,
                 "{\"error\":{"
                 "\"message\":\"The model does not exist\",\"type\":"
                 "\"invalid_request_error\",\"param\":\"model\",\"code\":"
                 "\"model_not_found\"}}",
                 404);
    ck_assert_str_eq(llmgw_ollama_error_json(test_pool, g.err.message),
                     "{\"error\":\"The model does not exist\"}");
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        front_answer(&g, bad[i].ep, bad[i].status, bad[i].body, bad[i].want);
        error_is(&g.err, &bad[i]);
    }
}
END_TEST

/* ---------------------------------------------------------------------
 * B.6 OpenAI SSE streams to Ollama NDJSON
 */

START_TEST(ndjson_chat_at_every_boundary)
{
    result_t r;

    /* "data:" without a space, a comment, a CRLF event; thinking; a tool
     * call put together from three pieces, sent whole on finish; the
     * final line with the usage chunk's counts. */
    every_boundary_nd(LLMGW_OLLAMA_EP_CHAT, oa_chat_in, oa_chat_out, &r);
    ended(&r, 1, 0);
    usage_is(&r.usage, 1, ANY, ANY, 10);
    ck_assert_str_eq(r.tail, "");
}
END_TEST

START_TEST(ndjson_generate_without_done)
{
    result_t r;
    const char *out;

    /* Some servers end without [DONE]: the finish_reason is enough. */
    every_boundary_nd(LLMGW_OLLAMA_EP_GENERATE, oa_gen_in, oa_gen_out, &r);
    ck_assert_int_eq(r.done, 1);
    /* Without the end call nothing final is made up. */
    out = run_nd(LLMGW_OLLAMA_EP_GENERATE, oa_gen_in, 0, 5, 0, &r);
    ck_assert_ptr_null(strstr(out, "\"done\":true"));
    ck_assert_int_eq(r.done, 0);
    ck_assert_str_eq(r.tail, "{\"error\":\"broke\"}\n");
}
END_TEST

START_TEST(ndjson_error_event)
{
    result_t r;

    every_boundary_nd(LLMGW_OLLAMA_EP_CHAT, oa_error_in, oa_error_out, &r);
    ended(&r, 0, 1);
    ck_assert_str_eq(r.tail, "");
}
END_TEST

START_TEST(ndjson_broken_streams)
{
    result_t r;
    const char *out;

    /* Cut in the middle of an event: nothing of it goes out. */
    out = run_nd(LLMGW_OLLAMA_EP_CHAT,
                 "data: {\"choices\":[{\"index\":0,"
                 "\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choi",
                 0, 7, 1, &r);
    ended(&r, 0, 1);
    ck_assert_has(out, "\"content\":\"a\"", "{\"error\":");
    /* Cut between events, no finish: the caller's tail ends it. */
    out = run_nd(LLMGW_OLLAMA_EP_CHAT,
                 "data: {\"choices\":[{\"index\":0,"
                 "\"delta\":{\"content\":\"a\"}}]}\n\n",
                 0, 9, 1, &r);
    ended(&r, 0, 0);
    ck_assert_str_eq(r.tail, "{\"error\":\"broke\"}\n");
    /* Bad arguments at the end of tool calls: an error line. */
    out = run_nd(LLMGW_OLLAMA_EP_CHAT,
                 "data: {\"choices\":[{\"index\":0,"
                 "\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\","
                 "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\"}}]},"
                 "\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n",
                 0, 11, 1, &r);
    ck_assert_int_eq(r.failed, 1);
    ck_assert_str_eq(out, "{\"error\":\"the backend sent tool call "
                          "arguments that are not a JSON object\"}\n");
}
END_TEST

START_TEST(ndjson_parallel_tool_calls)
{
    result_t r;
    const char *out;

    /* Two calls whose pieces interleave, keyed by index. */
    out = run_nd(
        LLMGW_OLLAMA_EP_CHAT,
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{"
        "\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"x\","
        "\"arguments\":\"{\\\"n\\\":\"}},{\"index\":1,\"id\":\"b\","
        "\"function\":{\"name\":\"y\",\"arguments\":\"\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{"
        "\"index\":1,\"function\":{\"arguments\":\"{}\"}},{\"index\":0,"
        "\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
        "\"stop\"}]}\n\ndata: [DONE]\n\n",
        0, 13, 1, &r);
    ck_assert_ptr_nonnull(strstr(
        out,
        "\"tool_calls\":[{\"id\":\"a\","
        "\"function\":{\"index\":0,\"name\":\"x\",\"arguments\":{\"n\":1}}},"
        "{\"id\":\"b\",\"function\":{\"index\":1,\"name\":\"y\","
        "\"arguments\":{}}}]"));
    ck_assert_int_eq(r.done, 1);
}
END_TEST

/* ---------------------------------------------------------------------
 * Counts near and past 2^63, both ways: clamped, never wrapped
 */

#define HUGE_COUNT "9223372036854775807"

START_TEST(huge_counts_are_clamped)
{
    got_t g;
    result_t r;

    /* A.2: prompt_eval_count + eval_count overflowed into a negative. */
    from_ollama(&g, LLMGW_EP_CHAT, chat_req, 200,
                "{\"message\":{\"role\":\"assistant\","
                "\"content\":\"x\"},\"done\":true,\"prompt_"
                "eval_count\":" HUGE_COUNT ",\"eval_count\":" HUGE_COUNT "}",
                0);
    ck_assert(g.u.prompt == LLMGW_TOKENS_MAX);
    ck_assert(g.u.completion == LLMGW_TOKENS_MAX);
    ck_assert(g.u.total == LLMGW_TOKENS_MAX);
    ck_assert_ptr_nonnull(strstr(g.out, "\"total_tokens\":1000000000000000}"));
    from_ollama(&g, LLMGW_EP_CHAT, chat_req, 200,
                "{\"message\":{\"role\":\"assistant\","
                "\"content\":\"x\"},\"done\":true,\"prompt_eval_count\":-4,"
                "\"eval_count\":2.5}",
                0);
    ck_assert(g.u.prompt == 0 && g.u.completion == 3 && g.u.total == 3);
    from_ollama(&g, LLMGW_EP_EMBEDDINGS,
                "{\"model\":\"e\","
                "\"input\":\"a\"}",
                200,
                "{\"embeddings\":[[1]],"
                "\"prompt_eval_count\":18446744073709551616}",
                0);
    ck_assert(g.u.prompt == LLMGW_TOKENS_MAX && g.u.total == LLMGW_TOKENS_MAX);
    /* A.3: the done line of a stream. */
    run_sse(LLMGW_EP_CHAT, 1,
            "{\"message\":{\"content\":\"x\"},\"done\":"
            "true,\"prompt_eval_count\":" HUGE_COUNT
            ",\"eval_count\":" HUGE_COUNT "}\n",
            0, 7, 1, &r);
    ck_assert_int_eq(r.done, 1);
    ck_assert(r.usage.total == LLMGW_TOKENS_MAX);
    /* B.5 and B.6: OpenAI usage for Ollama clients. */
    front_answer(
        &g, LLMGW_OLLAMA_EP_CHAT, 200,
        "{\"choices\":"
        "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
        "\"x\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_"
        "tokens\":" HUGE_COUNT ",\"completion_tokens\":" HUGE_COUNT "}}",
        0);
    ck_assert(g.u.total == LLMGW_TOKENS_MAX);
    ck_assert_ptr_nonnull(strstr(g.out, "\"eval_count\":1000000000000000"));
    run_nd(LLMGW_OLLAMA_EP_CHAT,
           "data: {\"choices\":[{\"index\":0,"
           "\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\n\n"
           "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":-7,"
           "\"completion_tokens\":" HUGE_COUNT ",\"total_tokens\":-2}}\n\n"
           "data: [DONE]\n\n",
           0, 11, 1, &r);
    ck_assert_int_eq(r.done, 1);
    ck_assert(r.usage.prompt == 0);
    ck_assert(r.usage.completion == LLMGW_TOKENS_MAX);
    ck_assert(r.usage.total == LLMGW_TOKENS_MAX);
}
END_TEST

/* ---------------------------------------------------------------------
 * The one cap on what a stream holds (LLMGW_STREAM_MAX_EVENT), both ways
 */

#define PIECE 65536

/* 'len' bytes of c after head, fed in pieces; returns all the output. */
static const char *feed_huge(feed_fn feed, void *s, const char *head, char c,
                             apr_size_t len)
{
    char *junk = malloc(PIECE);
    llmgw_pbuf_t out = { NULL, 0, 0 };
    const char *ready;
    apr_size_t n, fed = 0;

    memset(junk, c, PIECE);
    n = feed(s, head, strlen(head), &ready);
    llmgw_pbuf_add(test_pool, &out, ready, n);
    while (fed < len) {
        n = feed(s, junk, PIECE, &ready);
        llmgw_pbuf_add(test_pool, &out, ready, n);
        fed += PIECE;
    }
    free(junk);
    return apr_pstrmemdup(test_pool, out.b ? out.b : "", out.len);
}

START_TEST(stream_lines_are_capped)
{
    llmgw_ollama_sse_t *a =
        llmgw_ollama_sse_create(test_pool, LLMGW_EP_CHAT, "abc", "m", 1, 0);
    llmgw_ollama_ndjson_t *b;
    const char *out;
    char *args;
    apr_size_t i;

    /* A.3: an NDJSON line that never ends. */
    out = feed_huge(sse_feed, a,
                    "{\"message\":{\"content\":\"Hi\"},\"done\":false}"
                    "\n{\"message\":{\"content\":\"",
                    'a', LLMGW_STREAM_MAX_EVENT + PIECE);
    ck_assert_int_eq(a->failed, 1);
    ck_assert_has(out, "{\"content\":\"Hi\"}", "cannot hold", "data: [DONE]");
    ck_assert_uint_eq(a->in.cap, 0);
    /* B.6: an SSE line, and an event of many data lines. */
    b = llmgw_ollama_ndjson_create(test_pool, LLMGW_OLLAMA_EP_CHAT, "m", 1);
    out = feed_huge(nd_feed, b, "data: {\"x\":\"", 'a',
                    LLMGW_STREAM_MAX_EVENT + PIECE);
    ck_assert_int_eq(b->failed, 1);
    ck_assert_ptr_nonnull(strstr(out, "{\"error\":\"the backend sent a "
                                      "stream line the gateway cannot "
                                      "hold\"}\n"));
    ck_assert_uint_eq(b->in.cap, 0);
    b = llmgw_ollama_ndjson_create(test_pool, LLMGW_OLLAMA_EP_CHAT, "m", 1);
    args = apr_palloc(test_pool, PIECE + 8);
    memcpy(args, "data: ", 6);
    memset(args + 6, 'x', PIECE);
    args[PIECE] = '\n';
    args[PIECE + 1] = '\0';
    for (i = 0; i < LLMGW_STREAM_MAX_EVENT / PIECE + 2 && !b->failed; i++) {
        llmgw_ollama_ndjson_feed(b, args, PIECE + 1, &out);
    }
    ck_assert_int_eq(b->failed, 1);
    ck_assert_ptr_nonnull(strstr(out, "cannot hold"));
    ck_assert_uint_eq(b->ev.cap, 0);
    ck_assert_uint_eq(b->in.cap, 0);
}
END_TEST

/* B.6: a tool call's arguments, piece by piece, past the cap. */
START_TEST(tool_arguments_are_capped)
{
    llmgw_ollama_ndjson_t *b =
        llmgw_ollama_ndjson_create(test_pool, LLMGW_OLLAMA_EP_CHAT, "m", 1);
    char *junk = apr_palloc(test_pool, PIECE + 1);
    const char *ev, *out = "";
    apr_size_t i, n = 0;

    memset(junk, 'x', PIECE);
    junk[PIECE] = '\0';
    ev = apr_pstrcat(test_pool,
                     "data: {\"choices\":[{\"index\":0,\"delta\":"
                     "{\"tool_calls\":[{\"index\":0,\"function\":{"
                     "\"arguments\":\"",
                     junk, "\"}}]}}]}\n\n", NULL);
    for (i = 0; i < LLMGW_STREAM_MAX_EVENT / PIECE + 2 && !b->failed; i++) {
        n = llmgw_ollama_ndjson_feed(b, ev, strlen(ev), &out);
    }
    ck_assert_int_eq(b->failed, 1);
    ck_assert_uint_gt(n, 0);
    ck_assert_ptr_nonnull(strstr(out, "arguments the gateway cannot hold"));
}
END_TEST

/* B: what an Ollama request holds beyond its OpenAI view. */
static llmgw_ollama_extra_t parse_extra(llmgw_ollama_ep_t oep,
                                        const char *body, int want)
{
    llmgw_ollama_extra_t x;
    llmgw_request_t req;
    llmgw_error_t err;
    const char *out;
    apr_size_t n;

    ck_assert_int_eq(llmgw_ollama_front_parse(test_pool, oep, body,
                                              strlen(body), &req, &out, &n, &x,
                                              &err),
                     want);
    return x;
}

START_TEST(front_parse_load_beyond_and_refusals)
{
    static const struct {
        const char *v, *why;
    } bad_keep[] = { { "\"soon\"", "time: invalid duration \"soon\"" },
                     { "\"5\"", "time: invalid duration \"5\"" },
                     { "\"5x\"", "time: invalid duration \"5x\"" },
                     { "\"\"", "time: invalid duration \"\"" },
                     { "true", "Unsupported type: 'bool'" },
                     { "[]", "Unsupported type: '[]interface {}'" } };
    static const struct {
        llmgw_ollama_ep_t oep;
        const char *body;
        int load, unload, beyond, refused;
    } cases[] = {
        { LLMGW_OLLAMA_EP_CHAT, "{\"model\":\"m\"}", 1, 0, 0, 0 },
        { LLMGW_OLLAMA_EP_CHAT, "{\"model\":\"m\",\"messages\":[]}", 1, 0, 0,
          0 },
        { LLMGW_OLLAMA_EP_CHAT, "{\"model\":\"m\",\"keep_alive\":0}", 1, 1, 0,
          0 },
        { LLMGW_OLLAMA_EP_GENERATE, "{\"model\":\"m\",\"keep_alive\":\"0s\"}",
          1, 1, 0, 0 },
        { LLMGW_OLLAMA_EP_GENERATE,
          "{\"model\":\"m\",\"prompt\":\"\",\"keep_alive\":\"5m\"}", 1, 0, 0,
          0 },
        { LLMGW_OLLAMA_EP_GENERATE,
          "{\"model\":\"m\",\"prompt\":\"p\",\"keep_alive\":0}", 0, 0, 0, 0 },
        { LLMGW_OLLAMA_EP_EMBED, "{\"model\":\"m\",\"input\":[]}", 1, 0, 0,
          0 },
        { LLMGW_OLLAMA_EP_CHAT,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
          "\"x\"}],\"options\":{\"temperature\":0,\"num_predict\":3},"
          "\"think\":\"low\",\"keep_alive\":\"1h\"}",
          0, 0, 0, 0 },
        { LLMGW_OLLAMA_EP_CHAT,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
          "\"x\"}],\"options\":{\"num_ctx\":8192}}",
          0, 0, 1, 0 },
        { LLMGW_OLLAMA_EP_CHAT,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
          "\"x\"}],\"think\":true}",
          0, 0, 1, 0 },
        { LLMGW_OLLAMA_EP_CHAT,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\","
          "\"content\":\"x\",\"thinking\":\"t\"}]}",
          0, 0, 1, 0 },
        { LLMGW_OLLAMA_EP_GENERATE,
          "{\"model\":\"m\",\"prompt\":\"p\",\"raw\":true}", 0, 0, 1, 0 },
        { LLMGW_OLLAMA_EP_GENERATE,
          "{\"model\":\"m\",\"prompt\":\"p\",\"system\":\"s\"}", 0, 0, 1, 1 },
        { LLMGW_OLLAMA_EP_GENERATE,
          "{\"model\":\"m\",\"prompt\":\"p\",\"images\":[\"AAAA\"]}", 0, 0, 1,
          1 },
        { LLMGW_OLLAMA_EP_EMBED,
          "{\"model\":\"m\",\"input\":\"a\",\"truncate\":false}", 0, 0, 1, 0 },
    };
    llmgw_ollama_extra_t x;
    apr_size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        x = parse_extra(cases[i].oep, cases[i].body, 0);

        ck_assert_msg(x.load == cases[i].load && x.unload == cases[i].unload
                          && x.beyond == cases[i].beyond
                          && !!x.refusal.status == cases[i].refused,
                      "%s: load %d unload %d beyond %d refused %d",
                      cases[i].body, x.load, x.unload, x.beyond,
                      x.refusal.status);
    }
    parse_extra(LLMGW_OLLAMA_EP_CHAT, "{\"model\":\"m\",\"messages\":{}}",
                400);
    /* keep_alive as Ollama reads it: seconds, or a Go duration. */
    x = parse_extra(LLMGW_OLLAMA_EP_CHAT,
                    "{\"model\":\"m\",\"keep_alive\":\"1h30m\"}", 0);
    ck_assert_int_eq(x.load && !x.unload, 1);
    x = parse_extra(LLMGW_OLLAMA_EP_CHAT,
                    "{\"model\":\"m\",\"keep_alive\":\"0.0m\"}", 0);
    ck_assert_int_eq(x.unload, 1);
    for (i = 0; i < sizeof(bad_keep) / sizeof(bad_keep[0]); i++) {
        llmgw_request_t req;
        llmgw_error_t err;
        const char *out,
            *body =
                apr_psprintf(test_pool, "{\"model\":\"m\",\"keep_alive\":%s}",
                             bad_keep[i].v);
        apr_size_t n;

        ck_assert_int_eq(
            llmgw_ollama_front_parse(test_pool, LLMGW_OLLAMA_EP_CHAT, body,
                                     strlen(body), &req, &out, &n, &x, &err),
            400);
        ck_assert_str_eq(err.message, bad_keep[i].why);
    }
    parse_extra(LLMGW_OLLAMA_EP_GENERATE, "{\"model\":\"m\",\"prompt\":1}",
                400);
}
END_TEST

/* B: the client's body for an Ollama backend: only the model changes. */
START_TEST(native_body_and_load_answers)
{
    static const char body[] =
        "{ \"model\" : \"m\", \"keep_alive\":0,\n"
        "  \"options\":{\"num_ctx\":8192, \"mirostat\":2}, \"think\":true}";
    llmgw_ollama_extra_t x = parse_extra(LLMGW_OLLAMA_EP_CHAT, body, 0);
    apr_size_t n;

    ck_assert_str_eq(llmgw_ollama_native_body(test_pool, x.view, "up\"1", &n),
                     "{ \"model\" : \"up\\\"1\", \"keep_alive\":0,\n"
                     "  \"options\":{\"num_ctx\":8192, \"mirostat\":2}, "
                     "\"think\":true}");
    ck_assert_str_eq(llmgw_ollama_native_path(LLMGW_OLLAMA_EP_GENERATE),
                     "/api/generate");
    ck_assert_str_eq(
        llmgw_ollama_load_answer(test_pool, LLMGW_OLLAMA_EP_CHAT, "m", 0,
                                 apr_time_from_sec(1700000000) + 120, &n),
        "{\"model\":\"m\",\"created_at\":\"2023-11-14T22:13:20.00012Z\","
        "\"message\":{\"role\":\"assistant\",\"content\":\"\"},"
        "\"done_reason\":\"load\",\"done\":true}");
    ck_assert_str_eq(
        llmgw_ollama_load_answer(test_pool, LLMGW_OLLAMA_EP_GENERATE, "m", 1,
                                 apr_time_from_sec(1700000000), &n),
        "{\"model\":\"m\",\"created_at\":\"2023-11-14T22:13:20Z\","
        "\"response\":\"\",\"done_reason\":\"unload\",\"done\":true}");
    ck_assert_str_eq(llmgw_ollama_time_us(
                         test_pool, apr_time_from_sec(1700000000) + 123456),
                     "2023-11-14T22:13:20.123456Z");
}
END_TEST

/* B.6: durations as the gateway saw them, each line its own time. */
static apr_time_t ticks;

static apr_time_t ticking_clock(void)
{
    ticks += 250000; /* a quarter of a second a call */
    return ticks;
}

START_TEST(ndjson_durations_are_measured)
{
    static const char in[] =
        "data: {\"choices\":[{\"index\":0,\"text\":\"a\"}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"text\":\"b\","
        "\"finish_reason\":\"stop\"}]}\n\n"
        "data: [DONE]\n\n";
    apr_time_t start = apr_time_from_sec(1700000000);
    llmgw_ollama_ndjson_t *s;
    const char *out;
    apr_size_t n;

    ticks = start;
    s = llmgw_ollama_ndjson_create(test_pool, LLMGW_OLLAMA_EP_GENERATE, "m",
                                   start);
    s->now = ticking_clock;
    n = llmgw_ollama_ndjson_feed(s, in, strlen(in), &out);
    /* The first line's time, the first token's (0.5 s), the second's, the
     * end's: total 1.25 s, of which 0.5 s until the first token. */
    ck_assert_str_eq(
        apr_pstrmemdup(test_pool, out, n),
        "{\"model\":\"m\",\"created_at\":\"2023-11-14T22:13:20.25Z\","
        "\"response\":\"a\",\"done\":false}\n"
        "{\"model\":\"m\",\"created_at\":\"2023-11-14T22:13:20.75Z\","
        "\"response\":\"b\",\"done\":false}\n"
        "{\"model\":\"m\",\"created_at\":\"2023-11-14T22:13:21Z\","
        "\"response\":\"\",\"done\":true,\"done_reason\":\"stop\","
        "\"total_duration\":1250000000,\"load_duration\":0,"
        "\"prompt_eval_count\":0,\"prompt_eval_duration\":500000000,"
        "\"eval_count\":0,\"eval_duration\":750000000}\n");
}
END_TEST

/* C: the lines a native stream passes on, as they came: only those that
 * read as objects, none after the end; why it failed. */
static void keep_line(void *baton, const char *line, apr_size_t len)
{
    llmgw_pbuf_add(test_pool, baton, line, len);
    llmgw_pbuf_add(test_pool, baton, "|", 1);
}

START_TEST(sse_lines_for_a_native_client)
{
    static const char good[] =
        "{\"message\":{\"content\":\"a\"},\"done\":false}\n"
        "\n"
        " {\"message\":{\"content\":\"b\"},\"done\":true}\r\n"
        "{\"message\":{\"content\":\"after\"},\"done\":false}\n";
    static const char bad[] = "{\"message\":{\"content\":\"a\"}}\n"
                              "<html>\n"
                              "{\"message\":{\"content\":\"b\"}}\n";
    static const char err[] = "{\"message\":{\"content\":\"a\"}}\n"
                              "{\"error\":\"boom\"}\n";
    const char *const ins[] = { good, bad, err };
    const char *const want[] = {
        ("{\"message\":{\"content\":\"a\"},\"done\":false}|"
         " {\"message\":{\"content\":\"b\"},\"done\":true}|"),
        "{\"message\":{\"content\":\"a\"}}|",
        "{\"message\":{\"content\":\"a\"}}|{\"error\":\"boom\"}|"
    };
    int i;

    for (i = 0; i < 3; i++) {
        llmgw_pbuf_t lines = { NULL, 0, 0 };
        llmgw_ollama_sse_t *s =
            llmgw_ollama_sse_create(test_pool, LLMGW_EP_CHAT, "x", "m", 1, 0);
        const char *out;

        s->on_line = keep_line;
        s->line_baton = &lines;
        llmgw_ollama_sse_feed(s, ins[i], strlen(ins[i]), &out);
        llmgw_ollama_sse_end(s, &out);
        ck_assert_str_eq(apr_pstrmemdup(test_pool, lines.b, lines.len),
                         want[i]);
        ck_assert_int_eq(s->error_line, i == 2);
        ck_assert_int_eq(!!s->broke, i == 1);
    }
}
END_TEST

/* B: a llama.cpp server's own sampling parameters, from Ollama's options,
 * in the OpenAI view (so in the cache key) and its text. */
START_TEST(llamacpp_options_in_the_view)
{
    static const char body[] =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
        ","
        "\"stream\":false,\"options\":{\"min_p\":0.05,\"num_ctx\":8,"
        "\"penalize_newline\":true,\"num_keep\":4}}";
    llmgw_ollama_extra_t x;
    llmgw_request_t req;
    llmgw_error_t err;
    const char *out, *key;
    apr_size_t n;

    ck_assert_int_eq(llmgw_ollama_front_parse(test_pool, LLMGW_OLLAMA_EP_CHAT,
                                              body, strlen(body), &req, &out,
                                              &n, &x, &err),
                     0);
    key = llmgw_cache_key(test_pool, &req, "m", "balancer://b", "llamacpp");
    ck_assert_int_eq(
        llmgw_ollama_llamacpp_options(test_pool, &x, &req, &out, &n, &err), 0);
    ck_assert_str_eq(apr_pstrmemdup(test_pool, out, n),
                     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                     "\"content\":\"x\"}],\"stream\":false,\"min_p\":0.05,"
                     "\"n_keep\":4,\"penalize_nl\":true}");
    ck_assert_str_eq(llmgw_json_write(req.body, NULL), out);
    ck_assert_str_ne(
        llmgw_cache_key(test_pool, &req, "m", "balancer://b", "llamacpp"),
        key);
    x = parse_extra(LLMGW_OLLAMA_EP_CHAT,
                    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                    "\"content\":\"x\"}],\"options\":{\"mirostat\":\"2\"}}",
                    0);
    ck_assert_int_eq(
        llmgw_ollama_llamacpp_options(test_pool, &x, &req, &out, &n, &err),
        400);
    ck_assert_str_eq(err.message, "option \"mirostat\" must be a number");
}
END_TEST

Suite *ollama_suite(void)
{
    Suite *s = suite_create("ollama");

    test_case_add(
        s, "openai-to-ollama", 60,
        TESTS(
            chat_request_maps_every_field, chat_request_stream_always_explicit,
            chat_request_images, chat_request_tool_arguments,
            chat_request_tool_names_resolved, chat_request_rejections,
            chat_request_tool_choice_none_and_effort, completions_request,
            embeddings_request, chat_answer, completion_and_embedding_answers,
            backend_errors_in_openai_shape, sse_chat_at_every_boundary,
            sse_tool_calls_and_thinking_at_every_boundary,
            sse_completions_at_every_boundary, sse_error_line_mid_stream,
            sse_broken_stream_gets_the_error_tail,
            sse_long_stream_does_not_grow_the_pool,
            sse_lines_for_a_native_client));
    test_case_add(
        s, "ollama-to-openai", 60,
        TESTS(front_chat_request, front_tool_answers_matched,
              front_images_typed, front_generate_and_embed_requests,
              front_request_errors, front_endpoints,
              round_trip_keeps_the_meaning, front_answers, front_answer_errors,
              ndjson_chat_at_every_boundary, ndjson_generate_without_done,
              ndjson_error_event, ndjson_broken_streams,
              ndjson_parallel_tool_calls, huge_counts_are_clamped,
              stream_lines_are_capped, tool_arguments_are_capped,
              front_parse_load_beyond_and_refusals,
              native_body_and_load_answers, ndjson_durations_are_measured,
              llamacpp_options_in_the_view));
    return s;
}
