/* config.json: the test models' values, both layouts, every architecture
 * rule, quantization, and a clear error for each inconsistency. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "loader/model_config.h"
#include "loader_fixtures.h"
#include "tap.h"

/* A small llama config; extra members are appended after the base ones and,
 * json-glib keeping the last of duplicate members, also override them. */
static const char base_config[] =
    "{\"model_type\": \"llama\", \"vocab_size\": 100, \"hidden_size\": 64, "
    "\"intermediate_size\": 128, \"num_hidden_layers\": 4, \"num_attention_heads\": 4";

static int parse_with(const char *extra, model_config *cfg, alm_error *err)
{
    char text[4096];
    snprintf(text, sizeof text, "%s%s%s}", base_config, extra && *extra ? ", " : "", extra ? extra : "");
    return model_config_parse(text, strlen(text), "test/config.json", cfg, err);
}

static void expect_error(const char *extra, const char *needle, const char *what)
{
    model_config cfg;
    alm_error err = { 0 };
    int r = parse_with(extra, &cfg, &err);
    tap_ok(r < 0 && err.code == r && message_has(err.message, needle)
               && message_has(err.message, "test/config.json"),
           "%s: refused (%s)", what, err.message);
    if (r == 0)
        model_config_clear(&cfg);
}

static bool near(double a, double b)
{
    return fabs(a - b) <= 1e-9 * fmax(1.0, fabs(b));
}

static int load_model_config(const char *root, const char *model, model_config *cfg)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/config.json", root, model);
    alm_error err = { 0 };
    int r = model_config_load(path, cfg, &err);
    tap_ok(r == 0, "%s: config.json loads (%s)", model, r ? err.message : "ok");
    return r;
}

