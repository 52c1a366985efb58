"""Budget options on the command line: they reach the plan; bad values are one-line errors."""
import json
import os
from pathlib import Path

import pytest

from support.architectures import ARCHITECTURES
from support.small_models import save
from support.cli import call


@pytest.fixture
def resnet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return Path(save(ARCHITECTURES["resnet_basic"](), tmp_path / "resnet.onnx"))


def decisions(path="r.json"):
    return {d["group"]: (d["channels"], len(d["removed"])) for d in json.loads(Path(path).read_text())["decisions"]}


def test_global_max_ratio_and_ratio_for_reach_the_plan(resnet, capfd):
    code, _, err = call(capfd, ["-q", resnet, "o.onnx", "--runs", "0", "--global", "--ratio", "0.5",
                                "--max-ratio", "0.6", "--report", "r.json"])
    assert code == 0, err
    report = json.loads(Path("r.json").read_text())
    assert report["options"]["global_rank"] is True and report["options"]["max_ratio"] == 0.6
    assert all(n <= int(size * 0.6) for size, n in decisions().values())
    assert report["valid"]["onnxruntime"] is True
    code, _, err = call(capfd, ["-q", resnet, "o2.onnx", "--no-validate", "--ratio", "0.5", "--round-to", "1",
                                "--ratio-for", "^Conv_0$=0.25", "--report", "r2.json"])  # exact counts
    assert code == 0, err
    by_group = decisions("r2.json")
    assert by_group[0] == (16, 4) and all(n == size // 2 for g, (size, n) in by_group.items() if g != 0)


def test_the_sensitivity_budget_is_the_default_with_calib_and_a_target(resnet, capfd):
    import numpy as np
    np.savez("calib.npz", input=np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32))
    runs = {"default": [], "uniform": ["--budget", "uniform"], "global": ["--global"]}
    for name, extra in runs.items():
        code, _, err = call(capfd, ["-q", resnet, f"{name}.onnx", "--runs", "0", "--target-macs", "0.6", "--round-to",
                                    "1", "--calib", "calib.npz", "--report", f"{name}.json", *extra])
        assert code == 0, err
    budgets = {name: json.loads(Path(f"{name}.json").read_text()) for name in runs}
    assert {n: r["options"]["budget"] for n, r in budgets.items()} == \
        {"default": "sensitivity", "uniform": "uniform", "global": "global"}
    assert abs(budgets["default"]["budget"][0]["reached"] - 0.6) <= 0.02
    assert decisions("default.json") != decisions("uniform.json")


@pytest.mark.parametrize("options,fragment", [
    (["--budget", "sensitivity", "--target-macs", "0.5"], "--budget sensitivity measures each layer's output error"),
    (["--budget", "sensitivity", "--global"], "--global is --budget global: drop it or --budget sensitivity"),
    (["--max-ratio", "0"], "--max-ratio must be in (0, 1]"),
    (["--ratio-for", "Conv"], "--ratio-for 'Conv': expected REGEX=RATIO"),
    (["--ratio-for", "Conv=1.2"], "--ratio-for Conv=1.2: the ratio must be in [0, 1)"),
    (["--ratio-for", "Conv_([=0.5"], "--ratio-for 'Conv_([': bad regular expression"),
])
def test_bad_budget_options_are_one_line_errors(resnet, capfd, options, fragment):
    code, out, err = call(capfd, [resnet, "out.onnx", *options])
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("onnxprune: error: ") and fragment in err, err
    assert sorted(os.listdir(".")) == ["resnet.onnx"]


def test_target_macs_and_steps_on_the_command_line(resnet, capfd):
    from onnxprune.api import Pruner
    from onnxprune.plan import Plan

    code, out, err = call(capfd, [resnet, "o.onnx", "--runs", "0", "--target-macs", "0.5", "--steps", "2",
                                  "--report", "r.json", "--save-plan", "p.json"])
    assert code == 0, err
    report = json.loads(Path("r.json").read_text())
    assert [round(b["target"], 3) for b in report["budget"]] == [0.75, 0.5]
    assert abs(report["macs_ratio"] - 0.5) <= 0.02 and report["budget"][-1]["within_tolerance"]
    assert "target    macs x0.750 asked, x0.7" in out and "target    macs x0.500 asked, x0." in out
    assert report["options"]["steps"] == 2 and report["options"]["target_macs"] == 0.5
    again = Pruner.load(resnet)  # the saved plan of both rounds, re-applied to the input model
    again.apply(Plan.from_json(Path("p.json").read_text()))
    assert again.macs() == report["macs_after"] and again.params() == report["params_after"]


