"""Compile every Triton kernel of the project (ssd/ and model/fused_step.py) ahead of time for an NVIDIA target, without a GPU.

Triton's wheel carries ptxas, so `triton.compile` lowers a kernel all the way to a cubin on a CPU-only
machine: this catches what the interpreter cannot (tl.dot operand dtypes, layouts, shared-memory
limits). Run by test_ssd_triton_compile.py in a fresh process (TRITON_INTERPRET must be off when the
kernels are decorated). Usage: python aot_compile_kernels.py [arch ...]   (default 90 = H100/H200)
"""

import os
import sys

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from promptcot_mamba.model import fused_step as fs  # noqa: E402
from promptcot_mamba.ssd import triton_scan as ts  # noqa: E402
from promptcot_mamba.ssd import triton_step as tstep  # noqa: E402


def compile_one(fn, ptr_types, constexprs, arch):
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = ptr_types.get(name, "*fp32")
        elif name in ("eps", "dt_lo", "dt_hi"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    ce = {(fn.arg_names.index(k),): v for k, v in constexprs.items()}
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=ce), target=GPUTarget("cuda", arch, 32))
    return kernel.metadata.shared


def main(archs):
    failures = 0
    for arch in archs:
        jobs = []
        for dt in ("bf16", "fp32"):  # fp16 takes the bf16 code path
            pt = {"x_ptr": "*" + dt, "B_ptr": "*" + dt, "C_ptr": "*" + dt, "dt_ptr": "*" + dt, "y_ptr": "*" + dt,
                  "doc_ptr": "*i32"}
            ieee = dt == "fp32"
            for has_doc, rev in ((False, False), (True, True)):  # the backward's reverse scans too
                jobs.append((ts._chunk_state_fwd, pt, dict(Q=256, BLOCK_S=64, BLOCK_P=64, BLOCK_N=128,
                                                           HAS_DOC=has_doc, IEEE=ieee, UPCAST=False, REV=rev)))
                jobs.append((ts._chunk_scan_fwd, pt, dict(Q=256, BLOCK_L=64, BLOCK_S=64, BLOCK_P=64, BLOCK_N=128,
                                                          HAS_DOC=has_doc, HAS_D=True, IEEE=ieee, UPCAST=False,
                                                          REV=rev)))
            jobs.append((ts._state_pass_fwd, pt, dict(Q=256, BLOCK=1024, HAS_H0=True, HAS_DOC=True, REV=True)))
        jobs.append((fs._conv_step_kernel, {"win_ptr": "*bf16", "x_ptr": "*bf16", "w_ptr": "*bf16",
                                            "bias_ptr": "*bf16", "out_ptr": "*bf16"},
                     dict(BLOCK_C=256, BLOCK_K=4, HAS_BIAS=True)))
        jobs.append((tstep._ssd_step_kernel, {"st_ptr": "*fp32", "x_ptr": "*bf16", "dt_ptr": "*bf16", "A_ptr": "*fp32",
                                           "B_ptr": "*bf16", "C_ptr": "*bf16", "D_ptr": "*bf16", "dtb_ptr": "*bf16",
                                           "y_ptr": "*bf16"},
                     dict(BLOCK_P=64, BLOCK_N=128, HAS_D=True, DT_SOFTPLUS=True, A_IS_LOG=True)))
        jobs.append((fs._gated_norm_kernel, {"y_ptr": "*bf16", "z_ptr": "*bf16", "w_ptr": "*bf16", "out_ptr": "*bf16"},
                     dict(BLOCK=1024)))
        jobs.append((fs._add_rms_norm_kernel, {"res_ptr": "*fp32", "add_ptr": "*bf16", "w_ptr": "*bf16",
                                               "out_ptr": "*bf16"}, dict(BLOCK=4096, HAS_ADD=True)))
        for fn, pt, ce in jobs:
            try:
                smem = compile_one(fn, pt, ce, arch)
                print(f"ok   sm_{arch} {fn.__name__} {pt.get('x_ptr', '')} smem={smem}")
            except Exception as err:  # report every failure, not just the first
                failures += 1
                print(f"FAIL sm_{arch} {fn.__name__} {ce}: {type(err).__name__}: {str(err)[:800]}")
    return failures


if __name__ == "__main__":
    sys.exit(1 if main([int(a) for a in sys.argv[1:]] or [90]) else 0)
