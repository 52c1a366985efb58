"""Tiny ONNX graph builder for tests (no torch needed).

Builds graphs that look like PyTorch exports: Conv/BN/activation chains,
Flatten -> Gemm(transB=1) heads, seeded random weights scaled so that
activations stay O(1) through deep nets.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference


class GraphBuilder:
    """Incrementally build an ONNX model; all layer helpers return tensor names."""

    def __init__(self, opset: int = 17, seed: int = 0, name: str = "test"):
        self.opset = opset
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[str] = []
        self.inits: list[onnx.TensorProto] = []
        self._shapes: dict[str, list] = {}
        self._counter: dict[str, int] = {}
        self._names: set[str] = set()

    # ---- naming -------------------------------------------------------
    def _fresh(self, prefix: str) -> str:
        while True:
            k = self._counter.get(prefix, 0)
            self._counter[prefix] = k + 1
            cand = f"{prefix}_{k}"
            if cand not in self._names:
                self._names.add(cand)
                return cand

    def _claim(self, name: str | None, prefix: str) -> str:
        if name is None:
            return self._fresh(prefix)
        if name in self._names:
            raise ValueError(f"duplicate name {name!r}")
        self._names.add(name)
        return name

    # ---- primitives -----------------------------------------------------
    def input(self, name, shape, dtype=np.float32) -> str:
        """Add a graph input with a static shape."""
        self._claim(name, "input")
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        self._shapes[name] = list(shape)
        return name

    def output(self, name_or_names):
        """Mark tensor(s) as graph outputs (types/shapes filled in by build())."""
        names = [name_or_names] if isinstance(name_or_names, str) else list(name_or_names)
        self.outputs.extend(names)

    def param(self, value_or_shape, name=None, scale=0.5) -> str:
        """Float32 initializer; a shape (tuple/list of ints) gives randn*scale."""
        if isinstance(value_or_shape, (tuple, list)) and all(
            isinstance(d, (int, np.integer)) for d in value_or_shape
        ):
            arr = (self.rng.standard_normal(tuple(value_or_shape)) * scale).astype(np.float32)
        else:
            arr = np.asarray(value_or_shape, dtype=np.float32)
        return self.const(arr, name=name, prefix="param")

    def const(self, array, name=None, prefix="const") -> str:
        """Initializer holding exactly `array` (dtype preserved)."""
        arr = np.asarray(array)
        name = self._claim(name, prefix)
        self.inits.append(numpy_helper.from_array(arr, name))
        self._shapes[name] = list(arr.shape)
        return name

    def op(self, op_type, inputs, n_out=1, domain="", **attrs):
        """Add a node; returns its output name (or a list when n_out > 1)."""
        node_name = self._fresh(op_type)
        outs = [node_name] if n_out == 1 else [f"{node_name}_out{i}" for i in range(n_out)]
        self._names.update(outs)
        self.nodes.append(
            helper.make_node(op_type, list(inputs), outs, name=node_name, domain=domain, **attrs)
        )
        return outs[0] if n_out == 1 else outs

    def rename(self, old, new) -> str:
        """Rename a node-produced tensor (e.g. to give graph outputs stable names)."""
        self._claim(new, "")
        for node in self.nodes:
            for seq in (node.input, node.output):
                for i, t in enumerate(seq):
                    if t == old:
                        seq[i] = new
        self.outputs = [new if o == old else o for o in self.outputs]
        if old in self._shapes:
            self._shapes[new] = self._shapes.pop(old)
        return new

    # ---- shapes ---------------------------------------------------------
    def _partial_model(self, outputs) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, outputs, self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="onnxprune-tests"
        )
        model.ir_version = 8
        return model

    def shape_of(self, name) -> list:
        """Static shape of a tensor, via ONNX shape inference on the partial graph."""
        if name not in self._shapes:
            inferred = shape_inference.infer_shapes(self._partial_model([]), strict_mode=True)
            for vi in inferred.graph.value_info:
                dims = [d.dim_value if d.HasField("dim_value") else None
                        for d in vi.type.tensor_type.shape.dim]
                self._shapes[vi.name] = dims
        if name not in self._shapes:
            raise KeyError(f"no inferred shape for {name!r}")
        return self._shapes[name]

    # ---- layers ---------------------------------------------------------
    def conv(self, x, cout, k=3, stride=1, pad=None, group=1, bias=True, dilation=1) -> str:
        cin = self.shape_of(x)[1]
        pad = (k // 2) * dilation if pad is None else pad
        fan_in = (cin // group) * k * k
        w = self.param((cout, cin // group, k, k), scale=1.0 / np.sqrt(fan_in))
        ins = [x, w] + ([self.param((cout,), scale=0.1)] if bias else [])
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad] * 4, group=group, dilations=[dilation, dilation])

    def conv_transpose(self, x, cout, k=2, stride=2, bias=True) -> str:
        cin = self.shape_of(x)[1]
        w = self.param((cin, cout, k, k), scale=1.0 / np.sqrt(cin * k * k / (stride * stride)))
        ins = [x, w] + ([self.param((cout,), scale=0.1)] if bias else [])
        return self.op("ConvTranspose", ins, kernel_shape=[k, k], strides=[stride, stride])

    def bn(self, x) -> str:
        c = self.shape_of(x)[1]
        u = lambda: self.rng.uniform(0.5, 1.5, c).astype(np.float32)  # noqa: E731
        gamma, beta = self.param(u()), self.param((c,), scale=0.1)
        mean, var = self.param((c,), scale=0.1), self.param(u())
        return self.op("BatchNormalization", [x, gamma, beta, mean, var], epsilon=1e-5, momentum=0.9)

    def relu(self, x) -> str:
        return self.op("Relu", [x])

    def silu(self, x) -> str:
        return self.op("Mul", [x, self.op("Sigmoid", [x])])

    def hardswish(self, x) -> str:
        return self.op("HardSwish", [x])

    def relu6(self, x) -> str:
        lo = self.const(np.array(0.0, np.float32))
        hi = self.const(np.array(6.0, np.float32))
        return self.op("Clip", [x, lo, hi])

    def gemm(self, x, nout, transB=1, bias=True) -> str:
        nin = self.shape_of(x)[1]
        shape = (nout, nin) if transB else (nin, nout)
        ins = [x, self.param(shape, scale=1.0 / np.sqrt(nin))]
        if bias:
            ins.append(self.param((nout,), scale=0.1))
        return self.op("Gemm", ins, alpha=1.0, beta=1.0, transB=transB)

    # ---- finalize -------------------------------------------------------
    def build(self, check=True) -> onnx.ModelProto:
        """Assemble the model; outputs get elem type/shape from shape inference."""
        inferred = shape_inference.infer_shapes(self._partial_model([]), strict_mode=True)
        vis = {vi.name: vi for vi in inferred.graph.value_info}
        vis.update({vi.name: vi for vi in self.inputs})
        missing = [o for o in self.outputs if o not in vis]
        if missing:
            raise ValueError(f"could not infer type of outputs {missing}")
        model = self._partial_model([vis[o] for o in self.outputs])
        if check:
            onnx.checker.check_model(model, full_check=True)
        return model
