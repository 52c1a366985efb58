"""A saved plan that re-applies: every edit made to a model, in order, each on the graph of its time.

A channel plan names groups of the graph it was made on; a removed block names nodes
and tensors of the graph it was removed from; fusion needs no names at all. Each step
is deterministic on its graph (analysis and discovery are), so replaying the steps in
order on the input model rebuilds the same edited model, whatever an earlier step
deleted or renamed. A recipe of one channel step is saved as the plain plan JSON it
always was (readable by :meth:`onnxprune.plan.Plan.from_json`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .errors import PlanError
from .plan import Plan

if TYPE_CHECKING:
    from .api import Pruner

CHANNELS = "channels"
FUSE = "fuse"
BLOCKS = "blocks"  # payload: {"blocks": [{"join": node, "residual": tensor}, ...]} of the graph of its time
ACTIVATIONS = "activations"  # payload: {"nodes": [activation node, ...]} of the graph of its time
# payload: {"subgraphs": [{"where": path, "flattened": bool, "plan": plan}, ...]}, see bodies.Recorded
SUBGRAPHS = "subgraphs"
FORMAT = "onnxprune-recipe"


@dataclass(frozen=True)
class Step:
    """One edit: ``kind`` names a replayer (see :data:`REPLAYERS`), ``payload`` is its JSON data."""

    kind: str
    payload: Any


def _plan_to_dict(plan: Plan) -> dict:
    return json.loads(plan.to_json())


@dataclass
class Recipe:
    steps: list[Step] = field(default_factory=list)

    def add(self, kind: str, payload: Any) -> None:
        self.steps.append(Step(kind, payload))

    def to_json(self) -> str:
        if len(self.steps) == 1 and self.steps[0].kind == CHANNELS:
            return self.steps[0].payload.to_json()
        steps = [{"kind": s.kind, "payload": _plan_to_dict(s.payload) if s.kind == CHANNELS else s.payload}
                 for s in self.steps]
        return json.dumps({"format": FORMAT, "steps": steps}, indent=1)

    @staticmethod
    def from_json(text: str) -> "Recipe":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PlanError(f"not a plan file (bad JSON: {exc})") from None
        if isinstance(data, dict) and "decisions" in data:
            return Recipe([Step(CHANNELS, Plan.from_json(text))])
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("steps"), list):
            raise PlanError("not a plan file (expected a pruning plan or an onnxprune recipe)")
        steps = []
        for item in data["steps"]:
            kind = item.get("kind") if isinstance(item, dict) else None
            if kind not in REPLAYERS:
                raise PlanError(f"plan step {kind!r} is unknown (known: {', '.join(REPLAYERS)})")
            payload = item.get("payload")
            steps.append(Step(kind, Plan.from_json(json.dumps(payload)) if kind == CHANNELS else payload))
        return Recipe(steps)

    def replay(self, pruner: "Pruner") -> None:
        """Apply every step, in order, to ``pruner``'s model (the input the recipe was made on)."""
        for step in self.steps:
            REPLAYERS[step.kind](pruner, step.payload)


def _replay_channels(pruner: "Pruner", plan: Plan) -> None:
    pruner.apply(plan)


def _replay_fuse(pruner: "Pruner", payload: dict) -> None:
    from .options import FuseOptions
    if not isinstance(payload, dict) or not isinstance(payload.get("kinds"), list):
        raise PlanError("plan step 'fuse' has no list of kinds")
    pruner.fuse(FuseOptions(tuple(payload["kinds"])))


def _replay_blocks(pruner: "Pruner", payload: dict) -> None:
    try:
        keys = [(b["join"], b["residual"]) if "residual" in b else _by_skip(pruner, b["join"], b["skip"])
                for b in payload["blocks"]]
    except (TypeError, KeyError):
        raise PlanError("plan step 'blocks': expected {\"blocks\": [{\"join\": ..., \"residual\": ...}]}") from None
    pruner.remove_block_keys(keys)


def _by_skip(pruner: "Pruner", join: str, skip: str) -> tuple[str, str]:
    """The key of a two-input join's block named by its skip input (plans written before blocks
    were keyed by their residual input)."""
    found = [b.key for b in pruner.blocks().blocks if b.join == join and b.skip == skip and b.addends == 2]
    return found[0] if found else (join, skip)


def _replay_activations(pruner: "Pruner", payload: dict) -> None:
    if not isinstance(payload, dict) or not isinstance(payload.get("nodes"), list):
        raise PlanError("plan step 'activations' has no list of nodes")
    pruner.remove_activation_nodes(payload["nodes"])


def subgraphs_payload(plans: dict) -> dict:
    """The plans a subgraph pruning made (bodies.BodyReport.plans) as a recipe step's payload."""
    return {"subgraphs": [{"where": where, "flattened": flattened, "plan": _plan_to_dict(plan)}
                          for (where, flattened), plan in plans.items()]}


def subgraphs_plans(payload: Any) -> dict:
    """(where, flattened) -> Plan, from a subgraphs step's payload."""
    try:
        return {(str(e["where"]), bool(e["flattened"])): Plan.from_json(json.dumps(e["plan"]))
                for e in payload["subgraphs"]}
    except (TypeError, KeyError, ValueError, AttributeError):
        raise PlanError("plan step 'subgraphs': expected {\"subgraphs\": [{\"where\": ..., \"flattened\": ..., "
                        "\"plan\": ...}]}") from None


def _replay_subgraphs(pruner: "Pruner", payload: dict) -> None:
    from .bodies import Recorded  # late: bodies imports the engine
    recorded = Recorded(subgraphs_plans(payload))
    pruner.prune_subgraphs(recorded)
    recorded.check_used()


# kind -> how to re-apply it; passes that can be saved register here
REPLAYERS: dict[str, Callable[["Pruner", Any], None]] = {CHANNELS: _replay_channels, FUSE: _replay_fuse,
                                                        BLOCKS: _replay_blocks, ACTIVATIONS: _replay_activations,
                                                        SUBGRAPHS: _replay_subgraphs}
