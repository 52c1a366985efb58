"""Every tensor's shape before analysis: channel dims concrete, batch/sequence dims symbolic.

Exports compute Reshape/Expand targets at run time (Shape -> Gather -> Concat),
which onnx's own inference does not always follow. onnxruntime's symbolic shape
inference does, symbolically in batch and sequence length, but slowly (sympy):
it runs at most once per model, only where onnx's inference leaves holes and
the model has dynamic dims; a model with static inputs has its holes observed
by running what computes them, and shapes after a rewrite are carried
(onnx_in.refresh). Rules see a symbolic dim as a :class:`SymDim`: an ``int`` that
holds a stand-in value (so row-major products and sizes keep working) and the
symbol's name (so the engine never prunes it, and rewrites never write the
stand-in into the model). Two SymDims are equal when their symbols are; a
SymDim never equals a plain int, so a stand-in cannot pass for a channel count.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

# Stand-in values for dims that are symbolic in the model: leading (batch) dims
# of graph inputs are read as 1, every other symbolic dim as SEQUENCE_STAND_IN.
SEQUENCE_STAND_IN = 8
# Largest integer tensor whose value analysis keeps (shape arithmetic, not data).
MAX_KNOWN_ELEMENTS = 64


class SymDim(int):
    """A symbolic dimension analysed at a stand-in value."""

    symbol: str

    def __new__(cls, symbol: str, value: int):
        dim = super().__new__(cls, int(value))
        dim.symbol = str(symbol)
        return dim

    def __eq__(self, other):
        return isinstance(other, SymDim) and other.symbol == self.symbol

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(("sym", self.symbol))

    def __repr__(self):
        return f"{self.symbol}(={int(self)})"

    def __reduce__(self):
        return (SymDim, (self.symbol, int(self)))


def is_symbolic(dim) -> bool:
    return isinstance(dim, SymDim)


# Weights of at least this many elements are left out of the model shapes are inferred on.
SKELETON_MIN_ELEMENTS = 1024


def is_skeleton_weight(dtype: np.dtype, size: int) -> bool:
    """Large floating-point weights: no shape is ever computed from their values."""
    return np.dtype(dtype).kind in "fc" and size >= SKELETON_MIN_ELEMENTS


def skeleton(model: onnx.ModelProto) -> tuple[onnx.ModelProto, set[str]]:
    """``model`` with its large weights declared as typed graph inputs instead of held as data.

    Shape inference gives the same shapes on it, at a fraction of the memory:
    onnx's inference serializes the whole model, and every analysis copy below
    copies it again. Returns the skeleton and the names of the weights left out.
    """
    graph = model.graph
    left_out = [t for t in graph.initializer
                if t.data_type and is_skeleton_weight(onnx.helper.tensor_dtype_to_np_dtype(t.data_type),
                                                      int(np.prod(t.dims, dtype=np.int64)))]
    if not left_out:
        return model, set()
    names = {t.name for t in left_out}
    declared = {vi.name for vi in graph.input}
    inputs = list(graph.input) + [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                                  for t in left_out if t.name not in declared]
    work = onnx.helper.make_model(
        onnx.helper.make_graph(list(graph.node), graph.name, inputs, list(graph.output),
                               [t for t in graph.initializer if t.name not in names],
                               value_info=list(graph.value_info), sparse_initializer=list(graph.sparse_initializer)),
        opset_imports=list(model.opset_import), functions=list(model.functions))
    work.ir_version = model.ir_version
    return work, names


def stand_ins(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None,
              sequence: int = SEQUENCE_STAND_IN) -> dict[str, list[int]]:
    """Concrete input shapes to analyse at: the user's, else 1 for a dynamic dim 0, SEQUENCE_STAND_IN elsewhere.

    A named symbol takes one value in every input (a GCN's ``nodes`` in x [nodes, F] and
    adj [nodes, nodes] must agree, or A @ X has no shape): the value a user's shape gives it,
    else 1 only where it is nothing but a leading dim, else SEQUENCE_STAND_IN.
    """
    shapes = dict(input_shapes or {})
    initializers = {t.name for t in model.graph.initializer}
    pending, symbols = [], {}
    for vi in model.graph.input:
        if vi.name in initializers or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if vi.name in shapes:
            for d, value in zip(dims, shapes[vi.name]):
                if d.dim_param:
                    symbols.setdefault(d.dim_param, int(value))
        elif not all(d.HasField("dim_value") for d in dims):
            pending.append(vi)
    leading_only = {}
    for vi in pending:
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.dim_param:
                leading_only[d.dim_param] = leading_only.get(d.dim_param, True) and i == 0
    for vi in pending:
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else
                           symbols.get(d.dim_param) or (1 if (leading_only[d.dim_param] if d.dim_param else i == 0)
                                                        else sequence)
                           for i, d in enumerate(vi.type.tensor_type.shape.dim)]
    return shapes


def _with_inputs(model: onnx.ModelProto, shapes: dict[str, list]) -> onnx.ModelProto:
    """A copy with the given input dims (ints, or strings for symbols) and no value_info."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    graph_inputs = {i.name: i for i in work.graph.input}
    for name, dims in shapes.items():
        shape = graph_inputs[name].type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            if isinstance(d, str):
                shape.dim.add().dim_param = d
            else:
                shape.dim.add().dim_value = int(d)
    del work.graph.value_info[:]
    return work


