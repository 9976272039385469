/* alm engine: the one public header the daemon and the tools include.
 *
 * Conventions: functions return 0 (or a non-negative count) on success and a
 * negative errno on failure; when they take an alm_error, it then holds a
 * message that names the file, the tensor and what is wrong. Objects are
 * opaque and come with a matching _free. */
#ifndef ALM_H
#define ALM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct alm_error {
    int code;           /* negative errno, 0 when no error was recorded */
    char message[512];  /* human-readable, one line */
} alm_error;

/* ---------------------------------------------------------------- tokenizer */

typedef struct alm_tokenizer alm_tokenizer;

/* Loads tokenizer.json (and tokenizer_config.json / generation_config.json if
 * present) from model_dir. Needs nothing else from the folder. */
int alm_tokenizer_load(const char *model_dir, alm_tokenizer **out, alm_error *err);
void alm_tokenizer_free(alm_tokenizer *tok);

/* Encodes UTF-8 text. add_special: add what the post-processor (or
 * add_bos_token) adds by default, e.g. BOS. Special and added tokens that
 * occur in the text are always recognised. *ids is malloc'ed. */
int alm_tokenizer_encode(const alm_tokenizer *tok, const char *text, size_t len,
                         bool add_special, int32_t **ids, size_t *n_ids,
                         alm_error *err);

/* Decodes ids to UTF-8 (special tokens kept unless skip_special). *text is
 * malloc'ed and NUL-terminated. Invalid ids are an error. */
int alm_tokenizer_decode(const alm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                         bool skip_special, char **text, size_t *len,
                         alm_error *err);

int32_t alm_tokenizer_vocab_size(const alm_tokenizer *tok);
/* The token's string as stored in the vocabulary (NULL for an unknown id). */
const char *alm_tokenizer_token_string(const alm_tokenizer *tok, int32_t id);
bool alm_tokenizer_is_special(const alm_tokenizer *tok, int32_t id);
/* End-of-sequence ids, from generation_config.json, tokenizer_config.json and
 * config.json, without duplicates. */
size_t alm_tokenizer_eos_ids(const alm_tokenizer *tok, const int32_t **ids);
/* BOS id, or -1 when the tokenizer has none. */
int32_t alm_tokenizer_bos_id(const alm_tokenizer *tok);

/* Incremental detokenization for streaming: push ids one by one, get back the
 * text that became final. Never emits a partial UTF-8 sequence; flush
 * returns what is left (invalid bytes then become U+FFFD). */
typedef struct alm_detokenizer alm_detokenizer;
int alm_detokenizer_new(const alm_tokenizer *tok, bool skip_special,
                        alm_detokenizer **out);
void alm_detokenizer_free(alm_detokenizer *d);
/* Appends the newly final text to *out (malloc'ed, NUL-terminated; may be
 * empty). Returns the number of bytes, or a negative errno. */
int alm_detokenizer_push(alm_detokenizer *d, int32_t id, char **out);
int alm_detokenizer_flush(alm_detokenizer *d, char **out);

/* ------------------------------------------------------------ thread pool */

/* Worker threads for the forward pass. One pool runs one pass at a time;
 * give each thread that generates concurrently its own pool. */
typedef struct alm_pool alm_pool;
/* n_threads <= 0: one per online CPU. */
int alm_pool_new(int n_threads, alm_pool **out);
void alm_pool_free(alm_pool *pool);
int alm_pool_size(const alm_pool *pool);

/* ------------------------------------------------------------ model */

typedef struct alm_model alm_model;

typedef struct alm_model_params {
    const char *device;   /* "cpu" (default, or $ALM_DEVICE when set) or "cuda" */
} alm_model_params;

alm_model_params alm_model_default_params(void);

/* Loads a Hugging Face / MLX model folder: config.json, *.safetensors
 * (weights stay memory-mapped), tokenizer files. The model is immutable
 * afterwards and may serve many sequences from several threads. */
