"""The one place that reads protobuf: ONNX file or ModelProto -> :class:`Graph`."""
from __future__ import annotations

import dataclasses

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from google.protobuf.message import DecodeError

from . import shapes
from .errors import InputError, OptionError, UnsupportedModelError
from .files import resolve_inside
from .ir import Graph, ModelMeta, Node, Value

MIN_OPSET = 9
UPGRADABLE_FROM = 7  # older opsets are upgraded to MIN_OPSET by onnx's version converter
# Domains onnxruntime runs out of the box; anything else needs a plugin we cannot see into.
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}


@dataclass
class ModelFile:
    """A parsed model whose external data is located (and checked) but not read yet.

    Commands list :attr:`external_files` among the paths they read (see
    :mod:`onnxprune.files`) before calling :meth:`load`.
    """

    path: Path
    proto: onnx.ModelProto
    external: dict[Path, list[onnx.TensorProto]] = field(default_factory=dict)
    mapped: dict[str, np.ndarray] = field(default_factory=dict)  # see load(map_weights=True)

    @property
    def external_files(self) -> list[Path]:
        return sorted(self.external)

    def load(self, map_weights: bool = False) -> onnx.ModelProto:
        """Read every external tensor into the model (our own reader: locations were checked in open_model).

        With ``map_weights``, the large floating-point initializers of the main
        graph are not read into protobuf: they stay external in the model and
        are mapped, copy-on-write, from their files into :attr:`mapped`, so a
        weight takes memory only where it is read and never twice.
        """
        main = {id(t) for t in self.proto.graph.initializer} if map_weights else set()
        for file, tensors in self.external.items():
            try:
                with open(file, "rb") as stream:
                    for tensor in tensors:
                        if id(tensor) in main and _map_external_tensor(stream, tensor, file, self.mapped):
                            continue
                        _read_external_tensor(stream, tensor, file)
            except OSError as exc:
                raise InputError(f"{self.path}: external data could not be read ({file.name}: "
                                 f"{exc.strerror or exc})") from None
        return self.proto


def open_model(path: str | os.PathLike) -> ModelFile:
    """Parse an ONNX file and locate its external data, with clear errors for every bad input.

    Every external location (initializers, tensor attributes such as Constant
    values, subgraphs, functions) is resolved against the model's folder by
    :func:`onnxprune.files.resolve_inside`: absolute paths and paths that leave
    the folder are refused, whatever onnx's own loader would do.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not an ONNX model or truncated ({_first_line(exc)})") from None
    if not model.opset_import or not model.HasField("graph") or not (model.graph.node or model.graph.output):
        raise InputError(f"{path}: not an ONNX model or truncated (no graph or opset)")
    external: dict[Path, list[onnx.TensorProto]] = {}
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        what = f"{path}: external data of tensor '{tensor.name}'"
        file = resolve_inside(path.parent, info.get("location", ""), what)
        if not file.is_file():
            raise InputError(f"{path}: external data could not be read "
                             f"({info['location']}: no such file next to the model)")
        external.setdefault(file, []).append(tensor)
    return ModelFile(path, model, external)


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file with its external data (see :func:`open_model`)."""
    return open_model(path).load()


