"""The one place that writes protobuf: :class:`Graph` -> ONNX ModelProto / file."""
from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .files import Outputs, atomic_outputs
from . import weights
from .ir import Graph, Node, Value
from .shapes import is_skeleton_weight

# Protobuf cannot serialise a single message above 2 GB.
PROTO_LIMIT = 2**31 - 1


class Weights(Enum):
    """How :func:`to_model` writes the large floating-point weights (:func:`skeleton_weights`)."""

    INLINE = "inline"  # as initializers with their data: the model to save
    INPUTS = "inputs"  # as typed graph inputs: a skeleton for shape inference
    EXTERNAL = "external"  # as initializers whose data is elsewhere: onnxruntime takes the arrays themselves


# The location placeholder of Weights.EXTERNAL: onnxruntime reads no file for them (see validate.session)
IN_MEMORY = "onnxprune-in-memory"


def to_model(graph: Graph, weights: Weights = Weights.INLINE) -> onnx.ModelProto:
    """The ModelProto of ``graph``, its large weights written as ``weights`` says.

    Without their data (INPUTS, EXTERNAL) nothing of a weight is copied into
    protobuf: shape inference and onnxruntime sessions cost a fraction of the
    memory, and models past protobuf's 2 GB limit still fit.
    """
    meta = graph.meta
    referenced = _referenced_names(graph)
    left_out = set() if weights is Weights.INLINE else set(skeleton_weights(graph)) & referenced  # see left_out_weights
    initializers = [numpy_helper.from_array(arr, name) for name, arr in graph.params.items()
                    if name in referenced and name not in left_out]
    weight_inputs = []
    for name in sorted(left_out):
        dtype, shape = helper.np_dtype_to_tensor_dtype(graph.params[name].dtype), list(graph.params[name].shape)
        if weights is Weights.INPUTS:
            weight_inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        else:
            initializers.append(_external_placeholder(name, dtype, shape))
    if meta.ir_version < 4:  # IR 3 (model-zoo era): every initializer is also declared as a graph input
        weight_inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers]
    proto_graph = helper.make_graph(
        nodes=[node_proto(n) for n in graph.nodes],
        name=meta.graph_name,
        inputs=[_value_info(v) for v in graph.inputs] + weight_inputs,
        outputs=[_value_info(v) for v in graph.outputs],
        initializer=initializers,
        doc_string=meta.graph_doc or None,
        value_info=[_value_info(v) for n, v in graph.declared.items() if n not in graph.params],
    )
    proto_graph.sparse_initializer.extend(meta.sparse_initializers)
    model = helper.make_model(
        proto_graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in meta.opsets.items()],
        producer_name=meta.producer_name,
        producer_version=meta.producer_version,
        domain=meta.domain,
        model_version=meta.model_version,
        doc_string=meta.doc_string,
        functions=meta.functions,
    )
    model.ir_version = meta.ir_version
    if meta.metadata:
        helper.set_model_props(model, meta.metadata)
    return model


def body_proto(body: Graph, formal: tuple[str, ...]) -> onnx.GraphProto:
    """A Graph read by :func:`onnx_in.body_graph` back as the subgraph attribute it came from:
    its formal inputs only (the enclosing scope's tensors it reads stay references)."""
    graph = to_model(body).graph
    inputs = {vi.name: vi for vi in graph.input}
    del graph.input[:]
    graph.input.extend(inputs[name] for name in formal)
    return graph


def save(model: onnx.ModelProto, path: str | os.PathLike, external_data: bool = False) -> None:
    """Write atomically and signal-safely (see :mod:`onnxprune.files`): all files land, or none."""
    with atomic_outputs() as out:
        stage_model(out, model, path, external_data)


def stage_model(out: Outputs, model: onnx.ModelProto, path: str | os.PathLike, external_data: bool = False) -> None:
    """Stage ``model`` (and its external data, ``<name>.data``) for ``path`` in a transaction.

    Staging external data in a fresh folder matters: onnx appends tensors to
    an existing data file, so writing over an earlier ``.data`` would grow it
    with stale bytes (and change it before the new model is complete).
    """
    out.stage(path, lambda staged: _write(model, staged, external_data))


def stage_graph(out: Outputs, graph: Graph, path: str | os.PathLike, external_data: bool = False) -> None:
    """Stage ``graph`` for ``path`` written by streaming (:func:`write_graph`); external data
    (``<name>.data``) when asked or when the model would pass protobuf's 2 GB limit."""
    out.stage(path, lambda staged: write_graph(graph, staged, external_data or needs_external_data(graph)))


