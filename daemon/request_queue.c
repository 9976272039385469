/* A ring of per-client lanes: the lane at the head is served next, then
 * goes to the back if it still has items. */
#include "request_queue.h"

#include <errno.h>
#include <stdlib.h>

typedef struct queue_item {
    struct queue_item *next;
    void *item;
} queue_item;

typedef struct lane {
    struct lane *next;
    uint64_t client_id;
    queue_item *head, *tail;
} lane;

struct request_queue {
    lane *head, *tail;
    size_t length;
};

request_queue *request_queue_new(void)
{
    return calloc(1, sizeof(request_queue));
}

void request_queue_free(request_queue *q, void (*free_item)(void *item))
{
    if (!q)
        return;
    for (lane *l = q->head; l;) {
        lane *next_lane = l->next;
        for (queue_item *it = l->head; it;) {
            queue_item *next = it->next;
            if (free_item)
                free_item(it->item);
            free(it);
            it = next;
        }
        free(l);
        l = next_lane;
    }
    free(q);
}

static void append_lane(request_queue *q, lane *l)
{
    l->next = NULL;
    if (q->tail)
        q->tail->next = l;
    else
        q->head = l;
    q->tail = l;
}

int request_queue_push(request_queue *q, uint64_t client_id, void *item)
{
    queue_item *it = malloc(sizeof *it);
    if (!it)
        return -ENOMEM;
    *it = (queue_item){ .item = item };
    lane *l = q->head;
    while (l && l->client_id != client_id)
        l = l->next;
    if (!l) {
        l = calloc(1, sizeof *l);
        if (!l) {
            free(it);
            return -ENOMEM;
        }
        l->client_id = client_id;
        append_lane(q, l);
    }
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
    q->length++;
    return 0;
}

void *request_queue_pop(request_queue *q, uint64_t *client_id)
{
    lane *l = q->head;
    if (!l)
        return NULL;
    queue_item *it = l->head;
    l->head = it->next;
    if (!l->head)
        l->tail = NULL;
    q->head = l->next;
    if (!q->head)
        q->tail = NULL;
    if (client_id)
        *client_id = l->client_id;
    if (l->head)
        append_lane(q, l);
    else
        free(l);
    void *item = it->item;
    free(it);
    q->length--;
    return item;
}

size_t request_queue_remove_client(request_queue *q, uint64_t client_id,
                                   void (*fn)(void *item, void *user), void *user)
{
    lane *prev = NULL, *l = q->head;
    while (l && l->client_id != client_id) {
        prev = l;
        l = l->next;
    }
    if (!l)
        return 0;
    if (prev)
        prev->next = l->next;
    else
        q->head = l->next;
    if (q->tail == l)
        q->tail = prev;
    size_t removed = 0;
    for (queue_item *it = l->head; it;) {
        queue_item *next = it->next;
        if (fn)
            fn(it->item, user);
        free(it);
        it = next;
        removed++;
    }
    free(l);
    q->length -= removed;
    return removed;
}

size_t request_queue_length(const request_queue *q)
{
    return q->length;
}
