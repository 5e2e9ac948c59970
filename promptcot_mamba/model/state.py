"""The fixed-size inference state of a Mamba-2 LM: what a sequence costs, whatever its length.

Per layer and sequence: the conv window (the last K raw xBC inputs, in the model's dtype) and the
SSM state H (H, P, N) in fp32 (a state kept in bf16 loses the small decayed contributions that
the recurrence adds up over thousands of steps). Both are allocated
once; prefill fills them, a decode step updates them in place. `nbytes` does not depend on how many
tokens went through — the point of the architecture (paper §2.1 "Inference").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from promptcot_mamba.model.config import Mamba2Config


@dataclass
class InferenceState:
    conv: Tensor  # (L, b, conv_dim, K) model dtype
    ssm: Tensor  # (L, b, H, P, N) fp32

    @classmethod
    def zeros(cls, config: Mamba2Config, batch_size: int, *, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> InferenceState:
        c = config
        conv = torch.zeros(c.num_hidden_layers, batch_size, c.conv_dim, c.conv_kernel, device=device, dtype=dtype)
        ssm = torch.zeros(c.num_hidden_layers, batch_size, c.num_heads, c.head_dim, c.state_size,
                          device=device, dtype=torch.float32)
        return cls(conv, ssm)

    @staticmethod
    def bytes_per_sequence(config: Mamba2Config, dtype: torch.dtype = torch.float32) -> int:
        c = config
        conv = c.num_hidden_layers * c.conv_dim * c.conv_kernel * torch.empty(0, dtype=dtype).element_size()
        ssm = c.num_hidden_layers * c.num_heads * c.head_dim * c.state_size * 4
        return conv + ssm

    @property
    def batch_size(self) -> int:
        return self.ssm.shape[1]

    @property
    def nbytes(self) -> int:
        return self.conv.numel() * self.conv.element_size() + self.ssm.numel() * self.ssm.element_size()

    def select(self, index: Tensor | list[int]) -> InferenceState:
        """A new state holding the given sequences (a copy)."""
        idx = torch.as_tensor(index, device=self.ssm.device, dtype=torch.long)
        return InferenceState(self.conv.index_select(1, idx), self.ssm.index_select(1, idx))

    def write(self, index: Tensor | list[int], other: InferenceState) -> None:
        """Copy `other`'s sequences into slots `index` of this state, in place."""
        idx = torch.as_tensor(index, device=self.ssm.device, dtype=torch.long)
        self.conv.index_copy_(1, idx, other.conv.to(self.conv.dtype))
        self.ssm.index_copy_(1, idx, other.ssm)

    def clone(self) -> InferenceState:
        return InferenceState(self.conv.clone(), self.ssm.clone())

    @staticmethod
    def cat(states: list[InferenceState]) -> InferenceState:
        return InferenceState(torch.cat([s.conv for s in states], 1), torch.cat([s.ssm for s in states], 1))
