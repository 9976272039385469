/* A loaded model takes its weights' size once: when the backend keeps its
 * own copy (the CPU's repacked 4-bit weights), the files' pages of those
 * weights are let go, and alm_model_memory_bytes says what is held. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alm.h"
#include "tap.h"
#include "test_util.h"

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atol(line + 6);
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

static alm_model *load(const char *var, const char *rel)
{
    char *dir = test_path(var, rel);
    alm_model *m = NULL;
    alm_error err = { 0 };
    if (alm_model_load(dir, NULL, &m, &err) < 0)
        tap_diag("%s: %s", dir, err.message);
    free(dir);
    return m;
}

int main(void)
{
    alm_model *m = load("ALM_DEFAULT_MODELS", "coder-target-4bit");
    if (!m)
        return tap_skip_all("the embedded model does not load");
    size_t file = alm_model_weight_bytes(m), held = alm_model_memory_bytes(m);
    tap_ok(held >= file / 2 && held <= file + file / 4,
           "coder-target-4bit: %zu bytes of weights held for %zu in the files (not twice)", held, file);
    alm_model_free(m);

    /* The pages themselves: a model larger than the rest of the process,
     * so that the resident set shows whether they were let go. Sanitizers
     * map shadow memory of their own: there, only the count above. */
    char *large = test_path("ALM_SHARED_DIR", "models/coder-large-4bit");
    if (!test_exists(large) || getenv("ALM_TEST_SANITIZED")) {
        tap_diag("SKIP: resident-set check needs ../shared (coder-large-4bit) and an unsanitized build");
        free(large);
        return tap_done();
    }
    free(large);
    long before = rss_bytes();
    m = load("ALM_SHARED_DIR", "models/coder-large-4bit");
    if (tap_ok(m != NULL, "coder-large-4bit loads")) {
        file = alm_model_weight_bytes(m);
        held = alm_model_memory_bytes(m);
        long grown = rss_bytes() - before;
        /* Held twice (copy and file pages) would be about 2 x file. */
        tap_ok(grown > 0 && (size_t)grown < file + file / 2 + (16u << 20),
               "coder-large-4bit: the process grew by %ld bytes for %zu held (%zu in the files)",
               grown, held, file);
    }
    alm_model_free(m);
    return tap_done();
}
