/* The protocol methods' handlers: access check from the method table, then
 * one handler per method. Runs on the event loop; generate and restart are
 * handed to the model host and answer through the mailbox. */
#ifndef ALM_DAEMON_METHODS_H
#define ALM_DAEMON_METHODS_H

#include "protocol.h"
#include "server.h"

void methods_dispatch(server *srv, client *c, const protocol_request *req);

#endif
