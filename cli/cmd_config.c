/* alm config set|get|list|unset: settings in almd's database. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "connection.h"
#include "output.h"

static int usage_error(const char *what)
{
    cli_error("%s (usage: alm config set KEY VALUE | get KEY | list [--json] | unset KEY)", what);
    return CLI_EXIT_USAGE;
}

/* Sends method with {key[, value]} and returns the result reply. */
static int call_with_key(const cli_context *ctx, const char *method, const char *key,
                         const char *value, protocol_reply *reply)
{
    cli_connection c;
    if (cli_connect(&c, ctx->socket_path) < 0)
        return CLI_EXIT_FAILURE;
    JsonObject *params = json_object_new();
    if (key)
        json_object_set_string_member(params, "key", key);
    /* Always a string: almd validates and normalizes it exactly as it would
     * a value typed into its own table ("07" -> 7, "OFF" -> off). */
    if (value)
        json_object_set_string_member(params, "value", value);
    int r = cli_call(&c, method, params, reply);
    json_object_unref(params);
    cli_disconnect(&c);
    return r < 0 ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

static char *member_text(JsonObject *o, const char *name)
{
    return cli_json_text(o ? json_object_get_member(o, name) : NULL);
}

static bool member_true(JsonObject *o, const char *name)
{
    JsonNode *n = o ? json_object_get_member(o, name) : NULL;
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN &&
           json_node_get_boolean(n);
}

static int config_set(const cli_context *ctx, int argc, char **argv)
{
    if (argc != 4)
        return usage_error("config set takes a KEY and a VALUE");
    protocol_reply reply;
    int status = call_with_key(ctx, "config.set", argv[2], argv[3], &reply);
    if (status != CLI_EXIT_OK)
        return status;
    char *value = member_text(reply.result, "value");
    printf("%s = %s\n", argv[2], value ? value : argv[3]);
    if (member_true(reply.result, "restart_needed"))
        printf("takes effect after `alm restart`\n");
    free(value);
    protocol_reply_clear(&reply);
    return CLI_EXIT_OK;
}

static int config_unset(const cli_context *ctx, int argc, char **argv)
{
    if (argc != 3)
        return usage_error("config unset takes a KEY");
    protocol_reply reply;
    int status = call_with_key(ctx, "config.unset", argv[2], NULL, &reply);
    if (status != CLI_EXIT_OK)
        return status;
    char *value = member_text(reply.result, "value");
    printf("%s = %s (default)\n", argv[2], value ? value : "");
    if (member_true(reply.result, "restart_needed"))
        printf("takes effect after `alm restart`\n");
    free(value);
    protocol_reply_clear(&reply);
    return CLI_EXIT_OK;
}

/* Prints only the value, so that scripts can use $(alm config get KEY). */
static int config_get(const cli_context *ctx, int argc, char **argv)
{
    if (argc != 3)
        return usage_error("config get takes a KEY");
    protocol_reply reply;
    int status = call_with_key(ctx, "config.get", argv[2], NULL, &reply);
    if (status != CLI_EXIT_OK)
        return status;
    char *value = member_text(reply.result, "value");
    printf("%s\n", value ? value : "");
    free(value);
    protocol_reply_clear(&reply);
    return CLI_EXIT_OK;
}

/* Whether a setting is at its default: an explicit flag when almd sends
 * one, else its value compared with the default it reports. */
static bool is_default(JsonObject *setting, const char *value)
{
    static const char *const flags[] = { "is_default", "default" };
    for (size_t i = 0; i < 2; i++) {
        JsonNode *n = json_object_get_member(setting, flags[i]);
        if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN)
            return json_node_get_boolean(n);
    }
    static const char *const defaults[] = { "default_value", "default" };
    for (size_t i = 0; i < 2; i++) {
        JsonNode *n = json_object_get_member(setting, defaults[i]);
        if (n && JSON_NODE_HOLDS_VALUE(n)) {
            char *d = cli_json_text(n);
            bool same = d && strcmp(d, value) == 0;
            free(d);
            return same;
        }
    }
    return false;
}

static void add_setting(cli_table *t, const char *key, JsonNode *node)
{
    char *value;
    bool dflt = false;
    if (JSON_NODE_HOLDS_OBJECT(node)) {
        JsonObject *o = json_node_get_object(node);
        value = member_text(o, "value");
        dflt = value && is_default(o, value);
    } else {
        value = cli_json_text(node);
    }
    char *shown = g_strdup_printf("%s%s", value && value[0] ? value : "\"\"",
                                  dflt ? "  *" : "");
    cli_table_add(t, key, shown);
    g_free(shown);
    free(value);
}

/* The settings as almd lists them: an array of {key, value, ...} (under
 * "settings" or as the result's only array), or an object of key ->
 * {value, ...} or key -> value. */
static void collect_settings(JsonObject *result, cli_table *t)
{
    JsonNode *settings = json_object_get_member(result, "settings");
    if (!settings) {
        GList *names = json_object_get_members(result);
        for (GList *l = names; l && !settings; l = l->next) {
            JsonNode *n = json_object_get_member(result, l->data);
            if (JSON_NODE_HOLDS_ARRAY(n))
                settings = n;
        }
        g_list_free(names);
    }
    if (settings && JSON_NODE_HOLDS_ARRAY(settings)) {
        JsonArray *a = json_node_get_array(settings);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            JsonNode *item = json_array_get_element(a, i);
            if (!JSON_NODE_HOLDS_OBJECT(item))
                continue;
            JsonObject *o = json_node_get_object(item);
            char *key = member_text(o, json_object_has_member(o, "key") ? "key" : "name");
            add_setting(t, key ? key : "?", item);
            free(key);
        }
        return;
    }
    JsonObject *map = settings && JSON_NODE_HOLDS_OBJECT(settings)
                          ? json_node_get_object(settings) : result;
    GList *names = json_object_get_members(map);
    for (GList *l = names; l; l = l->next)
        add_setting(t, l->data, json_object_get_member(map, l->data));
    g_list_free(names);
}

static int config_list(const cli_context *ctx, int argc, char **argv)
{
    bool json = argc == 3 && strcmp(argv[2], "--json") == 0;
    if (argc != 2 && !json)
        return usage_error("config list takes no arguments but --json");
    protocol_reply reply;
    int status = call_with_key(ctx, "config.list", NULL, NULL, &reply);
    if (status != CLI_EXIT_OK)
        return status;
    if (json) {
        cli_print_json(stdout, reply.result, true);
    } else {
        cli_table t = { 0 };
        cli_table_add(&t, "KEY", "VALUE  (* = default)");
        collect_settings(reply.result, &t);
        if (!cli_table_flush(&t, stdout))
            status = CLI_EXIT_FAILURE;
    }
    protocol_reply_clear(&reply);
    return status;
}

int cli_config_run(const cli_context *ctx, int argc, char **argv)
{
    if (argc < 2)
        return usage_error("config needs a subcommand");
    const char *sub = argv[1];
    if (strcmp(sub, "set") == 0)
        return config_set(ctx, argc, argv);
    if (strcmp(sub, "get") == 0)
        return config_get(ctx, argc, argv);
    if (strcmp(sub, "list") == 0)
        return config_list(ctx, argc, argv);
    if (strcmp(sub, "unset") == 0)
        return config_unset(ctx, argc, argv);
    char msg[160];
    snprintf(msg, sizeof msg, "unknown config subcommand \"%.60s\"", sub);
    return usage_error(msg);
}
