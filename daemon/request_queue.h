/* The generation queue: fair between clients (round-robin: each client with
 * waiting requests gets a turn before any client gets a second one), first
 * in first out within a client. Holds opaque items; not locked (the model
 * host holds its own lock around it). */
#ifndef ALM_DAEMON_REQUEST_QUEUE_H
#define ALM_DAEMON_REQUEST_QUEUE_H

#include <stddef.h>
#include <stdint.h>

typedef struct request_queue request_queue;

request_queue *request_queue_new(void);
/* Frees the queue; items still in it are passed to free_item (may be NULL). */
void request_queue_free(request_queue *q, void (*free_item)(void *item));

/* Returns 0 or -ENOMEM. */
int request_queue_push(request_queue *q, uint64_t client_id, void *item);

/* The next item in fair order, or NULL when empty. */
void *request_queue_pop(request_queue *q, uint64_t *client_id);

/* Removes every item of client_id, passing each to fn (oldest first).
 * Returns how many were removed. */
size_t request_queue_remove_client(request_queue *q, uint64_t client_id,
                                   void (*fn)(void *item, void *user), void *user);

size_t request_queue_length(const request_queue *q);

#endif
