/* A model's chat format: which family of conversation markup it uses and
 * the small variations within the family that change the rendered bytes.
 * Detected once from the model folder (chat_template.jinja,
 * tokenizer_config.json's chat_template, or the vocabulary's special
 * tokens), then rendered natively: the families are few and fixed, and a
 * Jinja interpreter would be a large attack surface for a tiny gain. */
#ifndef ALM_CHAT_FORMAT_H
#define ALM_CHAT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>

#include "alm.h"

typedef enum chat_family {
    CHAT_FAMILY_CHATML,    /* <|im_start|>role\n...<|im_end|>\n (Qwen) */
    CHAT_FAMILY_LLAMA3,    /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    CHAT_FAMILY_MISTRAL,   /* <s>[INST] ... [/INST] answer</s> */
} chat_family;

typedef struct chat_format {
    chat_family family;
    char *bos;                   /* BOS token text (Llama-3, Mistral) */
    char *eos;                   /* EOS token text (Mistral, after answers) */

    /* ChatML: the system prompt Qwen2-style templates insert when the
     * conversation has none (NULL: none is inserted). */
    char *default_system;

    /* Llama-3.1/3.2: a system header with the knowledge cut-off and the
     * date always opens the conversation. */
    bool llama3_dated_system;
    bool llama3_date_today;      /* 3.2: strftime_now; 3.1: "26 Jul 2024" */

    /* Mistral variants, as the published templates differ:
     * v0.1 (Mixtral):  "[INST] " ... " [/INST]", answer + eos
     * v0.2 (updated):  " [INST] " ... " [/INST]", " " + answer + eos
     * v0.3 / v3 vocab: "[INST] " ... "[/INST]", " " + trim(answer) + eos,
     *                  system folded into the last user turn. */
    bool inst_space_before;      /* " [INST] " */
    bool inst_close_space;       /* " [/INST]" rather than "[/INST]" */
    bool system_in_last_user;    /* else in the first */
    bool answer_space;           /* " " before an assistant answer */
    bool answer_trim;
} chat_format;

/* Detects the format of the model in model_dir (tokenizer: its tokenizer,
 * for the vocabulary fallback and the BOS/EOS strings). name is used in
 * messages. -ENOTSUP when no known format applies. */
int chat_format_detect(const char *model_dir, const alm_tokenizer *tok,
                       chat_format *out, alm_error *err);

/* Detection from a template's text alone (the tests' entry point too):
 * -ENOTSUP when the text is not one of the known families. bos/eos are
 * copied (NULL: the family's usual token). */
int chat_format_from_template(const char *template_text, const char *bos,
                              const char *eos, chat_format *out, alm_error *err);

void chat_format_clear(chat_format *f);

/* Renders msgs; *out is malloc'ed and NUL-terminated. -EINVAL with a
 * message for a conversation the format cannot express (Mistral: roles
 * other than user/assistant/system, or turns that do not alternate). */
int chat_format_render(const chat_format *f, const alm_chat_message *msgs, size_t n,
                       bool add_generation_prompt, char **out, alm_error *err);

#endif