int alm_model_load(const char *dir, const alm_model_params *params,
                   alm_model **out, alm_error *err);
void alm_model_free(alm_model *model);

const alm_tokenizer *alm_model_tokenizer(const alm_model *model);
int32_t alm_model_vocab_size(const alm_model *model);
/* Positions the model was trained for (max_position_embeddings). */
int alm_model_max_context(const alm_model *model);
const char *alm_model_architecture(const alm_model *model);
/* Bytes of weights (mapped from the files, or held in memory). */
size_t alm_model_weight_bytes(const alm_model *model);
/* Host memory the weights take now: what stays mapped from the files (or
 * held in memory) plus the backend's own copies (the CPU's repacked 4-bit
 * weights, after which the files' pages of them are let go). A GPU's
 * copies live on the GPU and are not counted. */
size_t alm_model_memory_bytes(const alm_model *model);
/* Bytes of weights one decode step reads: every matrix once (the routed
 * experts only), one row of the embedding table. Memory bandwidth divided
 * by this is the decode roofline. */
size_t alm_model_decode_bytes(const alm_model *model);
/* The folder the model was loaded from (as given to alm_model_load). */
const char *alm_model_dir(const alm_model *model);

/* ------------------------------------------------------------ random-weight models */

/* Models of real shapes with random weights, built in memory, for
 * benchmarks (speed does not depend on the values). They have no tokenizer
 * (alm_model_tokenizer returns NULL): they take token ids. */
typedef struct alm_random_params {
    int bits;          /* 0: BF16 weights; 2, 4 or 8: MLX affine quantized */
    int group_size;    /* 32, 64 or 128 (when quantized) */
    uint64_t seed;     /* same seed, same weights */
    int n_threads;     /* threads that fill the weights; <= 0: one per CPU */
} alm_random_params;

/* 4-bit, groups of 64, seed 0, all CPUs. */
alm_random_params alm_random_default_params(void);

/* Builds preset (e.g. "llama3-8b", "qwen2.5-0.5b"; see alm_random_preset_names)
 * with random weights. params may be NULL (defaults); model_params likewise. */
int alm_model_new_random(const char *preset, const alm_random_params *params,
                         const alm_model_params *model_params, alm_model **out,
                         alm_error *err);
/* The bytes of weights alm_model_new_random would allocate, without
 * allocating them. */
int alm_random_weight_bytes(const char *preset, const alm_random_params *params,
                            size_t *bytes, alm_error *err);
/* The preset names, NULL-terminated. */
const char *const *alm_random_preset_names(void);

/* ------------------------------------------------------------ sequences */

/* One sequence's state: its KV cache and work buffers. */
typedef struct alm_seq alm_seq;

/* max_len <= 0: the model's max_position_embeddings. */
int alm_seq_new(alm_model *model, int max_len, alm_seq **out, alm_error *err);
void alm_seq_free(alm_seq *seq);
alm_model *alm_seq_model(const alm_seq *seq);
/* Tokens in the cache. */
int alm_seq_length(const alm_seq *seq);
/* The ids of those tokens, [alm_seq_length]. */
const int32_t *alm_seq_tokens(const alm_seq *seq);
int alm_seq_capacity(const alm_seq *seq);
/* Forgets every token from position len on (len <= length), e.g. the
 * rejected draft tokens of speculative decoding. */
int alm_seq_truncate(alm_seq *seq, int len);
/* Bytes of KV cache and buffers this sequence holds. */
size_t alm_seq_memory_bytes(const alm_seq *seq);
/* From now on, logits only for the ids below n; the others come out as
 * -infinity (0: the whole vocabulary, the default). BPE vocabularies number
 * their tokens in merge order, which follows frequency, so a draft model
 * that scores only the first ids proposes nearly what it would for a
 * fraction of its output layer's cost. -EINVAL outside 0..vocabulary. */
