"""The vocabulary operator rules (in ``opspecs/``) are written in.

A rule answers one question: "if channels along ``axes`` of this port of the
node are removed, which other ports/axes must lose channels too, and which?"
It returns :class:`Couple` links (with an index mapping from the queried end
to the other one), an empty list (the port takes the pruning with nothing
else to do) or a :class:`Barrier` (the node cannot be pruned that way).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np

from .errors import OnnxPruneError, RuleError
from .ir import Graph, Node
from .mapping import IDENTITY, Mapping


class Side(str, Enum):
    """Which list of a node a port indexes (a str, so it prints and serialises as "in"/"out")."""

    IN = "in"
    OUT = "out"

    def __str__(self) -> str:
        return self.value


class Port(NamedTuple):
    side: Side
    slot: int

    def __str__(self) -> str:
        return f"{self.side.value}[{self.slot}]"


def IN(slot: int) -> Port:
    return Port(Side.IN, slot)


def OUT(slot: int) -> Port:
    return Port(Side.OUT, slot)


@dataclass(frozen=True)
class Couple:
    port: Port
    axes: tuple[int, ...]
    mapping: Mapping = IDENTITY


@dataclass(frozen=True)
class Barrier:
    reason: str


class Trait(str, Enum):
    """What a group is, as the rules see it while coupling (options switch each kind on or off)."""

    HEADS = "heads"  # a batch axis shared by two activations of a matmul: attention heads
    STATISTICS = "statistics"  # a normalization's statistics span the channels: the hidden size
    HEAD_DIM = "head_dim"  # the same dims of every attention head (see Analysis.head_dim)


@dataclass(frozen=True)
class Mark:
    """An answer item that couples nothing but tells what the group is (see :class:`Trait`).

    ``Mark(Trait.STATISTICS, ...)`` also means removal is valid but not the same as
    zeroing (the mean/variance run over fewer channels)."""

    trait: Trait
    reason: str = ""


Answer = list[Couple | Mark] | Barrier


@dataclass(frozen=True)
class Analysis:
    """Readings a rule could give either way, chosen for a whole analysis: a tensor axis prunes
    in one unit only (grouping unites every coupling of its channels)."""

    # a Reshape that splits hidden into (heads, head_dim) for attention couples head_dim (the same
    # dims of every head) instead of whole heads
    head_dim: bool = False


@dataclass
class NodeView:
    """Read-only access to one node and the shapes/constants around it."""

    node: Node
    graph: Graph
    analysis: Analysis = Analysis()

    @property
    def opset(self) -> int:
        return self.graph.meta.opsets.get(self.node.domain, self.graph.opset)

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.node.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def tensor(self, port: Port) -> str:
        names = self.node.inputs if port.side == Side.IN else self.node.outputs
        return names[port.slot] if port.slot < len(names) else ""

    def shape(self, port: Port) -> tuple[int, ...] | None:
        name = self.tensor(port)
        return self.graph.shape(name) if name else None

    def rank(self, port: Port) -> int | None:
        name = self.tensor(port)
        if not name:
            return None
        if name in self.graph.params:
            return self.graph.params[name].ndim
        value = self.graph.values.get(name)
        return len(value.shape) if value and value.shape is not None else None

    def const(self, slot: int) -> np.ndarray | None:
        """Value of a constant input (initializer/Constant), else None."""
        name = self.node.inputs[slot] if slot < len(self.node.inputs) else ""
        return self.graph.params.get(name) if name else None

    def from_constants(self, slot: int) -> bool:
        """Whether an input is a parameter or computed from parameters alone (see Graph.constant_derived)."""
        name = self.node.inputs[slot] if slot < len(self.node.inputs) else ""
        return bool(name) and name in self.graph.constant_derived

    def has_input(self, slot: int) -> bool:
        return slot < len(self.node.inputs) and bool(self.node.inputs[slot])

    @property
    def n_inputs(self) -> int:
        return len(self.node.inputs)

    @property
    def n_outputs(self) -> int:
        return len(self.node.outputs)


@dataclass(frozen=True)
class PortChange:
    """How one port's tensor is pruned: kept indices per changed axis."""

    old_shape: tuple[int, ...]
    kept: dict[int, np.ndarray]

    def new_size(self, axis: int) -> int:
        axis = axis % len(self.old_shape)
        return len(self.kept[axis]) if axis in self.kept else self.old_shape[axis]

    @property
    def new_shape(self) -> tuple[int, ...]:
        return tuple(self.new_size(a) for a in range(len(self.old_shape)))


