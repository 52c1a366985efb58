"""Building blocks shared by operator families: broadcasting, unary coupling, shapes."""
from __future__ import annotations

import dataclasses

import numpy as np

from onnxprune.mapping import IDENTITY, Marginal, Overlap
from onnxprune.rules import IN, OUT, Answer, Barrier, Couple, NodeView, Port, Side


def norm_axes(axes, rank: int) -> tuple[int, ...]:
    return tuple(int(a) % rank for a in axes)


def shapes_known(view: NodeView, *ports: Port) -> bool:
    return all(view.shape(p) is not None for p in ports)


def as_base_op(view: NodeView, slots) -> NodeView:
    """The node as its float op would be written (a quantized op's data inputs only, in the float op's
    order), on the same tensors, so the float op's rule can be asked; trailing absent inputs dropped."""
    inputs = [view.node.inputs[s] if s < len(view.node.inputs) else "" for s in slots]
    while inputs and not inputs[-1]:
        inputs.pop()
    return NodeView(dataclasses.replace(view.node, inputs=inputs), view.graph, view.analysis)


def unknown_shape(view: NodeView, port: Port) -> Barrier:
    return Barrier(f"shape of {view.tensor(port)} unknown (pass --input-shape)")


def extra_outputs_read(view: NodeView) -> bool:
    """Whether a node's outputs after the first are read (or are graph outputs)."""
    graph = view.graph
    return any(name and (graph.consumers.get(name) or name in graph.graph_output_names)
               for name in view.node.outputs[1:])


def couple_by_labels(port: Port, axes: tuple[int, ...], labels: dict, shapes: dict, op: str) -> Answer:
    """Couple the axes of ``port`` to the axes of every other port that carry the same label.

    ``labels[p]`` names each axis of port ``p`` (an einsum letter, a matmul role); an axis of size 1
    where the other is larger is broadcast (not coupled); where only some of ``axes`` appear in
    another port, that port gets the marginal mapping of those axes.
    """
    mine = [labels[port][a] for a in axes]
    sizes = tuple(shapes[port][a] for a in axes)
    links = []
    for other in labels:
        if other == port:
            continue
        keep, other_axes = [], []
        for k, label in enumerate(mine):
            if label not in labels[other]:
                continue
            axis = labels[other].index(label)
            if shapes[other][axis] == sizes[k]:
                keep.append(k)
                other_axes.append(axis)
            elif shapes[other][axis] != 1:
                return Barrier(f"{op} operands disagree on axis {axes[k]} of {port}")
        if not keep:
            continue
        mapping = IDENTITY if len(keep) == len(axes) else Marginal(sizes, tuple(keep))
        links.append(Couple(other, tuple(other_axes), mapping))
    return links


def unary(view: NodeView, port: Port, axes: tuple[int, ...]) -> Answer:
    """Output has the input's shape and each element depends on the same input element."""
    others = [OUT(i) for i in range(view.n_outputs) if view.node.outputs[i]] + [IN(0)]
    return [Couple(p, axes) for p in others if p != port]


def broadcast(view: NodeView, port: Port, axes: tuple[int, ...], inputs: list[int] | None = None) -> Answer:
    """Elementwise op with numpy broadcasting over ``inputs`` (default: all inputs).

    From an input, couple the output; from the output, couple every input that
    really carries those axes (size-1 / missing axes are broadcast and untouched).
    Per-channel constants (a [C,1,1] bias) are inputs like any other and get sliced.
    """
    slots = inputs if inputs is not None else [i for i in range(view.n_inputs) if view.has_input(i)]
    out_shape = view.shape(OUT(0))
    if out_shape is None:
        return unknown_shape(view, OUT(0))
    rank = len(out_shape)
    if port.side == Side.IN:
        if port.slot not in slots:
            return Barrier(f"input {port.slot} is not elementwise")
        in_shape = view.shape(port)
        if in_shape is None:
            return unknown_shape(view, port)
        shift = rank - len(in_shape)
        out_axes = tuple(a + shift for a in axes)
        if any(in_shape[a] != out_shape[b] for a, b in zip(axes, out_axes)):
            return Barrier("broadcast input pruned along a broadcast axis")
        return [Couple(OUT(0), out_axes)]
    links = []
    for slot in slots:
        in_shape = view.shape(IN(slot))
        if in_shape is None:
            return unknown_shape(view, IN(slot))
        shift = rank - len(in_shape)
        in_axes = tuple(a - shift for a in axes)
        carried = [a >= 0 and in_shape[a] == out_shape[a + shift] and in_shape[a] != 1 for a in in_axes]
        if all(carried):
            links.append(Couple(IN(slot), in_axes))
        elif any(carried):
            return Barrier(f"input {slot} broadcasts along part of axes {axes}")
    return links