def _symbolic_inputs(model: onnx.ModelProto) -> dict[str, list]:
    """Input dims as declared, with a name for every unnamed dynamic dim."""
    shapes, initializers = {}, {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in initializers or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = []
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{vi.name}_dim{i}"))
        shapes[vi.name] = dims
    return shapes


_SYMBOLIC_MODULE = "onnxprune._ort_symbolic_shape_infer"


def _symbolic_shape_inference():
    """onnxruntime's SymbolicShapeInference class, its module loaded from its file alone: importing
    ``onnxruntime.tools.symbolic_shape_infer`` runs ``onnxruntime.tools``' __init__, which imports torch
    where it is installed (7-13 s of every load that needs symbolic shapes, for nothing)."""
    module = sys.modules.get(_SYMBOLIC_MODULE)
    if module is None:
        spec = importlib.util.find_spec("onnxruntime")
        path = Path(spec.origin).parent / "tools" / "symbolic_shape_infer.py"
        if not path.is_file():
            raise ImportError(f"no {path}")
        loader = importlib.util.spec_from_file_location(_SYMBOLIC_MODULE, path)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)  # raises ImportError without sympy
        sys.modules[_SYMBOLIC_MODULE] = module
        logging.getLogger(_SYMBOLIC_MODULE).setLevel(logging.CRITICAL)
    return module.SymbolicShapeInference


def _ort_infer(model: onnx.ModelProto):
    """(model with value_info, known values of small int tensors, the sympy expression of each dim
    it names) from onnxruntime, or None."""
    try:
        SymbolicShapeInference = _symbolic_shape_inference()
    except ImportError:  # needs sympy
        return None
    try:
        # the loop of SymbolicShapeInference.infer_shapes, without its debug file on failure
        engine = SymbolicShapeInference(2**31 - 1, True, True, 0)
        engine._preprocess(model)
        while engine.run_:
            engine._infer_impl()
        engine._update_output_from_vi()
    except Exception:  # an op it cannot follow: fall back to onnx inference
        return None
    known = {}
    for name, value in engine.sympy_data_.items():
        try:
            array = np.asarray([int(v) for v in np.asarray(value, dtype=object).reshape(-1)], dtype=np.int64)
        except (TypeError, ValueError, OverflowError):  # symbolic entries (or huge sentinels): not a constant
            continue
        if array.size <= MAX_KNOWN_ELEMENTS:
            known[name] = array.reshape(np.shape(value))
    return engine.out_mp_, known, dict(engine.symbolic_dims_)


def _onnx_infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference failing on an exotic op must not stop analysis
        return model