int alm_seq_set_vocab_limit(alm_seq *seq, int n);

/* Appends n tokens and runs the model over them in batches. Writes the
 * logits of the last n_logits of them (0 <= n_logits <= n) to
 * logits[n_logits][vocab] (host memory; may be NULL when n_logits is 0). */
int alm_seq_forward(alm_seq *seq, alm_pool *pool, const int32_t *tokens, int n,
                    int n_logits, float *logits, alm_error *err);

/* alm_seq_forward for greedy decoding: instead of the logits of the last
 * n_out tokens, for each of them ids[j] = the argmax (the lowest id on
 * ties, below the vocabulary limit) and, when top_prob is not NULL,
 * top_prob[j] = its softmax probability. Same passes and the same ids as
 * the argmax of alm_seq_forward's logits; on a GPU only these numbers
 * cross the bus. ids[j] = -1 where the logits are not finite (a NaN or
 * +infinity, or every one -infinity). 1 <= n_out <= n. */
int alm_seq_forward_argmax(alm_seq *seq, alm_pool *pool, const int32_t *tokens, int n,
                           int n_out, int32_t *ids, float *top_prob, alm_error *err);

/* Greedy decoding of n_steps tokens in one call: appends tokens[0..n)
 * (1 <= n), then n_steps - 1 more tokens, each the argmax of the pass
 * before; ids[j] (and top_prob[j], when not NULL) is what
 * alm_seq_forward_argmax gives after the j-th pass, bit for bit. On a GPU
 * the passes are queued back to back and only the ids cross the bus, at
 * the end: no trip to the host between steps. The cache grows by
 * n + n_steps - 1 tokens. Where ids[j] is -1 (logits not finite), the
 * steps after it are undone and their ids are -1 too. */
int alm_seq_decode_greedy(alm_seq *seq, alm_pool *pool, const int32_t *tokens, int n,
                          int n_steps, int32_t *ids, float *top_prob, alm_error *err);

/* ------------------------------------------------------------ generation */

typedef struct alm_sampling {
    float temperature;  /* 0 = greedy */
    int top_k;          /* 0 = off */
    float top_p;        /* 1 = off */
    float min_p;        /* 0 = off */
    uint64_t seed;      /* same seed, same output */
} alm_sampling;

/* Speculative decoding: a draft (a small model, or n-gram lookup in the
 * text so far) proposes tokens, the target checks them all in one pass, and
 * the output is distributed exactly as plain sampling from the target
 * (token for token identical when greedy). */
typedef enum alm_speculative_mode {
    ALM_SPECULATIVE_OFF,
    ALM_SPECULATIVE_DRAFT,   /* needs a draft sequence */
    ALM_SPECULATIVE_NGRAM,   /* prompt lookup: no second model */
    ALM_SPECULATIVE_HYBRID,  /* prompt lookup where it finds a match, else the
                                draft model (needs a draft sequence) */
} alm_speculative_mode;

/* "off", "draft", "ngram", "hybrid"; and whether the mode runs a draft model. */
const char *alm_speculative_mode_name(alm_speculative_mode m);
bool alm_speculative_uses_draft(alm_speculative_mode m);

#define ALM_MAX_DRAFT_TOKENS 16

typedef struct alm_speculative_params {
    alm_speculative_mode mode;
    int num_draft_tokens;   /* 1..ALM_MAX_DRAFT_TOKENS, or 0 = auto (adapts to acceptance) */
    float draft_p_min;      /* stop drafting once the draft's top probability is below; 0 = off */
    int ngram_max;          /* n-gram lookup: longest n tried first (default 3) */
    int ngram_min;          /* ... down to this one (default 1) */
    int draft_vocab;        /* the draft scores only ids below this (alm_seq_set_vocab_limit); 0 = all */
} alm_speculative_params;