def _external_extent(stream, tensor: onnx.TensorProto, file: Path) -> tuple[int, int]:
    """(offset, length or -1) of an external tensor, checked against the file's size."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else -1
    except ValueError:
        raise InputError(f"{file.name}: tensor '{tensor.name}' has a bad offset or length") from None
    size = os.fstat(stream.fileno()).st_size
    if offset < 0 or offset > size or (length >= 0 and offset + length > size):
        raise InputError(f"external data {file.name} is too short for tensor '{tensor.name}' "
                         f"(offset {offset}, length {length}, file {size} bytes)")
    return offset, length


def _map_external_tensor(stream, tensor: onnx.TensorProto, file: Path, mapped: dict[str, np.ndarray]) -> bool:
    """Map a large floating-point tensor from its file (copy-on-write: the file is never written).
    False where it is not one to map (small, not floating point, or sized unlike its dims)."""
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except (KeyError, ValueError, TypeError):
        return False
    dims = tuple(int(d) for d in tensor.dims)
    count = int(np.prod(dims, dtype=np.int64))
    if not shapes.is_skeleton_weight(dtype, count) or dtype.byteorder == ">":
        return False
    offset, length = _external_extent(stream, tensor, file)
    if length not in (-1, count * dtype.itemsize) or offset + count * dtype.itemsize > os.fstat(stream.fileno()).st_size:
        return False  # read (and judged) the usual way
    mapped[tensor.name] = np.memmap(file, dtype=dtype, mode="c", offset=offset, shape=dims)
    return True


def _read_external_tensor(stream, tensor: onnx.TensorProto, file: Path) -> None:
    offset, length = _external_extent(stream, tensor, file)
    stream.seek(offset)
    tensor.raw_data = stream.read(length)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT


def _all_tensors(model: onnx.ModelProto):
    """Every TensorProto of the model: initializers, tensor attributes, subgraphs, functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for sub in attr.graphs:
            yield from _graph_tensors(sub)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_supported(model: onnx.ModelProto, origin: str = "model") -> list[str]:
    """Refuse opsets and domains we cannot reason about, before any analysis.

    A model older than MIN_OPSET (7, 8) is upgraded in place by onnx's version
    converter where it can be; the returned notes say so (for the report)."""
    opsets = {o.domain: o.version for o in model.opset_import}
    version = opsets.get("", opsets.get("ai.onnx"))
    newest = onnx.defs.onnx_opset_version()
    if version is None:
        raise UnsupportedModelError(f"{origin}: no default-domain opset import")
    notes = []
    if UPGRADABLE_FROM <= version < MIN_OPSET:
        notes.append(_upgrade_opset(model, version, origin))
        version = MIN_OPSET
    if not MIN_OPSET <= version <= newest:
        raise UnsupportedModelError(
            f"{origin}: opset {version} is not supported (supported: {UPGRADABLE_FROM}..{newest}, opsets below "
            f"{MIN_OPSET} upgraded); convert it with onnx.version_converter first")
    local = {f.domain for f in model.functions}
    for node in model.graph.node:
        if node.domain not in KNOWN_DOMAINS and node.domain not in local:
            raise UnsupportedModelError(
                f"{origin}: node '{node.name or node.op_type}' uses custom domain '{node.domain}' "
                f"(op {node.op_type}); onnxprune only handles standard ONNX and com.microsoft ops")
    for tensor in _all_tensors(model):
        try:
            onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        except (KeyError, ValueError, TypeError):
            raise InputError(f"{origin}: invalid ONNX model (tensor '{tensor.name}' has unknown data type "
                             f"{tensor.data_type})") from None
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else []
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value < 0:
                # Paddle (and older exporters) write -1 for a dynamic dim: read it as a symbol
                # (this rewrites the declaration in place; the written model says the same, validly)
                d.dim_param = f"{vi.name}_dim{axis}"
    try:
        run_checker(model)
    except onnx.checker.ValidationError as exc:
        raise InputError(f"{origin}: invalid ONNX model ({_first_line(exc)})") from None
    except UnicodeDecodeError:  # a damaged file can hold names that are not UTF-8
        raise InputError(f"{origin}: invalid ONNX model (a name or string is not valid UTF-8; damaged file?)") from None
    return notes