def _value_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, tuple | None]]:
    out = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        tensor_type = vi.type.tensor_type
        shape = None
        if tensor_type.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                          for d in tensor_type.shape.dim)
        out[vi.name] = (tensor_type.elem_type, shape)
    return out


def _infer(model: onnx.ModelProto):
    """onnx's static dims (the spec's word), onnxruntime's symbolic dims where onnx has none.

    onnxruntime's symbolic inference is skipped where onnx's already gives every
    node output a full shape (static CNNs): its sympy simplification can take
    tens of seconds on Resize-heavy models, for nothing new. Returns (shapes,
    known values, {dim name: sympy expression} of the dims onnxruntime named).
    """
    onnx_shapes = _value_shapes(_onnx_infer(model))
    if _complete(model, onnx_shapes):
        return onnx_shapes, {}, {}
    result = _ort_infer(model)
    if result is None:
        return onnx_shapes, {}, {}
    inferred, known, expressions = result
    shapes = _value_shapes(inferred)
    for name in _unknown_op_outputs(model, onnx_shapes):
        shapes.pop(name, None)  # onnxruntime's fallback types them float of rank 0: a guess, left a hole
    for name, (elem, dims) in onnx_shapes.items():
        elem_o, ort_dims = shapes.get(name, (0, None))
        shapes[name] = (elem or elem_o, _prefer_static(dims, ort_dims))
    return shapes, known, expressions


def _unknown_op_outputs(model: onnx.ModelProto, onnx_shapes) -> list[str]:
    """Outputs of ops in other domains that neither onnx nor onnxruntime's symbolic inference knows
    (com.microsoft QLinearConcat, ...): the latter then reports float scalars, which they are not, and
    infers what reads them from that guess. They are left as holes (observed by running the model)."""
    custom = [node for node in model.graph.node if node.domain not in ("", "ai.onnx")]
    if not custom:
        return []
    try:
        known = set(_symbolic_shape_inference()(2**31 - 1, True, True, 0).dispatcher_)
    except Exception:  # another onnxruntime version's internals: trust what it gave
        return []
    guessed = {name for node in custom if node.op_type not in known
               for name in node.output if name and onnx_shapes.get(name, (0, None))[1] is None}
    for node in model.graph.node:  # and what it inferred from those guesses, in topological order
        if guessed.intersection(node.input):
            guessed.update(name for name in node.output if name)
    return sorted(guessed)


def _complete(model: onnx.ModelProto, shapes) -> bool:
    """Every node output has a known element type and rank, each dim a value or one of the
    inputs' own symbols (a symbol onnx invents, ``unk__3``, may be a size onnxruntime knows)."""
    symbols = {d.dim_param for vi in model.graph.input for d in vi.type.tensor_type.shape.dim if d.dim_param}
    for node in model.graph.node:
        for name in node.output:
            if not name:
                continue
            elem, dims = shapes.get(name, (0, None))
            if not elem or dims is None or any(not (isinstance(d, int) and d > 0) and d not in symbols
                                               for d in dims):
                return False
    return True


def _prefer_static(first, second):
    if first is None or (second is not None and len(first) != len(second)):
        return second if second is not None else first
    if second is None:
        return first
    return tuple(a if isinstance(a, int) and a > 0 else (b if b not in (None, 0) else a) for a, b in zip(first, second))


def analysis_shapes(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None):
    """Shapes of every tensor for analysis, and the values of small int tensors known exactly.

    Returns ``(shapes, known)``: ``shapes[name] = (elem_type, dims)`` where a dim
    is an int (static), a :class:`SymDim` (symbolic, with its stand-in), or None;
    ``known[name]`` holds int tensors whose value does not depend on any symbol.
    """
    declared = {vi.name for vi in model.graph.input}
    model, left_out = skeleton(model)
    key = (hashlib.sha256(model.SerializeToString()).hexdigest(),
           repr(sorted((k, list(v)) for k, v in (input_shapes or {}).items())))
    if key not in _CACHE:
        _CACHE[key] = _analysis_shapes(model, input_shapes)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    merged, known = _CACHE[key]
    return {name: shape for name, shape in merged.items() if name not in left_out - declared}, dict(known)


