"""Per-operator rules. Each family module has a ``register(registry)`` function;
:func:`default_registry` registers them all explicitly (no import side effects)."""
from __future__ import annotations

from functools import lru_cache

from onnxprune.registry import Registry

from . import (activation, concat_split, contrib, control, conv, einsum, elementwise, expand, heads_in_batch,
               indexing, layer_bench, linear, nbits, norm, pooling, qlinear, qlinear_contrib, quantize, reduce, resize,
               rnn, shape, source, static_targets)

FAMILIES = (conv, linear, norm, activation, elementwise, pooling, concat_split, shape, resize, reduce, source, rnn,
            indexing, expand, contrib, quantize, qlinear, qlinear_contrib, nbits, einsum, layer_bench, heads_in_batch,
            static_targets, control)


def register_all(registry: Registry) -> Registry:
    for family in FAMILIES:
        family.register(registry)
    return registry


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry with every built-in rule (built once; treat as read-only)."""
    return register_all(Registry())
