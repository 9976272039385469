#!/bin/bash
# Builds the CUDA programs here and stages them, stripped, with the shared
# libraries a bare GPU machine lacks, under .device/ (ignored by git), so
# that one call of the GPU machine can check and time them:
#
#   tests/cuda/device/stage.sh [--variant NAME=FLAG,FLAG...]... [--rev NAME=REV]... [BASE_REV]
#
# .device/new/      this working tree's build (build-cuda/), and boundary-bench
# .device/base/     BASE_REV's build (a git worktree in build-cuda-base/),
#                   for before/after ratios measured in the same call
# .device/NAME/     this tree built with extra flags for nvcc and the C
#                   compiler (build-cuda-NAME/, meson -Dnvcc_flags=FLAG,FLAG...
#                   -Dc_args=...), e.g. --variant stages4=-DALM_MATMUL_STAGES=4
# .device/NAME/     with --rev NAME=REV: REV's build (a worktree in
#                   build-cuda-NAME/), a third timed build beside new and base
# .device/lib/      libglib, json-glib, pcre2 and what they pull in; never
#                   the C or C++ runtime, which the GPU machine has
# .device/check.sh  the script to run there (tests/cuda/device/check.sh)
# the folders packed in .device/bundle.tar.xz, which check.sh unpacks
#
# Then, on the GPU machine (carry .device):  bash .device/check.sh all
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
export PATH="$PATH:/usr/local/cuda/bin"
programs=(tests/cuda/test-cuda tests/cuda/cuda-bench tests/cuda/cuda-kernel-bench
          tests/cuda/cuda-copy-bandwidth engine/tools/alm-engine)
# the kernel timeline (check.sh trace), where CUPTI was found to build it
trace_lib=tests/cuda/libalm-kernel-trace.so

build() {   # build DIR SRC
    local dir=$1 src=$2
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$src" -Dcuda=enabled >/dev/null
    fi
    ninja -C "$dir" >/dev/null
}

stage() {   # stage BUILD_DIR DEST
    local dir=$1 dest=$2
    rm -rf "$dest"
    mkdir -p "$dest"
    for p in "${programs[@]}"; do
        strip -o "$dest/$(basename "$p")" "$dir/$p"
    done
}

variants=()
revs=()
while [ $# -ge 1 ] && { [ "$1" = --variant ] || [ "$1" = --rev ]; }; do
    case ${2:-} in
    new=*|base=*|lib=*) echo "stage.sh: new, base and lib are taken; name the build otherwise" >&2; exit 2 ;;
    esac
    for taken in "${variants[@]}" "${revs[@]}"; do
        [ "${taken%%=*}" != "${2%%=*}" ] || { echo "stage.sh: two builds named ${2%%=*}" >&2; exit 2; }
    done
    if [ "$1" = --variant ]; then
        case ${2:-} in
        [a-z0-9]*=-*) variants+=("$2") ;;
        *) echo "stage.sh: --variant NAME=FLAG,FLAG... (got '${2:-}')" >&2; exit 2 ;;
        esac
    else
        case ${2:-} in
        [a-z0-9]*=?*) git rev-parse --verify -q "${2#*=}^{commit}" >/dev/null ||
                          { echo "stage.sh: no commit '${2#*=}'" >&2; exit 2; }
                      revs+=("$2") ;;
        *) echo "stage.sh: --rev NAME=REV (got '${2:-}')" >&2; exit 2 ;;
        esac
    fi
    shift 2
done

build_rev() {   # build_rev NAME REV: REV's build in a worktree, staged as .device/NAME
    local name=$1 rev
    rev=$(git rev-parse --verify "$2^{commit}")
    if [ -d "build-cuda-$name/src" ]; then
        git -C "build-cuda-$name/src" checkout -q --detach "$rev"
    else
        mkdir -p "build-cuda-$name"
        git worktree add -q --detach "build-cuda-$name/src" "$rev"
    fi
    build "build-cuda-$name/build" "build-cuda-$name/src"
    stage "build-cuda-$name/build" ".device/$name"
    echo "staged $(git rev-parse --short "$rev") as .device/$name"
}

build build-cuda .
stage build-cuda .device/new
if [ -f "build-cuda/$trace_lib" ]; then
    strip -o ".device/new/$(basename "$trace_lib")" "build-cuda/$trace_lib"
fi
# the kernel-boundary measurement (check.sh boundary): one CUDA file, no engine
nvcc -O3 -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=compute_80 \
    -o .device/new/boundary-bench tests/cuda/device/boundary_bench.cu
echo "staged $(git describe --always --dirty) as .device/new"

for v in "${variants[@]}"; do
    name=${v%%=*} flags=${v#*=}
    if [ -f "build-cuda-$name/build.ninja" ]; then
        meson configure "build-cuda-$name" "-Dnvcc_flags=$flags" "-Dc_args=${flags//,/ }" >/dev/null
    else
        meson setup "build-cuda-$name" . -Dcuda=enabled "-Dnvcc_flags=$flags" "-Dc_args=${flags//,/ }" >/dev/null
    fi
    ninja -C "build-cuda-$name" >/dev/null
    stage "build-cuda-$name" ".device/$name"
    echo "staged the variant $name ($flags) as .device/$name"
done

for r in "${revs[@]}"; do
    build_rev "${r%%=*}" "${r#*=}"
done
if [ $# -ge 1 ]; then
    build_rev base "$1"
else
    rm -rf .device/base
fi

rm -rf .device/lib
mkdir -p .device/lib
ldd .device/new/alm-engine | awk '$3 ~ /^\// { print $3 }' | while read -r lib; do
    case $(basename "$lib") in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libstdc++.so.*|libgcc_s.so.*) ;;
    *) cp -L "$lib" .device/lib/ ;;
    esac
done
if [ -f ".device/new/$(basename "$trace_lib")" ]; then
    ldd ".device/new/$(basename "$trace_lib")" | awk '$3 ~ /libcupti/ { print $3 }' |
        while read -r lib; do cp -L "$lib" .device/lib/; done
fi
# compressed: the call carries the working tree and .device, 64 MiB in all
staged=(new lib)
[ -d .device/base ] && staged+=(base)
for v in "${variants[@]}" "${revs[@]}"; do staged+=("${v%%=*}"); done
tar -C .device -cJf .device/bundle.tar.xz "${staged[@]}"
rm -rf "${staged[@]/#/.device/}"
cp tests/cuda/device/check.sh .device/check.sh
du -sh .device | awk '{ print "staged " $1 " in .device" }'
