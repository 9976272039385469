/* How the worker threads talk to the event loop: they post reply lines for a
 * client (by its id) into a locked list and poke an eventfd; the loop, woken
 * by the eventfd, takes the whole list and appends each line to its
 * client's output buffer. A thread never writes to a socket, so a slow
 * reader can never block generation. */
#ifndef ALM_DAEMON_MAILBOX_H
#define ALM_DAEMON_MAILBOX_H

#include <stdbool.h>
#include <stdint.h>

typedef struct mailbox mailbox;

typedef struct mailbox_message {
    struct mailbox_message *next;
    uint64_t client_id;   /* 0: no client (nothing to deliver) */
    char *line;           /* newline-terminated; may be NULL (out of memory) */
    bool final;           /* the last line about one request */
} mailbox_message;

int mailbox_new(mailbox **out);
void mailbox_free(mailbox *mb);

/* The eventfd to watch for EPOLLIN. */
int mailbox_fd(const mailbox *mb);

/* Takes line (malloc'ed, may be NULL) in every case. Returns 0 or -ENOMEM
 * (the line is then freed and lost). */
int mailbox_post(mailbox *mb, uint64_t client_id, char *line, bool final);

/* Takes every posted message, oldest first, and resets the eventfd. Free
 * the list with mailbox_messages_free. */
mailbox_message *mailbox_take_all(mailbox *mb);
void mailbox_messages_free(mailbox_message *list);

#endif