@dataclass
class Updates:
    """What a rule's ``rewrite`` asks the engine to change on its node."""

    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: dict[int, np.ndarray] = field(default_factory=dict)  # new constant input values
    drop_inputs: tuple[int, ...] = ()  # optional inputs to omit (e.g. a zero initial state: omitted means zero)
    # constants further up, by path: ((this node, slot), (producer of that input, slot), ...)
    # ending at the constant; e.g. a piece of the Concat that builds a Reshape target at run
    # time. Nodes on the path that others also read are copied for this node first.
    upstream: dict[tuple[tuple[str, int], ...], np.ndarray] = field(default_factory=dict)
    # recovery only: updates on other nodes a layer's matrix view spans, by node name
    # (the bias Add that follows a MatMul)
    others: dict[str, "Updates"] = field(default_factory=dict)


class LinearForm(Protocol):
    """A layer that is linear in one activation input, seen as a matrix product.

    Recovery (least squares, bias compensation) and data-driven criteria work on
    rows: every output position (batch x spatial, or batch x tokens) is one row;
    ``unfold`` gives the row's inputs ``X[row, g, :]`` (im2col for convolutions)
    and ``out_rows`` the layer's output channels, so that for each group ``g``

        out_rows(y)[:, g*O:(g+1)*O] == unfold(x)[:, g, :] @ matrix()[g].T + bias()[g*O:(g+1)*O]

    Column ``k`` of a group reads input channel ``g * (C_in / groups) + k_channel[k]``
    at kernel offset ``k_offset[k]`` (0 for dense layers).

    Where several layers merge into one (fusion), their geometry says how: output
    position ``p`` (per spatial axis) reads the input at ``p * strides + displacements[t]``
    for kernel offset ``t``, and zero where that falls outside the input (``padded``: some
    positions do). Dense layers have no spatial axes: ``strides == ()`` and one
    displacement of length 0. ``displacements`` is None where the input's size is unknown.
    """

    input_slot: int  # which node input is the activation x
    in_axis: int  # channel axis of x
    out_axis: int  # channel axis of the output tensor
    output: str  # the tensor equal to X @ W.T + b
    groups: int
    k_channel: np.ndarray  # [K] input channel within the group, per column
    k_offset: np.ndarray  # [K] flat kernel offset, per column
    can_add_bias: bool  # whether ``store`` accepts a bias where the layer has none
    strides: tuple[int, ...]
    displacements: np.ndarray | None  # [taps, spatial axes]
    padded: bool
    pads: tuple[tuple[int, int], ...] | None  # (begin, end) zeros per spatial axis; None: input size unknown

    def n_rows(self, x_shape: tuple[int, ...]) -> int: ...

    def unfold(self, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray: ...

    def out_rows(self, y: np.ndarray) -> np.ndarray: ...

    def matrix(self) -> np.ndarray: ...

    def bias(self) -> np.ndarray | None: ...

    def store(self, matrix: np.ndarray, bias: np.ndarray | None, geometry: "Geometry | None" = None) -> "Updates":
        """Write a matrix (and bias) back; a merge may give other sizes than ``matrix()``'s
        ([groups, O'/groups, C'/groups * taps], columns channel-major as ``k_channel``/``k_offset``).
        ``geometry``: a new kernel grid for the taps (two kernels composed into one); only layers
        with spatial axes take one, dense layers raise ValueError."""
        ...


@dataclass(frozen=True)
class Geometry:
    """A layer's kernel grid, per spatial axis: output position ``p`` reads the input at
    ``p * strides - pads[begin] + index`` for every kernel index (dilation 1), zero outside."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]  # (begin, end)


@dataclass(frozen=True)
class RunningStats:
    """Where a normalization keeps statistics of its input (BatchNorm's running mean/var)."""

    input_slot: int  # the normalized activation
    axis: int  # its channel axis
    mean_slot: int
    var_slot: int
    # the affine scale and shift (gamma, beta), where the normalization has them
    scale_slot: int | None = None
    shift_slot: int | None = None


@dataclass(frozen=True)
class NormAffine:
    """The node normalizes its input ``input_slot`` with statistics over the channel axis ``axis``
    alone (LayerNorm, RMSNorm over the hidden size), then scales and shifts each channel by the
    constants at ``scale_slot`` and ``shift_slot`` (vectors along that axis; ``shift_slot`` None:
    the operator has no shift). Pruning channels changes the statistics of the others; recovery
    re-fits the scale and shift to the original's outputs (passes/norms.py)."""

    input_slot: int
    axis: int  # non-negative, of the input and the output
    scale_slot: int
    shift_slot: int | None


@dataclass(frozen=True)
class Affine:
    """The node computes ``x * scale + shift`` elementwise on its input ``input_slot``, with
    constant ``scale`` and ``shift`` that broadcast against ``x`` (numpy rules, right-aligned)
    and leave its shape as it is. Fusion folds such a node into a neighbouring linear layer
    where the constants vary along that layer's channel axis only (a BatchNormalization in
    inference, a Mul or Add by a per-channel constant)."""

    input_slot: int
    scale: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class Stored:
    """How a node reads a quantized constant input (int8 codes, packed int4 nibbles).

    ``real``: the values the node computes with, in float32; it has the stored tensor's sizes
    along every axis a rule couples (a packed axis may differ: nibbles unpacked). Criteria
    score channels on it, so a channel's importance does not depend on its scale.
    ``zero``: the stored tensor (its shape and dtype) with every element at the code that reads
    as 0 (the zero point): masking a channel writes these codes, which is exactly zeroing it
    whatever the scales and zero points are."""

    real: np.ndarray
    zero: np.ndarray


# Role (``OpSpec.param_roles``) of an input that only says how another input is quantized
# (a scale, a zero point): it is pruned with its channels but neither scored nor masked.
QUANT_PARAM = "quant_param"


class LayerKind(str, Enum):
    """What kind of compute layer a node is, as far as which channel counts run fast goes
    (see onnxprune.widthgrid: fast widths are measured per provider and kind)."""

    DEPTHWISE = "depthwise"  # one input channel per group
    GROUPED = "grouped"  # several groups of several channels: widths count per group
    CONV1X1 = "conv1x1"
    CONV = "conv"  # a kxk kernel
    GEMM = "gemm"  # a matrix product with a constant weight (Gemm, MatMul, linear Einsum)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Layer:
    """A node as a compute layer: its kind, the ports whose channel count is its width, and
    how many groups split that width (widths of a grouped layer are counted per group)."""

    kind: LayerKind
    ports: tuple[Port, ...] = (IN(0), OUT(0))
    groups: int = 1


CoupleFn = Callable[[NodeView, Port, tuple[int, ...]], Answer]
RootsFn = Callable[[NodeView], list[tuple[Port, tuple[int, ...]]]]
RewriteFn = Callable[[NodeView, dict[Port, PortChange]], Updates]
MacsFn = Callable[[NodeView], int]


def no_roots(view: NodeView) -> list[tuple[Port, tuple[int, ...]]]:
    return []


@dataclass(frozen=True)
class OpSpec:
    """Everything onnxprune knows about one operator (for an opset range)."""

    op_types: tuple[str, ...]
    couple: CoupleFn
    domain: str = ""
    since: int = 1
    until: int | None = None
    roots: RootsFn = no_roots
    rewrite: RewriteFn | None = None
    macs: MacsFn | None = None
    # input slot -> role name, e.g. {1: "bn_scale"}; criteria look roles up
    param_roles: dict[int, str] = field(default_factory=dict)
    # input slot -> value that makes a channel vanish (used to mask, not prune)
    neutral: dict[int, float] = field(default_factory=dict)
    family: str = ""
    # for ops whose output is known from input shapes alone (Shape, Size): compute it
    fold: Callable[[NodeView], np.ndarray | None] | None = None
    # False for ops that must never be evaluated at analysis time (random generators)
    foldable: bool = True
    # ops that only build a tensor from their operands (fill, broadcast, repeat): with constant operands
    # feeding a layer's weights (zoo AlexNet style) they are folded into parameters, which then prune
    materializes: bool = False
    # for layers reading a quantized weight as codes (see ``stored``): the weight elements the constant
    # at a slot stands for (packed int4 codes unpacked), counted as parameters; None: not a weight
    weight_elements: Callable[[NodeView, int], int | None] | None = None
    # False where removing a channel is not the same as zeroing it (statistics over
    # channels: LayerNorm, LRN); such groups are still valid to prune, and reported
    exact: bool = True
    # for layers linear in an activation (Conv, Gemm, MatMul with a constant weight):
    # their matrix view, used by recovery and data-driven criteria; None where not linear
    linear: Callable[[NodeView], LinearForm | None] | None = None
    # for normalizations with running statistics recovery can re-estimate
    running_stats: RunningStats | None = None
    # for normalizations over the channel axis followed by a per-channel scale and shift (see NormAffine)
    norm_affine: Callable[[NodeView], NormAffine | None] | None = None
    # for ops that are an elementwise affine map of one input by constants (see Affine):
    # their constants, or None where this node is not one (two activations, integer data)
    affine: Callable[[NodeView], Affine | None] | None = None
    # for ops that can hand input 0 through unchanged (Identity; Dropout in inference):
    # None where this node does, else a Barrier saying why not (a Dropout in training mode)
    passthrough: Callable[[NodeView], Barrier | None] | None = None
    # the output is the sum of the inputs (broadcast): a residual join y = s + r, from which the
    # addend r can be dropped (depth pruning replaces the block computing r by its skip path s),
    # and where all have the output's shape, parallel linear branches into it can merge (fusion)
    sum_of_inputs: bool = False
    # an elementwise nonlinearity of input 0 that is the identity on half its range or near it (ReLU,
    # GELU, HardSwish, ReLU6): between two linear layers, UPDP-style pruning may replace it by the
    # identity so that fusion merges the two layers (onnxprune.passes.remove_activations)
    removable_activation: bool = False
    # for compute layers whose channel counts decide which kernels run (Conv, Gemm, MatMul with a
    # constant weight): what kind of layer the node is; None where the node is no such layer
    layer: Callable[[NodeView], Layer | None] | None = None
    # for ops that read a constant input as quantized codes (DequantizeLinear, QLinearConv, packed
    # int4 weights): how, per input slot (see Stored); None where that input is not one
    stored: Callable[[NodeView, int], Stored | None] | None = None
    # the node's outputs are those of one of its subgraphs, chosen at run time (If): bodies.py analyses
    # it flattened, the subgraphs' nodes beside it and their outputs appended to its inputs (one run of
    # outputs per subgraph), so that ``couple`` ties each output to every subgraph's
    selects_body: bool = False
    # for nodes that run their subgraphs repeatedly (a loop): how many times, where the model fixes it
    # (None: not known, the bodies count once); the MACs inside count that many times
    trips: Callable[[NodeView], int | None] | None = None


STRICT_ENV = "ONNXPRUNE_STRICT"


def strict_default() -> bool:
    """Strict mode (a rule's own exception propagates unchanged) when ONNXPRUNE_STRICT is set; the tests set it."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def call_rule(hook: str, node: Node, fn: Callable, *args, strict: bool | None = None):
    """Call a rule hook; a rule that raises is a bug, never a silent barrier.

    Strict (tests): the rule's exception propagates, with a note naming the op
    and node. Otherwise: a one-line :class:`RuleError` (an internal error)
    naming them, so the run stops and writes nothing.
    """
    try:
        return fn(*args)
    except OnnxPruneError:
        raise
    except Exception as exc:
        where = f"the {node.op_type} rule ({hook}) failed on node '{node.name}'"
        if strict_default() if strict is None else strict:
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(f"onnxprune: {where}")
            raise
        message = str(exc).strip().splitlines()
        raise RuleError(f"internal error: {where}: {type(exc).__name__}"
                        f"{': ' + message[0] if message else ''} (a bug in onnxprune; please report it)") from exc