def reshape_links(shape_a, shape_b, axes: tuple[int, ...], port_b: Port) -> Answer:
    """Couple consecutive ``axes`` of a tensor to the axes of its reshaped view.

    Row-major order is preserved by reshape, so a run of axes maps to the run
    of target axes spanning the same flat range; when one side's run is coarser
    (Flatten: one channel = H*W features) the mapping is an :class:`Overlap`.
    """
    if not axes or not all(0 <= a < len(shape_a) for a in axes):
        return Barrier(f"axes {tuple(axes)} are not axes of a rank-{len(shape_a)} tensor")
    if list(axes) != list(range(axes[0], axes[-1] + 1)):
        return Barrier(f"axes {axes} are not consecutive")
    prefix = int(np.prod(shape_a[: axes[0]]))
    starts = [c for c in range(len(shape_b) + 1) if int(np.prod(shape_b[:c])) == prefix]
    if not starts:
        return Barrier("reshape does not keep these axes' leading extent")
    c = starts[-1]
    while c < len(shape_b) and shape_b[c] == 1 and c + 1 in starts:
        c += 1
    size_a = int(np.prod([shape_a[a] for a in axes]))
    # smallest aligned super-block covering the queried run on both sides
    total_a = prefix * size_a
    e, d = axes[-1] + 1, c
    pa, pb = total_a, prefix
    while True:
        while d < len(shape_b) and pb < pa:
            pb *= shape_b[d]
            d += 1
        if pa == pb:
            break
        if e >= len(shape_a):
            return Barrier("reshape boundaries do not align")
        pa *= shape_a[e]
        e += 1
    if d <= c:
        return Barrier("reshape maps these axes to nothing")
    super_size = pa // prefix
    # target run: the shortest leading part of [c, d) holding at least size_a elements
    end, size_b = c, 1
    while end < d and size_b < size_a:
        size_b *= shape_b[end]
        end += 1
    end = max(end, c + 1)
    size_b = int(np.prod(shape_b[c:end]))
    if super_size % size_a or super_size % size_b:
        return Barrier("reshape blocks are not nested")
    axes_b = tuple(range(c, end))
    block_a, block_b = super_size // size_a, super_size // size_b
    mapping = IDENTITY if block_a == block_b == 1 else Overlap(block_a, block_b)
    return [Couple(port_b, axes_b, mapping)]


def int_list(value) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


# Ops through which a small int tensor keeps its elements in order (shape arithmetic plumbing).
_SHAPE_PLUMBING = ("Unsqueeze", "Squeeze", "Reshape", "Identity", "Cast", "Flatten")


def shape_entries(view: NodeView, slot: int):
    """Where each element of a shape operand comes from, or None if its length is unknown.

    An element is ``(path, flat index)`` when it is a constant, directly or as a
    piece of a Concat of constants and run-time dims (how exporters build
    Reshape/Expand targets): ``path`` lists the (node, input slot) hops from
    this node to the constant. Run-time elements are None.
    """
    return _entries(view.graph, ((view.node.name, slot),), depth=0)


def _entries(graph, path, depth: int):
    reader, slot = path[-1]
    node = graph.node_by_name[reader]
    name = node.inputs[slot] if slot < len(node.inputs) else ""
    if not name:
        return None
    if name in graph.params:
        return [(path, i) for i in range(int(graph.params[name].size))]
    shape = graph.shape(name)
    length = int(np.prod(shape)) if shape is not None else None
    produced = graph.producers.get(name)
    if produced is not None and depth < 8:
        producer = produced[0]
        if producer.domain == "" and producer.op_type == "Concat" and int(producer.attrs.get("axis", 0)) in (0, -1):
            parts = [_entries(graph, path + ((producer.name, k),), depth + 1) for k in range(len(producer.inputs))]
            if all(p is not None for p in parts):
                return [e for p in parts for e in p]
        elif producer.domain == "" and producer.op_type in _SHAPE_PLUMBING and producer.inputs:
            inner = _entries(graph, path + ((producer.name, 0),), depth + 1)
            if inner is not None and (length is None or len(inner) == length):
                return inner
    return None if length is None else [None] * length


