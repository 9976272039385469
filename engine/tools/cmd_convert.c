/* alm-engine convert: quantizes an HF model folder into the MLX layout
 * (loader/model_convert.h). */
#include <getopt.h>
#include <stdio.h>

#include "core/clock.h"
#include "loader/model_convert.h"
#include "tools/tool.h"

int cmd_convert(int argc, char **argv)
{
    enum { OPT_BITS = 256, OPT_GROUP, OPT_SHARD, OPT_THREADS };
    static const struct option opts[] = {
        { "q-bits", required_argument, NULL, OPT_BITS },
        { "q-group-size", required_argument, NULL, OPT_GROUP },
        { "max-shard-mb", required_argument, NULL, OPT_SHARD },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    long bits = 0, group = 64, shard_mb = 0, threads = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = 0;
        switch (c) {
        case OPT_BITS: r = tool_parse_int(optarg, "--q-bits", 1, 32, &bits); break;
        case OPT_GROUP: r = tool_parse_int(optarg, "--q-group-size", 1, 1 << 20, &group); break;
        case OPT_SHARD: r = tool_parse_int(optarg, "--max-shard-mb", 1, 1 << 30, &shard_mb); break;
        case OPT_THREADS: r = tool_parse_int(optarg, "--threads", 0, 1024, &threads); break;
        case 'h':
            printf("usage: alm-engine convert --q-bits 2|4|8 [--q-group-size 32|64|128] [--max-shard-mb MB]\n"
                   "         [--threads N] SRC DST\n");
            return 0;
        default: r = -1;
        }
        if (r < 0)
            return 2;
    }
    if (!bits)
        return tool_fail("convert needs --q-bits (2, 4 or 8)"), 2;
    if (argc - optind != 2)
        return tool_fail("convert needs SRC and DST folders"), 2;
    const char *src = argv[optind], *dst = argv[optind + 1];

    convert_params p = {
        .bits = (int)bits, .group_size = (int)group,
        .max_shard_bytes = (size_t)shard_mb << 20, .n_threads = (int)threads,
    };
    convert_report rep;
    alm_error err = { 0 };
    double t0 = alm_now_seconds();
    if (model_convert(src, dst, &p, &rep, &err) < 0)
        return tool_fail("%s", err.message);
    double seconds = alm_now_seconds() - t0;

    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "source");
    json_builder_add_string_value(b, src);
    json_builder_set_member_name(b, "destination");
    json_builder_add_string_value(b, dst);
    json_builder_set_member_name(b, "q_bits");
    json_builder_add_int_value(b, p.bits);
    json_builder_set_member_name(b, "q_group_size");
    json_builder_add_int_value(b, p.group_size);
    json_builder_set_member_name(b, "tensors_quantized");
    json_builder_add_int_value(b, (gint64)rep.tensors_quantized);
    json_builder_set_member_name(b, "tensors_copied");
    json_builder_add_int_value(b, (gint64)rep.tensors_copied);
    json_builder_set_member_name(b, "bytes_in");
    json_builder_add_int_value(b, (gint64)rep.bytes_in);
    json_builder_set_member_name(b, "bytes_out");
    json_builder_add_int_value(b, (gint64)rep.bytes_out);
    json_builder_set_member_name(b, "shards");
    json_builder_add_int_value(b, rep.shards);
    json_builder_set_member_name(b, "seconds");
    json_builder_add_double_value(b, seconds);
    json_builder_end_object(b);
    tool_print_json(b);
    g_object_unref(b);
    return 0;
}
