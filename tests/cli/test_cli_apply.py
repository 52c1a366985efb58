"""``onnxprune apply PLAN.json IN OUT``: a plan saved with --save-plan re-applied from the command line
(it could be re-applied only from Python): the same model as the prune that saved it, or one line."""
import json
from pathlib import Path

import pytest

from onnxprune.cli import main
from onnxprune.errors import EXIT_BAD_INPUT
from support.small_models import conv_chain, save
from support.cli import call

ROOT = Path(__file__).resolve().parents[2]
RESNET = ROOT / "models" / "resnet_small.onnx"


@pytest.mark.parametrize("options", [["--ratio", "0.4", "--global"], ["--ratio", "0.5", "--steps", "2"]])
def test_apply_writes_the_model_the_saving_prune_wrote(tmp_path, capfd, monkeypatch, options):
    monkeypatch.chdir(tmp_path)
    code, _, err = call(capfd, ["-q", RESNET, "pruned.onnx", *options, "--runs", "0", "--save-plan", "plan.json",
                                "--report", "pruned.json"])
    assert code == 0, err
    code, out, err = call(capfd, ["-q", "apply", "plan.json", RESNET, "applied.onnx", "--runs", "0",
                                  "--report", "applied.json"])
    assert code == 0, err
    assert Path("applied.onnx").read_bytes() == Path("pruned.onnx").read_bytes()
    pruned, applied = (json.loads(Path(f"{n}.json").read_text()) for n in ("pruned", "applied"))
    assert applied["decisions"] == pruned["decisions"] and applied["macs_after"] == pruned["macs_after"]
    assert applied["valid"] == {"checker": True, "onnxruntime": True, "output_shapes_unchanged": True}
    assert "wrote     applied.onnx" in out


def bad_plans(tmp_path):
    """(plan file, expected fragment) for plans that do not fit resnet_small."""
    save(conv_chain(), tmp_path / "small.onnx")
    assert main(["-q", str(tmp_path / "small.onnx"), str(tmp_path / "s.onnx"), "--no-validate",
                 "--save-plan", str(tmp_path / "other.json")]) == 0
    assert main(["-q", str(RESNET), str(tmp_path / "r.onnx"), "--no-validate",
                 "--save-plan", str(tmp_path / "good.json")]) == 0
    good = json.loads((tmp_path / "good.json").read_text())
    every = json.loads(json.dumps(good))
    every["decisions"][0]["removed"] = list(range(every["decisions"][0]["size"]))
    beyond = json.loads(json.dumps(good))
    beyond["decisions"][0]["removed"] = [beyond["decisions"][0]["size"]]
    blocked = json.loads(json.dumps(good))
    blocked["decisions"][0].update(group=12, root="/fc/Gemm.out[0][1]", size=100)
    for name, data in (("every", every), ("beyond", beyond), ("blocked", blocked)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    (tmp_path / "text.json").write_text("not json")
    (tmp_path / "other_json.json").write_text('{"groups": []}')
    return [("other.json", "is 16 channels at /conv1/Conv.out[0][1] (was the plan saved from this model"),
            ("every.json", "its channels are out of range or all of them"),
            ("beyond.json", "its channels are out of range or all of them"),
            ("blocked.json", "the model's group 12 cannot be pruned"),
            ("text.json", "plan text.json: not a plan written by --save-plan"),
            ("other_json.json", "plan other_json.json: not a plan written by --save-plan")]


def test_a_plan_that_does_not_fit_the_model_is_one_line_and_writes_nothing(tmp_path, capfd, monkeypatch):
    cases = bad_plans(tmp_path)
    capfd.readouterr()
    monkeypatch.chdir(tmp_path)
    for plan, fragment in cases:
        code, out, err = call(capfd, ["-q", "apply", plan, RESNET, "out.onnx", "--report", "r.json"])
        assert code == EXIT_BAD_INPUT and out == "", err
        assert len(err.splitlines()) == 1 and err.startswith("onnxprune: error: ") and fragment in err, err
        assert not Path("out.onnx").exists() and not Path("r.json").exists()
    code, _, err = call(capfd, ["-q", "apply", "missing.json", RESNET, "out.onnx"])
    assert code == EXIT_BAD_INPUT and "plan missing.json: no such file" in err
    code, _, err = call(capfd, ["-q", "apply", "good.json", RESNET, "good.json"])
    assert code == EXIT_BAD_INPUT and "output good.json is the plan file" in err
