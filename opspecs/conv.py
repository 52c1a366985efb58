"""Conv and ConvTranspose: input and output channels prune independently.

Both have a matrix view for recovery and data-driven criteria: Conv's rows are
im2col patches (:class:`ConvForm`); a ConvTranspose's output row reads, per
kernel tap, the one input position that scatters into it, or nothing
(:class:`ConvTransposeForm`: rows with zeros where no input lands).

Grouped convs keep equal-size groups: the same in-group positions go in every
group. Depthwise convs (one input channel per group) couple input and output.
"""
from __future__ import annotations

import numpy as np

from onnxprune.mapping import Modulo, Overlap
from onnxprune.rules import IN, OUT, Barrier, Couple, Geometry, Layer, LayerKind, NodeView, OpSpec, Updates

from ._common import unknown_shape
from ._unfold import col2im_rows, conv_pads, im2col, out_sizes, transposed_out_sizes


def _layout(view: NodeView, transposed: bool):
    w = view.shape(IN(1))
    x = view.shape(IN(0))
    if w is None or x is None:
        return None
    group = int(view.attr("group", 1))
    cin = x[1]
    cout = w[1] * group if transposed else w[0]
    return cin, cout, group


def _couple_conv(view: NodeView, port, axes):
    layout = _layout(view, transposed=False)
    if layout is None:
        return unknown_shape(view, IN(1))
    cin, cout, group = layout
    depthwise = group > 1 and cin == group
    per_in, per_out = cin // group, cout // group
    if port == IN(0) and axes == (1,):
        if depthwise:
            return [Couple(OUT(0), (1,), Overlap(per_out, 1))]
        return [Couple(IN(1), (1,), Modulo(per_in))]
    if port == IN(1) and axes == (1,):
        return [] if depthwise else [Couple(IN(0), (1,), Modulo(per_in).inverse())]
    if port in (IN(1), IN(2)) and axes == (0,):
        return [Couple(OUT(0), (1,))]
    if port != OUT(0) or axes != (1,):
        return Barrier(f"Conv cannot prune axes {axes} of {port}")
    links = [Couple(IN(1), (0,))]
    if view.has_input(2):
        links.append(Couple(IN(2), (0,)))
    if depthwise:
        links.append(Couple(IN(0), (1,), Overlap(1, per_out)))
    elif group > 1:
        links.append(Couple(OUT(0), (1,), Modulo(per_out)))
    return links


def _couple_conv_transpose(view: NodeView, port, axes):
    layout = _layout(view, transposed=True)
    if layout is None:
        return unknown_shape(view, IN(1))
    cin, cout, group = layout
    depthwise = group > 1 and cin == group
    per_in, per_out = cin // group, cout // group
    if port == IN(0) and axes == (1,):
        links = [Couple(IN(1), (0,))]
        if depthwise:
            links.append(Couple(OUT(0), (1,), Overlap(per_out, 1)))
        elif group > 1:
            links.append(Couple(IN(0), (1,), Modulo(per_in)))
        return links
    if port == IN(1) and axes == (0,):
        return [Couple(IN(0), (1,))]
    if port == IN(1) and axes == (1,):
        return [Couple(OUT(0), (1,), Modulo(per_out).inverse())] if not depthwise else []
    if port == IN(2) and axes == (0,):
        return [Couple(OUT(0), (1,))]
    if port == OUT(0) and axes == (1,):
        links = [Couple(IN(2), (0,))] if view.has_input(2) else []
        if depthwise:
            return links + [Couple(IN(0), (1,), Overlap(1, per_out))]
        links.append(Couple(IN(1), (1,), Modulo(per_out)))
        if group > 1:
            links.append(Couple(OUT(0), (1,), Modulo(per_out)))
        return links
    return Barrier(f"ConvTranspose cannot prune axes {axes} of {port}")


def _roots(view: NodeView):
    return [(OUT(0), (1,))]


def _rewrite_group(view: NodeView, changes) -> Updates:
    """Depthwise convs lose whole groups; everything else keeps its group count."""
    group = int(view.attr("group", 1))
    x = view.shape(IN(0))
    if group > 1 and x is not None and x[1] == group and IN(0) in changes:
        return Updates(attrs={"group": changes[IN(0)].new_size(1)})
    return Updates()


