"""Issue 7: no lost files, no tracebacks, no surprises from paths, signals or bad data.

One section per class of defect: clashing paths, external data, signals,
option validation, inconsistent models, huge dims, empty graphs, output
discipline, hidden failures. Every CLI failure must be exactly one stderr
line with its documented exit code, leave the folder as it was, and never
touch the input.
"""
import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxprune import Pruner, onnx_in
from onnxprune.cli import main
from onnxprune.depgraph import DependencyGraph
from onnxprune.errors import (EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_NOTHING_TO_PRUNE, EXIT_SIGINT, EXIT_SIGTERM,
                              EXIT_USAGE, InputError, RuleError)
from onnxprune.files import TEST_PAUSE_ENV, PathPlan, atomic_outputs
from onnxprune.plan import GroupDecision, Plan
from onnxprune.registry import Registry, builtin_registry
from onnxprune.rewrite import apply_plan
from onnxprune.rules import STRICT_ENV
from support import PACKAGE_PARENT
from support.builder import GraphBuilder
from support.small_models import conv_chain, save
from support.cli import call

ROOT = Path(__file__).resolve().parents[1]


def assert_fails(code, out, err, expected_code, *fragments, prefix="onnxprune: error: "):
    assert code == expected_code, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err and out == ""
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def listing(folder) -> dict:
    """Every file under ``folder`` with its bytes: 'nothing changed' means this is equal before and after."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(Path(folder).rglob("*"))}


@pytest.fixture
def small(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return Path(save(conv_chain(), tmp_path / "small.onnx"))


# ------------------------------------------------------------------------------------------ paths
@pytest.mark.parametrize("extra,fragment", [
    (["--report", "out.onnx"], "--report out.onnx is also the output file"),
    (["--save-plan", "out.onnx"], "--save-plan out.onnx is also the output file"),
    (["--save-plan", "./sub/../out.onnx"], "is also the output file"),
    (["--report", "r.json", "--save-plan", "r.json"], "--save-plan r.json is also the --report file"),
    (["--report", "out.onnx.data"], "--report out.onnx.data is also the output's external data file"),
])
def test_outputs_that_clash_with_each_other_are_refused(small, capfd, extra, fragment):
    """Defect: --report/--save-plan equal to the output overwrote the pruned model with JSON at exit 0."""
    before = listing(small.parent)
    code, out, err = call(capfd, ["small.onnx", "out.onnx", "--runs", "0", *extra])
    assert_fails(code, out, err, EXIT_BAD_INPUT, fragment)
    assert listing(small.parent) == before


def test_output_equal_to_the_inputs_external_data_is_refused(tmp_path, capfd, monkeypatch):
    """Defect: output m.data overwrote the input's weights (in.onnx with location=m.data)."""
    monkeypatch.chdir(tmp_path)
    onnx.save(conv_chain(), "in.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    before = listing(tmp_path)
    for dst in ("m.data", "./m.data", str(tmp_path / "m.data")):
        code, out, err = call(capfd, ["in.onnx", dst, "--runs", "0"])
        assert_fails(code, out, err, EXIT_BAD_INPUT, f"output {dst} is the input's external data file")
    os.symlink(tmp_path / "m.data", tmp_path / "alias.data")
    code, out, err = call(capfd, ["in.onnx", "out.onnx", "--report", "alias.data"])
    assert_fails(code, out, err, EXIT_BAD_INPUT, "--report alias.data is the input's external data file")
    os.unlink("alias.data")
    assert listing(tmp_path) == before
    assert onnx_in.read_model("in.onnx") is not None  # the input still loads


def test_hard_link_to_the_input_is_the_input(small, capfd):
    os.link("small.onnx", "hard.onnx")
    code, out, err = call(capfd, ["small.onnx", "hard.onnx"])
    assert_fails(code, out, err, EXIT_BAD_INPUT, "output hard.onnx is the input file")


def test_path_plan_declares_reads_and_writes(tmp_path, monkeypatch):
    """The layer other commands use: a folder read (--calib) protects everything inside it."""
    monkeypatch.chdir(tmp_path)
    Path("calib").mkdir()
    Path("m.onnx").write_text("x")
    PathPlan().read("input", "m.onnx").read("--calib", "calib", folder=True).write("--plot", "p.png").check()
    with pytest.raises(InputError, match="--plot calib/p.png is inside the --calib folder calib"):
        PathPlan().read("--calib", "calib", folder=True).write("--plot", "calib/p.png").check()
    with pytest.raises(InputError, match="--calib m.onnx: not a folder"):
        PathPlan().read("--calib", "m.onnx", folder=True).check()
    with pytest.raises(InputError, match="--inputs nope.npz: no such file"):
        PathPlan().read("--inputs", "nope.npz").check()


def test_an_interrupted_transaction_leaves_nothing(tmp_path):
    """All outputs land together or none: a failure after staging removes staging and new folders."""
    with pytest.raises(RuntimeError):
        with atomic_outputs() as out:
            out.stage(tmp_path / "a" / "b" / "x.txt", lambda p: p.write_text("x"))
            out.stage(tmp_path / "y.txt", lambda p: p.write_text("y"))
            raise RuntimeError("later failure")
    assert list(tmp_path.iterdir()) == []
    with atomic_outputs() as out:
        out.stage(tmp_path / "a" / "x.txt", lambda p: p.write_text("x"))
    assert listing(tmp_path) == {"a": None, "a/x.txt": b"x"}


# ---------------------------------------------------------------------------------- external data
def constant_external_model(folder: Path, location: str, value: np.ndarray) -> Path:
    """Conv whose weight is a Constant node with external data at ``location`` (relative to folder)."""
    tensor = numpy_helper.from_array(value, "w")
    offset = 0
    target = folder / location
    if not target.exists():
        target.write_bytes(value.tobytes())
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, val in (("location", location), ("offset", str(offset)), ("length", str(value.nbytes))):
        tensor.external_data.add(key=key, value=val)
    nodes = [helper.make_node("Constant", [], ["w"], value=tensor, name="const_w"),
             helper.make_node("Conv", ["input", "w"], ["y"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["y"], ["r"], name="relu0"),
             helper.make_node("Conv", ["r", "w2"], ["output"], name="conv1")]
    w2 = numpy_helper.from_array(np.ones((2, value.shape[0], 1, 1), np.float32), "w2")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", 1, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", 1, [1, 2, 8, 8])], [w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_constant_external_data_is_read_from_the_models_folder(tmp_path, capfd, monkeypatch):
    """Defect: a Constant's external data was resolved against the current directory."""
    models, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    models.mkdir(), elsewhere.mkdir()
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    path = constant_external_model(models, "w.bin", weight)
    (elsewhere / "w.bin").write_bytes(np.full_like(weight, 7.0).tobytes())  # a decoy in the cwd
    monkeypatch.chdir(elsewhere)
    loaded = onnx_in.read_model(path)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.node[0].attribute[0].t), weight)
    code, out, err = call(capfd, ["-q", path, "out.onnx", "--runs", "0", "--ratio", "0"])
    assert code == 0, err