static void test_test_models(const char *data, const char *defaults)
{
    model_config c;
    if (load_model_config(defaults, "coder-target-4bit", &c) == 0) {
        tap_ok(c.arch == MODEL_ARCH_MISTRAL && strcmp(c.model_type, "mistral") == 0 && c.n_layers == 6
                   && c.hidden_size == 384 && c.intermediate_size == 1024 && c.n_heads == 6
                   && c.n_kv_heads == 2 && c.head_dim == 64 && c.vocab_size == 8192,
               "coder-target-4bit: mistral, 6 layers, hidden 384, heads 6/2, head_dim 64");
        tap_ok(c.quant.bits == 4 && c.quant.group_size == 64 && c.n_quant_overrides == 0
                   && !c.tie_word_embeddings,
               "coder-target-4bit: 4-bit g64, untied");
        tap_ok(near(c.rope_theta, 10000.0) && c.rope_scaling == ROPE_SCALING_NONE
                   && strcmp(c.torch_dtype, "bfloat16") == 0 && fabsf(c.rms_norm_eps - 1e-5f) < 1e-12f,
               "coder-target-4bit: older layout (top-level rope_theta, torch_dtype), eps 1e-5");
        tap_ok(c.sliding_window == 0 && !c.layer_sliding[0] && !c.attention_bias && !c.o_proj_bias
                   && c.n_experts == 0 && c.bos_token_id == -1 && c.n_eos == 1 && c.eos_token_ids[0] == 0
                   && c.max_position_embeddings == 4096,
               "coder-target-4bit: no window, no biases, dense, bos null, eos 0");
        model_config_clear(&c);
    }
    if (load_model_config(defaults, "coder-draft-4bit", &c) == 0) {
        tap_ok(c.arch == MODEL_ARCH_QWEN2 && c.n_layers == 3 && c.hidden_size == 192 && c.n_heads == 3
                   && c.n_kv_heads == 1 && c.head_dim == 64 && c.tie_word_embeddings
                   && c.attention_bias && !c.o_proj_bias && c.quant.bits == 4 && c.quant.group_size == 64
                   && strcmp(c.torch_dtype, "bfloat16") == 0 && c.sliding_window == 0,
               "coder-draft-4bit: qwen2, tied, q/k/v biases, 4-bit, no window");
        model_config_clear(&c);
    }
    if (load_model_config(data, "tiny/qwen3-qknorm", &c) == 0) {
        tap_ok(c.arch == MODEL_ARCH_QWEN3 && c.head_dim == 32 && c.hidden_size / c.n_heads == 16
                   && c.qk_norm && !c.attention_bias && !c.o_proj_bias && c.tie_word_embeddings,
               "qwen3-qknorm: head_dim 32 (not hidden/heads), q/k norms, no biases, tied");
        model_config_clear(&c);
    }
    if (load_model_config(data, "tiny/llama3-rope", &c) == 0) {
        tap_ok(c.arch == MODEL_ARCH_LLAMA && c.rope_scaling == ROPE_SCALING_LLAMA3 && near(c.rope_theta, 500000.0)
                   && near(c.rope_factor, 8.0) && near(c.rope_low_freq_factor, 1.0)
                   && near(c.rope_high_freq_factor, 4.0) && c.rope_original_max_pos == 64
                   && c.tie_word_embeddings && c.n_kv_heads == 2 && !c.mlp_bias,
               "llama3-rope: llama3 scaling, theta 500000, factor 8, low 1, high 4, original 64, tied");
        model_config_clear(&c);
    }
    if (load_model_config(data, "tiny/mistral-swa", &c) == 0) {
        tap_ok(c.arch == MODEL_ARCH_MISTRAL && c.sliding_window == 16 && c.layer_sliding[0]
                   && c.layer_sliding[1] && c.head_dim == 16 && !c.tie_word_embeddings,
               "mistral-swa: window 16 on every layer, head_dim 16, untied");
        model_config_clear(&c);
    }
    if (load_model_config(data, "tiny/mixtral-moe", &c) == 0) {
        tap_ok(c.arch == MODEL_ARCH_MIXTRAL && c.n_experts == 4 && c.n_experts_per_tok == 2
                   && c.head_dim == 16 && c.sliding_window == 0 && near(c.rope_theta, 1e6)
                   && c.tie_word_embeddings,
               "mixtral-moe: 4 experts, top-2, head_dim null -> 64/4, window null, theta 1e6");
        model_config_clear(&c);
    }
    if (load_model_config(data, "tiny/qwen2-bias", &c) == 0) {
        tap_ok(c.arch == MODEL_ARCH_QWEN2 && c.attention_bias && !c.o_proj_bias && c.sliding_window == 0
                   && !c.layer_sliding[0] && !c.layer_sliding[1] && c.quant.bits == 0,
               "qwen2-bias: q/k/v biases, full attention, not quantized");
        model_config_clear(&c);
    }
    if (load_model_config(data, "tiny/llama2-spm", &c) == 0) {
        tap_ok(c.bos_token_id == 1 && c.n_eos == 1 && c.eos_token_ids[0] == 2 && c.n_kv_heads == 1
                   && c.vocab_size == 4000 && !c.tie_word_embeddings,
               "llama2-spm: bos 1, eos 2, one KV head, untied");
        model_config_clear(&c);
    }
}

