"""What a run did, as a dataclass that prints as a short summary or dumps as JSON."""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from .depgraph import DependencyGraph, EndKind, Group
from .attribution import summary_lines
from .latency import LatencyComparison
from .metrics import node_macs
from .plan import Plan
from .rules import Side


@dataclass
class Report:
    input: str
    output: str | None = None
    options: dict = field(default_factory=dict)
    conversions: list[str] = field(default_factory=list)  # what loading changed (opset upgrade, folded weights)
    groups_total: int = 0
    groups_prunable: int = 0
    kinds: dict = field(default_factory=dict)  # prunable groups per kind (Group.kind: heads, head_dim, hidden...)
    groups_blocked: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)  # the prunable groups: kind, width, MACs share, pattern
    barriers: list[dict] = field(default_factory=list)  # blocking reasons, ranked by the MACs and channels they lock
    unanalysed: list[str] = field(default_factory=list)  # why some channels form no group at all
    channels_prunable: int = 0
    channels_removed: int = 0
    subgraphs: list[str] = field(default_factory=list)  # what pruning inside If/Loop/Scan bodies removed
    params_before: int = 0
    params_after: int | None = None
    macs_before: int = 0
    macs_after: int | None = None
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    latency: dict | None = None  # LatencyComparison.to_dict(): medians, ratio, its 95% CI and IQR, runs, threads
    provider: str | None = None
    warnings: list[str] = field(default_factory=list)  # printed as WARNING lines (e.g. not faster than the input)
    valid: dict = field(default_factory=dict)
    decisions: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    budget: list[dict] = field(default_factory=list)  # size-target searches, one per round (targets.py)
    timings_s: dict = field(default_factory=dict)
    recovery: dict | None = None  # RecoveryResult.to_dict(): methods, time, held-out fidelity before/after
    fidelity: dict | None = None  # Fidelity.to_dict() of the written model against the original
    fusion: dict | None = None  # passes.fusion.fusion_report(): merged nodes, dropped ones, refusals with reasons
    # residual blocks (depth pruning): analyze: found (every removable block), refused (joins that
    # are not, with why), note (why none); prune --depth: found (a count), removed (depth.record)
    blocks: dict | None = None
    # activations replaced by the identity (UPDP, --remove-activations): Pruner.remove_activations()
    activations: dict | None = None
    # what bought the speed (attribution.attribute): per recipe step, the latency after it and its
    # change, MACs and cosine likewise, and its items (blocks, widths per layer kind, fusions)
    speed: list[dict] | None = None

    @staticmethod
    def ratio(after, before):
        return None if after is None or not before else after / before

    def to_json(self) -> str:
        data = asdict(self)
        data["params_ratio"] = self.ratio(self.params_after, self.params_before)
        data["macs_ratio"] = self.ratio(self.macs_after, self.macs_before)
        data["latency_ratio"] = (self.latency["ratio"] if self.latency
                                 else self.ratio(self.latency_ms_after, self.latency_ms_before))
        # a script's test: true when the pruned model is not measurably faster (null: latency not measured)
        data["latency_not_faster"] = self.latency["not_faster"] if self.latency else None
        return json.dumps(data, indent=1)

    def record_latency(self, comparison: LatencyComparison, warn: bool = True) -> None:
        """The original (first) and the pruned model (second) timed side by side; warns unless faster
        (``warn``: a fused model, which computes what the original does, is only reported)."""
        self.latency = comparison.to_dict()
        self.latency_ms_before, self.latency_ms_after = comparison.ms_before, comparison.ms_after
        self.provider = comparison.provider
        warning = comparison.warning() if warn else None
        if warning:
            self.warnings.append(warning)


