/* Locked list + eventfd: see mailbox.h. */
#include "mailbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct mailbox {
    pthread_mutex_t lock;
    mailbox_message *head, *tail;
    int fd;
};

int mailbox_new(mailbox **out)
{
    mailbox *mb = calloc(1, sizeof *mb);
    if (!mb)
        return -ENOMEM;
    mb->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (mb->fd < 0) {
        int e = errno;
        free(mb);
        return -e;
    }
    pthread_mutex_init(&mb->lock, NULL);
    *out = mb;
    return 0;
}

void mailbox_messages_free(mailbox_message *list)
{
    while (list) {
        mailbox_message *next = list->next;
        free(list->line);
        free(list);
        list = next;
    }
}

void mailbox_free(mailbox *mb)
{
    if (!mb)
        return;
    mailbox_messages_free(mb->head);
    close(mb->fd);
    pthread_mutex_destroy(&mb->lock);
    free(mb);
}

int mailbox_fd(const mailbox *mb)
{
    return mb->fd;
}

int mailbox_post(mailbox *mb, uint64_t client_id, char *line, bool final)
{
    mailbox_message *m = malloc(sizeof *m);
    if (!m) {
        free(line);
        return -ENOMEM;
    }
    *m = (mailbox_message){ .client_id = client_id, .line = line, .final = final };
    pthread_mutex_lock(&mb->lock);
    bool was_empty = !mb->head;
    if (mb->tail)
        mb->tail->next = m;
    else
        mb->head = m;
    mb->tail = m;
    pthread_mutex_unlock(&mb->lock);
    /* One wakeup per batch: the loop takes everything at once. */
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(mb->fd, &one, sizeof one);
        (void)w;   /* EAGAIN only when the counter is already huge: still readable */
    }
    return 0;
}

mailbox_message *mailbox_take_all(mailbox *mb)
{
    uint64_t count;
    ssize_t r = read(mb->fd, &count, sizeof count);
    (void)r;
    pthread_mutex_lock(&mb->lock);
    mailbox_message *list = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->lock);
    return list;
}
