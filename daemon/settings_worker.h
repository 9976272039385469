/* config.set and config.unset, off the event loop: proving that a model
 * loads (and that a draft fits its target) takes a good fraction of a
 * second, during which the loop must keep streaming tokens to everyone
 * else. One thread takes the changes in order, checks them, stores them and
 * answers through the mailbox, so that two changes never interleave between
 * check and store. */
#ifndef ALM_DAEMON_SETTINGS_WORKER_H
#define ALM_DAEMON_SETTINGS_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "alm.h"
#include "config_file.h"
#include "log.h"
#include "mailbox.h"
#include "protocol.h"
#include "settings_store.h"

typedef struct settings_worker settings_worker;

typedef struct settings_change {
    uint64_t client_id;
    protocol_id id;
    bool unset;
    char *key;
    char *value;              /* set: already normalized by settings_key_validate */
    char changed_by[64];      /* for the history */
} settings_change;

int settings_worker_new(const daemon_config *config, settings_store *store, mailbox *mb,
                        const daemon_log *log, settings_worker **out, alm_error *err);

/* Takes change in every case. -ESHUTDOWN when stopping (nothing posted). */
int settings_worker_submit(settings_worker *w, settings_change *change);
void settings_change_free(settings_change *change);

/* Answers queued changes `cancelled`, finishes the running one, joins. */
void settings_worker_shutdown(settings_worker *w);
void settings_worker_free(settings_worker *w);

#endif