@pytest.mark.parametrize("location,fragment", [
    ("/etc/hostname", "absolute location '/etc/hostname' refused"),
    ("../outside.bin", "location '../outside.bin' leaves the model's folder"),
    ("link.bin", "location 'link.bin' leaves the model's folder"),
    ("missing.bin", "external data could not be read (missing.bin: no such file next to the model)"),
])
def test_external_locations_that_leave_the_folder_are_refused(tmp_path, capfd, monkeypatch, location, fragment):
    models = tmp_path / "models"
    models.mkdir()
    weight = np.ones((4, 3, 3, 3), np.float32)
    (tmp_path / "outside.bin").write_bytes(weight.tobytes())
    os.symlink(tmp_path / "outside.bin", models / "link.bin")
    if location == "missing.bin":
        path = constant_external_model(models, "w.bin", weight)
        model = onnx.load(str(path), load_external_data=False)
        model.graph.node[0].attribute[0].t.external_data[0].value = "missing.bin"
        onnx.save(model, str(path))
    else:
        path = constant_external_model(models, location, weight)
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    code, out, err = call(capfd, [path, "out.onnx", "--runs", "0"])
    assert_fails(code, out, err, EXIT_BAD_INPUT, fragment)
    assert listing(tmp_path) == before


def test_external_data_in_a_subgraph_is_loaded(tmp_path):
    """Every tensor is resolved by our own reader: If branches too."""
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    (tmp_path / "b.bin").write_bytes(value.tobytes())
    tensor = numpy_helper.from_array(value, "c")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="b.bin")
    branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=tensor)], "then", [],
                               [helper.make_tensor_value_info("c", 1, [2, 3])])
    other = helper.make_graph([helper.make_node("Constant", [], ["d"], value=numpy_helper.from_array(value * 0, "d"))],
                              "else", [], [helper.make_tensor_value_info("d", 1, [2, 3])])
    graph = helper.make_graph([helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=other)], "g",
                              [helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("out", 1, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "if.onnx"))
    loaded = onnx_in.read_model(tmp_path / "if.onnx")
    then = loaded.graph.node[0].attribute[0].g if loaded.graph.node[0].attribute[0].name == "then_branch" \
        else loaded.graph.node[0].attribute[1].g
    np.testing.assert_array_equal(numpy_helper.to_array(then.node[0].attribute[0].t), value)


