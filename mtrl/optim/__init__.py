"""How per-task losses become one update."""

from mtrl.optim.combiners import Combiner, MeanCombiner, make_combiner

__all__ = ["Combiner", "MeanCombiner", "make_combiner"]
