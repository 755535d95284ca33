"""Two-stage architecture search for multiplication-free tiny networks under hardware constraints.

Stage 1 (``space_search``): choose the search space (width x resolution x augmentation multiple) whose sub-networks
meeting the budget have the most MACs (TinyNAS). Stage 2: train that space's elastic supernet with the sandwich rule
and hybrid augmentation (``shiftaddaug.train``, ``search_space=``), then evolve its sub-networks under the budget
(``evolve``). docs/method.md, section 7.
"""
from .constraints import LIMITS, Budget
from .evolve import Evolution, EvolutionSettings
from .space import load_space, search_space, space_from_dict, space_to_dict, with_ops
from .space_search import NoFeasibleNetwork, optimise_space

__all__ = ["Budget", "LIMITS", "Evolution", "EvolutionSettings", "search_space", "space_from_dict", "space_to_dict",
           "load_space", "with_ops", "NoFeasibleNetwork", "optimise_space"]