# --------------------------------------------------------------------------------------- signals
def run_cli(args, cwd, env=None, **kwargs):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]), **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "onnxprune", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("point", ["staging", "commit"])
@pytest.mark.parametrize("signum,code,name", [(signal.SIGINT, EXIT_SIGINT, "SIGINT"),
                                              (signal.SIGTERM, EXIT_SIGTERM, "SIGTERM")])
def test_a_killed_run_leaves_nothing(tmp_path, point, signum, code, name):
    """Defect: SIGTERM during the save left .out.onnx.*.tmp/ with a partial model; SIGINT an empty one.

    The run pauses at a controlled point (a hook read only by tests), is
    signalled there, and must exit 130/143 with one line and no leftovers:
    at "staging" the staging folder exists and is empty, at "commit" every
    output is staged and none is renamed yet.
    """
    save(conv_chain(), tmp_path / "in.onnx")
    before = listing(tmp_path)
    marker = tmp_path.parent / f"{tmp_path.name}.marker"
    proc = run_cli(["in.onnx", "deep/out.onnx", "--runs", "0", "--report", "r.json", "--save-plan", "p.json",
                    "--mkdir"],
                   tmp_path, env={TEST_PAUSE_ENV: f"{point}:{marker}"})
    try:
        deadline = time.monotonic() + 180  # generous: CI machines can be loaded
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached the pause point"
            time.sleep(0.02)
        staged = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
        assert staged, "the pause point is after staging began"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        marker.unlink(missing_ok=True)
    assert proc.returncode == code, err
    assert err.splitlines() == [f"onnxprune: error: interrupted ({name}); nothing written"], err
    assert out == ""
    assert listing(tmp_path) == before  # no output, no staging folder, no new folder; input untouched


# ----------------------------------------------------------------------------- option validation
@pytest.mark.parametrize("options,code,fragment", [
    (["--seed", "-1"], EXIT_USAGE, "--seed must be >= 0, got -1"),
    (["--ratio", "abc"], EXIT_USAGE, "argument --ratio: invalid float value: 'abc' (see 'onnxprune prune --help')"),
    (["--criterion", "l7"], EXIT_USAGE, "argument --criterion: invalid choice: 'l7'"),
    (["--bogus"], EXIT_USAGE, "unrecognized arguments: --bogus"),
    (["--runs", "-1"], EXIT_USAGE, "--runs must be >= 0"),
    (["--memory-limit", "lots"], EXIT_USAGE, "--memory-limit 'lots': expected a size"),
    (["--inputs", "absent.npz"], EXIT_BAD_INPUT, "--inputs absent.npz: no such file"),
])
def test_bad_option_values_are_one_line_with_their_exit_code(small, capfd, options, code, fragment):
    before = listing(small.parent)
    result = call(capfd, ["small.onnx", "out.onnx", *options])
    assert_fails(*result, code, fragment)
    assert listing(small.parent) == before


def test_no_arguments_is_a_one_line_usage_error(capfd):
    assert_fails(*call(capfd, []), EXIT_USAGE, "required: command", "--help")