static void test_layouts_and_rules(void)
{
    model_config c;
    alm_error err = { 0 };
    int r;

    r = parse_with(NULL, &c, &err);
    tap_ok(r == 0 && c.n_kv_heads == 4 && c.head_dim == 16 && near(c.rope_theta, 10000.0)
               && fabsf(c.rms_norm_eps - 1e-6f) < 1e-12f && !c.tie_word_embeddings
               && c.max_position_embeddings == 2048 && c.bos_token_id == -1 && c.n_eos == 0
               && c.torch_dtype[0] == '\0' && c.quant.bits == 0,
           "defaults: kv heads = heads, head_dim = hidden/heads, llama defaults (%s)", r ? err.message : "ok");
    if (r == 0)
        model_config_clear(&c);

    r = parse_with("\"rope_theta\": 1000, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.5}", &c, &err);
    tap_ok(r == 0 && c.rope_scaling == ROPE_SCALING_LINEAR && near(c.rope_factor, 2.5) && near(c.rope_theta, 1000),
           "older layout: rope_theta + rope_scaling {type: linear}");
    if (r == 0)
        model_config_clear(&c);
    r = parse_with("\"rope_theta\": 1000, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32, "
                   "\"low_freq_factor\": 1, \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}",
                   &c, &err);
    tap_ok(r == 0 && c.rope_scaling == ROPE_SCALING_LLAMA3 && near(c.rope_factor, 32)
               && c.rope_original_max_pos == 8192,
           "older layout: rope_scaling {rope_type: llama3}");
    if (r == 0)
        model_config_clear(&c);
    r = parse_with("\"rope_theta\": 5, \"rope_parameters\": {\"rope_theta\": 77.5, \"rope_type\": \"default\"}, "
                   "\"rope_scaling\": null", &c, &err);
    tap_ok(r == 0 && near(c.rope_theta, 77.5) && c.rope_scaling == ROPE_SCALING_NONE,
           "rope_parameters.rope_theta wins over top level");
    if (r == 0)
        model_config_clear(&c);
    r = parse_with("\"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 4}, \"rope_theta\": 20000", &c, &err);
    tap_ok(r == 0 && c.rope_scaling == ROPE_SCALING_LINEAR && near(c.rope_factor, 4) && near(c.rope_theta, 20000),
           "rope_parameters without rope_theta: the top-level one");
    if (r == 0)
        model_config_clear(&c);

    r = parse_with("\"model_type\": null, \"architectures\": [\"MistralForCausalLM\"]", &c, &err);
    tap_ok(r == 0 && c.arch == MODEL_ARCH_MISTRAL && c.sliding_window == 4096 && c.layer_sliding[3],
           "architectures alone decide; mistral's absent sliding_window defaults to 4096");
    if (r == 0)
        model_config_clear(&c);

    r = parse_with("\"attention_bias\": true, \"mlp_bias\": true", &c, &err);
    tap_ok(r == 0 && c.attention_bias && c.o_proj_bias && c.mlp_bias,
           "llama attention_bias: q, k, v and o biases; mlp_bias read");
    if (r == 0)
        model_config_clear(&c);
    r = parse_with("\"model_type\": \"qwen3\", \"attention_bias\": true, \"mlp_bias\": true", &c, &err);
    tap_ok(r == 0 && c.attention_bias && c.o_proj_bias && c.qk_norm && !c.mlp_bias,
           "qwen3 attention_bias: q, k, v and o; no mlp_bias key");
    if (r == 0)
        model_config_clear(&c);
    r = parse_with("\"model_type\": \"qwen2\", \"attention_bias\": false", &c, &err);
    tap_ok(r == 0 && c.attention_bias && !c.o_proj_bias && !c.qk_norm, "qwen2: q/k/v biases always, o never");
    if (r == 0)
        model_config_clear(&c);
    r = parse_with("\"model_type\": \"mistral\", \"attention_bias\": true, \"sliding_window\": null", &c, &err);
    tap_ok(r == 0 && !c.attention_bias && !c.o_proj_bias && c.sliding_window == 0 && !c.layer_sliding[0],
           "mistral: no biases whatever attention_bias says; sliding_window null = none");
    if (r == 0)
        model_config_clear(&c);
    r = parse_with("\"model_type\": \"qwen2\", \"tie_word_embeddings\": true", &c, &err);
    tap_ok(r == 0 && c.tie_word_embeddings, "tie_word_embeddings read from the file");
    if (r == 0)
        model_config_clear(&c);

    r = parse_with("\"model_type\": \"qwen2\", \"use_sliding_window\": true, \"sliding_window\": 8, "
                   "\"max_window_layers\": 2", &c, &err);
    tap_ok(r == 0 && c.sliding_window == 8 && !c.layer_sliding[0] && !c.layer_sliding[1] && c.layer_sliding[2]
               && c.layer_sliding[3],
           "qwen2 use_sliding_window: layers >= max_window_layers slide");
    if (r == 0)
        model_config_clear(&c);
    r = parse_with("\"model_type\": \"qwen3\", \"use_sliding_window\": true, \"sliding_window\": 8, "
                   "\"max_window_layers\": 0, \"layer_types\": [\"sliding_attention\", \"full_attention\", "
                   "\"sliding_attention\", \"full_attention\"]", &c, &err);
    tap_ok(r == 0 && c.sliding_window == 8 && c.layer_sliding[0] && !c.layer_sliding[1] && c.layer_sliding[2]
               && !c.layer_sliding[3],
           "qwen3 layer_types decide per layer");
    if (r == 0)
        model_config_clear(&c);
    r = parse_with("\"model_type\": \"qwen2\", \"use_sliding_window\": false, \"sliding_window\": 8, "
                   "\"layer_types\": [\"sliding_attention\", \"sliding_attention\", \"sliding_attention\", "
                   "\"sliding_attention\"]", &c, &err);
    tap_ok(r == 0 && c.sliding_window == 0 && !c.layer_sliding[0], "qwen2 without use_sliding_window: no window");
    if (r == 0)
        model_config_clear(&c);

    r = parse_with("\"model_type\": \"mixtral\"", &c, &err);
    tap_ok(r == 0 && c.n_experts == 8 && c.n_experts_per_tok == 2 && near(c.rope_theta, 1e6)
               && fabsf(c.rms_norm_eps - 1e-5f) < 1e-12f,
           "mixtral defaults: 8 experts, top-2, theta 1e6, eps 1e-5");
    if (r == 0)
        model_config_clear(&c);

    r = parse_with("\"eos_token_id\": [3, 1, 2], \"bos_token_id\": 5, \"torch_dtype\": \"float16\"", &c, &err);
    tap_ok(r == 0 && c.n_eos == 3 && c.eos_token_ids[0] == 3 && c.eos_token_ids[2] == 2 && c.bos_token_id == 5
               && strcmp(c.torch_dtype, "float16") == 0,
           "eos list, bos id, torch_dtype");
    if (r == 0)
        model_config_clear(&c);
    r = parse_with("\"max_position_embeddings\": 4096.0, \"head_dim\": null, \"num_key_value_heads\": null", &c, &err);
    tap_ok(r == 0 && c.max_position_embeddings == 4096 && c.head_dim == 16 && c.n_kv_heads == 4,
           "integral floats accepted; null head_dim and kv heads take their defaults");
    if (r == 0)
        model_config_clear(&c);
}

