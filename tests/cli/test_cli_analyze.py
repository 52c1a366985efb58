"""analyze that helps: the prunable groups with the pattern that names each, barriers ranked, --json.

Defect (issue 14): analyze printed counts only, never the groups a user needs for --ignore and
--ratio-for; "nothing to prune ... ('onnxprune analyze' says why)" where analyze did not say why.
"""
import json
import re
from pathlib import Path

import pytest

from onnxprune.errors import EXIT_NOTHING_TO_PRUNE
from support.builder import GraphBuilder
from support.small_models import save
from support.cli import call

ROOT = Path(__file__).resolve().parents[2]
RESNET = ROOT / "models" / "resnet_small.onnx"


def analyze_json(capfd, model):
    code, out, err = call(capfd, ["-q", "analyze", model, "--json"])
    assert code == 0, err
    return json.loads(out)


def test_the_table_lists_every_prunable_group_with_its_pattern(capfd):
    report = analyze_json(capfd, RESNET)
    rows = report["groups"]
    assert len(rows) == report["groups_prunable"] == 12
    assert sum(r["width"] for r in rows) == report["channels_prunable"]
    assert [r["macs"] for r in rows] == sorted((r["macs"] for r in rows), reverse=True)  # largest first
    code, out, _ = call(capfd, ["-q", "analyze", RESNET])
    assert code == 0
    for row in rows:
        assert row["kind"] == "channels" and not row["also"]
        line = f"{row['group']:>5}  channels  {row['width']:>5}  {100 * row['macs_share']:>5.1f}%  {row['pattern']}"
        assert line in out, line


@pytest.mark.parametrize("pick", [0, 5, -1])
def test_a_groups_pattern_and_macs_share_are_what_pruning_it_does(tmp_path, capfd, pick):
    """--ratio-for PATTERN=0.5 alone prunes exactly that group, and removes half the MACs the table
    says scale with its width (every node it touches is a Conv, whose MACs are linear in the channels)."""
    row = analyze_json(capfd, RESNET)["groups"][pick]
    report_path = tmp_path / "r.json"
    code, _, err = call(capfd, ["-q", RESNET, tmp_path / "out.onnx", "--ratio", "0", "--no-validate",
                                "--ratio-for", f"{row['pattern']}=0.5", "--report", report_path])
    assert code == 0, err
    report = json.loads(report_path.read_text())
    removed = {d["group"]: len(d["removed"]) for d in report["decisions"] if d["removed"]}
    assert removed == {row["group"]: row["width"] // 2}
    assert report["macs_before"] - report["macs_after"] == row["macs"] // 2
    assert row["macs_share"] == pytest.approx(row["macs"] / report["macs_before"])


def two_outputs(path):
    """Two convs whose channels are graph outputs (blocked): 10 channels on a 3x3 conv, 4 on a 1x1 one;
    between them a prunable 8-channel group."""
    b = GraphBuilder(seed=2)
    x = b.relu(b.conv(b.input("input", [1, 3, 8, 8]), 8))
    b.output([b.rename(b.conv(x, 10), "wide"), b.rename(b.conv(x, 4, k=1, pad=0), "narrow")])
    return save(b.build(), path)


def test_barriers_are_ranked_by_the_macs_and_channels_they_lock(tmp_path, capfd):
    report = analyze_json(capfd, two_outputs(tmp_path / "m.onnx"))
    barriers = report["barriers"]
    assert [(b["reason"], b["channels"], len(b["groups"])) for b in barriers] == [
        ("graph output wide", 10, 1), ("graph output narrow", 4, 1)]
    assert barriers[0]["macs"] == 10 * 8 * 9 * 64 and barriers[1]["macs"] == 4 * 8 * 64  # the convs' MACs
    assert barriers[0]["macs_share"] == pytest.approx(barriers[0]["macs"] / report["macs_before"])
    code, out, _ = call(capfd, ["-q", "analyze", tmp_path / "m.onnx"])
    lines = out.splitlines()
    start = lines.index("barriers (what blocks the other groups, ranked by the MACs and channels they lock)")
    assert [re.sub(r"\s+", " ", line).strip() for line in lines[start + 1:start + 3]] == [
        f"{100 * barriers[0]['macs_share']:.1f}% MACs 10 ch 1 group graph output wide",
        f"{100 * barriers[1]['macs_share']:.1f}% MACs 4 ch 1 group graph output narrow"]


def test_nothing_to_prune_names_the_top_reasons(tmp_path, capfd):
    b = GraphBuilder(seed=1)
    b.output([b.rename(b.conv(b.input("input", [1, 3, 8, 8]), 6), "y")])
    model = save(b.build(), tmp_path / "m.onnx")
    for args in ([model, tmp_path / "out.onnx"], ["sensitivity", model]):
        code, out, err = call(capfd, ["-q", *args])
        assert code == EXIT_NOTHING_TO_PRUNE and out == ""
        assert err.splitlines() == [f"onnxprune: nothing to prune: {model}: none of its 1 channel groups can be "
                                    f"pruned: graph output y (6 ch in 1 group) ('onnxprune analyze {model}' ranks "
                                    "every reason)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    code, out, _ = call(capfd, ["-q", "analyze", model])
    assert code == 0 and "graph output y" in out.splitlines()[-1]
