/* mod_llmgw_answer: the "llm-gateway" handler for what the gateway answers
 * without a backend, in the client's API (model lists aside). */
#ifndef MOD_LLMGW_ANSWER_H
#define MOD_LLMGW_ANSWER_H

void llmgw_answer_register(void);

#endif
