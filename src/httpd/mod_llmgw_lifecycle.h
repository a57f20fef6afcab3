/* mod_llmgw_lifecycle: the server's life, in one place: pre_config,
 * post_config and child_init, each calling every part's step in turn. */
#ifndef MOD_LLMGW_LIFECYCLE_H
#define MOD_LLMGW_LIFECYCLE_H

void llmgw_lifecycle_register(void);

#endif
