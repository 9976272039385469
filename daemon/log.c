/* Journal or stderr: see log.h. */
#include "log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

/* JOURNAL_STREAM is "DEVICE:INODE" of the stream systemd connected to
 * stdout/stderr; it is inherited by children whose stderr may point
 * elsewhere, hence the comparison with what fd 2 really is. */
static bool stderr_is_journal(void)
{
    const char *stream = getenv("JOURNAL_STREAM");
    if (!stream)
        return false;
    uintmax_t dev, ino;
    if (sscanf(stream, "%ju:%ju", &dev, &ino) != 2)
        return false;
    struct stat st;
    if (fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (uintmax_t)st.st_dev == dev && (uintmax_t)st.st_ino == ino;
}

void daemon_log_init(daemon_log *log, daemon_log_level level)
{
    log->level = level;
    log->journal = stderr_is_journal();
}

static int syslog_priority(daemon_log_level level)
{
    switch (level) {
    case DAEMON_LOG_DEBUG: return LOG_DEBUG;
    case DAEMON_LOG_INFO: return LOG_INFO;
    case DAEMON_LOG_NOTICE: return LOG_NOTICE;
    case DAEMON_LOG_WARNING: return LOG_WARNING;
    case DAEMON_LOG_ERROR: return LOG_ERR;
    }
    return LOG_ERR;
}

void daemon_log_write(const daemon_log *log, daemon_log_level level, const char *fmt, ...)
{
    if (log && level < log->level)
        return;
    char message[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (log && log->journal) {
        sd_journal_send("MESSAGE=%s", message, "PRIORITY=%d", syslog_priority(level),
                        "SYSLOG_IDENTIFIER=almd", NULL);
        return;
    }
    /* One write per line, so that lines from several threads never mix. */
    char line[2200];
    int n = snprintf(line, sizeof line, "almd: %s: %s\n", daemon_log_level_name(level), message);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
