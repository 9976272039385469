#include "interrupt.h"

#include <signal.h>
#include <stddef.h>
#include <sys/signalfd.h>
#include <unistd.h>

int cli_interrupt_fd_open(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    int fd = signalfd(-1, &set, SFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void cli_interrupt_fd_close(int fd)
{
    if (fd < 0)
        return;
    close(fd);
    /* Back to the default actions, so that Ctrl-C works while alm does
     * something else (a signal already read from the fd is not redelivered). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}
