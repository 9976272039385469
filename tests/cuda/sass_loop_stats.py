#!/usr/bin/env python3
"""Instructions in the streaming loop of the matmul kernels, from their SASS.

    tests/cuda/sass_loop_stats.py [--nvdisasm PATH] [--cu engine/cuda/matmul.cu] [-D NAME=VALUE]...

Compiles the kernels for sm_90a with nvcc, disassembles them and prints one
JSON line per kernel: the loop's instructions, its tensor-core instructions
(HMMA) and the count of each opcode. The 4-bit decode matmul is bound by
instruction issue (ncu: the schedulers issue on about 55% of cycles), so
instructions per weight byte is the figure to drive down; this measures it
without a GPU.

The loop is found as the run from the chunk wait (DEPBAR.LE SB0, 0x1, the
cp.async.wait_group of the pipeline) to the first branch after the kernel's
last HMMA.

nvdisasm comes with the CUDA toolkit. An older one (Debian's
nvidia-cuda-toolkit 11.8, whose nvdisasm understands sm_90) reads the cubins
of CUDA 13 once their ELF header says ABI version 7 with the old flags; the
script writes such a copy when nvdisasm refuses the original.
"""
import argparse
import collections
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

KERNELS = {
    "gate+up 4-bit, 1-8 tokens": "_Z13matmul_kernelILi4ELi1ELb1ELb0ELi3EEv13matmul_params",
    "matmul 4-bit, 1-8 tokens": "_Z13matmul_kernelILi4ELi1ELb0ELb0ELi3EEv13matmul_params",
    "matmul 4-bit, 17-32 tokens": "_Z13matmul_kernelILi4ELi4ELb0ELb0ELi1EEv13matmul_params",
    "gate+up 4-bit, 17-32 tokens": "_Z13matmul_kernelILi4ELi4ELb1ELb0ELi1EEv13matmul_params",
    "matmul 8-bit, 1-8 tokens": "_Z13matmul_kernelILi8ELi1ELb0ELb0ELi3EEv13matmul_params",
    "matmul BF16, 1-8 tokens": "_Z13matmul_kernelILi16ELi1ELb0ELb0ELi3EEv13matmul_params",
}


def disassemble(nvdisasm, cubin, workdir):
    run = subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True)
    if run.returncode == 0:
        return run.stdout
    data = bytearray(open(cubin, "rb").read())
    data[8] = 7                                   # EI_ABIVERSION
    struct.pack_into("<I", data, 0x30, 0x5A055A)  # e_flags: sm_90, 64-bit, old layout
    old = os.path.join(workdir, "old-abi.cubin")
    open(old, "wb").write(data)
    run = subprocess.run([nvdisasm, "-c", old], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit("nvdisasm: " + run.stderr.strip())
    return run.stdout


def function_body(sass, name):
    start = sass.find("\n" + name + ":")
    if start < 0:
        return None
    end = sass.find("//------", start)
    return sass[start:end if end > 0 else None]


def loop_stats(body):
    ins = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", body)
    ops = [re.sub(r"^@!?U?P\w+\s+", "", i).split()[0] for i in ins]
    waits = [n for n, i in enumerate(ins) if "DEPBAR.LE SB0, 0x1" in i]
    mmas = [n for n, o in enumerate(ops) if o.startswith("HMMA")]
    if not waits or not mmas:
        return {"instructions": len(ins), "loop": None}
    end = next((n for n in range(mmas[-1], len(ops)) if ops[n] == "BRA"), len(ops) - 1)
    loop = ops[waits[0]:end + 1]
    count = collections.Counter(o.split(".")[0] for o in loop)
    hmma = count.get("HMMA", 0)
    return {"instructions": len(ins), "loop": len(loop), "hmma": hmma,
            "per_hmma": round(len(loop) / hmma, 2) if hmma else None,
            "ops": dict(count.most_common())}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nvdisasm", default=shutil.which("nvdisasm") or "nvdisasm")
    ap.add_argument("--nvcc", default=shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc")
    ap.add_argument("--cu", default=os.path.join(root, "engine", "cuda", "matmul.cu"))
    ap.add_argument("-D", dest="defines", action="append", default=[],
                    help="a macro for nvcc, as -Dnvcc_flags gives them (ALM_MATMUL_STAGES=4)")
    args = ap.parse_args()
    for tool in (args.nvcc, args.nvdisasm):
        if not shutil.which(tool):
            sys.exit(f"sass_loop_stats: {tool} not found (see --help)")
    src = os.path.dirname(os.path.abspath(args.cu))
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "matmul.cubin")
        subprocess.run([args.nvcc, "-cubin", "-O3", "-std=c++17", "-I" + src,
                        "-I" + os.path.dirname(src), "-gencode", "arch=compute_90a,code=sm_90a",
                        args.cu, "-o", cubin] + ["-D" + d for d in args.defines], check=True)
        sass = disassemble(args.nvdisasm, cubin, tmp)
    for label, name in KERNELS.items():
        body = function_body(sass, name)
        if body is None:
            sys.exit(f"sass_loop_stats: {name} not in the SASS")
        print(json.dumps({"kernel": label, **loop_stats(body)}))


if __name__ == "__main__":
    main()