# Analyses of the same model (its skeleton: weights' values never change shapes) in this process:
# loading a model again (sensitivity runs, benchmarks, tests) skips the symbolic inference.
_CACHE: dict[tuple[str, str], tuple[dict, dict]] = {}
_CACHE_SIZE = 8


def static_shapes(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None, moved: bool = False):
    """onnx's own (fast, C++) inference at the stand-in input dims: ``{name: (elem_type, dims)}``,
    or None where the model declares no input shapes to infer from. ``moved``: at other sizes of
    the dynamic dims the user did not fix (each stand-in d at 2d + 1: a dim that is a function of
    them, floor(d / k) included, then moves too), where symbolic dims show by moving."""
    if any(not vi.type.tensor_type.HasField("shape") for vi in model.graph.input):
        return None
    concrete = stand_ins(model, input_shapes)
    if moved:
        concrete = {name: [2 * d + 1 if name not in (input_shapes or {}) and _dynamic(model, name, i) else d
                           for i, d in enumerate(dims)] for name, dims in concrete.items()}
    return _value_shapes(_onnx_infer(_with_inputs(model, concrete) if concrete else model))


def _analysis_shapes(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None):
    """Symbolic inference (the slow part) runs at most once, on the declared dims, and only where onnx's
    leaves holes; the stand-in dims come from onnx's inference at those sizes, then from the symbolic
    dims evaluated at them, and what neither gives is observed by running the model."""
    declared = _symbolic_inputs(model)
    concrete_inputs = stand_ins(model, input_shapes)
    if not concrete_inputs:  # static inputs: no symbol to keep, every hole is observed
        static = _static_inputs(model)
        found = _static_analysis(model, static) if static else None
        if found is not None:
            return found, {}
        symbolic, known, _ = _infer(_with_inputs(model, declared))
        if static:
            _observe_holes(model, static, dict(symbolic), symbolic)
        return symbolic, known
    if input_shapes:  # dims the user fixes are analysed as static
        # ``known`` stays empty here: values known with fixed dims may depend on them (and the
        # inference with the declared dims, which only ``known`` would need, can be slow)
        symbolic, _, expressions = _infer(_with_inputs(model, {**declared, **input_shapes}))
        known = {}
    else:
        symbolic, known, expressions = _infer(_with_inputs(model, declared))
    concrete = _value_shapes(_onnx_infer(_with_inputs(model, concrete_inputs)))
    _evaluate_symbolic(concrete, symbolic, expressions, _symbol_values(declared, concrete_inputs))
    _observe_holes(model, concrete_inputs, concrete, symbolic)
    merged = {}
    for name in set(symbolic) | set(concrete):
        elem, sym = symbolic.get(name, (0, None))
        elem_c, conc = concrete.get(name, (0, None))
        merged[name] = (elem or elem_c, _merge(sym, conc))
    return merged, known


def _static_analysis(model: onnx.ModelProto, static: dict[str, list[int]]) -> dict | None:
    """Shapes of a model whose inputs are all static: onnx's inference, its holes observed by running
    what computes them (once); None where a hole stays open (symbolic inference is then asked)."""
    found = _value_shapes(_onnx_infer(_with_inputs(model, static)))
    holes = _holes(model, found)
    if not holes:
        return found
    types: dict[str, int] = {}
    observed = _observed_shapes(model, static, types, known=found, wanted=holes)
    if any(name not in observed for name in holes):
        return None
    for name in holes:
        found[name] = (found.get(name, (0, None))[0] or types.get(name, 0), observed[name])
    return found


def _holes(model: onnx.ModelProto, found: dict) -> list[str]:
    """Node outputs without a known element type and a full shape of positive dims."""
    return [name for node in model.graph.node for name in node.output
            if name and (not found.get(name, (0, None))[0] or found[name][1] is None
                         or not all(isinstance(d, int) and d > 0 for d in found[name][1]))]