def _upgrade_opset(model: onnx.ModelProto, version: int, origin: str) -> str:
    """Convert ``model`` in place to MIN_OPSET with onnx's version converter, or refuse in one line."""
    from onnx import version_converter
    work = onnx.ModelProto()
    work.CopyFrom(model)
    declared = {vi.name for vi in work.graph.input}
    # the converter resolves node inputs among graph inputs only (IR >= 4 need not list initializers)
    extra = [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
             for t in work.graph.initializer if t.name not in declared]
    work.graph.input.extend(extra)
    try:
        converted = version_converter.convert_version(work, MIN_OPSET)
    except Exception as exc:  # the converter raises RuntimeError, ConvertError, ValidationError...
        reason = re.sub(r"^\S+\.(h|cc|cpp):\d+: ", "", _first_line(exc))
        raise UnsupportedModelError(f"{origin}: opset {version} is not supported and onnx's version converter "
                                    f"cannot upgrade it to opset {MIN_OPSET} ({reason})") from None
    if extra:
        names = {vi.name for vi in extra}
        kept = [vi for vi in converted.graph.input if vi.name not in names]
        del converted.graph.input[:]
        converted.graph.input.extend(kept)
    model.CopyFrom(converted)
    return (f"opset {version} upgraded to opset {MIN_OPSET} by onnx's version converter "
            f"(the output is opset {MIN_OPSET})")


def run_checker(model: onnx.ModelProto, full_check: bool = False) -> None:
    """onnx.checker on ``model``, without the copies of its weights that checking the whole model makes.

    The checker serializes the model it checks (and ``full_check`` infers shapes
    on a parsed copy): the structure is checked on a skeleton
    (:func:`shapes.skeleton`), the large weights one by one.
    """
    checked, left_out = shapes.skeleton(model)
    with checkable(checked):
        onnx.checker.check_model(checked, full_check=full_check)
    for tensor in model.graph.initializer:
        # a tensor still external is a mapped weight: its file and extent were checked when it was mapped
        if tensor.name in left_out and tensor.data_location != onnx.TensorProto.EXTERNAL:
            onnx.checker.check_tensor(tensor)


# The domain onnx.checker sees onnxruntime's own default-domain ops in (it judges unknown domains' ops
# by their edges only, as for any com.microsoft op).
_CHECK_AS = "com.microsoft"


def runtime_extensions() -> frozenset[str]:
    """Default-domain ops onnxruntime defines and onnx does not (SimplifiedLayerNormalization, as
    optimum exports write it): those the rules know (registered in the default domain) and onnx has no schema for."""
    from .registry import builtin_registry  # late: the registry imports the rules
    return frozenset(t for d, t in builtin_registry().keys() if d == "" and not onnx.defs.has(t))


@contextmanager
def checkable(model: onnx.ModelProto):
    """Within the block, ``model`` is one onnx.checker can judge: onnxruntime's default-domain
    extensions are moved to a custom domain (in place, restored after; no copy of the weights)."""
    extensions = runtime_extensions()
    moved = [n for n in model.graph.node if n.domain in ("", "ai.onnx") and n.op_type in extensions]
    if not moved:
        yield model
        return
    added = None
    if not any(o.domain == _CHECK_AS for o in model.opset_import):
        added = model.opset_import.add()
        added.domain, added.version = _CHECK_AS, 1
    domains = [n.domain for n in moved]
    try:
        for node in moved:
            node.domain = _CHECK_AS
        yield model
    finally:
        for node, domain in zip(moved, domains):
            node.domain = domain
        if added is not None:
            model.opset_import.remove(added)


def check_input_shapes(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None) -> None:
    """--input-shape must name a model input and match its rank (checked right after loading)."""
    graph_inputs = {i.name: i for i in model.graph.input}
    for name, dims in (input_shapes or {}).items():
        if name not in graph_inputs:
            raise OptionError(f"--input-shape: the model has no input '{name}' "
                              f"(inputs: {', '.join(graph_inputs) or 'none'})")
        tensor_type = graph_inputs[name].type.tensor_type
        if tensor_type.HasField("shape") and len(tensor_type.shape.dim) != len(dims):  # no shape: any rank
            raise OptionError(f"--input-shape {name}: rank {len(dims)} given, model says {len(tensor_type.shape.dim)}")


