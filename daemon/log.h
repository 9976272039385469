/* almd's log: to the journal, with proper priorities, when stderr is
 * connected to it (systemd sets JOURNAL_STREAM to stderr's device:inode);
 * otherwise plain "almd: level: message" lines on stderr, readable on a
 * terminal. Messages below the configured level are dropped. Safe to use
 * from several threads (each message is one write). */
#ifndef ALM_DAEMON_LOG_H
#define ALM_DAEMON_LOG_H

#include <stdbool.h>

#include "config_file.h"

typedef struct daemon_log {
    daemon_log_level level;
    bool journal;
} daemon_log;

/* Decides between journal and stderr by looking at fd 2 and JOURNAL_STREAM. */
void daemon_log_init(daemon_log *log, daemon_log_level level);

void daemon_log_write(const daemon_log *log, daemon_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(log, ...) daemon_log_write((log), DAEMON_LOG_DEBUG, __VA_ARGS__)
#define log_info(log, ...) daemon_log_write((log), DAEMON_LOG_INFO, __VA_ARGS__)
#define log_notice(log, ...) daemon_log_write((log), DAEMON_LOG_NOTICE, __VA_ARGS__)
#define log_warning(log, ...) daemon_log_write((log), DAEMON_LOG_WARNING, __VA_ARGS__)
#define log_error(log, ...) daemon_log_write((log), DAEMON_LOG_ERROR, __VA_ARGS__)

#endif