def describe_groups(dg: DependencyGraph, report: Report) -> None:
    """Fill the analysis part: which groups can shrink, and what blocks the others."""
    report.groups_total = len(dg.groups)
    report.kinds, report.groups_blocked = {}, []  # filled afresh (an analysis can be redone at other shapes)
    prunable = dg.prunable_groups()
    report.groups_prunable = len(prunable)
    report.channels_prunable = sum(g.size for g in prunable)
    for g in prunable:
        report.kinds[g.kind] = report.kinds.get(g.kind, 0) + 1
    macs = node_macs(dg.graph, dg.registry)
    total = sum(macs.values())
    producing: dict[str, set[int]] = {}  # node -> prunable groups with its output channels (what a pattern reaches)
    for g in prunable:
        for e in g.ends:
            if e.kind == EndKind.OP and e.port.side == Side.OUT:
                producing.setdefault(e.node, set()).add(g.id)
    report.groups = sorted((_group_row(g, macs, total, producing) for g in prunable),
                           key=lambda r: (-r["macs"], r["group"]))
    barriers: dict[str, dict] = {}
    for g in dg.blocked_groups():
        if any(e.kind == EndKind.PARAM for e in g.ends) and g.size > 1:
            report.groups_blocked.append({"group": g.id, "root": str(g.root), "channels": g.size,
                                          "blocked_by": g.blocked})
            locked = _touched_macs(g, macs)
            for reason in g.blocked:
                row = barriers.setdefault(reason, {"reason": reason, "groups": [], "channels": 0, "macs": 0})
                row["groups"].append(g.id)
                row["channels"] += g.size
                row["macs"] += locked
    for row in barriers.values():
        row["macs_share"] = row["macs"] / total if total else 0.0
    report.barriers = sorted(barriers.values(), key=lambda r: (-r["macs"], -r["channels"], r["reason"]))
    # ends of unknown size join no group, so their reasons (usually a missing --input-shape) show here
    report.unanalysed = sorted({reason for end, reason in dg.barriers.items()
                                if end.kind == EndKind.OP and dg.nx.nodes[end].get("size") is None})


def describe_blocks(pruner, report: Report) -> None:
    """The analysis of depth: every removable residual block with its weights score, and why
    the other joins (or the whole model) offer none."""
    discovery = pruner.blocks()
    params, macs = pruner.params(), pruner.macs()
    found = [dict(item.block.to_dict(params, macs), score=item.scores["weights"])
             for item in pruner.score_blocks(discovery=discovery)]
    report.blocks = {"found": found, "refused": [{"join": r.join, "reason": r.reason} for r in discovery.refused],
                     "note": discovery.why_none()}


def _touched_macs(group: Group, macs: dict[str, int]) -> int:
    """MACs of the nodes the group's channels pass through (input or output side): the MACs that
    shrink with its width (a node between two groups counts in both)."""
    return sum(macs.get(n, 0) for n in {e.node for e in group.ends if e.kind == EndKind.OP})


def _group_row(group: Group, macs: dict[str, int], total: int, producing: dict[str, set[int]]) -> dict:
    """One line of analyze's table: what the group is, and the pattern that names it for --ignore and
    --ratio-for: the name of the node that produces its channels with the most MACs (a layer rather
    than an Identity or Reshape on the way); ``also`` lists other prunable groups the pattern reaches."""
    producers = sorted({e.node for e in group.ends if e.kind == EndKind.OP and e.port.side == Side.OUT},
                       key=str)  # str: a damaged file's name can come through as bytes
    name = max(producers, key=lambda n: macs.get(n, 0)) if producers else None
    pattern = f"^{re.escape(str(name))}$" if name else None
    also = sorted(producing.get(name, set()) - {group.id}) if name else []  # the pattern matches the name only
    touched = _touched_macs(group, macs)
    return {"group": group.id, "root": str(group.root), "kind": group.kind, "width": group.size, "macs": touched,
            "macs_share": touched / total if total else 0.0, "pattern": pattern, "also": also}


def format_groups(report: Report, verbose: bool = False, top: int = 20) -> str:
    """analyze's tables: the prunable groups (largest MACs share first) and the barriers, ranked."""
    lines = []
    if report.groups:
        shown = report.groups if verbose else report.groups[:top]
        lines.append(f"prunable groups (largest MACs share first; --ignore / --ratio-for take the pattern)")
        lines.append(f"  {'group':>5}  {'kind':<8}  {'width':>5}  {'MACs':>6}  pattern")
        for row in shown:
            also = f"  (also groups {', '.join(map(str, row['also']))})" if row["also"] else ""
            lines.append(f"  {row['group']:>5}  {row['kind']:<8}  {row['width']:>5}  {100 * row['macs_share']:>5.1f}%  "
                         f"{row['pattern'] or '(no node root: ' + row['root'] + ')'}{also}")
        if len(shown) < len(report.groups):
            lines.append(f"  ... {len(report.groups) - len(shown)} more (--verbose or --json)")
    if report.barriers:
        shown = report.barriers if verbose else report.barriers[:10]
        lines.append("barriers (what blocks the other groups, ranked by the MACs and channels they lock)")
        for row in shown:
            lines.append(f"  {100 * row['macs_share']:>5.1f}% MACs  {row['channels']:>6} ch  "
                         f"{len(row['groups']):>3} group{'s' if len(row['groups']) > 1 else ' '}  {row['reason']}")
        if len(shown) < len(report.barriers):
            lines.append(f"  ... {len(report.barriers) - len(shown)} more (--verbose or --json)")
    return "\n".join(lines)


