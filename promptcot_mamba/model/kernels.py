"""Which implementation runs each hot operation of the model: one setting, passed down.

    Kernels(ssd="auto", matvec="auto", step="eager", decode="direct")

    ssd     the sequence scan (forward, prefill, training): "auto" or a row of the SSD dispatch table
            (ssd/dispatch.py: torch, quadratic, recurrent, triton, fla); "auto" takes the fastest one
            available for the tensors' device and logs its choice
    matvec  the decode step's projections: "auto" (oneDNN on fp32 CPU where it works, else F.linear),
            "onednn" (an error where it does not work) or "aten" (always F.linear); model/matvec.py
    step    the decode step: "eager" (the modules' `step`, any device) or "fused" (Triton kernels,
            model/fused_step.py: CUDA, or CPU under TRITON_INTERPRET=1 for tests)
    decode  how the generation engine runs the step: "direct" (on the running rows of its state pool)
            or "bucketed" (generate/decode_graphs.py: one CUDA graph per batch-size bucket; eager on a CPU)

Whoever builds the model chooses (the Python API: `Mamba2LM(config, kernels=...)`,
`from_pretrained(..., kernels=...)` or `model.kernels = ...`; the command line: `--kernels
ssd=triton,step=fused`). The model reads it at call time and hands each part its own field, so no
module keeps a global switch and two models in one process can differ. Every choice gives the same
results up to floating-point summation order (tests compare each against the reference).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

MATVEC = ("auto", "onednn", "aten")
STEP = ("eager", "fused")
DECODE = ("direct", "bucketed")


@dataclass(frozen=True)
class Kernels:
    ssd: str = "auto"
    matvec: str = "auto"
    step: str = "eager"
    decode: str = "direct"

    def __post_init__(self) -> None:
        from promptcot_mamba.ssd.dispatch import NAMES as SSD

        for name, choices in (("ssd", SSD), ("matvec", MATVEC), ("step", STEP), ("decode", DECODE)):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"kernels: {name} must be one of {', '.join(choices)}, got {value!r}")

    @classmethod
    def parse(cls, spec: str | None) -> Kernels:
        """`"ssd=triton,step=fused"` → Kernels(ssd="triton", step="fused"); empty → the defaults."""
        known = {f.name for f in fields(cls)}
        values: dict[str, str] = {}
        for item in filter(None, (s.strip() for s in (spec or "").split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise ValueError(f"kernels: expected KEY=VALUE items with KEY in {sorted(known)}, got {item!r}")
            values[key] = value.strip()
        return cls(**values)

    def with_(self, **changes: str) -> Kernels:
        return replace(self, **changes)

    def __str__(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))
