/* alm-tokenizer-bench: encoding throughput of a model's tokenizer on real
 * files, one thread, one encode call per file.
 *
 *   alm-tokenizer-bench --model DIR [--repeat N] FILE_OR_DIR...
 *
 * A directory contributes its *.py files (recursively). Prints one JSON
 * object: {"files", "bytes", "tokens", "seconds_median", "mb_per_s"}, where
 * seconds_median is the median over the repeats of the (wall-clock) time to
 * encode all the files once, and MB is 10^6 bytes. cpu_seconds_median is
 * the same in CPU time of the thread, steadier on a busy machine. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "alm.h"

typedef struct text_file {
    char *data;
    size_t len;
} text_file;

typedef struct file_set {
    text_file *files;
    size_t n, cap;
    size_t bytes;
} file_set;

static int read_file(const char *path, file_set *set)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "alm-tokenizer-bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *data = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len + 65536 > cap) {
            cap = (len + 65536) * 2;
            char *p = realloc(data, cap);
            if (!p) {
                free(data);
                fclose(f);
                return -1;
            }
            data = p;
        }
        got = fread(data + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    fclose(f);
    if (set->n == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 64;
        text_file *p = realloc(set->files, set->cap * sizeof *p);
        if (!p) {
            free(data);
            return -1;
        }
        set->files = p;
    }
    set->files[set->n++] = (text_file){ data, len };
    set->bytes += len;
    return 0;
}

static bool is_python(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, ".py") == 0;
}

static int add_path(const char *path, file_set *set, bool from_dir)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "alm-tokenizer-bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode))
        return !from_dir || is_python(path) ? read_file(path, set) : 0;
    if (!S_ISDIR(st.st_mode))
        return 0;
    /* Sorted, so that runs see the same files in the same order. */
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0)
        return -1;
    int r = 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (r == 0 && name[0] != '.') {
            size_t len = strlen(path) + strlen(name) + 2;
            char *child = malloc(len);
            if (!child)
                r = -1;
            else {
                snprintf(child, len, "%s/%s", path, name);
                r = add_path(child, set, true);
                free(child);
            }
        }
        free(names[i]);
    }
    free(names);
    return r;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double now_seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: alm-tokenizer-bench --model DIR [--repeat N] FILE_OR_DIR...\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "repeat", required_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    const char *model = NULL;
    int repeat = 5, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'r':
            repeat = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model || optind >= argc || repeat < 1) {
        usage(stderr);
        return 2;
    }
    file_set set = { 0 };
    for (int i = optind; i < argc; i++)
        if (add_path(argv[i], &set, false) < 0)
            return 1;
    if (set.n == 0) {
        fprintf(stderr, "alm-tokenizer-bench: no files to tokenize\n");
        return 1;
    }

    alm_error err = { 0 };
    alm_tokenizer *tok;
    if (alm_tokenizer_load(model, &tok, &err) < 0) {
        fprintf(stderr, "alm-tokenizer-bench: %s\n", err.message);
        return 1;
    }
    double *times = calloc((size_t)repeat, sizeof *times);
    double *cpu = calloc((size_t)repeat, sizeof *cpu);
    size_t tokens = 0;
    int status = 0;
    for (int k = 0; k < repeat && status == 0; k++) {
        size_t count = 0;
        double t0 = now_seconds(CLOCK_MONOTONIC), c0 = now_seconds(CLOCK_THREAD_CPUTIME_ID);
        for (size_t i = 0; i < set.n; i++) {
            int32_t *ids;
            size_t n;
            if (alm_tokenizer_encode(tok, set.files[i].data, set.files[i].len, false, &ids, &n,
                                     &err) < 0) {
                fprintf(stderr, "alm-tokenizer-bench: file %zu: %s\n", i, err.message);
                status = 1;
                break;
            }
            count += n;
            free(ids);
        }
        times[k] = now_seconds(CLOCK_MONOTONIC) - t0;
        cpu[k] = now_seconds(CLOCK_THREAD_CPUTIME_ID) - c0;
        tokens = count;
    }
    if (status == 0) {
        double wall = median(times, repeat), thread = median(cpu, repeat);
        printf("{\"files\": %zu, \"bytes\": %zu, \"tokens\": %zu, \"seconds_median\": %.6f, "
               "\"mb_per_s\": %.2f, \"cpu_seconds_median\": %.6f, \"cpu_mb_per_s\": %.2f}\n",
               set.n, set.bytes, tokens, wall, (double)set.bytes / 1e6 / wall, thread,
               (double)set.bytes / 1e6 / thread);
    }
    free(times);
    free(cpu);
    alm_tokenizer_free(tok);
    for (size_t i = 0; i < set.n; i++)
        free(set.files[i].data);
    free(set.files);
    return status;
}
