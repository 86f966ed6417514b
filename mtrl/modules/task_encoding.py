"""Turn task ids (LongTensor) into what a network consumes."""

from __future__ import annotations

import torch
from torch import nn


class OneHotTaskEncoder(nn.Module):
    """``task_id [B] → one_hot [B, num_tasks]`` (float). No parameters: MT-SAC conditions its
    actor and critics on the concatenation ``[obs, one_hot(task)]`` (Yu et al. 2019,
    Meta-World, Sec. 5)."""

    eye: torch.Tensor

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.out_dim = num_tasks
        self.register_buffer("eye", torch.eye(num_tasks), persistent=False)

    def forward(self, task_id: torch.Tensor) -> torch.Tensor:
        return self.eye.index_select(0, task_id)
