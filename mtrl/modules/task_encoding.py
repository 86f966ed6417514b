"""Turn task ids (LongTensor) into what a network consumes."""

from __future__ import annotations

import torch
from torch import nn

TASK_ENCODERS = ("one-hot", "embedding")


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


class EmbeddingTaskEncoder(nn.Module):
    """``task_id [B] → e_task [B, dim]``: a learned embedding per task (an ``nn.Embedding``
    initialized N(0, 1)); task ``k``'s row receives gradient only from task ``k``'s samples."""

    def __init__(self, num_tasks: int, dim: int) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.out_dim = dim
        self.embedding = nn.Embedding(num_tasks, dim)

    def forward(self, task_id: torch.Tensor) -> torch.Tensor:
        return self.embedding(task_id)


def make_task_encoder(
    kind: str, num_tasks: int, dim: int
) -> OneHotTaskEncoder | EmbeddingTaskEncoder:
    """``one-hot`` (ignores ``dim``) or ``embedding`` of size ``dim``."""
    if kind == "one-hot":
        return OneHotTaskEncoder(num_tasks)
    if kind == "embedding":
        return EmbeddingTaskEncoder(num_tasks, dim)
    raise ValueError(f"unknown task encoder {kind!r}; allowed: {', '.join(TASK_ENCODERS)}")