def _macs_conv(view: NodeView) -> int:
    w, y = view.shape(IN(1)), view.shape(OUT(0))
    if w is None or y is None:
        return 0
    return int(np.prod(y)) * int(np.prod(w[1:]))


def _macs_conv_transpose(view: NodeView) -> int:
    w, x = view.shape(IN(1)), view.shape(IN(0))
    if w is None or x is None:
        return 0
    return int(np.prod(x)) * int(np.prod(w[1:]))


def _layer(view: NodeView) -> Layer | None:
    """Depthwise (one input channel per group), grouped (width per group), 1x1 or kxk."""
    w, x = view.shape(IN(1)), view.shape(IN(0))
    if w is None or x is None or len(x) < 2:
        return None
    group = int(view.attr("group", 1))
    if group > 1 and x[1] == group:
        return Layer(LayerKind.DEPTHWISE)
    if group > 1:
        return Layer(LayerKind.GROUPED, groups=group)
    return Layer(LayerKind.CONV1X1 if all(int(k) == 1 for k in w[2:]) else LayerKind.CONV)


def register(registry) -> None:
    registry.register(OpSpec(("Conv",), _couple_conv, roots=_roots, rewrite=_rewrite_group,
                             macs=_macs_conv, linear=_conv_form, layer=_layer, family="conv"))
    registry.register(OpSpec(("ConvTranspose",), _couple_conv_transpose, roots=_roots,
                             rewrite=_rewrite_group, macs=_macs_conv_transpose, linear=_conv_transpose_form, layer=_layer,
                             family="conv"))


