#!/bin/bash
# Runs on the GPU machine, in the repository root, over what
# tests/cuda/device/stage.sh put in .device/:
#
#   [BUILDS="new base"] [REPS=2] [MODELS="llama3-8b 4;..."] bash .device/check.sh SECTION...   (all = every section)
#
#   correctness  test-cuda with CUDA graphs and without (ALM_CUDA_GRAPHS=0),
#                compute-sanitizer memcheck on a short speculative run; of
#                this build, or of the staged build CHECKED names
#   kernels      cuda-kernel-bench, this build, the base and the variants
#                interleaved
#   decode       cuda-bench (decode, prefill, k-token passes) for the 4-bit
#                presets, llama3-8b BF16 and the coder pair; every build
#                interleaved, twice, so that ratios come from one call
#   prefill      cuda-kernel-bench prefill: the pieces of a 512-token pass
#                (dequantization, GEMM, attention), every build
#   big          cuda-bench llama3-70b 4-bit (this build, then the base)
#   spec         alm-engine bench: 70B + 1B and 8B + 1B at synthetic
#                acceptance 0.8, and the coder pair
#   trace        the kernel timeline of cuda-bench (decode, passes, prefill)
#                for each build and model: kernel_trace.c's CSV, xz-packed,
#                for tests/cuda/device/trace_summary.py back here
#   boundary     boundary-bench: what a kernel boundary costs (plain launches,
#                programmatic dependent launch, a hand-off by flags)
#   profile      ncu on one 4-bit gate+up launch and one lm_head launch
#                (or on the kernels PROFILE_KERNELS="regex;regex" names):
#                warp states, scheduler and memory sections, source counters
#   probes       a probes build's (stage.sh --variant probes=-DALM_CUDA_PROBES=1;
#                PROBED names another) decode of llama3-8b 4-bit with its
#                timer records (probes.csv.xz) and probe_summary.py's summary
#
# Each section writes SECTION.txt under $OUT (or ./device-out), and prints
# how long it took; a failing program is reported and the rest go on. Back
# here, tests/cuda/device/summarize.py DIR tabulates them (medians, base/new).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-device-out}
[ -d .device/new ] || tar -C .device -xJf .device/bundle.tar.xz || exit 1
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/.device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$PATH:/usr/local/cuda/bin"
# cuBLAS, which the engine opens at run time for prefill: the toolkit's, or
# a Python wheel's where the loader does not know one
if ! ldconfig -p | grep -q 'libcublas\.so\.13 '; then
    cublas=$(find /usr/local /usr/lib /opt -name 'libcublas.so.13' 2>/dev/null | head -n 1)
    [ -n "$cublas" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$cublas")"
fi
export ALM_TEST_DATA="$PWD/tests/data" ALM_DEFAULT_MODELS="$PWD/data/models"
builds=(new)
[ -d .device/base ] && builds+=(base)
for d in .device/*/; do   # variants staged with --variant
    d=$(basename "$d")
    case $d in new|base|lib) ;; *) [ -x ".device/$d/cuda-bench" ] && builds+=("$d") ;; esac
done
# BUILDS="new base" limits the timed builds: a cuda-bench run takes 10-30 s,
# and a call at most 10 minutes
if [ -n "${BUILDS:-}" ]; then
    read -r -a builds <<< "$BUILDS"
    for b in "${builds[@]}"; do
        [ -x ".device/$b/cuda-bench" ] || { echo "check.sh: no staged build $b"; exit 2; }
    done
fi
# MODELS="llama3-8b 4;llama3-8b 0" limits the decode section's models
IFS=';' read -r -a models <<< "${MODELS:-llama3-8b 4;llama3.2-1b 4;qwen2.5-0.5b 4;llama3-8b 0;data/models/coder-target-4bit;data/models/coder-draft-4bit}"
reps=${REPS:-2}   # runs of each timed program, interleaved across the builds
coder=(--model data/models/coder-target-4bit --draft data/models/coder-draft-4bit)

run() {   # run LABEL COMMAND...: the command's output, then its status
    echo "### $1"
    shift
    "$@" 2>&1
    local rc=$?
    [ $rc -eq 0 ] || echo "### exit status $rc"
}

correctness() {
    local b=${CHECKED:-new}
    run "test-cuda (graphs, $b)" .device/$b/test-cuda
    ALM_CUDA_GRAPHS=0 run "test-cuda (ALM_CUDA_GRAPHS=0, $b)" .device/$b/test-cuda
    if command -v compute-sanitizer >/dev/null; then
        run "compute-sanitizer memcheck ($b)" compute-sanitizer --tool memcheck --error-exitcode 1 \
            .device/$b/alm-engine generate --device cuda "${coder[@]}" \
            --prompt "def fib(n):" --max-tokens 16
    else
        echo "### compute-sanitizer not found: memcheck not run"
    fi
}

kernels() {
    for rep in $(seq "$reps"); do
        for b in "${builds[@]}"; do
            run "cuda-kernel-bench ($b)" .device/$b/cuda-kernel-bench
        done
    done
}

decode() {
    for rep in $(seq "$reps"); do
        for b in "${builds[@]}"; do
            for args in "${models[@]}"; do
                # shellcheck disable=SC2086
                run "cuda-bench $args ($b, run $rep)" .device/$b/cuda-bench $args
            done
        done
    done
}

prefill() {
    for b in "${builds[@]}"; do
        run "cuda-kernel-bench prefill ($b)" .device/$b/cuda-kernel-bench prefill
    done
}

big() {
    for b in "${builds[@]}"; do
        run "cuda-bench llama3-70b 4 ($b)" .device/$b/cuda-bench llama3-70b 4
    done
}

spec() {
    run "70B + 1B, acceptance 0.8, k 6" .device/new/alm-engine bench --device cuda \
        --random llama3-70b --draft-random llama3.2-1b --synthetic-acceptance 0.8 \
        --num-draft-tokens 6 --prompt-tokens 128 --gen-tokens 64 --repeat 2
    run "8B + 1B, acceptance 0.8, k 4" .device/new/alm-engine bench --device cuda \
        --random llama3-8b --draft-random llama3.2-1b --synthetic-acceptance 0.8 \
        --num-draft-tokens 4 --prompt-tokens 128 --gen-tokens 64 --repeat 2
    run "coder pair" .device/new/alm-engine bench --device cuda "${coder[@]}" \
        --gen-tokens 128 --repeat 3
}

trace() {
    local lib=$PWD/.device/new/libalm-kernel-trace.so
    if [ ! -f "$lib" ]; then
        echo "### no kernel-trace library staged (CUPTI not found at build time)"
        return
    fi
    for b in "${builds[@]}"; do
        for args in "${models[@]}"; do
            local csv="$out/trace-$b-$(echo "$args" | tr ' /' '__').csv"
            # shellcheck disable=SC2086
            CUDA_INJECTION64_PATH=$lib ALM_TRACE_FILE=$csv run "trace: cuda-bench $args ($b)" \
                .device/$b/cuda-bench $args
            [ -f "$csv" ] && xz -T0 -f "$csv"
        done
    done
}

boundary() {
    run "boundary-bench" .device/new/boundary-bench
}

profile() {
    if ! command -v ncu >/dev/null; then
        echo "### ncu not found: no profile"
        return
    fi
    local sections=(--section LaunchStats --section Occupancy --section SchedulerStats
                    --section WarpStateStats --section MemoryWorkloadAnalysis
                    --section SourceCounters)
    local kernels=("matmul_kernel<.int.4, .int.1, .bool.1" "matmul_kernel<.int.4, .int.1, .bool.0")
    [ -n "${PROFILE_KERNELS:-}" ] && IFS=';' read -r -a kernels <<< "$PROFILE_KERNELS"
    for k in "${kernels[@]}"; do
        run "ncu: $k" ncu --clock-control none --kernel-name-base demangled \
            --kernel-name "regex:$k" --launch-skip 20 --launch-count 1 "${sections[@]}" \
            .device/new/cuda-kernel-bench
    done
}

probes() {
    local b=${PROBED:-probes}
    if [ ! -x ".device/$b/cuda-bench" ]; then
        echo "### no build $b staged (stage.sh --variant $b=-DALM_CUDA_PROBES=1)"
        return
    fi
    ALM_PROBE_FILE=$out/probes.csv run "cuda-bench llama3-8b 4 ($b, with its timer records)" .device/$b/cuda-bench llama3-8b 4
    [ -f "$out/probes.csv" ] || { echo "### no records written"; return; }
    run "probe_summary.py" python3 tests/cuda/device/probe_summary.py "$out/probes.csv"
    xz -T0 -f "$out/probes.csv"
}

[ $# -ge 1 ] || set -- all
[ "$1" = all ] && set -- correctness kernels decode prefill big spec profile
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
for section in "$@"; do
    start=$(date +%s)
    case $section in
    correctness|kernels|decode|prefill|big|spec|trace|boundary|profile|probes) $section > "$out/$section.txt" ;;
    *) echo "unknown section: $section"; exit 2 ;;
    esac
    echo "$section: $(($(date +%s) - start)) s, $(grep -c '^### exit status' "$out/$section.txt") failed," \
         "$(grep -E '^(not )?ok' "$out/$section.txt" | grep -c '^not ok') not ok"
done