def runtime_sources(view: NodeView, slot: int, index: int) -> set[str] | None:
    """The tensors whose Shape a run-time element of a shape operand is computed from (None: not traced).

    torch's ``unflatten`` builds (seq, batch, 3, E) from the *input's* width E: a pruned axis whose size
    comes from another tensor's shape would keep its old size at run time."""
    graph, name = view.graph, view.node.inputs[slot] if slot < len(view.node.inputs) else ""
    for _ in range(8):  # down to the Concat piece that holds the element
        produced = graph.producers.get(name)
        if produced is None or produced[0].op_type != "Concat" or produced[0].domain:
            break
        offset = 0
        for piece in produced[0].inputs:
            shape = graph.shape(piece)
            if shape is None:
                return None
            if index < offset + int(np.prod(shape)):
                name, index = piece, index - offset
                break
            offset += int(np.prod(shape))
        else:
            return None
    seen, stack, sources = set(), [name], set()
    while stack and len(seen) < 64:
        tensor = stack.pop()
        produced = graph.producers.get(tensor)
        if tensor in seen or produced is None:
            continue
        seen.add(tensor)
        node = produced[0]
        if node.op_type == "Shape" and not node.domain:
            sources.add(node.inputs[0])
        else:
            stack.extend(i for i in node.inputs if i)
    return sources


def entry_value(view: NodeView, entry) -> int | None:
    """The constant value of a shape entry, or None for a run-time one."""
    if entry is None:
        return None
    path, index = entry
    node_name, slot = path[-1]
    node = view.graph.node_by_name[node_name]
    return int(np.asarray(view.graph.params[node.inputs[slot]]).reshape(-1)[index])


def rewrite_entries(view: NodeView, entries, sizes: dict[int, int], keep_values=(-1, 0)):
    """``Updates.upstream`` setting entry ``axis`` to ``sizes[axis]`` (entries holding keep_values stay)."""
    values: dict[tuple, np.ndarray] = {}
    for axis, size in sizes.items():
        entry = entries[axis]
        if entry is None or entry_value(view, entry) in keep_values:
            continue
        path, index = entry
        if path not in values:
            node_name, slot = path[-1]
            node = view.graph.node_by_name[node_name]
            values[path] = np.array(view.graph.params[node.inputs[slot]], copy=True)
        values[path].reshape(-1)[index] = size
    return values


# Ops through which the elements of a small int tensor can be followed one by one (how exporters assemble
# Pad amounts: torch reverses its (last dim first) pairs by Reshape, Slice with step -1, Transpose, Reshape).
_TRACED_MAX = 64


def element_values(view: NodeView, slot: int) -> np.ndarray | None:
    """The elements of a small integer input: an object array of its shape holding an int where the element is
    a constant (directly, or moved there by Concat/Reshape/Slice/Transpose/Gather/Cast from constants and
    ConstantOfShape fills) and None where it is computed at run time; None where its shape is unknown."""
    name = view.node.inputs[slot] if slot < len(view.node.inputs) else ""
    return _elements(view.graph, name, depth=12) if name else None


def static_elements(graph, name: str, depth: int = 16) -> np.ndarray | None:
    """As :func:`element_values`, also reading the static dims of a tensor's Shape and integer arithmetic on
    known elements (``x.size(-1) // heads``): what a model's fixed sizes make constant while its symbolic
    dims (batch, sequence) stay run-time elements."""
    return _elements(graph, name, depth, dims=True)