class ConvForm:
    """Conv as a matrix product: weight [C_out, C_in/g, *k] viewed as [g, C_out/g, C_in/g * prod(k)]."""

    input_slot, in_axis, out_axis, can_add_bias = 0, 1, 1, True

    def __init__(self, view: NodeView):
        self.view = view
        self.weight = view.const(1)
        self.groups = int(view.attr("group", 1))
        self.output = view.tensor(OUT(0))
        kernel = self.weight.shape[2:]
        n = len(kernel)
        self.kernel = list(kernel)
        self.strides = tuple(int(s) for s in view.attr("strides", [1] * n))
        self.dilations = [int(d) for d in view.attr("dilations", [1] * n)]
        taps = int(np.prod(kernel))
        self.k_channel = np.repeat(np.arange(self.weight.shape[1]), taps)
        self.k_offset = np.tile(np.arange(taps), self.weight.shape[1])
        x_shape = view.shape(IN(0))
        if x_shape is not None:
            pads = self._pads(x_shape)
        elif view.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID"):  # explicit pads need no input size
            pads = self._pads((0, 0) + (0,) * n)
        else:
            pads = None
        self.pads = None if pads is None else tuple((int(b), int(e)) for b, e in pads)
        self.padded = pads is None or any(b or e for b, e in pads)
        self.displacements = None  # tap t reads position * stride + index(t) * dilation - pad_begin
        if pads is not None:
            index = np.stack(np.unravel_index(np.arange(taps), kernel), axis=1)
            self.displacements = index * np.asarray(self.dilations) - np.asarray([b for b, _ in pads])

    def _pads(self, x_shape):
        return conv_pads(x_shape[2:], self.kernel, self.strides, self.dilations,
                         self.view.attr("pads", None), self.view.attr("auto_pad", "NOTSET"))

    def n_rows(self, x_shape) -> int:
        outs = out_sizes(x_shape[2:], self.kernel, self.strides, self.dilations, self._pads(x_shape))
        return int(x_shape[0] * np.prod(outs))

    def unfold(self, x, rows=None):
        cols = im2col(x, self.kernel, self.strides, self.dilations, self._pads(x.shape), rows)
        return cols.reshape(len(cols), self.groups, -1)

    def out_rows(self, y):
        return np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])

    def matrix(self):
        return self.weight.reshape(self.groups, self.weight.shape[0] // self.groups, -1)

    def bias(self):
        return self.view.const(2) if self.view.has_input(2) else None

    def store(self, matrix, bias, geometry: Geometry | None = None) -> Updates:
        kernel = tuple(self.kernel) if geometry is None else tuple(geometry.kernel)
        shape = (matrix.shape[0] * matrix.shape[1], matrix.shape[2] // int(np.prod(kernel))) + kernel
        inputs = {1: matrix.reshape(shape).astype(self.weight.dtype)}
        if bias is not None:
            inputs[2] = np.asarray(bias, dtype=self.weight.dtype).reshape(-1)
        attrs = {}
        if geometry is not None:
            n = len(kernel)
            attrs = {"kernel_shape": list(kernel), "strides": list(geometry.strides), "dilations": [1] * n,
                     "pads": [b for b, _ in geometry.pads] + [e for _, e in geometry.pads], "auto_pad": None}
        return Updates(attrs=attrs, inputs=inputs)


def _conv_form(view: NodeView):
    """The matrix view where the weight (and bias) are constants and the input is sized."""
    weight = view.const(1)
    if weight is None or weight.ndim < 3 or (view.has_input(2) and view.const(2) is None):
        return None
    return ConvForm(view)


class ConvTransposeForm:
    """ConvTranspose as a matrix product: weight [C_in, C_out/g, *k] viewed as
    [g, C_out/g, C_in/g * prod(k)], columns channel-major like Conv's. A row is one output
    position; its column (c, t) holds the input at the position that tap t scatters into it
    (zero where none does), so every row has its own pattern of zeros: no fixed window, no
    geometry (``displacements`` None) and ``padded`` (a shift of the input is no bias of the
    output: it reaches each output position through different taps)."""

    input_slot, in_axis, out_axis, can_add_bias = 0, 1, 1, True
    displacements, padded = None, True

    def __init__(self, view: NodeView, pads):
        self.view = view
        self.weight = view.const(1)
        self.groups = int(view.attr("group", 1))
        self.output = view.tensor(OUT(0))
        self.kernel = list(self.weight.shape[2:])
        n = len(self.kernel)
        self.strides = tuple(int(s) for s in view.attr("strides", [1] * n))
        self.dilations = [int(d) for d in view.attr("dilations", [1] * n)]
        self.output_padding = [int(p) for p in view.attr("output_padding", [0] * n)]
        self.pads = pads
        taps = int(np.prod(self.kernel))
        self.k_channel = np.repeat(np.arange(self.weight.shape[0] // self.groups), taps)
        self.k_offset = np.tile(np.arange(taps), self.weight.shape[0] // self.groups)

    def _outs(self, x_shape):
        return transposed_out_sizes(x_shape[2:], self.kernel, self.strides, self.dilations, self.pads,
                                    self.output_padding)

    def n_rows(self, x_shape) -> int:
        return int(x_shape[0] * np.prod(self._outs(x_shape)))

    def unfold(self, x, rows=None):
        cols = col2im_rows(x, self.kernel, self.strides, self.dilations, self.pads, self._outs(x.shape), rows)
        return cols.reshape(len(cols), self.groups, -1)

    def out_rows(self, y):
        return np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])

    def matrix(self):
        c_in, per_out = self.weight.shape[:2]
        w = self.weight.reshape(self.groups, c_in // self.groups, per_out, -1)  # [g, C/g, O/g, taps]
        return w.transpose(0, 2, 1, 3).reshape(self.groups, per_out, -1)

    def bias(self):
        return self.view.const(2) if self.view.has_input(2) else None

    def store(self, matrix, bias, geometry: Geometry | None = None) -> Updates:
        if geometry is not None:
            raise ValueError("a transposed convolution takes no new kernel grid")
        groups, per_out, columns = matrix.shape
        taps = int(np.prod(self.kernel))
        w = matrix.reshape(groups, per_out, columns // taps, taps).transpose(0, 2, 1, 3)
        inputs = {1: w.reshape((groups * (columns // taps), per_out) + tuple(self.kernel)).astype(self.weight.dtype)}
        if bias is not None:
            inputs[2] = np.asarray(bias, dtype=self.weight.dtype).reshape(-1)
        return Updates(inputs=inputs)


def _conv_transpose_form(view: NodeView):
    """The matrix view where the weight (and bias) are constants and the padding is explicit
    (no ``output_shape``, no SAME auto_pad: their padding depends on conventions runtimes differ on)."""
    weight = view.const(1)
    if weight is None or weight.ndim < 3 or (view.has_input(2) and view.const(2) is None):
        return None
    if view.attr("output_shape", None) or view.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    n = weight.ndim - 2
    pads = view.attr("pads", None) if view.attr("auto_pad", "NOTSET") == "NOTSET" else None
    pads = tuple((int(pads[i]), int(pads[i + n])) for i in range(n)) if pads else ((0, 0),) * n
    return ConvTransposeForm(view, pads)