def _symbol_values(declared: dict[str, list], concrete_inputs: dict[str, list[int]]) -> dict[str, int]:
    """The stand-in value of each input symbol."""
    values = {}
    for name, dims in declared.items():
        for d, value in zip(dims, concrete_inputs.get(name, ())):
            if isinstance(d, str):
                values.setdefault(d, int(value))
    return values


def _evaluate_symbolic(concrete: dict, symbolic: dict, expressions: dict, values: dict[str, int]) -> None:
    """Fill (in place) the dims onnx's inference at the stand-in sizes left open with the symbolic
    inference's dims evaluated there: what a second symbolic inference at those sizes would give."""
    cache: dict[str, int | None] = {}

    def value(dim):
        if isinstance(dim, int):
            return dim if dim > 0 else None
        if not isinstance(dim, str):
            return None
        if dim not in cache:
            cache[dim] = values.get(dim) or _evaluate(expressions.get(dim), values)
        return cache[dim]

    for name, (elem_s, sym) in symbolic.items():
        elem, conc = concrete.get(name, (0, None))
        if sym is None or (conc is not None and len(conc) != len(sym)):
            continue
        if conc is not None and all(isinstance(d, int) and d > 0 for d in conc) and elem:
            continue
        dims = tuple(c if isinstance(c, int) and c > 0 else value(s)
                     for c, s in zip(conc if conc is not None else sym, sym))
        if all(d is not None for d in dims):
            concrete[name] = (elem or elem_s, dims)


def _evaluate(expression, values: dict[str, int]) -> int | None:
    """A sympy expression of input symbols at their values (None where another symbol is in it)."""
    if expression is None:
        return None
    try:
        free = {s: values[s.name] for s in expression.free_symbols}
        result = int(expression.subs(free)) if free else int(expression)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return result if result > 0 else None


def _static_inputs(model: onnx.ModelProto) -> dict[str, list[int]] | None:
    initializers = {t.name for t in model.graph.initializer}
    shapes = {}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        if not vi.type.tensor_type.HasField("shape") or not all(d.HasField("dim_value")
                                                                 for d in vi.type.tensor_type.shape.dim):
            return None
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    return shapes


def _observe_holes(model: onnx.ModelProto, concrete_inputs: dict[str, list[int]], concrete: dict, symbolic: dict):
    """Shapes inference left open (computed from run-time values, or of ops it does not know): run the model at
    the stand-in dims and at the dynamic ones plus 1, and take what it gives (in place); dims that moved are
    symbolic."""
    outputs = [n for node in model.graph.node for n in node.output if n]  # ones no inference typed are holes too
    holes = [n for n in dict.fromkeys(list(concrete) + outputs)
             if concrete.get(n, (0, None))[1] is None
             or not all(isinstance(d, int) and d > 0 for d in concrete[n][1])]
    if holes:  # shapes computed from run-time values (Pad amounts, ...): run the model and look
        observed_types: dict[str, int] = {}
        observed = _observed_shapes(model, concrete_inputs, observed_types)
        if observed:
            moved = {k: [d + 1 if _dynamic(model, k, i) else d for i, d in enumerate(v)]
                     for k, v in concrete_inputs.items()}
            again = _observed_shapes(model, moved) if moved != concrete_inputs else observed
            for name in holes:
                if name in observed and name in again and len(observed[name]) == len(again[name]):
                    elem = concrete.get(name, (0, None))[0] or observed_types.get(name, 0)
                    sym = symbolic.get(name, (0, None))[1]
                    concrete[name] = (elem, tuple(a for a in observed[name]))
                    symbolic[name] = (symbolic.get(name, (elem, None))[0] or elem,
                                      tuple(a if a == b else (sym[i] if sym and isinstance(sym[i], str) else f"{name}_d{i}")
                                            for i, (a, b) in enumerate(zip(observed[name], again[name]))))


def _dynamic(model: onnx.ModelProto, name: str, axis: int) -> bool:
    for vi in model.graph.input:
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            return axis < len(dims) and not dims[axis].HasField("dim_value")
    return False


