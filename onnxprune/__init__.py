"""onnxprune: structural channel pruning for ONNX models, driven by a dependency graph."""
from .api import Pruner
from .depgraph import DependencyGraph, End, EndKind, EdgeKind, Group
from .errors import OnnxPruneError
from .options import PruneOptions
from .plan import Plan, make_plan
from .rewrite import apply_plan

__version__ = "0.1.0"
__all__ = ["Pruner", "PruneOptions", "DependencyGraph", "End", "EndKind", "EdgeKind", "Group", "OnnxPruneError", "Plan",
           "make_plan", "apply_plan", "__version__"]
