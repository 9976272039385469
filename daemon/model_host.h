/* The models almd keeps resident, and the threads that use them.
 *
 * One generation worker takes requests from a fair queue (round-robin
 * between clients) and runs them one at a time on the serving model set: the
 * target, the draft (when set), one thread pool, and one sequence each, whose
 * KV cache is reused when a prompt shares a prefix with what it holds.
 *
 * A load (at start, and on `restart`) runs on its own thread while the old
 * set keeps serving; the worker swaps the new set in between two requests
 * and frees the old one. A failed load leaves the old set serving.
 *
 * Replies go out through the mailbox, as protocol lines for the requesting
 * client; a message for client 0 (MODEL_HOST_STATE_CHANGED) tells the loop
 * that the host's state changed (a load finished or failed). */
#ifndef ALM_DAEMON_MODEL_HOST_H
#define ALM_DAEMON_MODEL_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "alm.h"
#include "config_file.h"
#include "log.h"
#include "mailbox.h"
#include "protocol.h"
#include "settings_store.h"

#define MODEL_HOST_STATE_CHANGED 0

typedef struct model_host model_host;

typedef struct model_host_options {
    const daemon_config *config;
    settings_store *store;
    mailbox *mailbox;
    const daemon_log *log;
} model_host_options;

/* A generate request as the client sent it; absent sampling params take the
 * stored settings when the request runs. */
typedef struct generate_request {
    uint64_t client_id;
    protocol_id id;
    uid_t uid;
    char *prompt;
    bool chat;
    bool use_draft;            /* false: no speculation for this request */
    bool ignore_eos;           /* keep going past end-of-sequence tokens */
    bool has_max_tokens, has_temperature, has_top_p, has_top_k, has_min_p, has_seed;
    int max_tokens, top_k;
    double temperature, top_p, min_p;
    uint64_t seed;
} generate_request;

typedef struct model_host_status {
    bool ready;                /* a model set is serving */
    bool loading;              /* a load is running */
    char model[256], draft_model[256], device[16];
    double since;              /* Unix time the serving set was loaded */
    size_t memory_bytes;       /* weights + KV caches of the serving set */
    int threads, context_length;
    size_t queued;             /* generate requests waiting */
    bool generating;
    char load_error[512];      /* why the last load failed ("" if it did not) */
    char load_progress[600];   /* while loading: what it does now */
} model_host_status;

/* Starts the worker thread. Nothing is loaded yet: call model_host_load. */
int model_host_new(const model_host_options *options, model_host **out, alm_error *err);

/* Stops everything (as model_host_shutdown) and frees the host. */
void model_host_free(model_host *host);

/* Starts loading the models named by the stored settings. client_id/id: who
 * gets the progress events and the final done or error (client_id 0: no
 * one, as at start). -EBUSY when a load is already running. */
int model_host_load(model_host *host, uint64_t client_id, const protocol_id *id,
                    alm_error *err);

/* Queues a request (taking ownership of req in every case). Returns 0, or
 * -ESHUTDOWN when the host is stopping (req is freed; nothing is posted). */
int model_host_submit(model_host *host, generate_request *req);
void generate_request_free(generate_request *req);

/* The client went away: drops its queued requests and cancels its running
 * one, without replying. */
void model_host_cancel_client(model_host *host, uint64_t client_id);

/* Refuses new requests, answers the queued ones with `cancelled`, cancels
 * the running one (which is answered `cancelled` too), waits for the
 * threads. Idempotent. */
void model_host_shutdown(model_host *host);

void model_host_get_status(model_host *host, model_host_status *out);

#endif
