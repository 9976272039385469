/* The generation queue is fair (round-robin between clients, FIFO within
 * one) and forgets a client's requests when it goes; the mailbox delivers
 * lines from other threads in order and wakes its eventfd. */
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailbox.h"
#include "request_queue.h"
#include "tap.h"

/* Items are small integers stored in the pointer: client * 100 + n. */
#define ITEM(client, n) ((void *)(uintptr_t)((client) * 100 + (n)))
#define VALUE(item) ((int)(uintptr_t)(item))

static void count_removed(void *item, void *user)
{
    int *sum = user;
    *sum += VALUE(item);
}

static void test_fairness(void)
{
    request_queue *q = request_queue_new();
    /* Client 1 queues three, then client 2 two, then client 3 one. */
    request_queue_push(q, 1, ITEM(1, 1));
    request_queue_push(q, 1, ITEM(1, 2));
    request_queue_push(q, 1, ITEM(1, 3));
    request_queue_push(q, 2, ITEM(2, 1));
    request_queue_push(q, 2, ITEM(2, 2));
    request_queue_push(q, 3, ITEM(3, 1));
    tap_ok(request_queue_length(q) == 6, "six queued");
    int order[6], n = 0;
    uint64_t client;
    void *item;
    while ((item = request_queue_pop(q, &client)) && n < 6) {
        order[n++] = VALUE(item);
        if (VALUE(item) / 100 != (int)client)
            tap_ok(0, "pop names the item's client");
    }
    int want[6] = { 101, 201, 301, 102, 202, 103 };
    tap_ok(n == 6 && memcmp(order, want, sizeof want) == 0,
           "round-robin between clients, FIFO within: %d %d %d %d %d %d", order[0], order[1],
           order[2], order[3], order[4], order[5]);
    tap_ok(request_queue_pop(q, NULL) == NULL && request_queue_length(q) == 0, "then empty");

    /* A client that queues while others wait goes to the back of the turn. */
    request_queue_push(q, 1, ITEM(1, 1));
    request_queue_push(q, 2, ITEM(2, 1));
    tap_ok(VALUE(request_queue_pop(q, NULL)) == 101, "client 1 first");
    request_queue_push(q, 1, ITEM(1, 2));
    tap_ok(VALUE(request_queue_pop(q, NULL)) == 201 && VALUE(request_queue_pop(q, NULL)) == 102,
           "client 1's new request waits for client 2's turn");
    request_queue_free(q, NULL);
}

static void test_remove_client(void)
{
    request_queue *q = request_queue_new();
    request_queue_push(q, 1, ITEM(1, 1));
    request_queue_push(q, 2, ITEM(2, 1));
    request_queue_push(q, 1, ITEM(1, 2));
    request_queue_push(q, 3, ITEM(3, 1));
    int sum = 0;
    size_t removed = request_queue_remove_client(q, 1, count_removed, &sum);
    tap_ok(removed == 2 && sum == 101 + 102, "remove_client takes all of a client's items");
    tap_ok(request_queue_remove_client(q, 9, count_removed, &sum) == 0, "an unknown client: none");
    tap_ok(VALUE(request_queue_pop(q, NULL)) == 201 && VALUE(request_queue_pop(q, NULL)) == 301 &&
               request_queue_pop(q, NULL) == NULL,
           "the others keep their order");
    /* Removing the last lane keeps the tail right for later pushes. */
    request_queue_push(q, 4, ITEM(4, 1));
    request_queue_push(q, 5, ITEM(5, 1));
    request_queue_remove_client(q, 5, NULL, NULL);
    request_queue_push(q, 6, ITEM(6, 1));
    tap_ok(VALUE(request_queue_pop(q, NULL)) == 401 && VALUE(request_queue_pop(q, NULL)) == 601 &&
               request_queue_length(q) == 0,
           "pushes after removing the last lane are served");
    request_queue_free(q, NULL);
}

typedef struct poster {
    mailbox *mb;
    uint64_t client;
    int lines;
} poster;

static void *post_lines(void *arg)
{
    poster *p = arg;
    for (int i = 0; i < p->lines; i++) {
        char *line = malloc(32);
        snprintf(line, 32, "%d\n", i);
        mailbox_post(p->mb, p->client, line, i == p->lines - 1);
    }
    return NULL;
}

static void test_mailbox(void)
{
    mailbox *mb;
    tap_ok(mailbox_new(&mb) == 0, "mailbox_new");
    struct pollfd pfd = { .fd = mailbox_fd(mb), .events = POLLIN };
    tap_ok(poll(&pfd, 1, 0) == 0, "nothing posted: the eventfd is quiet");
    enum { THREADS = 4, LINES = 2000 };
    pthread_t threads[THREADS];
    poster posters[THREADS];
    for (int t = 0; t < THREADS; t++) {
        posters[t] = (poster){ mb, (uint64_t)t + 1, LINES };
        pthread_create(&threads[t], NULL, post_lines, &posters[t]);
    }
    int next[THREADS] = { 0 }, finals = 0, total = 0;
    bool in_order = true;
    while (total < THREADS * LINES) {
        if (poll(&pfd, 1, 5000) != 1)
            break;
        mailbox_message *list = mailbox_take_all(mb);
        for (mailbox_message *m = list; m; m = m->next) {
            int t = (int)m->client_id - 1;
            if (atoi(m->line) != next[t]++)
                in_order = false;
            finals += m->final;
            total++;
        }
        mailbox_messages_free(list);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);
    tap_ok(total == THREADS * LINES && in_order && finals == THREADS,
           "lines from %d threads all arrive, each thread's in order (%d of %d)", THREADS, total,
           THREADS * LINES);
    mailbox_message *rest = mailbox_take_all(mb);
    tap_ok(rest == NULL && poll(&pfd, 1, 0) == 0, "then the mailbox is empty and quiet");
    /* Unread messages are freed with the mailbox (ASan checks). */
    mailbox_post(mb, 1, strdup("x\n"), false);
    mailbox_free(mb);
}

int main(void)
{
    test_fairness();
    test_remove_client();
    test_mailbox();
    return tap_done();
}
