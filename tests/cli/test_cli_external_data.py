"""Weights by reference through the command line: external data in, external data out, the input's data
file untouched; a model past protobuf's 2 GB limit loads, prunes, validates and saves in bounded
memory; a model declaring a 10^12-element tensor fails at once, in one line, in bounded memory.

The size cases run the CLI in a child process that reports its own peak memory (getrusage)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import Pruner, onnx_out
from onnxprune.options import PruneOptions
from support.architectures import resnet_basic
from support.cli import call
from support.oracle import run

ROOT = Path(__file__).resolve().parents[2]
GiB = 1 << 30


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _save_external(model: onnx.ModelProto, path: Path) -> None:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=0)


def _feeds(model: onnx.ModelProto) -> dict:
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {model.graph.input[0].name: np.random.default_rng(3).standard_normal(dims).astype(np.float32)}


def _external_tensors(path: Path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    return {t.name for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL}


def test_external_data_in_gives_external_data_out_and_the_input_data_is_untouched(tmp_path, capfd):
    model = resnet_basic()
    _save_external(model, tmp_path / "in.onnx")
    data = tmp_path / "in.onnx.data"
    before, mtime = _digest(data), data.stat().st_mtime_ns
    code, _, err = call(capfd, [tmp_path / "in.onnx", tmp_path / "out.onnx", "--ratio", "0.5", "--runs", "0", "-q"])
    assert code == 0, err
    assert (_digest(data), data.stat().st_mtime_ns) == (before, mtime)
    assert (tmp_path / "out.onnx.data").is_file() and _external_tensors(tmp_path / "out.onnx")
    # the same pruning in memory (API, inline input) gives the same model
    pruner = Pruner.from_model(model)
    pruner.prune(PruneOptions(ratio=0.5))
    expected = {t.name: numpy_helper.to_array(t) for t in pruner.to_model().graph.initializer}
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert {t.name: numpy_helper.to_array(t).tobytes() for t in written.graph.initializer} == \
        {n: a.tobytes() for n, a in expected.items()}
    for a, b in zip(run(written, _feeds(model)), run(pruner.to_model(), _feeds(model))):
        np.testing.assert_array_equal(a, b)


def test_inline_in_gives_inline_out_unless_external_data_is_asked(tmp_path, capfd):
    onnx.save(resnet_basic(), str(tmp_path / "in.onnx"))
    for name, extra in (("plain", []), ("forced", ["--external-data"])):
        out = tmp_path / f"{name}.onnx"
        code, _, err = call(capfd, [tmp_path / "in.onnx", out, "--ratio", "0.5", "--runs", "0", "-q", *extra])
        assert code == 0, err
        assert (tmp_path / f"{name}.onnx.data").exists() == bool(extra)
        assert bool(_external_tensors(out)) == bool(extra)
    plain, forced = (onnx.load(str(tmp_path / f"{n}.onnx")) for n in ("plain", "forced"))
    assert [numpy_helper.to_array(t).tobytes() for t in plain.graph.initializer] == \
        [numpy_helper.to_array(t).tobytes() for t in forced.graph.initializer]


# ------------------------------------------------------------------ sizes, in a child process
CHILD = """
import json, resource, sys, time
from onnxprune.cli import main
start = time.process_time()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "cpu_s": time.process_time() - start,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), file=sys.stderr)
"""


def _run_child(args, cwd: Path) -> tuple[dict, list[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = done.stderr.strip().splitlines()
    return json.loads(lines[-1]), lines[:-1]


def _external(name: str, shape, offset: int, location: str) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape), data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(int(np.prod(shape)) * 4))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


# rows of a [rows, 8] float32 table a little past protobuf's 2 GB limit
TABLE_ROWS = onnx_out.PROTO_LIMIT // 32 + (1 << 20)


def _past_2gb_model(folder: Path) -> Path:
    """x @ w1 -> Relu -> @ w2 (a prunable group of 16) plus a row of a 2.1 GB table (Gather by an input):
    the table is a sparse file of zeros made by truncate, so the model costs no disk and no time to make."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((8, 16), dtype=np.float32), rng.standard_normal((16, 8), dtype=np.float32)
    location = "big.onnx.data"
    with open(folder / location, "wb") as stream:
        stream.write(w1.tobytes() + w2.tobytes())
        stream.truncate(4096 + TABLE_ROWS * 8 * 4)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"]), helper.make_node("Gather", ["table", "ids"], ["z"]),
             helper.make_node("Add", ["y", "z"], ["out"])]
    graph = helper.make_graph(
        nodes, "past_2gb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8])],
        [_external("w1", w1.shape, 0, location), _external("w2", w2.shape, w1.nbytes, location),
         _external("table", (TABLE_ROWS, 8), 4096, location)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "big.onnx"))
    return folder / "big.onnx"


def test_a_model_past_2gb_prunes_validates_and_saves_in_bounded_memory(tmp_path):
    room = shutil.disk_usage(tmp_path).free
    need = 2 * (TABLE_ROWS * 32 + 4096)  # the input and the output, should the file system not keep them sparse
    if room < need + GiB:
        pytest.skip(f"needs {(need + GiB) / GiB:.1f} GiB free in {tmp_path} (in case sparse files are not "
                    f"supported), has {room / GiB:.1f} GiB")
    source = _past_2gb_model(tmp_path)
    data = tmp_path / "big.onnx.data"
    stat = data.stat()
    result, lines = _run_child([source, tmp_path / "out.onnx", "--ratio", "0.5", "--runs", "0", "-q",
                                "--input-shape", "ids:1", "--seed", "1"], tmp_path)
    assert result["code"] == 0, lines
    assert result["peak_mib"] < 1024, result  # a 2.1 GB model, never read whole
    after = data.stat()
    assert (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    written = onnx.load(str(tmp_path / "out.onnx"), load_external_data=False)
    assert "table" in _external_tensors(tmp_path / "out.onnx")
    shapes = {t.name: list(t.dims) for t in written.graph.initializer}
    assert shapes["table"] == [TABLE_ROWS, 8] and shapes["w1"][1] < 16
    import onnxruntime as ort
    session = ort.InferenceSession(str(tmp_path / "out.onnx"))  # maps the 2.1 GB of data, reads one row
    x = np.random.default_rng(1).standard_normal((1, 8), dtype=np.float32)
    (out,) = session.run(None, {"x": x, "ids": np.array([TABLE_ROWS - 1])})
    w = {t.name: t for t in written.graph.initializer}
    w1, w2 = (numpy_helper.to_array(w[n], base_dir=str(tmp_path)) for n in ("w1", "w2"))
    np.testing.assert_allclose(out, np.maximum(x @ w1, 0) @ w2, rtol=1e-5, atol=1e-5)  # the table's rows are 0


def test_a_declared_10_to_the_12_element_tensor_fails_fast_in_one_line(tmp_path):
    """A Relu on an input declared [10^11, 10]: refused before anything of that size is allocated."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((10, 16), dtype=np.float32), rng.standard_normal((16, 10), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["out"])], "huge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [10**11, 10])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [10**11, 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "huge.onnx"))
    result, lines = _run_child([tmp_path / "huge.onnx", tmp_path / "out.onnx", "--ratio", "0.5", "-q",
                                "--memory-limit", "8G"], tmp_path)
    assert result["code"] != 0
    assert len(lines) == 1 and "would need about" in lines[0] and "TiB" in lines[0], lines
    assert result["cpu_s"] < 2.0, result  # CPU time after import: the machine's load does not count
    assert result["peak_mib"] < 512, result
    assert not (tmp_path / "out.onnx").exists()