def test_help_still_prints_usage(capfd):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "usage: onnxprune" in capfd.readouterr().out


@pytest.mark.parametrize("content,fragment", [
    ("corrupt", "cannot read it as an .npz archive"),
    ("wrong-shape", "array input has shape 1x3x9x9, the model wants 1x3x8x8"),
    ("wrong-dtype", "array input is float64, the model wants float32"),
    ("wrong-rank", "array input has shape 3x8x8, the model wants 1x3x8x8"),
    ("missing", "missing arrays for inputs input"),
])
def test_bad_inputs_files_fail_before_analysis(small, capfd, monkeypatch, content, fragment):
    """Defect: a corrupt --inputs .npz was a traceback; a wrong shape was blamed on the pruned model."""
    if content == "corrupt":
        np.savez("good.npz", input=np.zeros((1, 3, 8, 8), np.float32))
        Path("feeds.npz").write_bytes(Path("good.npz").read_bytes()[:200])
        os.unlink("good.npz")  # a real archive, cut short
    else:
        arrays = {"wrong-shape": {"input": np.zeros((1, 3, 9, 9), np.float32)},
                  "wrong-dtype": {"input": np.zeros((1, 3, 8, 8))},
                  "wrong-rank": {"input": np.zeros((3, 8, 8), np.float32)},
                  "missing": {"image": np.zeros((1, 3, 8, 8), np.float32)}}[content]
        np.savez("feeds.npz", **arrays)
    monkeypatch.setattr(Pruner, "from_model", classmethod(lambda *a, **k: pytest.fail("analysis ran")))
    before = listing(small.parent)
    assert_fails(*call(capfd, ["small.onnx", "out.onnx", "--inputs", "feeds.npz"]), EXIT_BAD_INPUT,
                 "--inputs feeds.npz", fragment)
    assert listing(small.parent) == before


