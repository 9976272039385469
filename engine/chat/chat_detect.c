/* Which chat format a model folder uses. Hugging Face keeps the template in
 * chat_template.jinja (newer folders) or as tokenizer_config.json's
 * "chat_template" (a string, or a list of named templates); we recognise the
 * family by its marker tokens in that text, and only when there is no
 * template at all do we guess from the vocabulary's special tokens. */
#include "chat_format.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "loader/json_document.h"

/* Real templates are a few KiB; Qwen3's with tools is about 4 KiB. */
#define CHAT_TEMPLATE_MAX_BYTES ((size_t)1 << 20)
#define TOKENIZER_CONFIG_MAX_BYTES ((size_t)16 << 20)
#define TOKENIZER_CONFIG_MAX_DEPTH 64

void chat_format_clear(chat_format *f)
{
    if (!f)
        return;
    free(f->bos);
    free(f->eos);
    free(f->default_system);
    memset(f, 0, sizeof *f);
}

static bool contains(const char *text, const char *needle)
{
    return strstr(text, needle) != NULL;
}

/* The needle as a Jinja string literal in either quote style. */
static bool contains_quoted(const char *text, const char *inner)
{
    size_t n = strlen(inner);
    for (const char *q = "'\""; *q; q++) {
        char buf[128];
        if (n + 3 > sizeof buf)
            return false;
        buf[0] = *q;
        memcpy(buf + 1, inner, n);
        buf[n + 1] = *q;
        buf[n + 2] = '\0';
        if (contains(text, buf))
            return true;
    }
    return false;
}

/* Qwen2-style templates insert a fixed system prompt when the conversation
 * has none: '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'.
 * Finds such a literal (text with no quote, brace or '+' between the
 * markers, so that '<|im_start|>system\n' + messages[0]... is not taken for
 * one) and returns it unescaped, or NULL. */
static char *chatml_default_system(const char *tmpl)
{
    static const char open[] = "<|im_start|>system";
    static const char close[] = "<|im_end|>";
    for (const char *p = strstr(tmpl, open); p; p = strstr(p + 1, open)) {
        const char *s = p + strlen(open);
        if (s[0] == '\\' && s[1] == 'n')
            s += 2;
        else if (s[0] == '\n')
            s += 1;
        else
            continue;
        const char *e = strstr(s, close);
        if (!e || e == s || strcspn(s, "'\"{}+") < (size_t)(e - s))
            continue;
        char *out = malloc((size_t)(e - s) + 1);
        if (!out)
            return NULL;
        size_t k = 0;
        for (const char *c = s; c < e; c++) {
            if (*c == '\\' && c + 1 < e) {
                c++;
                out[k++] = *c == 'n' ? '\n' : *c == 't' ? '\t' : *c;
            } else {
                out[k++] = *c;
            }
        }
        out[k] = '\0';
        return out;
    }
    return NULL;
}

static int set_tokens(chat_format *f, const char *bos, const char *eos,
                      const char *default_bos, const char *default_eos, alm_error *err)
{
    f->bos = strdup(bos ? bos : default_bos);
    f->eos = strdup(eos ? eos : default_eos);
    if (!f->bos || !f->eos)
        return alm_error_set(err, -ENOMEM, "out of memory");
    return 0;
}

int chat_format_from_template(const char *tmpl, const char *bos, const char *eos,
                              chat_format *out, alm_error *err)
{
    chat_format f = { 0 };
    int r;
    if (contains(tmpl, "<|im_start|>")) {
        f.family = CHAT_FAMILY_CHATML;
        r = set_tokens(&f, bos, eos, "", "<|im_end|>", err);
        if (r == 0 && contains(tmpl, "<|im_start|>system")) {
            f.default_system = chatml_default_system(tmpl);
        }
    } else if (contains(tmpl, "<|start_header_id|>")) {
        f.family = CHAT_FAMILY_LLAMA3;
        r = set_tokens(&f, bos, eos, "<|begin_of_text|>", "<|eot_id|>", err);
        f.llama3_dated_system = contains(tmpl, "Cutting Knowledge Date:");
        f.llama3_date_today = contains(tmpl, "strftime_now");
    } else if (contains(tmpl, "[INST]") && !contains(tmpl, "<<SYS>>")) {
        /* Llama-2's [INST] <<SYS>> format is a different family. */
        f.family = CHAT_FAMILY_MISTRAL;
        r = set_tokens(&f, bos, eos, "<s>", "</s>", err);
        f.inst_space_before = contains_quoted(tmpl, " [INST] ");
        f.inst_close_space = contains(tmpl, " [/INST]");
        f.system_in_last_user = contains(tmpl, "loop.last and system_message");
        f.answer_space = contains(tmpl, "' ' + message") || contains(tmpl, "\" \" + message");
        f.answer_trim = contains(tmpl, "]|trim") || contains(tmpl, "] | trim");
    } else {
        return alm_error_set(err, -ENOTSUP,
                             "the chat template is none of the known families "
                             "(ChatML, Llama-3, Mistral [INST])");
    }
    if (r < 0) {
        chat_format_clear(&f);
        return r;
    }
    *out = f;
    return 0;
}