# integer arithmetic followed elementwise by static_elements (ONNX integer Div truncates toward zero; Mod
# without fmod takes the divisor's sign, as Python's %)
_ARITHMETIC = {"Mod": lambda a, b: None if b == 0 else a % b, "Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
               "Div": lambda a, b: None if b == 0 else (abs(a) // abs(b)) * (1 if (a >= 0) == (b >= 0) else -1)}


def _elements(graph, name: str, depth: int, dims: bool = False) -> np.ndarray | None:
    from onnxprune.onnx_in import attribute_array
    from onnxprune.shapes import is_symbolic

    if name in graph.params:
        value = np.asarray(graph.params[name])
        if value.size > _TRACED_MAX or value.dtype.kind not in "iub":
            return None
        return np.vectorize(int, otypes=[object])(value) if value.size else value.astype(object)
    shape = graph.shape(name)
    if shape is None and dims:  # a piece of shape arithmetic whose length inference lost: computed below
        unknown = None
    elif shape is None or any(d is None or is_symbolic(d) for d in shape) or int(np.prod(shape)) > _TRACED_MAX:
        return None
    else:
        unknown = np.full(tuple(int(d) for d in shape), None, dtype=object)
    produced = graph.producers.get(name)
    if produced is None or depth == 0 or produced[0].domain not in ("", "ai.onnx"):
        return unknown
    node = produced[0]

    def operand(i):
        return _elements(graph, node.inputs[i], depth - 1, dims) if i < len(node.inputs) and node.inputs[i] else None

    def const(i):
        if i >= len(node.inputs) or not node.inputs[i]:
            return None
        if not dims:
            return graph.params.get(node.inputs[i])
        known = operand(i)  # slice bounds computed from constants (torch's unflatten: dim % rank + 1)
        return None if known is None or any(v is None for v in known.reshape(-1)) else known.astype(np.int64)

    result, op = None, node.op_type
    try:
        if dims and op == "Shape":
            result = _static_dims(graph, node)
        elif dims and op in _ARITHMETIC and not node.attrs.get("fmod"):
            a, b = operand(0), operand(1)
            if a is not None and b is not None:
                result = np.frompyfunc(lambda x, y: None if x is None or y is None else _ARITHMETIC[op](x, y),
                                       2, 1)(a, b)
                result = np.asarray(result, dtype=object).reshape(np.broadcast_shapes(a.shape, b.shape))
        elif dims and op in _COMPARE:
            a, b = operand(0), operand(1)
            if a is not None and b is not None:
                result = np.frompyfunc(lambda x, y: None if x is None or y is None else int(_COMPARE[op](x, y)),
                                       2, 1)(a, b)
                result = np.asarray(result, dtype=object).reshape(np.broadcast_shapes(a.shape, b.shape))
        elif dims and op == "Where":  # torch's expand: Where(target == -1, ones, target)
            c, a, b = operand(0), operand(1), operand(2)
            if c is not None and a is not None and b is not None:
                result = np.frompyfunc(lambda k, x, y: None if k is None else (x if k else y), 3, 1)(c, a, b)
                result = np.asarray(result, dtype=object).reshape(np.broadcast_shapes(c.shape, a.shape, b.shape))
        elif op == "Cast" and dims and int(node.attrs.get("to", 7)) not in _INT_TYPES + (_BOOL,):
            result = None
        elif op in ("Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"):
            x = operand(0)
            result = None if x is None or unknown is None else x.reshape(unknown.shape)
        elif op == "Concat":
            parts = [operand(i) for i in range(len(node.inputs))]
            if all(p is not None for p in parts):
                result = np.concatenate(parts, axis=int(node.attrs.get("axis", 0)))
        elif op == "Transpose":
            x = operand(0)
            perm = node.attrs.get("perm")
            result = None if x is None else np.transpose(x, [int(p) for p in perm] if perm is not None else None)
        elif op == "Gather":
            x, indices = operand(0), const(1)
            if x is not None and indices is not None:
                picked = np.take(x, np.asarray(indices, dtype=np.int64), axis=int(node.attrs.get("axis", 0)))
                result = np.empty(np.shape(picked), dtype=object)  # a scalar index picks one (maybe None) element
                result[...] = picked
        elif op == "Slice":
            x = operand(0)
            if x is not None:
                result = _slice(x, node, const)
        elif op == "ConstantOfShape":
            value = node.attrs.get("value")
            fill = attribute_array(value) if value is not None else np.zeros(1, np.float32)
            if fill is not None and np.asarray(fill).dtype.kind in "iub" and unknown is not None:
                result = np.full(unknown.shape, int(np.asarray(fill).reshape(-1)[0]), dtype=object)
    except (ValueError, IndexError, TypeError):
        result = None
    if unknown is None:
        return result if result is not None and result.ndim == 1 and result.size <= _TRACED_MAX else None
    if result is None or result.shape != unknown.shape:
        return unknown
    return result


# ONNX integer element types (INT8..INT64, UINT8..UINT64), and BOOL
_INT_TYPES = (2, 3, 4, 5, 6, 7, 12, 13)
_BOOL = 9
_COMPARE = {"Equal": lambda a, b: a == b, "Less": lambda a, b: a < b, "Greater": lambda a, b: a > b,
            "LessOrEqual": lambda a, b: a <= b, "GreaterOrEqual": lambda a, b: a >= b}


def _static_dims(graph, node) -> np.ndarray | None:
    """Shape's output: the input's static dims as ints, symbolic (or unknown) ones as None."""
    from onnxprune.shapes import is_symbolic

    dims = graph.shape(node.inputs[0])
    if dims is None:
        return None
    rank = len(dims)
    start, end = int(node.attrs.get("start", 0)), int(node.attrs.get("end", rank))
    start, end = (max(0, min(rank, v + rank if v < 0 else v)) for v in (start, end))
    picked = [d if isinstance(d, int) and not is_symbolic(d) and d >= 0 else None for d in dims[start:end]]
    values = np.empty(len(picked), dtype=object)
    values[:] = picked
    return values


def _slice(x: np.ndarray, node, const) -> np.ndarray | None:
    if len(node.inputs) > 1:  # opset 10+: starts, ends, axes, steps as inputs
        starts, ends, axes, steps = const(1), const(2), const(3), const(4)
        if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3] and axes is None) or \
                (len(node.inputs) > 4 and node.inputs[4] and steps is None):
            return None
    else:
        starts, ends, axes, steps = node.attrs.get("starts"), node.attrs.get("ends"), node.attrs.get("axes"), None
    starts, ends = int_list(starts), int_list(ends)
    axes = int_list(axes) if axes is not None else list(range(len(starts)))
    steps = int_list(steps) if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis % x.ndim] = slice(start, end, step)
    return x[tuple(index)]