def test_missing_provider_fails_before_loading(small, capfd, monkeypatch):
    """Defect: --provider cuda without CUDA was reported only after the whole analysis."""
    from onnxprune import validate as validate_module
    monkeypatch.setattr(validate_module.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(onnx_in, "open_model", lambda *a: pytest.fail("the model was read"))
    assert_fails(*call(capfd, ["small.onnx", "out.onnx", "--provider", "cuda"]), EXIT_BAD_INPUT,
                 "--provider cuda", "onnxruntime-gpu")


# ----------------------------------------------------------------------------- inconsistent models
def with_param(model: onnx.ModelProto, op_type: str, slot: int, value: np.ndarray) -> onnx.ModelProto:
    model = copy.deepcopy(model)
    node = next(n for n in model.graph.node if n.op_type == op_type)
    tensor = next(t for t in model.graph.initializer if t.name == node.input[slot])
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    return model


@pytest.mark.parametrize("op_type,slot,value,options,fragment", [
    ("Gemm", 1, np.ones((10, 5), np.float32), ["--no-validate"],
     "inconsistent model: at node 'Gemm_0' (Gemm), Flatten_0 has 6 channels along axes [1] but"),
    ("Gemm", 1, np.ones((10, 5), np.float32), [], "inconsistent model: at node 'Gemm_0'"),
    ("Gemm", 2, np.ones(7, np.float32), [], "onnxruntime cannot run the input model"),
    ("BatchNormalization", 1, np.ones(9, np.float32), [], "BatchNormalization"),
])
def test_parameters_that_do_not_fit_are_a_clear_error(tmp_path, capfd, monkeypatch, op_type, slot, value, options,
                                                      fragment):
    """Defect: models that pass the checker with mis-sized BN/Gemm parameters crashed in the index mapping."""
    monkeypatch.chdir(tmp_path)
    save(with_param(conv_chain(), op_type, slot, value), "bad.onnx")
    before = listing(tmp_path)
    assert_fails(*call(capfd, ["bad.onnx", "out.onnx", "--runs", "0", *options]), EXIT_BAD_INPUT, fragment)
    assert listing(tmp_path) == before


def test_an_input_model_onnxruntime_cannot_run_is_named_as_such(tmp_path, capfd, monkeypatch):
    """Defect: 'onnxruntime cannot run the pruned model' when the original did not run either."""
    monkeypatch.chdir(tmp_path)
    model = conv_chain()
    model.graph.node[0].attribute.append(helper.make_attribute("auto_pad", "SAME_LOWER"))  # with pads: ORT refuses
    save(model, "m.onnx")
    code, out, err = call(capfd, ["m.onnx", "out.onnx", "--runs", "0"])
    if code == 0:
        pytest.skip("this onnxruntime accepts the model")
    assert_fails(code, out, err, EXIT_BAD_INPUT, "cannot run the input model")


# --------------------------------------------------------------------------------------- huge dims
def test_huge_declared_dims_are_refused_with_the_memory_needed(small, capfd):
    """Defect: --input-shape input:1x3x100000x100000 ended in a MemoryError during validation."""
    before = listing(small.parent)
    code, out, err = call(capfd, ["small.onnx", "out.onnx", "--input-shape", "input:1x3x100000x100000"])
    assert_fails(code, out, err, EXIT_BAD_INPUT, "validation would need about", "GiB", "--memory-limit")
    assert listing(small.parent) == before
    # the limit is the caller's to set
    code, out, err = call(capfd, ["small.onnx", "out.onnx", "--memory-limit", "1K"])
    assert_fails(code, out, err, EXIT_BAD_INPUT, "more than the 1.0 KiB limit")
    assert call(capfd, ["-q", "small.onnx", "out.onnx", "--memory-limit", "none", "--runs", "0"])[0] == 0


def test_huge_flattened_features_do_not_exhaust_memory_in_analysis(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    b = GraphBuilder(seed=0)
    x = b.input("input", [1, 3, 8, 8])
    y = b.op("Flatten", [b.relu(b.conv(x, 4))], axis=1)
    b.output(b.rename(b.gemm(y, 5), "output"))
    model = b.build()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    save(model, "flat.onnx")
    code, out, err = call(capfd, ["-q", "analyze", "flat.onnx", "--input-shape", "input:1x3x100000x100000"])
    assert code == 0 and err == "", err
    assert "Flatten_0 has 40000000000 elements along axes [1], too many to analyse" in out


def test_a_zero_size_dim_is_not_called_dynamic(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = conv_chain()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0
    save(model, "zero.onnx")
    assert_fails(*call(capfd, ["zero.onnx", "out.onnx"]), EXIT_BAD_INPUT, "zero-size dim 0")


# ------------------------------------------------------------------------------------- empty graphs
def trivial_model(kind: str) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", 1, [1, 4])
    if kind == "no-nodes":
        graph = helper.make_graph([], "g", [x], [helper.make_tensor_value_info("x", 1, [1, 4])])
    elif kind == "only-constants":
        node = helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(np.ones((1, 4), np.float32)))
        graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", 1, [1, 4])])
    else:
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
                                  "g", [x], [helper.make_tensor_value_info("z", 1, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("kind,fragment", [("no-nodes", "it has no operator nodes"),
                                           ("only-constants", "its operators (Constant) own no channels"),
                                           ("identity", "its operators (Identity, Relu) own no channels")])
@pytest.mark.parametrize("command", ["prune", "analyze"])
def test_graphs_with_nothing_to_do_say_so(tmp_path, capfd, monkeypatch, kind, fragment, command):
    """Defect: a valid model with no nodes was called 'not an ONNX model or truncated'."""
    monkeypatch.chdir(tmp_path)
    save(trivial_model(kind), "t.onnx")
    args = ["t.onnx", "out.onnx"] if command == "prune" else ["analyze", "t.onnx"]
    assert_fails(*call(capfd, args), EXIT_NOTHING_TO_PRUNE, fragment, prefix="onnxprune: nothing to prune: ")
    assert sorted(os.listdir()) == ["t.onnx"]


# -------------------------------------------------------------------------------- output discipline
def test_json_and_quiet_keep_stdout_machine_readable(small, capfd):
    code, out, err = call(capfd, ["-q", "--json", "small.onnx", "out.onnx", "--runs", "0"])
    assert code == 0 and err == ""
    report = json.loads(out)
    assert report["output"] == "out.onnx" and report["valid"]["onnxruntime"] is True
    code, out, err = call(capfd, ["analyze", "--json", "small.onnx"])
    assert code == 0 and json.loads(out)["groups_total"] == 3
    assert all(line.startswith("[onnxprune] ") for line in err.splitlines())


def test_inf_weights_print_no_numpy_warning(tmp_path, capfd, monkeypatch):
    """Defect: inf weights printed a numpy RuntimeWarning."""
    monkeypatch.chdir(tmp_path)
    model = with_param(conv_chain(), "Conv", 1, np.full((8, 3, 3, 3), np.inf, np.float32))
    save(model, "inf.onnx")
    code, out, err = call(capfd, ["-q", "inf.onnx", "out.onnx", "--no-validate"])
    assert "Warning" not in err and "Traceback" not in err, err
    assert code == 0 or len(err.splitlines()) == 1


# ---------------------------------------------------------------------------- failures not hidden
def failing_registry(op_type: str = "Relu") -> Registry:
    """The builtin rules, with the coupling of ``op_type``'s rule replaced by one that raises."""
    def broken(view, port, axes):
        raise ZeroDivisionError("rule bug")

    registry, seen = Registry(), []
    for versions in builtin_registry()._specs.values():
        for spec in versions:
            if spec not in seen:
                seen.append(spec)
                registry.register(dataclasses.replace(spec, couple=broken) if op_type in spec.op_types else spec)
    return registry


def test_a_rule_that_raises_fails_loudly_in_strict_mode_and_as_an_internal_error_otherwise():
    graph = onnx_in.from_model(conv_chain())
    registry = failing_registry()
    with pytest.raises(ZeroDivisionError, match="rule bug"):
        DependencyGraph(graph, registry, strict=True)
    with pytest.raises(RuleError, match="the Relu rule \\(couple\\) failed on node 'Relu_1': ZeroDivisionError"):
        DependencyGraph(graph, registry, strict=False)
    assert os.environ.get(STRICT_ENV) == "1"  # the suite runs strict (tests/conftest.py)


def test_a_rule_that_raises_is_exit_4_and_writes_nothing(small, capfd, monkeypatch):
    from onnxprune import api
    monkeypatch.setenv(STRICT_ENV, "0")
    monkeypatch.setattr(api, "builtin_registry", lambda: failing_registry())
    before = listing(small.parent)
    assert_fails(*call(capfd, ["small.onnx", "out.onnx", "--report", "r.json"]), EXIT_INTERNAL,
                 "internal error: the Relu rule (couple) failed on node 'Relu_1'")
    assert listing(small.parent) == before


def snapshot(graph):
    return [(n.name, n.op_type, dict(n.attrs), dict(n.attr_types), list(n.inputs), list(n.outputs),
             list(n.implicit_inputs)) for n in graph.nodes], {k: v.copy() for k, v in graph.params.items()}


def split_model() -> onnx.ModelProto:
    """Opset 18 Split with num_outputs: pruning rewrites it to split sizes and drops the attribute."""
    b = GraphBuilder(opset=18, seed=3)
    x = b.input("input", [1, 3, 8, 8])
    y = b.relu(b.conv(x, 8))
    left, right = b.op("Split", [y], n_out=2, axis=1, num_outputs=2)
    b.output(b.rename(b.op("Add", [b.conv(left, 4, k=1), b.conv(right, 4, k=1)]), "output"))
    return b.build()


@pytest.mark.parametrize("factory", [conv_chain, split_model])
def test_apply_plan_does_not_mutate_its_input_graph(factory):
    """Defect: apply_plan shared attr_types with the input and popped from it."""
    graph = onnx_in.from_model(factory())
    dg = DependencyGraph(graph)
    before_nodes, before_params = snapshot(graph)
    first = dg.prunable_groups()[0]  # one group only: Split's halves become unequal, num_outputs goes
    pruned = apply_plan(dg, Plan((GroupDecision(first.id, str(first.root), first.size, (0,)),)))
    after_nodes, after_params = snapshot(graph)
    assert after_nodes == before_nodes
    assert before_params.keys() == after_params.keys()
    assert all(np.array_equal(before_params[k], after_params[k]) for k in before_params)
    assert any(pruned.params[k].shape != v.shape for k, v in before_params.items() if k in pruned.params)
