"""Affine views for fusion: nodes that compute ``x * scale + shift`` with constants.

BatchNormalization in inference is one (per channel, axis 1); so are Add, Sub, Mul and
Div where one operand is a float constant and the other the data, as long as the
constant does not broadcast the data to a larger shape. Whether the constants vary
along one channel axis only (so that a linear layer can absorb them) is the fusion
pass's question, not the rule's.
"""
from __future__ import annotations

import numpy as np

from onnxprune.rules import IN, OUT, Affine, NodeView

from ._common import extra_outputs_read


def _floating(*arrays) -> bool:
    return all(a is not None and np.issubdtype(a.dtype, np.floating) for a in arrays)


def batch_norm(view: NodeView) -> Affine | None:
    """Inference BatchNormalization: gamma / sqrt(var + eps) and beta - mean * that, on axis 1."""
    if int(view.attr("training_mode", 0)) or not int(view.attr("spatial", 1)) or extra_outputs_read(view):
        return None
    gamma, beta, mean, var = (view.const(slot) for slot in (1, 2, 3, 4))
    rank = view.rank(IN(0))
    if not _floating(gamma, beta, mean, var) or rank is None or rank < 2:
        return None
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + float(view.attr("epsilon", 1e-5)))
    shift = beta.astype(np.float64) - mean.astype(np.float64) * scale
    shape = (-1,) + (1,) * (rank - 2)
    return Affine(0, scale.reshape(shape), shift.reshape(shape))


def _operands(view: NodeView) -> tuple[int, np.ndarray] | None:
    """(slot of the data, the constant) of a binary op with one float constant operand that
    leaves the data's shape as it is."""
    if view.n_inputs != 2:
        return None
    first, second = view.const(0), view.const(1)
    if (first is None) == (second is None):
        return None
    slot, const = (0, second) if second is not None else (1, first)
    data, out = view.shape(IN(slot)), view.shape(OUT(0))
    if not _floating(const) or data is None or out is None or tuple(data) != tuple(out) or const.ndim > len(data):
        return None
    return slot, const.astype(np.float64)


# GELU as exporters write it, x * 0.5 * (1 + erf(x / sqrt 2)) (tanh in the approximation): onnxruntime
# fuses the whole pattern into one kernel. Folding its 0.5 (or another of its constants) into a
# neighbouring layer takes the pattern apart and leaves the element-wise ops to run one by one (the
# PP-OCR recogniser: 11 Gelu kernels became 44 element-wise ops and more layout reorders, x1.05-1.10
# slower), so these constants are no affine nodes for fusion.
_GELU_CORE = ("Erf", "Tanh")


def _made_by(view: NodeView, tensor: str, *ops: str):
    found = view.graph.producers.get(tensor)
    node = found[0] if found else None
    return node if node is not None and node.op_type in ops and not node.domain else None


def _one_plus_core(view: NodeView, tensor: str) -> bool:
    """``tensor`` is Add(core(...), c): GELU's ``1 + erf(...)``."""
    plus = _made_by(view, tensor, "Add")
    return plus is not None and any(_made_by(view, t, *_GELU_CORE) for t in plus.inputs)


def in_gelu(view: NodeView) -> bool:
    """Whether this constant Add/Mul/Div is part of a GELU pattern (see _GELU_CORE)."""
    graph, node = view.graph, view.node
    data = [t for t in node.inputs if t and t not in graph.params]
    readers = [r for r, _ in graph.consumers.get(node.outputs[0], [])]
    if any(r.op_type in _GELU_CORE and not r.domain for r in readers):  # x / sqrt(2) into erf
        return True
    if node.op_type == "Add":  # 1 + erf(...)
        return any(_made_by(view, t, *_GELU_CORE) for t in data)
    if node.op_type != "Mul":
        return False
    product = [_made_by(view, t, "Mul") for t in data]  # (x * (1 + erf)) * 0.5
    if any(m is not None and any(_one_plus_core(view, u) for u in m.inputs) for m in product):
        return True
    return any(r.op_type == "Mul" and not r.domain and any(_one_plus_core(view, u) for u in r.inputs)
               for r in readers)  # (x * 0.5) * (1 + erf)


def add(view: NodeView) -> Affine | None:
    found = _operands(view)
    return None if found is None or in_gelu(view) else Affine(found[0], np.ones(()), found[1])


def sub(view: NodeView) -> Affine | None:
    found = _operands(view)
    if found is None:
        return None
    slot, const = found
    return Affine(0, np.ones(()), -const) if slot == 0 else Affine(1, -np.ones(()), const)


def mul(view: NodeView) -> Affine | None:
    found = _operands(view)
    return None if found is None or in_gelu(view) else Affine(found[0], found[1], np.zeros(()))


def div(view: NodeView) -> Affine | None:
    """x / c only (c / x is not affine); c without zeros."""
    found = _operands(view)
    if found is None or found[0] != 0 or not np.all(found[1]) or in_gelu(view):
        return None
    return Affine(0, 1.0 / found[1], np.zeros(()))
