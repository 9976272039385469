#!/usr/bin/env python3
"""Runs test-cuda's kernel checks on the host, with the CUDA kernels emulated
(host_cuda.h): a way to check a kernel change where there is no GPU. Slow
(one coroutine per CUDA thread): about 5 minutes for --quick, 15 for all the
matmul's checks, 6 for --attention, on two cores.

    tests/cuda/emulate/emulate.py [--quick] [--attention | --argmax] [--source FILE.cu]
                                  [--dump DIR] [--sanitize] [-D NAME=VALUE]...

(default) the matmul kernels of engine/cuda/matmul.cu
--attention  the attention kernels of engine/cuda/attention.cu instead:
          test-cuda's check of the decode attention against the host, and
          its checks that compare its ways of computing one result
          bit for bit (the merge in the last block against the merge
          launch, the merge in thread block clusters against the merge
          through memory, rope and attention in one launch against
          rope_store and then the attention). The emulated arithmetic is
          the host's (expf, no contraction), the same for both sides of a
          comparison: it checks which values go where and when, not the
          GPU's roundings.
--argmax  the argmax kernel of engine/cuda/argmax.cu: test-cuda's check
          of it against the host (ties across blocks, NaN, infinities, a
          limit on the valid logits, launches that must leave their
          counters as they found them)
--quick   matmul: the small shape in every format (200 x 384, 1-40
          tokens), not the long shapes nor the bit-for-bit check across
          token counts
--source  another kernel source (a base revision's: git show
          REV:engine/cuda/matmul.cu)
--dump    matmul: also write each result to DIR, to compare two sources
          bit for bit (cmp DIR1/* DIR2/*)

The kernels' source is adapted as text: the PTX helpers (mma_16816,
mask_set, cp_async*, copy16_async) give way to host_cuda.h's, launches
become host_launch calls. If the source changes so that this no longer
applies, the script says which piece it could not find. The checks
themselves come from tests/cuda/test_cuda.c, so that the two cannot drift
apart. Output: TAP.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
PTX_HELPERS = ["mma_16816", "mask_set", "cp_async", "cp_async_commit", "cp_async_wait"]
CHECKS = ["next_random", "uniform", "to_device", "matmul_error", "check_matmul_formats",
          "check_matmul_bits"]


def fail(msg):
    sys.exit("emulate: " + msg)


def replaced(s, old, new, what, count=-1):
    """s with old replaced (every one, or the first count); fails naming
    what where there is none"""
    if old not in s:
        fail(what)
    return s.replace(old, new, count)


def with_host_cuda(s, name):
    """s with host_cuda.h included before cuda_kernels.h"""
    return replaced(s, '#include "cuda_kernels.h"', '#include "host_cuda.h"\n#include "cuda_kernels.h"',
                    f'{name} no longer includes "cuda_kernels.h"', 1)


def host_kernels(source):
    s = with_host_cuda(re.sub(r'#include <cuda_(fp16|bf16)\.h>\n', '', source), "matmul.cu")
    s = s.replace('#include "launch_overlap.cuh"\n', '', 1)   # host_cuda.h has its functions
    for name in PTX_HELPERS:
        pat = re.compile(r'(template <[^>\n]*>\n)?static __device__ (__forceinline__|inline) '
                         r'(void|uint32_t) ' + name + r'\(.*?\n}\n', re.S)
        s, n = pat.subn('', s, count=1)
        if n != 1 and name != "mask_set":   # mask_set is newer than some bases
            fail(f"the definition of {name} in matmul.cu")
    s = replaced(s, 'extern __shared__ __align__(16) uint8_t smem[];', 'uint8_t *smem = host_cur_block->smem;',
                 "the dynamic shared memory declaration in matmul.cu")

    def launch(m):
        config = m.group(2).rsplit(',', 1)[0]   # the stream is dropped
        return 'host_launch(%s, [&] { %s(%s); });' % (config, m.group(1), m.group(3))
    s, n = re.subn(r'([\w:]+(?:<[^;<>]*(?:<[^;<>]*>[^;<>]*)*>)?)\s*<<<(.*?)>>>\((.*?)\);',
                   launch, s, flags=re.S)
    if n == 0:
        fail("no kernel launch in matmul.cu")
    return s


def host_attention(source):
    """attention.cu as host code for host_cuda.h."""
    s = source
    for inc in ('#include <cooperative_groups.h>\n', '#include <cuda_fp16.h>\n', '#include "launch_overlap.cuh"\n'):
        s = replaced(s, inc, '', f"{inc.strip()} in attention.cu", 1)
    s = with_host_cuda(s, "attention.cu")
    pat = re.compile(r'static __device__ __forceinline__ void copy16_async\(.*?\n}\n', re.S)
    s, n = pat.subn('', s, count=1)
    if n != 1:
        fail("the definition of copy16_async in attention.cu")
    # cp.async copies at once here: nothing to wait for
    s = replaced(s, 'asm volatile("cp.async.commit_group;\\ncp.async.wait_all;\\n" ::: "memory");', '',
                 "the cp.async wait of take_tile in attention.cu")
    s = s.replace('#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900', '#if 1')
    s = replaced(s, 'extern __shared__ __align__(16) float sm[];', 'float *sm = (float *)host_cur_block->smem;',
                 "the dynamic shared memory declaration in attention.cu")
    if re.search(r'\basm\b', s):
        fail("inline PTX in attention.cu that host_cuda.h has no stand-in for: " +
             re.search(r'.*\basm\b.*', s).group(0).strip())
    return s


def host_argmax(source):
    """argmax.cu as host code for host_cuda.h."""
    s = replaced(source, '#include "launch_overlap.cuh"\n', '', "launch_overlap.cuh in argmax.cu", 1)
    s = with_host_cuda(s, "argmax.cu")
    if re.search(r'\basm\b', s):
        fail("inline PTX in argmax.cu that host_cuda.h has no stand-in for")
    return s


ARGMAX_CHECKS = ["next_random", "uniform", "check_argmax_kernel"]


def argmax_checks(test_source):
    return r'''#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cuda_kernels.h"
#include "tap.h"

''' + "\n".join(function(test_source, n) for n in ARGMAX_CHECKS) + '''
int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    check_argmax_kernel();
    return tap_done();
}
'''


def function(source, name):
    m = re.search(r'^static [^\n(]*\b' + name + r'\(.*?^}\n', source, re.S | re.M)
    if not m:
        fail(f"{name} in tests/cuda/test_cuda.c")
    return m.group(0)


def typedef(source, name):
    m = re.search(r'^typedef struct ' + name + r' \{.*?^\} ' + name + r';\n', source, re.S | re.M)
    if not m:
        fail(f"the type {name} in tests/cuda/test_cuda.c")
    return m.group(0)


ATTENTION_CHECKS = ["next_random", "uniform", "to_device", "device_randoms", "device_kv_randoms", "device_same",
                    "attention_case_new", "attention_case_run", "attention_case_same",
                    "attention_case_free", "attention_reference_difference", "check_attention_reference",
                    "merge_in_last_block_same", "check_merge_in_last_block",
                    "cluster_merge_difference", "check_cluster_merge", "rope_attention_same",
                    "check_rope_attention"]


def attention_checks(test_source):
    body = typedef(test_source, "attention_case") + "\n".join(function(test_source, n) for n in ATTENTION_CHECKS)
    return r'''#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cuda_kernels.h"
#include "tap.h"

''' + body + '''
int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!tap_ok(cuda_attention_setup() == cudaSuccess, "attention kernels set up"))
        return tap_done();
    check_attention_reference();
    check_merge_in_last_block();
    check_cluster_merge();
    check_rope_attention();
    return tap_done();
}
'''


def checks(test_source, quick, dump):
    body = "\n".join(function(test_source, n) for n in CHECKS)
    if quick:
        body = re.sub(r'\n        \{ (?!200, 384)\d+, \d+ \},[^\n]*(\n {27}\*[^\n]*)*', '', body)
    if dump:
        body = body.replace('    double worst = e == cudaSuccess ? 0.0 : INFINITY, scale = 0.0;',
                            '    dump(y, (size_t)n_tok * rows, rows, cols, bits, group, n_tok, swiglu);\n'
                            '    double worst = e == cudaSuccess ? 0.0 : INFINITY, scale = 0.0;')
    return r'''#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cuda_kernels.h"
#include "tap.h"

static void dump(const float *y, size_t n, int rows, int cols, int bits, int group, int n_tok,
                 bool swiglu)
{
    char name[4096];
    snprintf(name, sizeof name, "%s/%dx%d-b%d-g%d-t%d%s.f32", getenv("EMULATE_DUMP"), rows, cols,
             bits, group, n_tok, swiglu ? "-swiglu" : "");
    FILE *f = fopen(name, "wb");
    if (!f || fwrite(y, sizeof *y, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "emulate: cannot write %s\n", name);
        exit(1);
    }
}
''' + body + '''
int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    check_matmul_formats();
    if (!getenv("EMULATE_QUICK"))
        check_matmul_bits();
    return tap_done();
}
'''


def cuda_include():
    for base in (os.environ.get("CUDA_HOME"),
                 os.path.dirname(os.path.dirname(shutil.which("nvcc") or "/x/x")),
                 "/usr/local/cuda"):
        if base and os.path.exists(os.path.join(base, "include", "cuda_runtime_api.h")):
            return os.path.join(base, "include")
    fail("no CUDA toolkit headers (cuda_runtime_api.h): set CUDA_HOME")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--attention", action="store_true")
    ap.add_argument("--argmax", action="store_true")
    ap.add_argument("--source")
    ap.add_argument("--dump")
    ap.add_argument("--sanitize", action="store_true", help="build with AddressSanitizer")
    ap.add_argument("-D", dest="defines", action="append", default=[],
                    help="a macro for the kernels, as -Dnvcc_flags gives them (ALM_MATMUL_STAGES=4)")
    args = ap.parse_args()
    if (args.attention or args.argmax) and args.dump:
        fail("--dump is for the matmul")
    if args.attention and args.argmax:
        fail("--attention or --argmax, not both")
    kind = "attention" if args.attention else "argmax" if args.argmax else "matmul"
    source = args.source or os.path.join(ROOT, "engine", "cuda", kind + ".cu")
    inc = cuda_include()
    cuda_dir = os.path.join(ROOT, "engine", "cuda")
    flags = ["-O2", "-g", "-ffp-contract=off", "-I" + HERE, "-I" + cuda_dir, "-I" + os.path.dirname(cuda_dir),
             "-I" + os.path.join(ROOT, "tests"), "-I" + inc] + ["-D" + d for d in args.defines]
    if args.sanitize:
        flags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
    with tempfile.TemporaryDirectory() as tmp:
        kernels = os.path.join(tmp, "host_" + kind + ".cpp")
        adapt = {"attention": host_attention, "argmax": host_argmax}.get(kind, host_kernels)
        open(kernels, "w").write(adapt(open(source).read()))
        test_c = os.path.join(tmp, "checks.c")
        test_source = open(os.path.join(ROOT, "tests", "cuda", "test_cuda.c")).read()
        open(test_c, "w").write(attention_checks(test_source) if args.attention
                                else argmax_checks(test_source) if args.argmax
                                else checks(test_source, args.quick, args.dump))
        exe = os.path.join(tmp, "emulated-" + kind)
        sources = [(kernels, "g++", "-std=c++20"),
                   (os.path.join(HERE, "host_runtime.cpp"), "g++", "-std=c++20"),
                   (test_c, "gcc", "-std=gnu11")]
        if args.attention:
            # the checks size fragments with matmul.cu's cuda_fragment_bytes
            matmul = os.path.join(tmp, "host_matmul.cpp")
            open(matmul, "w").write(host_kernels(open(os.path.join(ROOT, "engine", "cuda", "matmul.cu")).read()))
            sources.append((matmul, "g++", "-std=c++20"))
        objs = []
        for src, cc, std in sources:
            obj = os.path.join(tmp, os.path.basename(src) + ".o")
            subprocess.run([cc, std, "-w", "-c", src, "-o", obj] + flags, check=True)
            objs.append(obj)
        subprocess.run(["g++", "-o", exe] + objs + (["-fsanitize=address"] if args.sanitize else []),
                       check=True)
        env = dict(os.environ)
        if args.quick:
            env["EMULATE_QUICK"] = "1"
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            env["EMULATE_DUMP"] = os.path.abspath(args.dump)
        sys.exit(subprocess.run([exe], env=env).returncode)


if __name__ == "__main__":
    main()
