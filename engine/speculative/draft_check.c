/* Whether a draft model can speculate for a target: its token ids must mean
 * the same strings, or its proposals are garbage to the target and
 * speculation silently only slows things down. */
#include <errno.h>
#include <string.h>

#include "core/error.h"

int alm_check_draft(const alm_model *target, const alm_model *draft, alm_error *err)
{
    int32_t tv = alm_model_vocab_size(target), dv = alm_model_vocab_size(draft);
    if (tv != dv)
        return alm_error_set(err, -EINVAL,
                             "the draft model cannot speculate for the target: vocabulary sizes differ "
                             "(target %d, draft %d)", tv, dv);
    const alm_tokenizer *tt = alm_model_tokenizer(target), *dt = alm_model_tokenizer(draft);
    /* Random-weight models have no tokenizer: ids are all they share. */
    if (!tt && !dt)
        return 0;
    if (!tt || !dt)
        return alm_error_set(err, -EINVAL,
                             "the draft model cannot speculate for the target: the %s has no tokenizer "
                             "(random weights), the %s has one", tt ? "draft" : "target",
                             tt ? "target" : "draft");
    int32_t tn = alm_tokenizer_vocab_size(tt), dn = alm_tokenizer_vocab_size(dt);
    if (tn != dn)
        return alm_error_set(err, -EINVAL,
                             "the draft model cannot speculate for the target: tokenizer vocabularies "
                             "differ in size (target %d, draft %d)", tn, dn);
    for (int32_t id = 0; id < tn; id++) {
        const char *a = alm_tokenizer_token_string(tt, id);
        const char *b = alm_tokenizer_token_string(dt, id);
        if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0))
            return alm_error_set(err, -EINVAL,
                                 "the draft model cannot speculate for the target: token %d is "
                                 "\"%.40s\" for the target and \"%.40s\" for the draft",
                                 id, a ? a : "(none)", b ? b : "(none)");
        if (alm_tokenizer_is_special(tt, id) != alm_tokenizer_is_special(dt, id))
            return alm_error_set(err, -EINVAL,
                                 "the draft model cannot speculate for the target: token %d (\"%.40s\") "
                                 "is special for the %s only", id, a ? a : "",
                                 alm_tokenizer_is_special(tt, id) ? "target" : "draft");
    }
    const int32_t *te, *de;
    size_t tne = alm_tokenizer_eos_ids(tt, &te), dne = alm_tokenizer_eos_ids(dt, &de);
    if (tne != dne || memcmp(te, de, sizeof(int32_t) * tne) != 0)
        return alm_error_set(err, -EINVAL,
                             "the draft model cannot speculate for the target: their end-of-sequence "
                             "tokens differ");
    if (alm_tokenizer_bos_id(tt) != alm_tokenizer_bos_id(dt))
        return alm_error_set(err, -EINVAL,
                             "the draft model cannot speculate for the target: their BOS tokens differ "
                             "(target %d, draft %d)", alm_tokenizer_bos_id(tt), alm_tokenizer_bos_id(dt));
    return 0;
}
