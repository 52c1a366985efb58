"""Groups after a channel removal, derived from the groups before it (onnxprune.derive), equal
those a full rebuild finds, and the carried shapes equal a full inference, after every plan of
several rounds, on every test architecture (built CNNs, exported Transformers/RNNs, real-world files)."""
from pathlib import Path

import numpy as np
import pytest

from onnxprune import Pruner, onnx_in
from onnxprune.depgraph import DependencyGraph
from onnxprune.errors import UnsupportedModelError
from onnxprune.options import PruneOptions
from onnxprune.shapes import is_symbolic
from support.architectures import ARCHITECTURES
from support.exported import exported_models

MODELS = Path(__file__).resolve().parents[1] / "models"
REALWORLD = sorted(p.name for p in (MODELS / "realworld").glob("*.onnx"))
ROUNDS = 2


def _load(kind: str, name: str) -> Pruner:
    if kind == "built":
        return Pruner.from_model(ARCHITECTURES[name]())
    path = MODELS / name if kind == "exported" else MODELS / "realworld" / name
    try:
        return Pruner.load(path)
    except UnsupportedModelError as exc:
        pytest.skip(f"not loadable here: {exc}")


def _differences(derived: DependencyGraph, full: DependencyGraph) -> list[str]:
    found = []
    if len(derived.groups) != len(full.groups):
        return [f"{len(derived.groups)} groups derived, {len(full.groups)} rebuilt"]
    for a, b in zip(derived.groups, full.groups):
        if (a.id, a.ends, a.size, a.blocked, a.root, a.traits) != (b.id, b.ends, b.size, b.blocked, b.root, b.traits):
            found.append(f"derived {a.describe()} / rebuilt {b.describe()}")
            continue
        for end in a.ends:
            x, y = a.slots[end], b.slots[end]
            if not (np.array_equal(x.index, y.index) and np.array_equal(x.start, y.start)):
                found.append(f"group {a.id}: channel slots at {end}")
    found += [f"size of {end}" for end in full.nx.nodes if derived.nx.nodes[end]["size"] != full.nx.nodes[end]["size"]]
    return found


CASES = [("built", n) for n in sorted(ARCHITECTURES)] + [("exported", Path(m.path).name) for m in exported_models()] \
    + [("realworld", n) for n in REALWORLD]


@pytest.mark.parametrize("kind,name", CASES, ids=[n for _, n in CASES])
def test_derived_groups_and_shapes_equal_a_full_rebuild_after_every_plan(kind, name):
    pruner = _load(kind, name)
    for step in range(ROUNDS):
        pruner.prune(PruneOptions(ratio=0.3, prune_hidden=True))
        full = DependencyGraph(pruner.graph, pruner.registry, analysis=pruner.analysis)
        assert not _differences(pruner.depgraph, full), (step, _differences(pruner.depgraph, full)[:5])
        inferred = {n: _dims(v.shape) for n, v in onnx_in.reinfer(pruner.graph, pruner.input_shapes).values.items()}
        carried = {n: _dims(v.shape) for n, v in pruner.graph.values.items()}
        assert {n: s for n, s in inferred.items() if n in carried} == \
            {n: s for n, s in carried.items() if n in inferred}, step


def _dims(shape):
    """A shape with its symbolic dims as '?' (inference names its own symbols afresh)."""
    return None if shape is None else tuple("?" if is_symbolic(d) else d for d in shape)


@pytest.mark.parametrize("name", ["resnet_bottleneck", "densenet", "mobilenetv2", "unet", "shufflenetv2"])
def test_a_channel_removal_derives_its_groups_without_reading_the_graph_again(name):
    pruner = Pruner.from_model(ARCHITECTURES[name]())
    pruner.prune(PruneOptions(ratio=0.5))
    assert pruner.depgraph.derived and pruner.depgraph.graph is pruner.graph


def test_a_removal_that_adds_nodes_is_read_again():
    """gpt2_dynamo's shared shape constants get private pruned copies (new nodes and tensors): the
    groups are read again, and agree with a fresh read."""
    pruner = Pruner.load(MODELS / "gpt2_dynamo.onnx")
    nodes = len(pruner.graph.nodes)
    pruner.prune(PruneOptions(ratio=0.3, prune_hidden=True))
    assert len(pruner.graph.nodes) > nodes and not pruner.depgraph.derived
    assert not _differences(pruner.depgraph, DependencyGraph(pruner.graph, pruner.registry, analysis=pruner.analysis))
