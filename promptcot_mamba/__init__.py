"""promptcot-mamba: attention-free reasoning models (PromptCoT-Mamba, "Scaling Reasoning without Attention")."""

from promptcot_mamba.model.config import Mamba2Config, named_config
from promptcot_mamba.model.lm import LMOutput, Mamba2LM
from promptcot_mamba.model.state import InferenceState

__version__ = "0.1.0"
__all__ = ["Mamba2LM", "Mamba2Config", "named_config", "InferenceState", "LMOutput", "__version__"]
