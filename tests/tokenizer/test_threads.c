/* One tokenizer, several threads: it is immutable after loading and every
 * encode/decode/detokenizer call keeps its working memory to itself, so
 * concurrent calls must give exactly the single-threaded results. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tok_fixtures.h"

#define N_TEXTS 24
#define N_THREADS 4

typedef struct job {
    const alm_tokenizer *tok;
    char *texts[N_TEXTS];
    int32_t *ids[N_TEXTS];
    size_t n_ids[N_TEXTS];
    int mismatches;
} job;

/* Source-like texts, different enough to give each call fresh words. */
static char *make_text(int k)
{
    static const char *const parts[] = {
        "def f%d(x):\n    return x * %d  # naïve ✓\n",
        "class C%d:\n    \"\"\"Doc %d: 日本語 😀\"\"\"\n    pass\n",
        "for i in range(%d):\n\tprint(i, %d, 'it''s')\n",
    };
    char *s = malloc(4096);
    size_t o = 0;
    for (int r = 0; r < 20; r++)
        o += (size_t)snprintf(s + o, 4096 - o, parts[(k + r) % 3], k * 31 + r, r);
    return s;
}

static void *worker(void *arg)
{
    job *j = arg;
    for (int round = 0; round < 10; round++) {
        for (int k = 0; k < N_TEXTS; k++) {
            size_t n, len;
            int32_t *ids = tok_encode(j->tok, j->texts[k], strlen(j->texts[k]), true, &n);
            if (!ids || !tok_ids_equal(ids, n, j->ids[k], j->n_ids[k]))
                __atomic_add_fetch(&j->mismatches, 1, __ATOMIC_RELAXED);
            char *text = ids ? tok_stream(j->tok, ids, n, true, &len) : NULL;
            if (!text || len != strlen(j->texts[k]) || memcmp(text, j->texts[k], len) != 0)
                __atomic_add_fetch(&j->mismatches, 1, __ATOMIC_RELAXED);
            free(text);
            free(ids);
        }
    }
    return NULL;
}

static void run(const char *rel, const char *what)
{
    char *dir = tok_data_path(rel);
    alm_tokenizer *tok = dir ? tok_load_checked(dir, what) : NULL;
    free(dir);
    if (!tok)
        return;
    job j = { .tok = tok };
    for (int k = 0; k < N_TEXTS; k++) {
        j.texts[k] = make_text(k);
        j.ids[k] = tok_encode(tok, j.texts[k], strlen(j.texts[k]), true, &j.n_ids[k]);
    }
    pthread_t threads[N_THREADS];
    int started = 0;
    for (int t = 0; t < N_THREADS; t++)
        started += pthread_create(&threads[t], NULL, worker, &j) == 0;
    for (int t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    tap_ok(started == N_THREADS && j.mismatches == 0,
           "%s: %d threads encode and stream exactly as one does (%d mismatches)", what,
           N_THREADS, j.mismatches);
    for (int k = 0; k < N_TEXTS; k++) {
        free(j.texts[k]);
        free(j.ids[k]);
    }
    alm_tokenizer_free(tok);
}

int main(void)
{
    if (!getenv("ALM_TEST_DATA"))
        return tap_skip_all("ALM_TEST_DATA is not set");
    run("models/tiny/qwen2-bias", "coder");
    run("models/tiny/llama2-spm", "llama2-spm");
    return tap_done();
}
