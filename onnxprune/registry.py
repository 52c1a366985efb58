"""Operator rules keyed by (domain, op_type), resolved by opset like onnx's reference ops."""
from __future__ import annotations

from typing import Any, Callable

from .errors import RuleError
from .ir import Graph
from .rules import LayerKind, OpSpec

# a small model of a layer kind at a given width (its input shapes declared), for the width grid's timings
LayerBench = Callable[[int], Graph]


class Registry:
    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], list[OpSpec]] = {}
        self._benches: dict[LayerKind, LayerBench] = {}
        self._passes: list[Callable[["Registry"], Any]] = []

    def register_layer_bench(self, kind: LayerKind, bench: LayerBench) -> None:
        """How to build a small model of a layer kind at a width (see onnxprune.widthgrid)."""
        if kind in self._benches:
            raise RuleError(f"duplicate layer bench for {kind}")
        self._benches[kind] = bench

    def layer_benches(self) -> dict[LayerKind, LayerBench]:
        return dict(self._benches)

    def register_pass(self, make: Callable[["Registry"], Any]) -> None:
        """A graph pass that operator knowledge needs before analysis (a pattern of several nodes that
        no single rule can read, rewritten into one rules can): ``make(registry)`` gives a GraphPass."""
        self._passes.append(make)

    def passes(self) -> list:
        """The registered graph passes, made for this registry, in registration order."""
        return [make(self) for make in self._passes]

    def register(self, spec: OpSpec) -> OpSpec:
        """Add a rule for all its op types, or (on a clash) for none of them."""
        if len(set(spec.op_types)) != len(spec.op_types):
            raise RuleError(f"rule family '{spec.family}' lists an op type twice: {spec.op_types}")
        for op_type in spec.op_types:
            for other in self._specs.get((spec.domain, op_type), []):
                if _overlaps(other, spec):
                    raise RuleError(f"duplicate rule for {spec.domain or 'ai.onnx'}::{op_type} "
                                    f"(opsets {spec.since}..{spec.until or 'newest'}) in family "
                                    f"'{spec.family}', already registered by '{other.family}'")
        for op_type in spec.op_types:
            versions = self._specs.setdefault((spec.domain, op_type), [])
            versions.append(spec)
            versions.sort(key=lambda s: s.since)
        return spec

    def lookup(self, domain: str, op_type: str, opset: int) -> OpSpec | None:
        """The rule with the highest ``since`` <= opset whose range covers opset."""
        best = None
        for spec in self._specs.get((domain or "", op_type), []):
            if spec.since <= opset and (spec.until is None or opset <= spec.until):
                best = spec
        return best

    def op_types(self) -> list[str]:
        return sorted(f"{d}::{t}" if d else t for d, t in self._specs)

    def keys(self) -> list[tuple[str, str]]:
        """Every (domain, op_type) with a rule."""
        return sorted(self._specs)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._specs


def builtin_registry() -> Registry:
    """The registry of every rule in ``onnxprune.opspecs`` (imported late: the rules import the engine)."""
    from .opspecs import default_registry
    return default_registry()


def _overlaps(a: OpSpec, b: OpSpec) -> bool:
    a_end = a.until if a.until is not None else 10**9
    b_end = b.until if b.until is not None else 10**9
    return a.since <= b_end and b.since <= a_end