def to_graph(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None,
             mapped: dict[str, np.ndarray] | None = None) -> Graph:
    """Convert a (checked) ModelProto to the engine's plain representation.

    ``values`` hold the shapes analysis uses (see :mod:`onnxprune.shapes`:
    symbolic dims as SymDims, dims the user fixes as ints);
    ``inputs``/``outputs``/``declared`` keep what the file declares, so the
    written model keeps its dynamic dims.
    """
    check_input_shapes(model, input_shapes)
    inferred, _ = shapes.analysis_shapes(model, input_shapes)
    values = {name: Value(name, elem, dims) for name, (elem, dims) in inferred.items()}
    mapped = mapped or {}
    params = {t.name: mapped[t.name] if t.name in mapped else numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = []
    for index, proto in enumerate(model.graph.node):
        if _is_constant_node(proto) and proto.output[0] not in {o.name for o in model.graph.output}:
            params[proto.output[0]] = _constant_value(proto)
            continue
        nodes.append(_node(proto, index))
    _ensure_unique_names(nodes)
    meta = ModelMeta(
        ir_version=model.ir_version,
        opsets={o.domain: o.version for o in model.opset_import},
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
        doc_string=model.doc_string,
        metadata={p.key: p.value for p in model.metadata_props},
        graph_name=model.graph.name,
        graph_doc=model.graph.doc_string,
        functions=list(model.functions),
        sparse_initializers=list(model.graph.sparse_initializer),
    )
    initializer_names = set(params)
    return Graph(
        nodes=nodes,
        inputs=[_value(i) for i in model.graph.input if i.name not in initializer_names],
        outputs=[_value(o) for o in model.graph.output],
        params=params,
        values=values,
        declared={vi.name: _value(vi) for vi in model.graph.value_info},
        meta=meta,
    )


def reinfer(graph: Graph, input_shapes: dict[str, list[int]] | None = None) -> Graph:
    """``graph`` with its shapes inferred again (after a rewrite), as :func:`to_graph` would.

    Inference runs on a skeleton (:func:`onnx_out.to_model` without the large
    weights): nodes and weights stay the IR's own, so no weight makes a round
    trip through protobuf.
    """
    from . import onnx_out  # the other edge: a skeleton to infer on, never a model to keep
    skeleton = onnx_out.to_model(graph, onnx_out.Weights.INPUTS)
    left_out = set(onnx_out.skeleton_weights(graph))
    inferred, _ = shapes.analysis_shapes(skeleton, input_shapes)
    values = {name: Value(name, elem, dims) for name, (elem, dims) in inferred.items() if name not in left_out}
    return dataclasses.replace(graph, values=values)


def refresh(graph: Graph, input_shapes: dict[str, list[int]] | None = None) -> Graph:
    """``graph``'s shapes after a rewrite that carried them along (channel removal shrinks the
    pruned axes from the plan; fusion and block removal keep the shapes of what stays).

    Symbolic inference (sympy, the slow part of analysis) is not run again: onnx's own
    inference at the stand-in dims checks every carried shape it can compute and fills the
    holes it can where the model has no symbolic dims. A tensor the rewrite added (a Reshape
    target pinned, heads split apart) takes onnx's dims there, and where they move with the
    dynamic dims, the symbol of the carried dims that move alike (:func:`_new_symbolic`). A
    carried shape that disagrees, or a new tensor whose dims cannot be told so, falls back to
    :func:`reinfer`.
    """
    from . import onnx_out
    skeleton = onnx_out.to_model(graph, onnx_out.Weights.INPUTS)
    checked = shapes.static_shapes(skeleton, input_shapes)
    if checked is None:
        return reinfer(graph, input_shapes)
    static_model = not any(shapes.is_symbolic(d) for v in graph.values.values() for d in (v.shape or ()))
    values, new = dict(graph.values), {}
    for node in graph.nodes:
        for name in node.outputs:
            if not name:
                continue
            carried = values.get(name)
            elem, dims = checked.get(name, (0, None))
            complete = dims is not None and all(isinstance(d, int) and d > 0 for d in dims)
            if carried is not None and carried.shape is not None and None not in carried.shape:
                if complete and tuple(int(d) for d in carried.shape) != tuple(dims):
                    return reinfer(graph, input_shapes)  # the carried shape is wrong: infer it all
                continue
            if carried is None and not static_model:
                if not complete:
                    return reinfer(graph, input_shapes)  # a new tensor only symbolic inference can give
                new[name] = (elem, tuple(dims))  # dims that may be symbolic
                continue
            if complete and static_model:
                values[name] = Value(name, elem or (carried.dtype if carried else 0), tuple(dims))
    if new:
        named = _new_symbolic(graph, skeleton, input_shapes, new)
        if named is None:
            return reinfer(graph, input_shapes)
        values.update(named)
    live = {v.name for v in graph.inputs} | {v.name for v in graph.outputs} | {
        name for node in graph.nodes for name in list(node.inputs) + list(node.outputs) + list(node.implicit_inputs)}
    return dataclasses.replace(graph, values={name: v for name, v in values.items() if name in live})


def _new_symbolic(graph: Graph, skeleton: onnx.ModelProto, input_shapes, new: dict) -> dict[str, Value] | None:
    """Values of the ``new`` tensors ({name: (elem, dims at the stand-ins)}): onnx's inference at moved
    sizes of the dynamic dims tells which dims are symbolic, and a carried symbol that moves from the
    same stand-in to the same size names each; None where one cannot be named so."""
    moved = shapes.static_shapes(skeleton, input_shapes, moved=True)
    if moved is None:
        return None
    symbols: dict[tuple[int, int], set[str]] = {}
    for name, value in graph.values.items():
        other = moved.get(name, (0, None))[1]
        if value.shape is None or other is None or len(other) != len(value.shape):
            continue
        for d, m in zip(value.shape, other):
            if shapes.is_symbolic(d) and isinstance(m, int) and m > 0:
                symbols.setdefault((int(d), m), set()).add(d.symbol)
    found = {}
    for name, (elem, dims) in new.items():
        other = moved.get(name, (0, None))[1]
        if other is None or len(other) != len(dims):
            return None
        named = []
        for d, m in zip(dims, other):
            if d == m:
                named.append(d)
                continue
            candidates = symbols.get((d, m), set())
            if len(candidates) != 1:
                return None
            named.append(shapes.SymDim(next(iter(candidates)), d))
        found[name] = Value(name, elem, tuple(named))
    return found


def model_inputs(model: onnx.ModelProto) -> list[Value]:
    """The inputs a caller feeds (initializers excluded), as the file declares them."""
    initializers = {t.name for t in model.graph.initializer}
    return [_value(vi) for vi in model.graph.input if vi.name not in initializers]


def check_no_empty_inputs(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None) -> None:
    """A declared zero-size dim is not dynamic: say so instead of failing later."""
    for value in model_inputs(model):
        shape = (input_shapes or {}).get(value.name, value.shape)
        zero = [i for i, d in enumerate(shape or ()) if d == 0]
        if zero:
            raise InputError(f"input {value.name} declares a zero-size dim {zero[0]} (shape "
                             f"{'x'.join(str(d) for d in shape)}): an empty tensor has no channels to prune; "
                             f"fix it with --input-shape {value.name}:...")


def declared_static(model: onnx.ModelProto) -> bool:
    """True when every graph input has a fixed shape in the file itself."""
    initializers = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        shape = vi.type.tensor_type.shape
        if not vi.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in shape.dim):
            return False
    return True


