"""Pure ``nn.Module`` building blocks: no optimizers, no environment knowledge."""

from mtrl.modules.mlp import EnsembleLinear, EnsembleMLP, mlp
from mtrl.modules.policies import TanhGaussianActor, TwinQCritic, tanh_gaussian_log_prob
from mtrl.modules.task_encoding import OneHotTaskEncoder

__all__ = [
    "EnsembleLinear",
    "EnsembleMLP",
    "OneHotTaskEncoder",
    "TanhGaussianActor",
    "TwinQCritic",
    "mlp",
    "tanh_gaussian_log_prob",
]