typedef struct alm_generate_params {
    int max_tokens;
    alm_sampling sampling;
    bool ignore_eos;            /* keep going past end-of-sequence tokens */
    const char *const *stop;    /* stop strings (not included in the text) */
    size_t n_stop;
    alm_speculative_params speculative;
} alm_generate_params;

/* Greedy, 128 tokens, stop at EOS, no stop strings, no speculation
 * (num_draft_tokens 4, ngram 3..1 when speculation is switched on). */
alm_generate_params alm_generate_default_params(void);

typedef enum alm_finish_reason {
    ALM_FINISH_LENGTH,     /* max_tokens reached */
    ALM_FINISH_EOS,        /* an end-of-sequence token */
    ALM_FINISH_STOP,       /* a stop string */
    ALM_FINISH_CONTEXT,    /* the sequence is full */
    ALM_FINISH_CANCELLED,  /* the text callback asked to stop */
} alm_finish_reason;

const char *alm_finish_reason_name(alm_finish_reason r);

typedef struct alm_speculative_stats {
    long drafted;            /* draft tokens proposed */
    long accepted;           /* of which the target kept */
    long target_passes;      /* verification passes */
    long draft_passes;       /* draft model passes */
    long lookup_passes;      /* verification passes of n-gram lookup's proposals (ngram, hybrid) */
    long drafted_by_position[ALM_MAX_DRAFT_TOKENS];   /* [i]: proposals at depth i + 1 */
    long accepted_by_position[ALM_MAX_DRAFT_TOKENS];  /* [i]: of those, kept */
    double draft_seconds;    /* drafting, with the draft's sampling */
    double target_seconds;   /* verification passes */
} alm_speculative_stats;

typedef struct alm_generate_stats {
    int prompt_tokens;
    int generated_tokens;
    double prefill_seconds;  /* prompt pass, up to the first token's logits */
    double decode_seconds;   /* everything after it */
    double prefill_tok_s;    /* prompt tokens / prefill_seconds */
    double decode_tok_s;     /* tokens after the first / decode_seconds */
    alm_finish_reason finish;
    alm_speculative_stats speculative;  /* zero when speculation is off */
} alm_generate_stats;

/* Receives each piece of text as it becomes final (never a broken UTF-8
 * sequence, never part of a stop string). Return non-zero to cancel. */
typedef int (*alm_text_fn)(void *user, const char *text, size_t len);

/* Runs the prompt through seq (appending to what it holds) and samples up
 * to max_tokens tokens. draft: the draft model's sequence for
 * ALM_SPECULATIVE_DRAFT (NULL otherwise); it must hold the same tokens as
 * seq, or none of them yet, and alm_check_draft must accept its model.
 * *ids (malloc'ed; ids may be NULL when not wanted) gets the generated ids;
 * on_text (may be NULL) the text as it streams. */
int alm_generate(alm_seq *seq, alm_seq *draft, alm_pool *pool, const int32_t *prompt,
                 size_t n_prompt, const alm_generate_params *params, alm_text_fn on_text,
                 void *user, int32_t **ids, size_t *n_ids, alm_generate_stats *stats,
                 alm_error *err);

/* Whether draft can speculate for target: same vocabulary size, the same
 * token string for every id, the same special tokens. The error says what
 * differs. */
int alm_check_draft(const alm_model *target, const alm_model *draft, alm_error *err);

/* ------------------------------------------------------------ chat */

typedef struct alm_chat_message { const char *role; const char *content; } alm_chat_message;

/* Renders messages in the model's chat format, ending with the opening of
 * the assistant's turn when add_generation_prompt. The text is complete:
 * encode it with special tokens parsed and none added. -ENOTSUP with a
 * message when the model has no known chat format. */
int alm_chat_render(const alm_model *m, const alm_chat_message *msgs, size_t n,
                    bool add_generation_prompt, char **out, alm_error *err);

#ifdef __cplusplus
}
#endif
#endif