def load(path: str | os.PathLike, input_shapes: dict[str, list[int]] | None = None) -> Graph:
    model = read_model(path)
    check_supported(model, str(path))
    return to_graph(model, input_shapes)


def from_model(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None) -> Graph:
    check_supported(model)
    return to_graph(model, input_shapes)


def _value(vi: onnx.ValueInfoProto) -> Value:
    tensor_type = vi.type.tensor_type
    shape = None
    if tensor_type.HasField("shape"):
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim)
    return Value(vi.name, tensor_type.elem_type, shape)


def _is_constant_node(proto: onnx.NodeProto) -> bool:
    return proto.op_type == "Constant" and proto.domain in ("", "ai.onnx") and len(proto.attribute) == 1


def _constant_value(proto: onnx.NodeProto) -> np.ndarray:
    attr = proto.attribute[0]
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    value = onnx.helper.get_attribute_value(attr)
    if attr.name in ("value_float", "value_floats"):
        return np.asarray(value, dtype=np.float32)
    if attr.name in ("value_int", "value_ints"):
        return np.asarray(value, dtype=np.int64)
    if attr.name == "sparse_value":
        return numpy_helper.to_array(attr.sparse_tensor.values)  # rare; shape info lost is acceptable
    return np.asarray(value)


def _node(proto: onnx.NodeProto, index: int) -> Node:
    attrs, types, implicit, read_inside = {}, {}, [], {}
    for attr in proto.attribute:
        attrs[attr.name] = onnx.helper.get_attribute_value(attr)
        types[attr.name] = attr.type
        if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in graphs:
                outer = _outer_names(sub)
                implicit.extend(outer)
                for name in dict.fromkeys(outer):
                    read_inside[name] = read_inside.get(name, ()) + (attr.name,)
    return Node(
        name=proto.name or f"{proto.op_type}_{index}",
        op_type=proto.op_type,
        domain=proto.domain if proto.domain != "ai.onnx" else "",
        inputs=list(proto.input),
        outputs=list(proto.output),
        attrs=attrs,
        attr_types=types,
        doc=proto.doc_string,
        implicit_inputs=sorted(set(implicit)),
        read_inside=read_inside,
    )


