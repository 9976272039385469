/* Rendering a conversation in each family's markup, byte for byte as
 * transformers' apply_chat_template renders the published templates. */
#include "chat_format.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"

typedef struct text_buf {
    char *data;
    size_t len, cap;
    int status;        /* 0, or -ENOMEM once an append failed */
} text_buf;

static void buf_append_n(text_buf *b, const char *s, size_t n)
{
    if (b->status < 0)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data) {
            b->status = -ENOMEM;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_append(text_buf *b, const char *s)
{
    buf_append_n(b, s, strlen(s));
}

/* Jinja's trim filter (Python's str.strip()) on ASCII whitespace. */
static void buf_append_trimmed(text_buf *b, const char *s)
{
    static const char space[] = " \t\n\r\v\f";
    s += strspn(s, space);
    size_t n = strlen(s);
    while (n > 0 && strchr(space, s[n - 1]))
        n--;
    buf_append_n(b, s, n);
}

static bool role_is(const alm_chat_message *m, const char *role)
{
    return strcmp(m->role, role) == 0;
}

/* <|im_start|>role\ncontent<|im_end|>\n for every message. */
static void render_chatml(const chat_format *f, const alm_chat_message *msgs, size_t n,
                          bool add_generation_prompt, text_buf *b)
{
    if (f->default_system && n > 0 && !role_is(&msgs[0], "system")) {
        buf_append(b, "<|im_start|>system\n");
        buf_append(b, f->default_system);
        buf_append(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        buf_append(b, "<|im_start|>");
        buf_append(b, msgs[i].role);
        buf_append(b, "\n");
        buf_append(b, msgs[i].content);
        buf_append(b, "<|im_end|>\n");
    }
    if (add_generation_prompt)
        buf_append(b, "<|im_start|>assistant\n");
}

static void llama3_header(text_buf *b, const char *role)
{
    buf_append(b, "<|start_header_id|>");
    buf_append(b, role);
    buf_append(b, "<|end_header_id|>\n\n");
}

/* Llama 3: bos, then each message as header + trim(content) + <|eot_id|>.
 * 3.1 and 3.2 always open with a system turn that states the knowledge
 * cut-off and the date, the conversation's own system prompt after it. */
static void render_llama3(const chat_format *f, const alm_chat_message *msgs, size_t n,
                          bool add_generation_prompt, text_buf *b)
{
    /* 3.0 puts BOS before the first message (none for no messages); 3.1
     * always opens with it. */
    if (n > 0 || f->llama3_dated_system)
        buf_append(b, f->bos);
    size_t first = 0;
    if (f->llama3_dated_system) {
        char date[32] = "26 Jul 2024";
        if (f->llama3_date_today) {
            time_t now = time(NULL);
            struct tm tm;
            if (localtime_r(&now, &tm))
                strftime(date, sizeof date, "%d %b %Y", &tm);
        }
        llama3_header(b, "system");
        buf_append(b, "Cutting Knowledge Date: December 2023\nToday Date: ");
        buf_append(b, date);
        buf_append(b, "\n\n");
        if (n > 0 && role_is(&msgs[0], "system")) {
            buf_append_trimmed(b, msgs[0].content);
            first = 1;
        }
        buf_append(b, "<|eot_id|>");
    }
    for (size_t i = first; i < n; i++) {
        llama3_header(b, msgs[i].role);
        buf_append_trimmed(b, msgs[i].content);
        buf_append(b, "<|eot_id|>");
    }
    if (add_generation_prompt)
        llama3_header(b, "assistant");
}

/* Mistral: an optional leading system message, then user and assistant
 * turns that alternate, starting with the user; the system prompt is folded
 * into the first (v0.1/v0.2) or last (v0.3) user turn as "SYSTEM\n\nUSER".
 * The templates raise an exception for anything else, and so do we. The
 * assistant's turn needs no opening: [/INST] already asks for it. */
static int render_mistral(const chat_format *f, const alm_chat_message *msgs, size_t n,
                          text_buf *b, alm_error *err)
{
    const char *system = NULL;
    size_t first = 0;
    if (n > 0 && role_is(&msgs[0], "system")) {
        system = msgs[0].content;
        first = 1;
    }
    for (size_t i = first; i < n; i++) {
        bool user_turn = (i - first) % 2 == 0;
        if (!role_is(&msgs[i], user_turn ? "user" : "assistant"))
            return alm_error_set(err, -EINVAL,
                                 "chat: message %zu has role \"%s\": after the optional system "
                                 "message, roles must alternate user/assistant/user/...",
                                 i + 1, msgs[i].role);
    }
    size_t system_turn = f->system_in_last_user ? n - 1 : first;
    buf_append(b, f->bos);
    for (size_t i = first; i < n; i++) {
        if (role_is(&msgs[i], "user")) {
            buf_append(b, f->inst_space_before ? " [INST] " : "[INST] ");
            if (system && i == system_turn) {
                buf_append(b, system);
                buf_append(b, "\n\n");
            }
            buf_append(b, msgs[i].content);
            buf_append(b, f->inst_close_space ? " [/INST]" : "[/INST]");
        } else {
            if (f->answer_space)
                buf_append(b, " ");
            if (f->answer_trim)
                buf_append_trimmed(b, msgs[i].content);
            else
                buf_append(b, msgs[i].content);
            buf_append(b, f->eos);
        }
    }
    return 0;
}

int chat_format_render(const chat_format *f, const alm_chat_message *msgs, size_t n,
                       bool add_generation_prompt, char **out, alm_error *err)
{
    *out = NULL;
    if (n > 0 && !msgs)
        return alm_error_set(err, -EINVAL, "chat: no messages");
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content || !msgs[i].role[0])
            return alm_error_set(err, -EINVAL, "chat: message %zu has no role or no content",
                                 i + 1);
    text_buf b = { 0 };
    buf_append(&b, "");
    int r = 0;
    switch (f->family) {
    case CHAT_FAMILY_CHATML:
        render_chatml(f, msgs, n, add_generation_prompt, &b);
        break;
    case CHAT_FAMILY_LLAMA3:
        render_llama3(f, msgs, n, add_generation_prompt, &b);
        break;
    case CHAT_FAMILY_MISTRAL:
        r = render_mistral(f, msgs, n, &b, err);
        break;
    }
    if (r == 0 && b.status < 0)
        r = alm_error_set(err, -ENOMEM, "out of memory");
    if (r < 0) {
        free(b.data);
        return r;
    }
    *out = b.data;
    return 0;
}
