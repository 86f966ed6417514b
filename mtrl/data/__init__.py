"""Replay storage."""

from mtrl.data.replay import Batch, MultiTaskReplayBuffer

__all__ = ["Batch", "MultiTaskReplayBuffer"]