def needs_external_data(graph: Graph) -> bool:
    """Whether ``graph``'s weights alone pass protobuf's 2 GB limit (the rest is small)."""
    return sum(int(graph.params[n].nbytes) for n in _referenced_names(graph) if n in graph.params) > PROTO_LIMIT


def external_data_path(path: str | os.PathLike) -> Path:
    """Where :func:`save` puts a model's external data (a destination to check, like the model)."""
    path = Path(path)
    return path.parent / f"{path.name}.data"


# Offsets of external tensors are multiples of DATA_ALIGNMENT, and of MAP_ALIGNMENT from MAP_MIN_BYTES on
# (as onnx aligns them): onnxruntime maps such data from the file instead of copying it
DATA_ALIGNMENT = 4096
MAP_ALIGNMENT = 1 << 16  # the allocation granularity of every platform onnxruntime runs on
MAP_MIN_BYTES = 1 << 20
# Weights are written in blocks of at most this many bytes: a lazily read (mapped) weight is
# then read, and a sliced one materialised, one block at a time
WRITE_BLOCK = 1 << 26


def write_graph(graph: Graph, path: str | os.PathLike, external_data: bool = False) -> None:
    """Write ``graph`` to ``path`` without ever holding its serialized weights in memory.

    The model without its large weights (:func:`to_model`, ``Weights.EXTERNAL``) is serialized
    first; each large weight follows, in the graph's order, straight from its array: into
    ``<name>.data`` (``external_data``) or into the model file itself as one more
    ``graph.initializer`` (protobuf merges a repeated message field across occurrences, so the
    file parses as the one model :func:`to_model` would give, tensor for tensor).
    """
    path = Path(path)
    model = to_model(graph, Weights.EXTERNAL)
    order = {name: k for k, name in enumerate(graph.params)}
    tensors = []
    for tensor in sorted(model.graph.initializer, key=lambda t: order.get(t.name, len(order))):
        tensors.append(onnx.TensorProto())
        tensors[-1].CopyFrom(tensor)  # placeholders and small tensors only
    del model.graph.initializer[:]
    large = {t.name for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL}
    if external_data:
        data = external_data_path(path)
        with open(data, "wb") as stream:
            for tensor in tensors:
                if tensor.name in large:
                    _write_external(stream, tensor, graph.params[tensor.name], data.name)
        model.graph.initializer.extend(tensors)
        with open(path, "wb") as stream:
            stream.write(model.SerializeToString())
        return
    with open(path, "wb") as stream:
        stream.write(model.SerializeToString())
        for tensor in tensors:
            if tensor.name in large:
                _write_inline(stream, tensor, graph.params[tensor.name])
            else:
                stream.write(_as_initializer(tensor.SerializeToString()))


