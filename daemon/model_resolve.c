/* Name to folder: see model_resolve.h. */
#include "model_resolve.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"

static bool is_model_folder(const char *dir)
{
    char path[PATH_MAX];
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return false;
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
        return false;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int model_resolve(const daemon_config *config, const char *name, char **dir, alm_error *err)
{
    *dir = NULL;
    if (!name || !*name)
        return alm_error_set(err, -EINVAL, "no model named");
    if (name[0] == '/') {
        if (!is_model_folder(name))
            return alm_error_set(err, -ENOENT, "%s is not a model folder (no config.json)",
                                 name);
        *dir = strdup(name);
        return *dir ? 0 : alm_error_set(err, -ENOMEM, "out of memory");
    }
    /* A name is one path component: "../x" must not escape model_dirs. */
    if (strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return alm_error_set(err, -EINVAL,
                             "model \"%s\": expected a folder name in model_dirs or an "
                             "absolute path", name);
    char searched[400] = "";
    size_t used = 0;
    for (size_t i = 0; i < config->n_model_dirs; i++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", config->model_dirs[i], name) >=
            (int)sizeof path)
            continue;
        if (is_model_folder(path)) {
            *dir = strdup(path);
            return *dir ? 0 : alm_error_set(err, -ENOMEM, "out of memory");
        }
        if (used < sizeof searched) {
            int n = snprintf(searched + used, sizeof searched - used, "%s%s", i ? ", " : "",
                             config->model_dirs[i]);
            if (n > 0)
                used += (size_t)n;
        }
    }
    return alm_error_set(err, -ENOENT, "model \"%s\" not found in %s", name,
                         config->n_model_dirs ? searched : "(no model_dirs)");
}