static void test_quantization(void)
{
    model_config c;
    alm_error err = { 0 };
    int r = parse_with("\"quantization\": {\"group_size\": 64, \"bits\": 4, \"mode\": \"affine\", "
                       "\"lm_head\": {\"group_size\": 32, \"bits\": 8}, "
                       "\"model.layers.0.mlp.down_proj\": {\"bits\": 2}, "
                       "\"model.embed_tokens\": false, \"model.norm\": true}", &c, &err);
    quant_spec d = r == 0 ? model_config_quant_for(&c, "model.layers.1.self_attn.q_proj") : (quant_spec){ 0, 0 };
    quant_spec lm = r == 0 ? model_config_quant_for(&c, "lm_head") : (quant_spec){ 0, 0 };
    quant_spec down = r == 0 ? model_config_quant_for(&c, "model.layers.0.mlp.down_proj") : (quant_spec){ 0, 0 };
    quant_spec emb = r == 0 ? model_config_quant_for(&c, "model.embed_tokens") : (quant_spec){ 1, 1 };
    tap_ok(r == 0 && d.bits == 4 && d.group_size == 64, "default spec 4/64 (%s)", r ? err.message : "ok");
    tap_ok(lm.bits == 8 && lm.group_size == 32, "override: lm_head 8 bits, group 32");
    tap_ok(down.bits == 2 && down.group_size == 64, "override without group_size inherits the default");
    tap_ok(emb.bits == 0, "override false: module not quantized");
    tap_ok(r == 0 && c.n_quant_overrides == 3, "true is the default, not an override");
    if (r == 0)
        model_config_clear(&c);

    r = parse_with("\"quantization_config\": {\"group_size\": 128, \"bits\": 8}", &c, &err);
    tap_ok(r == 0 && c.quant.bits == 8 && c.quant.group_size == 128, "quantization_config alone is read");
    if (r == 0)
        model_config_clear(&c);

    expect_error("\"quantization\": {\"group_size\": 32, \"bits\": 4, \"mode\": \"mxfp4\"}",
                 "quantization mode \"mxfp4\" is not supported (only affine)", "mxfp4 mode");
    expect_error("\"quantization\": {\"group_size\": 64, \"bits\": 4, \"lm_head\": {\"bits\": 4, \"mode\": \"nvfp4\"}}",
                 "quantization mode \"nvfp4\" is not supported", "override with another mode");
    expect_error("\"quantization\": {\"group_size\": 64, \"bits\": 3}", "3 bits is not supported (2, 4 or 8)",
                 "3 bits");
    expect_error("\"quantization\": {\"group_size\": 16, \"bits\": 4}", "group size 16 is not supported",
                 "group size 16");
    expect_error("\"quantization\": {\"group_size\": 64, \"bits\": 4, \"lm_head\": {\"bits\": 6}}",
                 "\"quantization.lm_head\": quantization with 6 bits", "override with 6 bits");
    expect_error("\"quantization\": {\"group_size\": 64}", "\"quantization.bits\" is missing", "no bits");
    expect_error("\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4, \"group_size\": 128}",
                 "quantization method \"gptq\" is not supported", "GPTQ");
    expect_error("\"quantization\": 4", "\"quantization\" is not an object", "quantization not an object");
}