def bodies(node: Node) -> list[str]:
    """The node's subgraph attributes (If's branches, Loop's and Scan's body), in attribute order."""
    return [name for name, kind in node.attr_types.items() if kind == onnx.AttributeProto.GRAPH]


def body_graph(node: Node, attr: str, outer: Graph) -> tuple[Graph, tuple[str, ...]]:
    """Subgraph ``attr`` of ``node`` as a Graph of its own, and the names of its formal inputs.

    Tensors it reads from the enclosing scope become graph inputs after the formal ones (typed
    as the enclosing graph knows them, symbolic dims as symbols): analysed alone, the body
    treats them as it treats graph inputs, never pruned. Its initializers and Constant nodes
    are its parameters.
    """
    proto: onnx.GraphProto = node.attrs[attr]
    formal = tuple(vi.name for vi in proto.input)
    outer_inputs, fixed = [], {}
    for name in dict.fromkeys(_outer_names(proto)):
        if name in outer.params:
            value = outer.params[name]
            outer_inputs.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
        else:
            value = outer.values.get(name) or Value(name)
            dims = None if value.shape is None else [
                d.symbol if shapes.is_symbolic(d) else d for d in value.shape]
            if dims is not None and all(isinstance(d, int) for d in dims):
                fixed[name] = dims  # analysed at these sizes, as the enclosing graph was
            outer_inputs.append(onnx.helper.make_tensor_value_info(name, value.dtype, dims))
    graph = onnx.helper.make_graph(list(proto.node), proto.name or attr, list(proto.input) + outer_inputs,
                                   list(proto.output), list(proto.initializer), value_info=list(proto.value_info))
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid(d, v)
                                                         for d, v in outer.meta.opsets.items()])
    model.ir_version = max(outer.meta.ir_version, 4)  # a subgraph's initializers are never graph inputs
    return to_graph(model, fixed or None), formal


def _outer_names(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph reads from the enclosing scope."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used = []
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                used.append(name)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                used.extend(n for n in _outer_names(attr.g) if n not in defined)
        defined.update(node.output)
    return used


def _ensure_unique_names(nodes: list[Node]) -> None:
    seen: set[str] = set()
    for node in nodes:
        base, k = node.name, 1
        while node.name in seen:
            node.name = f"{base}__{k}"
            k += 1
        seen.add(node.name)


def attribute_array(value) -> np.ndarray | None:
    """A tensor-valued attribute (kept opaque in the IR, e.g. ConstantOfShape's fill) as numpy."""
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else None