/* The template text of model_dir, or NULL in *text when it has none. */
static int read_template(const char *model_dir, char **text, alm_error *err)
{
    *text = NULL;
    _cleanup_free_ char *jinja = NULL;
    if (asprintf(&jinja, "%s/chat_template.jinja", model_dir) < 0)
        return alm_error_set(err, -ENOMEM, "out of memory");
    size_t len;
    int r = read_small_file(jinja, CHAT_TEMPLATE_MAX_BYTES, text, &len, err);
    if (r != -ENOENT)
        return r;
    if (err)
        *err = (alm_error){ 0 };

    _cleanup_free_ char *config = NULL;
    if (asprintf(&config, "%s/tokenizer_config.json", model_dir) < 0)
        return alm_error_set(err, -ENOMEM, "out of memory");
    json_document doc = { 0 };
    r = json_document_load(config, TOKENIZER_CONFIG_MAX_BYTES, TOKENIZER_CONFIG_MAX_DEPTH,
                           &doc, err);
    if (r == -ENOENT) {
        if (err)
            *err = (alm_error){ 0 };
        return 0;
    }
    if (r < 0)
        return r;
    JsonNode *node = json_object_get_member(doc.root, "chat_template");
    const char *found = NULL;
    if (node && JSON_NODE_HOLDS_VALUE(node) &&
        json_node_get_value_type(node) == G_TYPE_STRING) {
        found = json_node_get_string(node);
    } else if (node && JSON_NODE_HOLDS_ARRAY(node)) {
        /* [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]:
         * transformers uses the one named default. */
        JsonArray *list = json_node_get_array(node);
        for (guint i = 0; i < json_array_get_length(list); i++) {
            JsonNode *item = json_array_get_element(list, i);
            if (!JSON_NODE_HOLDS_OBJECT(item))
                continue;
            JsonObject *o = json_node_get_object(item);
            JsonNode *name = json_object_get_member(o, "name");
            JsonNode *tmpl = json_object_get_member(o, "template");
            if (name && tmpl && JSON_NODE_HOLDS_VALUE(name) && JSON_NODE_HOLDS_VALUE(tmpl) &&
                json_node_get_value_type(name) == G_TYPE_STRING &&
                json_node_get_value_type(tmpl) == G_TYPE_STRING &&
                strcmp(json_node_get_string(name), "default") == 0)
                found = json_node_get_string(tmpl);
        }
        if (!found)
            r = alm_error_set(err, -EINVAL, "%s: chat_template: no template named \"default\"",
                              config);
    } else if (node && !JSON_NODE_HOLDS_NULL(node)) {
        r = alm_error_set(err, -EINVAL,
                          "%s: chat_template is neither a string nor a list of named templates",
                          config);
    }
    if (found && !(*text = strdup(found)))
        r = alm_error_set(err, -ENOMEM, "out of memory");
    json_document_clear(&doc);
    return r;
}

/* Whether the vocabulary has text as one token of its own. */
static bool vocab_has(const alm_tokenizer *tok, const char *text)
{
    int32_t *ids = NULL;
    size_t n = 0;
    alm_error ignored = { 0 };
    bool found = false;
    if (alm_tokenizer_encode(tok, text, strlen(text), false, &ids, &n, &ignored) == 0 && n == 1) {
        const char *s = alm_tokenizer_token_string(tok, ids[0]);
        found = s && strcmp(s, text) == 0;
    }
    free(ids);
    return found;
}

static int from_vocabulary(const alm_tokenizer *tok, const char *bos, const char *eos,
                           chat_format *out, alm_error *err)
{
    if (vocab_has(tok, "<|im_start|>") && vocab_has(tok, "<|im_end|>"))
        return chat_format_from_template("<|im_start|>", bos, eos, out, err);
    if (vocab_has(tok, "<|start_header_id|>") && vocab_has(tok, "<|end_header_id|>") &&
        vocab_has(tok, "<|eot_id|>"))
        return chat_format_from_template("<|start_header_id|>", bos, eos, out, err);
    if (vocab_has(tok, "[INST]") && vocab_has(tok, "[/INST]")) {
        int r = chat_format_from_template("[INST]", bos, eos, out, err);
        if (r < 0)
            return r;
        /* Mistral's v3 tokenizers have [INST] and [/INST] as control tokens;
         * they go with the v0.3 template: "[INST] " ... "[/INST]", the system
         * prompt in the last user turn, answers trimmed after a space. */
        out->system_in_last_user = true;
        out->answer_space = true;
        out->answer_trim = true;
        return 0;
    }
    return -ENOTSUP;
}

int chat_format_detect(const char *model_dir, const alm_tokenizer *tok, chat_format *out,
                       alm_error *err)
{
    memset(out, 0, sizeof *out);
    const char *bos = NULL, *eos = NULL;
    if (alm_tokenizer_bos_id(tok) >= 0)
        bos = alm_tokenizer_token_string(tok, alm_tokenizer_bos_id(tok));
    const int32_t *eos_ids;
    if (alm_tokenizer_eos_ids(tok, &eos_ids) > 0)
        eos = alm_tokenizer_token_string(tok, eos_ids[0]);

    _cleanup_free_ char *tmpl = NULL;
    int r = read_template(model_dir, &tmpl, err);
    if (r < 0)
        return r;
    if (tmpl) {
        r = chat_format_from_template(tmpl, bos, eos, out, err);
        if (r < 0)
            return alm_error_prefix(err, "%s", model_dir);
        return 0;
    }
    r = from_vocabulary(tok, bos, eos, out, err);
    if (r == -ENOTSUP)
        return alm_error_set(err, -ENOTSUP,
                             "%s has no chat template (tokenizer_config.json has no "
                             "chat_template and no known chat tokens)", model_dir);
    return r;
}