def _observed_shapes(model: onnx.ModelProto, input_shapes: dict[str, list[int]],
                     types_out: dict[str, int] | None = None, known: dict | None = None,
                     wanted: list[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Last resort: run the model once in onnxruntime (zeros in, every intermediate out); outputs of ops
    onnx does not know (contrib ops) are asked for untyped, and their element types go to ``types_out``.

    With ``known`` shapes (at ``input_shapes``) and the ``wanted`` tensors, only what computes those
    runs: large floating-point tensors of known shape are fed as zeros instead of computed (their
    values never make a shape), so a Transformer's matrix products run only where their shapes are
    holes."""
    try:
        import onnxruntime as ort
        work = _with_inputs(model, input_shapes)
        if known is not None and wanted:
            work = _needed_for(work, known, wanted) or work
            types = {name: elem for name, (elem, _) in known.items() if elem}
        else:
            inferred = _onnx_infer(work)
            types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
        declared = {o.name for o in work.graph.output}
        for node in work.graph.node:
            for name in node.output:
                if name and name not in declared:
                    work.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None)
                                             if types.get(name) else onnx.helper.make_empty_tensor_value_info(name))
        feeds = {}
        initializers = {t.name for t in work.graph.initializer}
        for vi in work.graph.input:
            if vi.name in initializers:
                continue
            dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            feeds[vi.name] = np.zeros([d.dim_value for d in vi.type.tensor_type.shape.dim], dtype=dtype)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # shapes, not speed: no spinning threads
        session = ort.InferenceSession(work.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, feeds)))
        if types_out is not None:
            for name, value in values.items():
                if isinstance(value, np.ndarray):
                    types_out[name] = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
        return {name: tuple(int(d) for d in np.shape(value)) for name, value in values.items()}
    except Exception:  # a model onnxruntime cannot run here: keep what inference found
        return {}


def _needed_for(model: onnx.ModelProto, known: dict, wanted: list[str]) -> onnx.ModelProto | None:
    """The nodes of ``model`` that compute ``wanted``, cut at the large floating-point tensors whose
    shapes are ``known`` (graph inputs of the result); None where bodies (If, Loop) read outer names."""
    nodes = list(model.graph.node)
    if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in nodes for attr in node.attribute):
        return None
    producer = {name: i for i, node in enumerate(nodes) for name in node.output if name}

    def cut(name):
        elem, dims = known.get(name, (0, None))
        if not elem or dims is None or not all(isinstance(d, int) and d > 0 for d in dims):
            return False
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
        return dtype.kind in "fc" and int(np.prod(dims)) > MAX_KNOWN_ELEMENTS

    needed, fed, stack = set(), {}, [producer[name] for name in wanted if name in producer]
    while stack:
        index = stack.pop()
        if index in needed:
            continue
        needed.add(index)
        for name in nodes[index].input:
            if name in producer and cut(name):
                fed[name] = known[name]
            elif name in producer:
                stack.append(producer[name])
    graph = model.graph
    used = {name for i in needed for name in nodes[i].input}
    inputs = [vi for vi in graph.input if vi.name in used] + [
        onnx.helper.make_tensor_value_info(name, elem, list(dims)) for name, (elem, dims) in fed.items()]
    work = onnx.helper.make_model(
        onnx.helper.make_graph([nodes[i] for i in sorted(needed)], graph.name, inputs, [],
                               [t for t in graph.initializer if t.name in used]),
        opset_imports=list(model.opset_import), functions=list(model.functions))
    work.ir_version = model.ir_version
    return work


def _merge(sym, conc):
    """Symbolic dims keep their symbol and take the concrete run's value as stand-in."""
    if conc is None:
        return sym
    if sym is None or len(sym) != len(conc):
        return tuple(d if isinstance(d, int) else None for d in conc)
    dims = []
    for s, c in zip(sym, conc):
        if isinstance(s, int) and s > 0:
            dims.append(s)
        elif isinstance(c, int) and c > 0:
            dims.append(SymDim(s or "?", c) if isinstance(s, str) else c)
        else:
            dims.append(None)
    return tuple(dims)
