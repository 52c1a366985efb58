"""A small, plain representation of an ONNX graph that the engine works on.

Only :mod:`onnxprune.onnx_in` builds it from protobuf and only
:mod:`onnxprune.onnx_out` turns it back, so the rest of the code never
touches protobuf objects (except opaque payloads it just carries along).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

Dim = int | str | None


@dataclass
class Value:
    """A tensor's declared or inferred type: element type and shape."""

    name: str
    dtype: int = 0
    shape: tuple[Dim, ...] | None = None

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """Every dim as an int (symbolic dims are SymDims: ints holding their stand-in), or None."""
        if self.shape is None or not all(isinstance(d, int) for d in self.shape):
            return None
        return tuple(self.shape)  # type: ignore[arg-type]


@dataclass
class Node:
    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    attr_types: dict[str, int] = field(default_factory=dict)
    doc: str = ""
    # Outer-scope tensors read by subgraph attributes (If/Loop/Scan bodies).
    implicit_inputs: list[str] = field(default_factory=list)
    # implicit input -> the subgraph attributes that read it (for barriers that name the subgraph)
    read_inside: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.domain or "", self.op_type)


@dataclass
class ModelMeta:
    """Everything of the model that pruning does not change, carried verbatim."""

    ir_version: int
    opsets: dict[str, int]
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    graph_name: str = "graph"
    graph_doc: str = ""
    functions: list[Any] = field(default_factory=list)  # opaque FunctionProtos
    sparse_initializers: list[Any] = field(default_factory=list)


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[Value]
    outputs: list[Value]
    params: dict[str, np.ndarray]
    values: dict[str, Value]
    declared: dict[str, Value]  # value_info as written in the source file
    meta: ModelMeta

    @property
    def opset(self) -> int:
        return self.meta.opsets.get("", self.meta.opsets.get("ai.onnx", 0))

    @cached_property
    def producers(self) -> dict[str, tuple[Node, int]]:
        return {out: (n, i) for n in self.nodes for i, out in enumerate(n.outputs) if out}

    @cached_property
    def consumers(self) -> dict[str, list[tuple[Node, int]]]:
        table: dict[str, list[tuple[Node, int]]] = {}
        for n in self.nodes:
            for i, name in enumerate(n.inputs):
                if name:
                    table.setdefault(name, []).append((n, i))
            for name in n.implicit_inputs:
                table.setdefault(name, []).append((n, -1))
        return table

    @cached_property
    def node_by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def constant_derived(self) -> set[str]:
        """Tensors computed from parameters alone (a weight behind a dequantization, a transpose,
        a cast): the same on every run, so rules may treat them as weights."""
        derived = set(self.params)
        for node in self.nodes:  # topological order
            if not node.implicit_inputs and all(not name or name in derived for name in node.inputs):
                derived.update(o for o in node.outputs if o)
        return derived

    @cached_property
    def graph_input_names(self) -> set[str]:
        return {v.name for v in self.inputs}

    @cached_property
    def graph_output_names(self) -> set[str]:
        return {v.name for v in self.outputs}

    def shape(self, name: str) -> tuple[int, ...] | None:
        """Shape of a tensor (params included), or None if unknown.

        Symbolic (batch, sequence) dims are :class:`onnxprune.shapes.SymDim`:
        ints at a stand-in value that remember their symbol; the engine never
        prunes them and rewrites never write them.
        """
        if name in self.params:
            return tuple(self.params[name].shape)
        value = self.values.get(name)
        return value.static_shape if value else None
