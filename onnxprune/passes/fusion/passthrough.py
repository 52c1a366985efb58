"""Drop nodes that hand their input through unchanged (Identity; Dropout in inference)."""
from __future__ import annotations

import copy

from ...edits import GraphEditor
from ...ir import Graph
from .. import Match
from .common import Shared


class DropPassthrough(Shared):
    """Readers of the node's output read its input instead. Where the output is a graph output,
    the node producing the input takes the output's name (if nothing else needs the old one)."""

    name = "drop passthrough"

    def find(self, graph: Graph):
        scope = self.scope(graph)
        for node in graph.nodes:
            if scope.passthrough(node) is None or not node.inputs or not node.inputs[0]:
                continue
            producer = graph.producers.get(node.inputs[0])
            renames = node.outputs[0] in graph.graph_output_names and producer is not None
            yield Match((node.name, producer[0].name) if renames else (node.name,))

    def check(self, graph: Graph, match: Match) -> str | None:
        scope = self.scope(graph)
        node = graph.node_by_name[match.nodes[0]]
        barrier = scope.passthrough(node)(scope.view(node))
        if barrier is not None:
            return barrier.reason
        source, out = node.inputs[0], node.outputs[0]
        if any(slot < 0 for _, slot in graph.consumers.get(out, [])):
            return f"{out} is read inside a subgraph"
        if out in graph.graph_output_names:
            if source not in graph.producers:
                return f"it connects {'a graph input' if source in graph.graph_input_names else 'a constant'} " \
                       "to a graph output"
            return scope.private(source, node.name)
        return None

    def rewrite(self, graph: Graph, match: Match, editor: GraphEditor) -> None:
        node = graph.node_by_name[match.nodes[0]]
        source, out = node.inputs[0], node.outputs[0]
        editor.remove_node(node.name)
        if out in graph.graph_output_names:  # the producer writes the graph output directly
            producer, slot = graph.producers[source]
            new = copy.copy(producer)
            new.outputs = list(producer.outputs)
            new.outputs[slot] = out
            editor.replace_node(producer.name, new)
            editor.map_tensor(source, out)
        else:
            editor.reroute(out, source, same_values=True)
            editor.map_tensor(out, source)
