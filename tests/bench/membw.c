/* alm-membw: the machine's memory read bandwidth, the limit of decoding a
 * model larger than the caches (weight bytes per token / bandwidth). Each
 * thread sums its share of a buffer far larger than the last-level cache;
 * prints {"threads": N, "bytes": B, "read_gb_s": {"median", "max"}}. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BYTES (1u << 30)
#define REPEAT 7

typedef struct share {
    const uint64_t *data;
    size_t n;
    uint64_t sum;
} share;

static void *sum_share(void *p)
{
    share *s = p;
    /* Eight independent sums so the loads are not serialized by the adds. */
    uint64_t acc[8] = { 0 };
    for (size_t i = 0; i + 8 <= s->n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += s->data[i + j];
    s->sum = acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
    return NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads < 1 || threads > 256) {
        fprintf(stderr, "usage: alm-membw [THREADS]\n");
        return 2;
    }
    uint64_t *data = aligned_alloc(64, BYTES);
    if (!data) {
        fprintf(stderr, "alm-membw: out of memory\n");
        return 1;
    }
    memset(data, 1, BYTES);
    size_t words = BYTES / sizeof(uint64_t), per = words / (size_t)threads;
    double gbs[REPEAT];
    uint64_t check = 0;
    for (int r = 0; r < REPEAT; r++) {
        pthread_t tid[256];
        share shares[256];
        double t0 = now();
        for (int t = 0; t < threads; t++) {
            shares[t] = (share){ data + (size_t)t * per, per, 0 };
            pthread_create(&tid[t], NULL, sum_share, &shares[t]);
        }
        for (int t = 0; t < threads; t++) {
            pthread_join(tid[t], NULL);
            check += shares[t].sum;
        }
        gbs[r] = (double)per * threads * sizeof(uint64_t) / (now() - t0) / 1e9;
    }
    qsort(gbs, REPEAT, sizeof gbs[0], cmp);
    printf("{\"threads\":%d,\"bytes\":%u,\"read_gb_s\":{\"median\":%.2f,\"max\":%.2f},\"check\":%llu}\n",
           threads, BYTES, gbs[REPEAT / 2], gbs[REPEAT - 1], (unsigned long long)(check & 0xff));
    free(data);
    return 0;
}
