/* Times sampler_sample and sampler_probs. Not a test: run it by hand,
 * e.g. build-sample/tests/sample/bench-sampler [iterations].
 *
 * Each time is the fastest of 10 batches of iterations / 10 calls.
 *
 * Logits: the coder-target's real next-token logits for the first prompt of
 * refs/greedy.json (when ALM_SHARED_DIR or ../shared has it), and synthetic
 * ones for larger vocabularies: "peaked" (a Gaussian with a few strong
 * tokens, where top-p keeps a handful, as with real models) and "flat" (a
 * Gaussian alone, where top-p keeps thousands: the worst case). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-glib/json-glib.h>

#include "sample/rng.h"
#include "sample/sampler.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void gaussian_logits(rng *r, float *logits, int vocab, double sigma)
{
    for (int i = 0; i < vocab; i += 2) {
        /* Box-Muller: two Gaussians per pair of uniforms. */
        double u = 1.0 - rng_uniform(r), v = rng_uniform(r);
        double radius = sqrt(-2.0 * log(u)) * sigma;
        logits[i] = (float)(radius * cos(2 * M_PI * v));
        if (i + 1 < vocab)
            logits[i + 1] = (float)(radius * sin(2 * M_PI * v));
    }
}

/* The first prompt's last_prompt_logits of coder-target, or NULL. */
static float *real_logits(int *vocab)
{
    const char *shared = getenv("ALM_SHARED_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/refs/greedy.json", shared ? shared : "../shared");
    JsonParser *parser = json_parser_new();
    float *logits = NULL;
    if (json_parser_load_from_file(parser, path, NULL)) {
        JsonObject *root = json_node_get_object(json_parser_get_root(parser));
        JsonObject *models = json_object_get_object_member(root, "models");
        JsonArray *prompts = models ? json_object_get_array_member(models, "coder-target") : NULL;
        JsonObject *first = prompts ? json_array_get_object_element(prompts, 0) : NULL;
        JsonArray *values = first && json_object_has_member(first, "last_prompt_logits")
                                ? json_object_get_array_member(first, "last_prompt_logits")
                                : NULL;
        if (values) {
            *vocab = (int)json_array_get_length(values);
            logits = malloc(sizeof(float) * (size_t)*vocab);
            for (int i = 0; i < *vocab; i++)
                logits[i] = (float)json_array_get_double_element(values, (guint)i);
        }
    }
    g_object_unref(parser);
    return logits;
}

static void bench(const char *logits_name, const float *logits, int vocab, int iterations)
{
    const struct { const char *name; sampling_params p; } configs[] = {
        { "greedy", { 0.0f, 0, 1.0f, 0.0f, 1 } },
        { "T=0.8", { 0.8f, 0, 1.0f, 0.0f, 1 } },
        { "T=0.8 top-k 40", { 0.8f, 40, 1.0f, 0.0f, 1 } },
        { "T=0.8 top-k 1000", { 0.8f, 1000, 1.0f, 0.0f, 1 } },
        { "T=0.8 top-p 0.9", { 0.8f, 0, 0.9f, 0.0f, 1 } },
        { "T=0.8 min-p 0.05", { 0.8f, 0, 1.0f, 0.05f, 1 } },
        { "T=0.7 k 40 p 0.95 min-p 0.05", { 0.7f, 40, 0.95f, 0.05f, 1 } },
    };
    float *probs = malloc(sizeof(float) * (size_t)vocab);
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        sampler *s = NULL;
        if (sampler_new(&configs[c].p, vocab, &s, NULL) < 0)
            exit(1);
        /* The fastest of several batches: the machine may be shared, and
         * interference only ever adds time. */
        double best_sample = INFINITY, best_probs = INFINITY;
        int batch = iterations / 10 > 0 ? iterations / 10 : 1;
        for (int b = 0; b < 10; b++) {
            double t0 = now();
            for (int i = 0; i < batch; i++)
                if (sampler_sample(s, logits, vocab) < 0)
                    exit(1);
            double t1 = now();
            for (int i = 0; i < batch; i++)
                sampler_probs(s, logits, vocab, probs);
            double t2 = now();
            best_sample = fmin(best_sample, (t1 - t0) / batch);
            best_probs = fmin(best_probs, (t2 - t1) / batch);
        }
        int kept = 0;
        for (int i = 0; i < vocab; i++)
            kept += probs[i] > 0.0f;
        printf("%-8s %-30s %7d %10.2f %10.2f %8d\n", logits_name, configs[c].name, vocab,
               best_sample * 1e6, best_probs * 1e6, kept);
        sampler_free(s);
    }
    free(probs);
}

int main(int argc, char **argv)
{
    int iterations = argc > 1 ? atoi(argv[1]) : 500;
    printf("%-8s %-30s %7s %10s %10s %8s\n", "logits", "config", "vocab", "sample us",
           "probs us", "kept");
    int vocab;
    float *logits = real_logits(&vocab);
    if (logits) {
        bench("real", logits, vocab, iterations);
        free(logits);
    }
    const int vocabs[] = { 8192, 32000, 151936 };
    rng r;
    rng_seed(&r, 1);
    for (size_t v = 0; v < sizeof vocabs / sizeof vocabs[0]; v++) {
        vocab = vocabs[v];
        logits = malloc(sizeof(float) * (size_t)vocab);
        gaussian_logits(&r, logits, vocab, 2.0);
        for (int j = 0; j < 3; j++)
            logits[rng_next(&r) % (uint64_t)vocab] = 20.0f - 2.5f * j;
        bench("peaked", logits, vocab, iterations);
        gaussian_logits(&r, logits, vocab, 2.0);
        bench("flat", logits, vocab, iterations);
        free(logits);
    }
    return 0;
}