def top_barriers(report: Report, n: int = 3) -> str:
    """The main reasons nothing can be pruned, for the one error line."""
    return "; ".join(f"{row['reason']} ({row['channels']} ch in {len(row['groups'])} "
                     f"group{'s' if len(row['groups']) > 1 else ''})" for row in report.barriers[:n])


def record_plan(plan: Plan | None, report: Report, dg: DependencyGraph, rounds: list[Plan] = ()) -> None:
    """The plan on the original graph (``dg``); with --steps, None when the rounds could not be composed."""
    if plan is None:
        report.channels_removed = sum(p.removed_channels for p in rounds)
        report.skipped = [f"--steps: the {len(rounds)} rounds could not be composed into one plan on the "
                          "original graph; per-group decisions are not reported"]
        return
    report.channels_removed = plan.removed_channels
    report.decisions = [{"group": d.group, "root": d.root, "channels": d.size, "removed": list(d.removed),
                         "inexact_through": dg.inexact_nodes(dg.groups[d.group])}
                        for d in plan.decisions]
    report.skipped = list(plan.skipped)


def _count(n) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _before_after(label, before, after, fmt=_count) -> str:
    if after is None:
        return f"{label:<10}{fmt(before)}"
    ratio = Report.ratio(after, before)
    return f"{label:<10}{fmt(before)} -> {fmt(after)}" + (f"  (x{ratio:.3f})" if ratio is not None else "")


def _kinds(kinds: dict) -> str:
    """Prunable groups by kind, where there is more than one kind of channel (Transformers)."""
    if set(kinds) <= {"channels"}:
        return ""
    return "; prunable: " + ", ".join(f"{kind} {n}" for kind, n in kinds.items())


def format_analysis(report: Report, verbose: bool = False) -> str:
    lines = [f"{report.input}"] + [f"input     {note}" for note in report.conversions] + [
             f"groups    {report.groups_total} found, {report.groups_prunable} prunable "
             f"({report.channels_prunable} channels), {len(report.groups_blocked)} blocked" + _kinds(report.kinds),
             _before_after("params", report.params_before, report.params_after),
             _before_after("MACs", report.macs_before, report.macs_after)]
    blocked = report.groups_blocked if verbose else report.groups_blocked[:20]
    for g in blocked:
        lines.append(f"  blocked group {g['group']} ({g['channels']} ch, root {g['root']}): "
                     + "; ".join(g["blocked_by"]))
    if len(blocked) < len(report.groups_blocked):
        lines.append(f"  ... {len(report.groups_blocked) - len(blocked)} more (use --verbose or --report)")
    if report.blocks is not None and isinstance(report.blocks.get("found"), list):
        lines += _block_lines(report.blocks, verbose)
    if report.unanalysed:
        shown = report.unanalysed if verbose else report.unanalysed[:3]
        more = len(report.unanalysed) - len(shown)
        lines.append("  not analysed: " + "; ".join(shown) + (f"; ... {more} more" if more else ""))
    return "\n".join(lines)


