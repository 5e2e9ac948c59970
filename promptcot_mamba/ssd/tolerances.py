"""Agreement tolerances per dtype, in one place (STYLE.md §3). Used by tests and kernel checks."""

import torch

# relative error allowed between two SSD forms, measured as max|a-b| / max|b|
RTOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
