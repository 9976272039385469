/* One generate request, run on the worker thread against the serving model
 * set: tokenize (through the chat template when asked), check the limits,
 * reuse the cached prefix, fill the engine's parameters from the request and
 * the stored settings, stream token events, and end with done (ids, text,
 * stats) or an error; every finished request goes into the request log. */
#ifndef ALM_DAEMON_GENERATION_H
#define ALM_DAEMON_GENERATION_H

#include <stdatomic.h>

#include "config_file.h"
#include "log.h"
#include "mailbox.h"
#include "model_host.h"
#include "model_set.h"
#include "settings_store.h"

typedef struct generation_env {
    const daemon_config *config;
    settings_store *store;
    mailbox *mailbox;
    const daemon_log *log;
    const atomic_bool *stopping;   /* almd is shutting down: cancel, answer `cancelled` */
} generation_env;

/* set NULL: nothing is loaded, and the answer says no_model_reason.
 * cancelled: set when the client went away (nothing is answered then). */
void generation_run(const generation_env *env, model_set *set, const char *no_model_reason,
                    const generate_request *req, const atomic_bool *cancelled);

#endif
