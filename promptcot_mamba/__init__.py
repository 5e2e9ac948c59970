"""promptcot-mamba: attention-free reasoning models (PromptCoT-Mamba, "Scaling Reasoning without Attention").

`from promptcot_mamba import Mamba2LM` works as usual; torch is imported only when a model symbol is
first used, so torch-free parts (the grader workers, the sandbox driver, the CLI's help) start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"
_LAZY = {
    "Mamba2LM": "promptcot_mamba.model.lm",
    "LMOutput": "promptcot_mamba.model.lm",
    "Mamba2Config": "promptcot_mamba.model.config",
    "named_config": "promptcot_mamba.model.config",
    "InferenceState": "promptcot_mamba.model.state",
}
__all__ = ["Mamba2LM", "LMOutput", "Mamba2Config", "named_config", "InferenceState", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from promptcot_mamba.model.config import Mamba2Config, named_config
    from promptcot_mamba.model.lm import LMOutput, Mamba2LM
    from promptcot_mamba.model.state import InferenceState


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'promptcot_mamba' has no attribute {name!r}")
