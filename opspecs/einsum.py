"""Einsum: every axis is a letter; an axis couples to the axes with the same letter in the other
operands and the output. Removing index values of a letter removes the same slices everywhere it
appears, and for a summed letter it removes those terms from the sum: exactly like zeroing them.

With a constant operand (``bsh,hd->bsd``: a linear layer written as Einsum), the output letters
only that operand carries are the layer's output channels (roots). Repeated letters within one
operand (diagonals, traces) are barriers.
"""
from __future__ import annotations

import numpy as np

from onnxprune.rules import IN, OUT, Barrier, NodeView, OpSpec, Port

from ._common import couple_by_labels, unknown_shape

_ELLIPSIS = "..."


def _letters(view: NodeView) -> dict[Port, list[str]] | Barrier:
    """Each port's letters, with ``...`` expanded right-aligned into numbered broadcast labels."""
    equation = str(view.attr("equation", "")).replace(" ", "")
    if "->" not in equation:
        return Barrier("Einsum without an explicit output ('->')")
    lhs, rhs = equation.split("->")
    terms = lhs.split(",")
    if len(terms) != view.n_inputs:
        return Barrier("Einsum equation and inputs disagree")
    ports = [IN(i) for i in range(len(terms))] + [OUT(0)]
    labels = {}
    for port, term in zip(ports, terms + [rhs]):
        rank = view.rank(port)
        if rank is None:
            return unknown_shape(view, port)
        if _ELLIPSIS in term:
            head, tail = term.split(_ELLIPSIS)
            n = rank - len(head) - len(tail)
            letters = list(head) + [f"...{i}" for i in range(-n, 0)] + list(tail)
        else:
            letters = list(term)
        if len(letters) != rank:
            return Barrier(f"Einsum term '{term}' does not match the rank of {port}")
        if len(set(letters)) != len(letters):
            return Barrier(f"Einsum term '{term}' repeats a letter (a diagonal)")
        labels[port] = letters
    return labels


def couple_einsum(view: NodeView, port: Port, axes: tuple[int, ...]):
    labels = _letters(view)
    if isinstance(labels, Barrier):
        return labels
    shapes = {p: view.shape(p) for p in labels}
    if any(s is None for s in shapes.values()):
        return unknown_shape(view, port)
    return couple_by_labels(port, axes, labels, shapes, "Einsum")


def _roots(view: NodeView):
    labels = _letters(view)
    if isinstance(labels, Barrier) or view.n_inputs != 2:
        return []
    for weight, data in ((1, 0), (0, 1)):
        if view.from_constants(weight) and not view.from_constants(data):
            own = [a for a, letter in enumerate(labels[OUT(0)])
                   if letter in labels[IN(weight)] and letter not in labels[IN(data)]]
            return [(OUT(0), (a,)) for a in own]
    return []


def _macs(view: NodeView) -> int:
    """One multiply-add per combination of every letter's index (the summed ones included)."""
    labels = _letters(view)
    if isinstance(labels, Barrier) or view.n_inputs < 2:
        return 0
    sizes = {}
    for port, letters in labels.items():
        shape = view.shape(port)
        if shape is None:
            return 0
        for letter, size in zip(letters, shape):
            sizes[letter] = max(sizes.get(letter, 1), int(size))
    return int(np.prod(list(sizes.values()), dtype=np.int64))


def register(registry) -> None:
    registry.register(OpSpec(("Einsum",), couple_einsum, roots=_roots, macs=_macs, since=12, family="einsum"))
