/* Ctrl-C while alm waits for almd: SIGINT, SIGTERM and SIGHUP are blocked
 * and read from a signalfd that the connection polls next to its socket,
 * so a signal ends the wait without a handler or global state. */
#ifndef ALM_CLI_INTERRUPT_H
#define ALM_CLI_INTERRUPT_H

/* Returns the signalfd, or -1 (then signals keep their default action,
 * which also closes the connection: the request is cancelled either way). */
int cli_interrupt_fd_open(void);
void cli_interrupt_fd_close(int fd);

#endif
