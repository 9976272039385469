/* Model names: `alm config set model NAME` names a folder under one of the
 * configured model_dirs (searched in order, the default models' folder
 * last), or gives an absolute path to a folder. */
#ifndef ALM_DAEMON_MODEL_RESOLVE_H
#define ALM_DAEMON_MODEL_RESOLVE_H

#include "alm.h"
#include "config_file.h"

/* *dir: malloc'ed folder that holds config.json. -ENOENT with the folders
 * searched when the name resolves to nothing, -EINVAL for a name that is
 * neither a plain folder name nor an absolute path. */
int model_resolve(const daemon_config *config, const char *name, char **dir, alm_error *err);

#endif
