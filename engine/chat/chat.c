/* alm_chat_render: the public entry point; detection is repeated per call
 * because it costs a file read or two, far less than the prefill of the
 * text it produces, and keeps alm_model free of chat state. */
#include <errno.h>

#include "chat_format.h"
#include "core/error.h"

int alm_chat_render(const alm_model *m, const alm_chat_message *msgs, size_t n,
                    bool add_generation_prompt, char **out, alm_error *err)
{
    if (!out)
        return alm_error_set(err, -EINVAL, "alm_chat_render: out is NULL");
    *out = NULL;
    if (!m)
        return alm_error_set(err, -EINVAL, "alm_chat_render: no model");
    chat_format f;
    int r = chat_format_detect(alm_model_dir(m), alm_model_tokenizer(m), &f, err);
    if (r < 0)
        return r;
    r = chat_format_render(&f, msgs, n, add_generation_prompt, out, err);
    chat_format_clear(&f);
    return r;
}