@pytest.mark.parametrize("options,fragment", [
    (["--target-macs", "0.5", "--target-params", "0.5"], "give one target, not --target-macs and --target-params"),
    (["--target-params", "0"], "--target-params must be a fraction in (0, 1]"),
    (["--target-macs", "0.05", "--max-ratio", "0.2"], "--target-macs 0.05 is out of reach"),
    (["--target-latency", "0.5", "--runs", "0"], "--target-latency needs timed runs"),
    (["--steps", "0"], "--steps must be >= 1"),
])
def test_bad_targets_are_one_line_errors(resnet, capfd, options, fragment):
    code, out, err = call(capfd, ["-q", resnet, "out.onnx", *options])
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("onnxprune: error: ") and fragment in err, err
    assert sorted(os.listdir(".")) == ["resnet.onnx"]


def test_sensitivity_writes_table_json_and_png_and_feeds_prune(tmp_path, monkeypatch, capfd):
    import numpy as np

    from engine.test_sensitivity import two_branches
    monkeypatch.chdir(tmp_path)
    save(two_branches(), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    np.savez("calib.npz", input=rng.standard_normal((12, 3, 8, 8)).astype(np.float32))
    code, out, err = call(capfd, ["sensitivity", "m.onnx", "--calib", "calib.npz", "--ratios", "0.25,0.5",
                                  "--plot", "plots/sens.png", "--mkdir", "--report", "sens.json", "--suggest", "0.5"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["unit", "ch", "r=0.25", "r=0.5"]
    assert {line.split()[0] for line in lines[2:4]} == {"Conv_0", "Conv_1"}
    assert lines[-1].startswith("suggested: --ratio-for '^(?:Conv_")
    assert "[onnxprune] sensitivity: " in err  # the stage line (the live bar shows on terminals only)
    report = json.loads(Path("sens.json").read_text())
    assert report["samples"] == 12 and report["data"].startswith("--calib calib.npz")
    assert [len(u["points"]) for u in report["units"]] == [2, 2]
    assert Path("plots/sens.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in os.listdir("plots") if p.startswith(".")]  # no temp file left
    code, _, err = call(capfd, ["-q", "m.onnx", "o.onnx", "--no-validate", "--ratio", "0.5",
                                "--ratio-from", "sens.json:1.0", "--report", "r.json"])
    assert code == 0, err
    assert {d["group"]: len(d["removed"]) for d in json.loads(Path("r.json").read_text())["decisions"]} == \
        {0: 4, 1: 3}  # every unit within an error of 1: the largest measured ratio (0.5)


@pytest.mark.parametrize("args,fragment", [
    (["sensitivity", "resnet.onnx", "--ratios", "0.5,1.5"], "--ratios '0.5,1.5': expected ratios in (0, 1)"),
    (["sensitivity", "resnet.onnx", "--samples", "0"], "--samples must be >= 1"),
    (["sensitivity", "resnet.onnx", "--plot", "resnet.onnx"], "--plot resnet.onnx is the input file"),
    (["resnet.onnx", "o.onnx", "--ratio-from", "missing.json:0.1"], "--ratio-from missing.json: cannot read"),
    (["resnet.onnx", "o.onnx", "--ratio-from", "sens.json"], "expected SENS.json:MAXERR"),
    (["resnet.onnx", "o.onnx", "--ratio-from", "resnet.onnx:0.1"], "not a sensitivity report"),
])
def test_bad_sensitivity_options_are_one_line_errors(resnet, capfd, args, fragment):
    code, out, err = call(capfd, ["-q", *args])
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("onnxprune: error: ") and fragment in err, err
    assert sorted(os.listdir(".")) == ["resnet.onnx"]


def test_a_target_prune_says_how_its_latency_compares(resnet, capfd, monkeypatch):
    """The speed check on (the suite turns it off): its line and report entry, whatever the timings say."""
    from onnxprune.api import SPEED_CHECK_ENV
    monkeypatch.setenv(SPEED_CHECK_ENV, "1")
    code, out, err = call(capfd, [resnet, "o.onnx", "--runs", "4", "--target-macs", "0.5", "--width-grid", "default",
                                  "--report", "r.json"])
    assert code == 0, err
    check = json.loads(Path("r.json").read_text())["budget"][0]["latency_check"]
    assert 1 <= len(check["tried"]) <= 3 and check["faster"] in (True, False)
    low, high = check["latency_ratio"]["ratio_ci95"]
    assert low <= check["latency_ratio"]["ratio"] <= high
    assert "widths    cpu (default): depthwise " in out  # 8, or finer where the toy widths need it
    speed = [line for line in out.splitlines() if line.startswith("speed     x")]
    assert len(speed) == 1 and ("faster" in speed[0] or "NOT FASTER" in speed[0])
    code, out, err = call(capfd, [resnet, "o2.onnx", "--runs", "0", "--target-macs", "0.5", "--allow-slower",
                                  "--report", "r2.json"])
    assert code == 0 and "latency_check" not in json.loads(Path("r2.json").read_text())["budget"][0]
    assert "speed     x" not in out


def test_width_grid_choices_are_checked(resnet, capfd):
    code, _, err = call(capfd, [resnet, "o.onnx", "--width-grid", "fast"])
    assert code == 2 and err.count("\n") == 1 and "--width-grid" in err