static void test_errors(void)
{
    expect_error("\"model_type\": \"gpt2\"",
                 "unsupported architecture \"gpt2\" (supported: llama, mistral, qwen2, qwen3, mixtral)",
                 "unknown model_type");
    expect_error("\"model_type\": null, \"architectures\": [\"GPT2LMHeadModel\"]",
                 "unsupported architecture \"GPT2LMHeadModel\"", "unknown architectures class");
    expect_error("\"model_type\": null", "neither \"model_type\" nor \"architectures\"", "no architecture");
    expect_error("\"model_type\": 3", "\"model_type\" is not a string", "model_type a number");
    expect_error("\"hidden_size\": \"64\"", "\"hidden_size\" is not an integer", "size as a string");
    expect_error("\"hidden_size\": 64.5", "\"hidden_size\" is not an integer", "fractional size");
    expect_error("\"hidden_size\": null", "\"hidden_size\" is missing", "required size null");
    expect_error("\"num_hidden_layers\": 0", "\"num_hidden_layers\" is 0, outside", "zero layers");
    expect_error("\"vocab_size\": -5", "\"vocab_size\" is -5, outside", "negative vocabulary");
    expect_error("\"vocab_size\": 99999999999999999999", "vocab_size", "huge vocabulary");
    expect_error("\"num_key_value_heads\": 3", "not a multiple of num_key_value_heads 3", "heads not divisible");
    expect_error("\"num_key_value_heads\": 8", "not a multiple of num_key_value_heads 8", "more kv heads than heads");
    expect_error("\"hidden_size\": 66", "hidden_size 66 is not divisible by num_attention_heads 4",
                 "hidden not divisible without head_dim");
    expect_error("\"head_dim\": 15", "head_dim 15 is odd", "odd head_dim");
    expect_error("\"rms_norm_eps\": 0", "\"rms_norm_eps\" must be positive", "zero eps");
    expect_error("\"rope_theta\": -1", "\"rope_theta\" must be positive", "negative theta");
    expect_error("\"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4}",
                 "rope type \"yarn\" is not supported (supported: default, linear, llama3)", "yarn");
    expect_error("\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2}", "rope type \"dynamic\"", "dynamic NTK");
    expect_error("\"rope_parameters\": {\"rope_type\": \"linear\"}", "\"rope_parameters.factor\" is missing",
                 "linear without factor");
    expect_error("\"rope_parameters\": {\"rope_type\": \"llama3\", \"factor\": 8, \"high_freq_factor\": 4, "
                 "\"original_max_position_embeddings\": 64}",
                 "\"rope_parameters.low_freq_factor\" is missing", "llama3 without low_freq_factor");
    expect_error("\"rope_parameters\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 4, "
                 "\"high_freq_factor\": 4, \"original_max_position_embeddings\": 64}",
                 "must exceed low_freq_factor", "llama3 with equal band factors");
    expect_error("\"rope_parameters\": 7", "\"rope_parameters\" is not an object", "rope_parameters a number");
    expect_error("\"model_type\": \"mixtral\", \"num_local_experts\": 4, \"num_experts_per_tok\": 5",
                 "num_experts_per_tok 5 exceeds num_local_experts 4", "top-k above the expert count");
    expect_error("\"model_type\": \"qwen2\", \"use_sliding_window\": true, \"sliding_window\": 8, "
                 "\"layer_types\": [\"full_attention\"]", "\"layer_types\" has 1 entries for 4 layers",
                 "layer_types of the wrong length");
    expect_error("\"model_type\": \"qwen2\", \"layer_types\": [\"a\", \"b\", \"c\", \"d\"]",
                 "layer_types[0] is not", "unknown layer type");
    expect_error("\"model_type\": \"mistral\", \"sliding_window\": -1", "\"sliding_window\" is -1", "negative window");
    expect_error("\"use_sliding_window\": 1, \"model_type\": \"qwen2\"", "\"use_sliding_window\" is not true or false",
                 "bool as a number");
    expect_error("\"eos_token_id\": [1, 2, 3, 4, 5, 6, 7, 8, 9]", "lists 9 ids, at most 8", "too many eos ids");
    expect_error("\"eos_token_id\": [1, \"x\"]", "\"eos_token_id\"[1] is not a token id", "eos id a string");
    expect_error("\"bos_token_id\": -2", "\"bos_token_id\" is -2", "negative bos");

    /* Malformed documents. */
    const char *bad[] = { "", "{", "[]", "{\"vocab_size\": 1,}", "{\"a\": 1} {\"b\": 2}", "nul\0l" };
    const char *needles[] = { "empty document", "malformed JSON", "expected an object", "malformed JSON",
                              "unexpected text", "expected an object" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        model_config c;
        alm_error err = { 0 };
        size_t len = i == 5 ? 5 : strlen(bad[i]);
        int r = model_config_parse(bad[i], len, "bad/config.json", &c, &err);
        tap_ok(r < 0 && message_has(err.message, needles[i]) && message_has(err.message, "bad/config.json"),
               "malformed config.json %zu refused (%s)", i, err.message);
    }
    model_config c;
    alm_error err = { 0 };
    int r = model_config_load("/nonexistent/config.json", &c, &err);
    tap_ok(r < 0 && message_has(err.message, "/nonexistent/config.json: cannot open"), "missing config.json");
}

