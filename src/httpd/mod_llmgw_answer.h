/* llmgw_answer: the "llm-gateway" handler: everything the gateway answers
 * without a backend, in the client's API. */
#ifndef LLMGW_ANSWER_H
#define LLMGW_ANSWER_H

#include <httpd.h>

int llmgw_handler(request_rec *r);

#endif