def _share(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _block_lines(blocks: dict, verbose: bool) -> list[str]:
    found = blocks["found"]
    if not found:
        return [f"blocks    none removable: {blocks['note']}"]
    lines = [f"blocks    {len(found)} removable residual blocks (--depth N removes the N lowest-scored)"
             + (f"; {len(blocks['refused'])} other joins not removable" if blocks["refused"] else "")]
    shown = found if verbose else found[:30]
    for b in shown:
        lines.append(f"  block {b['id']:<3} join {b['join']}  skip {b['skip']}  {b['nodes']} nodes  "
                     f"params {_share(b['params_share'])}  MACs {_share(b['macs_share'])}  score {b['score']:.4g}")
    if len(shown) < len(found):
        lines.append(f"  ... {len(found) - len(shown)} more (use --verbose or --report)")
    return lines


def _removed_blocks(blocks: dict) -> list[str]:
    removed = blocks["removed"]
    by = removed[0]["score_by"] if removed else "-"
    lines = [f"depth     removed {len(removed)} of {blocks['found']} residual blocks (lowest {by} score)"]
    for b in removed:
        lines.append(f"  block {b['id']} join {b['join']}: MACs {_share(b['macs_share'])}, "
                     f"params {_share(b['params_share'])}, {by} score {b['scores'][by]:.4g}")
    return lines


def _removed_activations(activations: dict) -> list[str]:
    removed = activations["removed"]
    lines = [f"updp      removed {len(removed)} of {activations['candidates']} activations between two layers "
             f"(least output change), {activations['merged']} layers merged"]
    for a in removed:
        lines.append(f"  {a['op']} {a['node']} between {a['between'][0]} and {a['between'][1]}: "
                     f"output change {a['output_change']:.4g}")
    return lines


def _fidelity_text(fidelity: dict) -> str:
    text = f"cosine {fidelity['cosine_worst_output']:.4f}, max |err| {fidelity['max_abs']:.3g}"
    if fidelity.get("top1") is not None:
        text += f", top-1 agreement {100 * fidelity['top1']:.1f}%"
    if fidelity.get("top1_foreground") is not None:
        text += f" ({100 * fidelity['top1_foreground']:.1f}% off the background class)"
    return text


def _recovery_lines(recovery: dict) -> list[str]:
    layers = ", ".join(f"{p['name']} {p['changed']}" for p in recovery["passes"])
    rounds = f" after each of {len(recovery['rounds'])} rounds" if recovery.get("rounds") else ""
    lines = [f"recovery  {'+'.join(recovery['methods'])} on {recovery['fit_samples']} samples{rounds} in "
             f"{recovery['seconds']:.2f}s ({layers})"
             + ("" if recovery["kept"] else "; held-out fidelity got worse: NOT applied")]
    before, after = recovery.get("fidelity_before"), recovery.get("fidelity_after")
    if before and after:
        lines.append(f"fidelity  {_fidelity_text(before)}  (pruned, {recovery['heldout_samples']} held-out samples)")
        lines.append(f"       -> {_fidelity_text(after)}  (recovered)")
    return lines


def _removed_line(report: Report) -> str:
    """What went: blocks and channels (each where any went; channels alone as always)."""
    blocks = len(report.blocks["removed"]) if report.blocks is not None and "removed" in report.blocks else 0
    channels = f"{report.channels_removed} channels in {len(report.decisions)} groups"
    if not blocks:
        return f"removed   {channels}"
    what = f"{blocks} residual block{'s' if blocks != 1 else ''}"
    return f"removed   {what}" + (f", {channels}" if report.channels_removed else "")


def _depth_width_lines(search: dict) -> list[str]:
    """--target-latency's candidates: each depth with its width, timed side by side."""
    lines = [f"searched  {len(search['candidates'])} depths with the width, timed side by side; the best "
             f"{search['proxy']} of the measurably faster ones within the target wins"]
    for k, c in enumerate(search["candidates"]):
        lat = c["latency_ratio"]
        cos = f", cosine {c['cosine']:.4f}" if c["cosine"] is not None else ""
        lines.append(f"  {c['what']:<18} latency x{lat['ratio']:.3f} (95% CI x{lat['ratio_ci95'][0]:.3f}-"
                     f"{lat['ratio_ci95'][1]:.3f}), MACs x{c['macs']:.3f}{cos}"
                     + ("  <- chosen" if k == search["chosen"] else ""))
    return lines


def format_summary(report: Report, verbose: bool = False) -> str:
    lines = [format_analysis(report)]
    if report.blocks is not None and "removed" in report.blocks:
        lines += _removed_blocks(report.blocks)
    if report.activations is not None:
        lines += _removed_activations(report.activations)
    lines.append(_removed_line(report))
    lines += [f"          {note}" for note in report.subgraphs]
    for search in report.budget:
        lines.append(f"target    {search['metric']} x{search['target']:.3f} asked, x{search['reached']:.3f} reached "
                     f"({search['evaluations']} plans measured in {search['seconds']:.2f}s)")
        if search.get("widths"):
            lines.append(f"widths    {search['widths']}")
        if search.get("depth_width"):
            lines += _depth_width_lines(search["depth_width"])
        check = search.get("latency_check")
        if check:
            lat = check["latency_ratio"]
            verdict = "faster" if check["faster"] else "NOT FASTER than the original (no faster plan found at this budget)"
            low, high = lat["ratio_ci95"]
            lines.append(f"speed     x{lat['ratio']:.3f} (95% CI x{low:.3f}-{high:.3f}) of the original's latency "
                         f"({len(check['tried'])} width grid(s) tried): {verdict}")
    kept_hidden = [s for s in report.skipped if "hidden size not pruned" in s]
    if kept_hidden:
        lines.append(f"kept      {len(kept_hidden)} hidden-size groups (normalization statistics span them; "
                     "--prune-hidden prunes them too)")
    inexact = [d for d in report.decisions if d["inexact_through"]]
    if inexact:
        nodes = {n for d in inexact for n in d["inexact_through"]}
        lines.append(f"note      {len(inexact)} groups pass through {len(nodes)} nodes whose statistics span "
                     "channels (e.g. LayerNorm): there, removal is not the same as zeroing (see --report)")
    if report.recovery:
        lines += _recovery_lines(report.recovery)
    if report.fusion:
        lines += _fusion_lines(report.fusion)
    if report.fidelity and not (report.recovery and report.recovery.get("fidelity_after")):
        lines.append(f"fidelity  {_fidelity_text(report.fidelity)}  "
                     f"({report.fidelity['samples']} {report.fidelity['data']})")
    lines = lines + _checked_lines(report)
    if report.speed:  # after the latency line it breaks down
        at = next((k + 1 for k, line in enumerate(lines) if line.startswith("latency ")), len(lines))
        lines[at:at] = summary_lines(report.speed, verbose)
    return "\n".join(lines)


def _fusion_lines(fusion: dict, verbose: bool = False) -> list[str]:
    if fusion["fused"]:
        merged = fusion["merged"]
        by_rewrite = ", ".join(f"{name} {n}" for name, n in fusion["by_rewrite"].items())
        lines = [f"fused     {sum(len(olds) for olds in merged.values())} nodes into {len(merged)}, "
                 f"dropped {len(fusion['dropped'])} ({by_rewrite})"]
    else:
        lines = ["fused     nothing"]
    refused = fusion["refused"]
    shown = refused if verbose else refused[:5]
    lines += [f"  refused {line}" for line in shown]
    if len(shown) < len(refused):
        lines.append(f"  ... {len(refused) - len(shown)} more refused (use --verbose or --report)")
    return lines


def format_fused(report: Report, verbose: bool = False) -> str:
    """The summary of ``onnxprune fuse``."""
    lines = [report.input, _before_after("params", report.params_before, report.params_after),
             _before_after("MACs", report.macs_before, report.macs_after)]
    lines += _fusion_lines(report.fusion, verbose)
    if report.fidelity:
        lines.append(f"fidelity  {_fidelity_text(report.fidelity)}  "
                     f"({report.fidelity['samples']} {report.fidelity['data']})")
    return "\n".join(lines + _checked_lines(report))


def _checked_lines(report: Report) -> list[str]:
    """Latency, validity and the written file: the end of every summary."""
    lines = []
    if report.latency is not None:
        lines.append(_latency_line(LatencyComparison.from_dict(report.latency)))
    elif report.latency_ms_before is not None:
        lines.append(_before_after("latency", report.latency_ms_before, report.latency_ms_after,
                                   lambda v: f"{v:.2f} ms") + f"  [{report.provider}]")
    v = report.valid
    if v:
        parts = [f"checker {'OK' if v.get('checker') else 'FAILED'}"]
        if "onnxruntime" in v:
            parts.append(f"onnxruntime {'OK' if v['onnxruntime'] else 'FAILED'}")
            parts.append("output shapes unchanged" if v.get("output_shapes_unchanged") else "output shapes CHANGED")
        else:
            parts.append("onnxruntime not run (--no-validate)")
        lines.append("valid:    " + ", ".join(parts))
    if report.output:
        lines.append(f"wrote     {report.output}")
    lines += [f"WARNING   {w}" for w in report.warnings]
    return lines


def _latency_line(comparison: LatencyComparison) -> str:
    return (f"{'latency':<10}{comparison.ms_before:.2f} ms -> {comparison.ms_after:.2f} ms  ({comparison.text()})  "
            f"[{comparison.provider}]")


def fidelity_warning(fidelity: dict | None, min_cosine: float) -> str | None:
    """A loud line when the written model's outputs agree less with the original's than asked."""
    if fidelity is None or fidelity["cosine_worst_output"] >= min_cosine:
        return None
    return (f"fidelity cosine {fidelity['cosine_worst_output']:.4f} is below --min-cosine {min_cosine:g}: "
            "the pruned model's outputs differ much from the original's (prune less, or --calib with --recover)")