static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Random byte mutations of real configs: parse errors or success, never a
 * crash, leak or missing message. */
static void test_fuzz(const char *data)
{
    char path[1024];
    size_t len;
    int n = snprintf(path, sizeof path, "%s/tiny/llama3-rope/config.json", data);
    char *orig = n > 0 && (size_t)n < sizeof path ? fixture_read(path, &len) : NULL;
    if (!orig) {
        tap_ok(0, "read %s", path);
        return;
    }
    char *buf = malloc(len);
    uint64_t state = 12345;
    int ok = 0, refused = 0, bad = 0;
    const int rounds = 4000;
    for (int i = 0; i < rounds; i++) {
        memcpy(buf, orig, len);
        int n_mut = 1 + (int)(next_random(&state) % 3);
        for (int m = 0; m < n_mut; m++) {
            static const char interesting[] = "{}[],:\"0123456789-.enull";
            size_t pos = (size_t)(next_random(&state) % len);
            buf[pos] = next_random(&state) % 3 ? interesting[next_random(&state) % (sizeof interesting - 1)]
                                               : (char)next_random(&state);
        }
        model_config c;
        alm_error err = { 0 };
        int r = model_config_parse(buf, len, "fuzz/config.json", &c, &err);
        if (r == 0) {
            ok++;
            bad += c.n_layers <= 0 || c.head_dim <= 0 || c.n_heads % c.n_kv_heads != 0 || !c.layer_sliding;
            model_config_clear(&c);
        } else {
            refused++;
            bad += err.message[0] == '\0';
        }
    }
    tap_diag("config fuzz: %d parsed, %d refused", ok, refused);
    tap_ok(bad == 0 && refused > 0, "config fuzz: no inconsistent config accepted, every refusal explained");
    free(buf);
    free(orig);
}

int main(void)
{
    const char *data = getenv("ALM_TEST_DATA");
    const char *defaults = getenv("ALM_DEFAULT_MODELS");
    if (!data || !defaults)
        return tap_skip_all("ALM_TEST_DATA / ALM_DEFAULT_MODELS not set (run through meson test)");
    char models[1024];
    snprintf(models, sizeof models, "%s/models", data);
    test_test_models(models, defaults);
    test_layouts_and_rules();
    test_quantization();
    test_errors();
    test_fuzz(models);
    return tap_done();
}