# ops that move a small int tensor's elements (flat order kept) or compute elementwise on them: the sizes a
# Shape read gives are followed through these to the op that uses them
_SIZE_MOVES = ("Unsqueeze", "Squeeze", "Reshape", "Identity", "Cast", "Flatten")
_SIZE_ARITHMETIC = ("Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Neg", "Abs", "Floor", "Ceil", "Sqrt", "Pow",
                    "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Where")


def size_reader(graph, tensor: str, positions: set[int], depth: int = 16) -> str | None:
    """Where elements ``positions`` (flat) of a shape-valued ``tensor`` are used, other than in a Reshape
    target (a description: "Expand Expand_3 (input 1)"); None where they are used nowhere else."""
    if not positions:
        return None
    if tensor in graph.graph_output_names:
        return f"graph output {tensor}"
    for node, slot in graph.consumers.get(tensor, []):
        where = f"{node.op_type} {node.name} (input {slot})"
        if node.domain or depth == 0 or slot < 0:
            return where
        out = node.outputs[0] if node.outputs else ""
        if node.op_type == "Reshape" and slot == 1:
            continue  # the Reshape rule reads its target's run-time pieces itself
        if node.op_type in ("Shape", "Size"):
            continue  # the length of the sizes, not their values
        moved = _moved(graph, node, slot, tensor, positions)
        if moved is None:
            return where
        found = size_reader(graph, out, moved, depth - 1)
        if found is not None:
            return found
    return None


def _moved(graph, node, slot: int, tensor: str, positions: set[int]) -> set[int] | None:
    """Positions of the node's output that the input elements ``positions`` reach, or None where not followed."""
    op, out = node.op_type, node.outputs[0] if node.outputs else ""
    size = _flat_size(graph, out)
    if op in _SIZE_MOVES and slot == 0:
        return set(positions)
    if op in _SIZE_ARITHMETIC:
        mine = _flat_size(graph, tensor)
        if mine is not None and mine == size:
            return set(positions)
        return set(range(size)) if size is not None else None
    if op == "Concat" and int(node.attrs.get("axis", 0)) in (0, -1):
        offset = 0
        for k, name in enumerate(node.inputs):
            if k == slot:
                return {offset + p for p in positions}
            length = _flat_size(graph, name)
            if length is None:
                return None
            offset += length
    if op in ("Gather", "Slice") and slot == 0:
        length = _flat_size(graph, tensor)
        index = np.full(length, -1) if length is not None else None
        if index is None:
            return None
        index[sorted(p for p in positions if p < length)] = 1
        if op == "Gather":
            indices = graph.params.get(node.inputs[1]) if len(node.inputs) > 1 else None
            if indices is None or int(node.attrs.get("axis", 0)) not in (0, -1):
                return None
            flat = np.asarray(indices, dtype=np.int64).reshape(-1) % max(length, 1)
        else:
            bounds = [graph.params.get(n) if n else None for n in node.inputs[1:5]]
            if len(node.inputs) < 3 or bounds[0] is None or bounds[1] is None or \
                    any(n and b is None for n, b in zip(node.inputs[3:5], bounds[2:])):
                return None
            step = int(np.asarray(bounds[3]).reshape(-1)[0]) if len(bounds) > 3 and bounds[3] is not None else 1
            flat = np.arange(length)[int(np.asarray(bounds[0]).reshape(-1)[0]):
                                     int(np.asarray(bounds[1]).reshape(-1)[0]):step]
        return {k for k, i in enumerate(flat) if index[i] == 1}
    return None


def _flat_size(graph, name: str) -> int | None:
    shape = graph.shape(name) if name else None
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return int(np.prod(shape))