def _write_external(stream, tensor: onnx.TensorProto, array, location: str) -> None:
    """Append ``array`` to the data file at the next aligned offset; point ``tensor`` at it."""
    nbytes = int(np.prod(tensor.dims, dtype=np.int64)) * np.dtype(array.dtype).itemsize
    align = MAP_ALIGNMENT if nbytes >= MAP_MIN_BYTES else DATA_ALIGNMENT
    offset = -(-stream.tell() // align) * align
    stream.write(bytes(offset - stream.tell()))
    length = _write_array(stream, array)
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _write_array(stream, array) -> int:
    """Write ``array``'s bytes (little-endian, row-major) block by block; return how many.

    A mapped weight's pages are given back after each block (:func:`weights.release`), and a block
    of zero bytes is skipped over rather than written (the file reads the same, and a model of
    zeros, as in the tests, stays sparse on disk)."""
    array = np.asarray(array) if not isinstance(array, np.ndarray) else array
    little = array.dtype.newbyteorder("<")
    if array.ndim == 0:
        array = array.reshape(1)
    rows = max(1, WRITE_BLOCK // max(1, array[0].nbytes if array.shape[0] else 1))
    written = 0
    for start in range(0, array.shape[0], rows):
        part = array[start:start + rows]
        block = np.ascontiguousarray(part, dtype=little)
        if block.view(np.uint8).any():
            stream.write(memoryview(block).cast("B"))
        else:
            stream.seek(block.nbytes, os.SEEK_CUR)
        written += block.nbytes
        weights.release(part)
    stream.truncate()  # a file that ends in skipped zeros still has its full length
    return written


# Wire-format tags (field number << 3 | 2: length-delimited) of the fields written by hand
_TAG_GRAPH = 7 << 3 | 2  # ModelProto.graph
_TAG_INITIALIZER = 5 << 3 | 2  # GraphProto.initializer
_TAG_RAW_DATA = 9 << 3 | 2  # TensorProto.raw_data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _as_initializer(tensor_bytes: bytes, tail: int = 0) -> bytes:
    """The header of ``ModelProto{graph{initializer{<tensor_bytes> + tail more bytes}}}``."""
    size = len(tensor_bytes) + tail
    inner = bytes([_TAG_INITIALIZER]) + _varint(size)
    return bytes([_TAG_GRAPH]) + _varint(len(inner) + size) + inner + tensor_bytes


def _write_inline(stream, placeholder: onnx.TensorProto, array) -> None:
    """One initializer with its data in the model file: the tensor's fields, then raw_data streamed."""
    header = onnx.TensorProto(name=placeholder.name, data_type=placeholder.data_type, dims=placeholder.dims)
    nbytes = int(np.prod(placeholder.dims, dtype=np.int64)) * np.dtype(array.dtype).itemsize
    raw = bytes([_TAG_RAW_DATA]) + _varint(nbytes)
    stream.write(_as_initializer(header.SerializeToString() + raw, nbytes))
    if _write_array(stream, array) != nbytes:
        raise AssertionError(f"tensor {placeholder.name}: wrote a size other than its dims say")


def _write(model: onnx.ModelProto, staged: Path, external_data: bool) -> None:
    if external_data or model.ByteSize() > PROTO_LIMIT:
        onnx.save_model(model, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=external_data_path(staged).name, size_threshold=1024)
    else:
        onnx.save_model(model, str(staged))


def _external_placeholder(name: str, dtype: int, shape: list[int]) -> onnx.TensorProto:
    tensor = onnx.TensorProto(name=name, data_type=dtype, dims=shape, data_location=onnx.TensorProto.EXTERNAL)
    for key, value in (("location", IN_MEMORY), ("offset", "0")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def reference_files(model: onnx.ModelProto, graph: Graph) -> tuple[str | None, set[str]]:
    """Point the placeholders of ``model`` (``Weights.EXTERNAL``) whose weights are mapped unchanged
    from a file (:func:`weights.file_extent`) at that file, so onnxruntime maps them itself instead of
    copying them. Returns (the folder their locations are relative to, their names); the folder is
    onnxruntime's ``session.model_external_initializers_file_folder_path``."""
    extents = {}
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL and tensor.name in graph.params:
            extent = weights.file_extent(graph.params[tensor.name])
            if extent is not None:
                extents[tensor.name] = (tensor, *extent)
    if not extents:
        return None, set()
    folder = os.path.commonpath([os.path.dirname(file) for _, file, _, _ in extents.values()])
    for tensor, file, offset, length in extents.values():
        del tensor.external_data[:]
        for key, value in (("location", os.path.relpath(file, folder)), ("offset", str(offset)),
                           ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return folder, set(extents)


def left_out_weights(graph: Graph) -> list[str]:
    """The weights :func:`to_model` writes without data (INPUTS, EXTERNAL), in a fixed order."""
    return sorted(set(skeleton_weights(graph)) & _referenced_names(graph))


def skeleton_weights(graph: Graph) -> list[str]:
    """The parameters a skeleton leaves out: large floating-point weights, never shape constants."""
    return [name for name, arr in graph.params.items() if is_skeleton_weight(arr.dtype, arr.size)]


def _referenced_names(graph: Graph) -> set[str]:
    names = {v.name for v in graph.outputs} | {v.name for v in graph.inputs}
    for node in graph.nodes:
        names.update(node.inputs)
        names.update(node.implicit_inputs)
    return names


def node_proto(node: Node) -> onnx.NodeProto:
    proto = helper.make_node(node.op_type, node.inputs, node.outputs, name=node.name,
                             domain=node.domain or None, doc_string=node.doc or None)
    for key, value in node.attrs.items():
        proto.attribute.append(helper.make_attribute(key, value, attr_type=node.attr_types.get(key)))
    return proto


def _value_info(value: Value) -> onnx.ValueInfoProto:
    if value.shape is None:
        return helper.make_tensor_value_info(value.name, value.dtype, None)
    return helper.make_tensor_value_info(value.name, value.dtype, list(value.shape))
