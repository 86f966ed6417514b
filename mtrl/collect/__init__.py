"""Collectors: envs in, transitions out (see :mod:`mtrl.collect.base` for the contract)."""

from mtrl.collect.base import Collector, EnvSpec, Episodes, Policy, Step, Transitions
from mtrl.collect.vector import VectorCollector

__all__ = ["Collector", "EnvSpec", "Episodes", "Policy", "Step", "Transitions", "VectorCollector"]
