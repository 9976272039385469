/* alm_seq_decode_greedy, several greedy steps in one call, against the same
 * steps one alm_seq_forward_argmax at a time: the same ids and
 * probabilities, the same cache (the logits of a pass after it match bit
 * for bit), and nothing changed by a call that is refused. Then
 * generation, which decodes greedily in such calls: cancelled after a
 * given token, the cache holds what one step at a time would have fed.
 * On the GPU the calls queue their passes; test-cuda holds that path to
 * the same equalities. */
#include <errno.h>
#include <string.h>

#include "alm.h"
#include "tap.h"
#include "test_util.h"

#define PROMPT 5
#define STEPS 12

static const int32_t prompt_ids[PROMPT] = { 1, 17, 42, 7, 99 };

static void compare_with_steps(const char *name, alm_model *model, alm_pool *pool)
{
    alm_error err = { 0 };
    alm_seq *a = NULL, *b = NULL;
    if (alm_seq_new(model, 64, &a, &err) < 0 || alm_seq_new(model, 64, &b, &err) < 0) {
        tap_ok(0, "%s: sequences (%s)", name, err.message);
        alm_seq_free(a);
        return;
    }
    int32_t got[STEPS], want[STEPS];
    float got_top[STEPS], want_top[STEPS];
    int r = alm_seq_decode_greedy(a, pool, prompt_ids, PROMPT, STEPS, got, got_top, &err);
    tap_ok(r == 0, "%s: %d steps in one call (%s)", name, STEPS, r ? err.message : "ok");
    r = alm_seq_forward_argmax(b, pool, prompt_ids, PROMPT, 1, &want[0], &want_top[0], &err);
    for (int j = 1; r == 0 && j < STEPS; j++)
        r = alm_seq_forward_argmax(b, pool, &want[j - 1], 1, 1, &want[j], &want_top[j], &err);
    tap_ok(r == 0, "%s: the same steps one at a time", name);
    tap_ok(memcmp(got, want, sizeof got) == 0 && memcmp(got_top, want_top, sizeof got_top) == 0,
           "%s: the same ids and probabilities (first %d, last %d)", name, got[0], got[STEPS - 1]);
    tap_ok(alm_seq_length(a) == PROMPT + STEPS - 1 && alm_seq_length(a) == alm_seq_length(b),
           "%s: the cache grew by the prompt and %d fed tokens (%d)", name, STEPS - 1, alm_seq_length(a));
    tap_ok(memcmp(alm_seq_tokens(a), alm_seq_tokens(b), sizeof(int32_t) * (size_t)alm_seq_length(b)) == 0,
           "%s: the same tokens in the cache", name);

    /* the caches themselves: the next pass's logits */
    int vocab = alm_model_vocab_size(model);
    float *la = malloc(sizeof(float) * (size_t)vocab), *lb = malloc(sizeof(float) * (size_t)vocab);
    int32_t next = got[STEPS - 1];
    r = alm_seq_forward(a, pool, &next, 1, 1, la, &err);
    if (r == 0)
        r = alm_seq_forward(b, pool, &next, 1, 1, lb, &err);
    tap_ok(r == 0 && memcmp(la, lb, sizeof(float) * (size_t)vocab) == 0,
           "%s: the pass after them gives the same logits, bit for bit", name);
    free(la);
    free(lb);

    /* refused calls change nothing */
    int len = alm_seq_length(a);
    tap_ok(alm_seq_decode_greedy(a, pool, prompt_ids, PROMPT, 0, got, NULL, &err) == -EINVAL &&
               alm_seq_length(a) == len,
           "%s: no steps: refused (%s)", name, err.message);
    int32_t bad = vocab;
    tap_ok(alm_seq_decode_greedy(a, pool, &bad, 1, 2, got, NULL, &err) == -EINVAL && alm_seq_length(a) == len,
           "%s: a token past the vocabulary: refused (%s)", name, err.message);
    int room = alm_seq_capacity(a) - len;
    int32_t *all = malloc(sizeof(int32_t) * (size_t)(room + 1));   /* an id a step */
    tap_ok(alm_seq_decode_greedy(a, pool, prompt_ids, 1, room + 1, all, NULL, &err) == -ENOSPC &&
               alm_seq_length(a) == len,
           "%s: one step more than the cache holds: refused (%s)", name, err.message);
    tap_ok(alm_seq_decode_greedy(a, pool, prompt_ids, 1, room, all, NULL, &err) == 0 &&
               alm_seq_length(a) == alm_seq_capacity(a),
           "%s: exactly as many as it holds: decoded", name);
    free(all);
    alm_seq_free(a);
    alm_seq_free(b);
}

typedef struct cancel_after {
    int calls, at;
} cancel_after;

static int cancel_on_text(void *user, const char *text, size_t len)
{
    (void)text;
    (void)len;
    cancel_after *c = user;
    return ++c->calls >= c->at;
}

/* Generation stopped early (cancelled from the text callback) leaves the
 * cache as one step at a time would: the prompt and every emitted token
 * but the last. */
static void cancelled_generation(const char *name, alm_model *model, alm_pool *pool)
{
    for (int at = 2; at <= 9; at += 7) {
        alm_error err = { 0 };
        alm_seq *seq = NULL;
        if (alm_seq_new(model, 128, &seq, &err) < 0) {
            tap_ok(0, "%s: sequence (%s)", name, err.message);
            return;
        }
        alm_generate_params gp = alm_generate_default_params();
        gp.max_tokens = 40;
        gp.ignore_eos = true;
        cancel_after c = { 0, at };
        int32_t *ids = NULL;
        size_t n = 0;
        int r = alm_generate(seq, NULL, pool, prompt_ids, PROMPT, &gp, cancel_on_text, &c, &ids, &n, NULL,
                             &err);
        tap_ok(r == 0 && n >= 1 && n < 40 && alm_seq_length(seq) == PROMPT + (int)n - 1,
               "%s: cancelled after %d pieces of text: %zu tokens, %d cached", name, at, n,
               alm_seq_length(seq));
        free(ids);
        alm_seq_free(seq);
    }
}

int main(void)
{
    alm_pool *pool = NULL;
    if (alm_pool_new(2, &pool) < 0) {
        printf("Bail out! no thread pool\n");
        return 1;
    }
    char *dir = test_path("ALM_TEST_DATA", "models/tiny");
    if (!dir)
        return tap_skip_all("ALM_TEST_DATA is not set");
    const char *names[] = { "llama3-rope", "mixtral-moe" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *model_dir;
        if (asprintf(&model_dir, "%s/%s", dir, names[i]) < 0)
            abort();
        alm_error err = { 0 };
        alm_model *model = NULL;
        if (tap_ok(alm_model_load(model_dir, NULL, &model, &err) == 0, "%s loads (%s)", names[i],
                   err.message)) {
            compare_with_steps(names[i], model, pool);
            cancelled_generation(names[i], model, pool);
            alm_model_free(model);
        }
        free(model_dir);
    }
    free(dir);
    alm_pool_free(pool);
    return tap_done();
}
