"""Calibration data: loading, checking against the model's inputs, splitting, batching."""
from __future__ import annotations

import numpy as np
import pytest

from onnxprune.calibration import CalibrationSet
from onnxprune.errors import InputError
from onnxprune.ir import Value

FLOAT, INT64 = 1, 7
IMAGE = Value("image", FLOAT, ("batch", 3, 4, 4))
TOKENS = Value("ids", INT64, ("batch", "seq"))


def test_npz_file_loads_and_casts_float64_to_the_input_type(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, image=np.zeros((5, 3, 4, 4)))
    data = CalibrationSet.load(path, [IMAGE])
    assert data.n_samples == 5 and data.arrays["image"].dtype == np.float32


def test_folder_of_npz_files_concatenates_in_name_order(tmp_path):
    for k in range(3):
        np.savez(tmp_path / f"part{k}.npz", image=np.full((2, 3, 4, 4), k, np.float32))
    data = CalibrationSet.load(tmp_path, [IMAGE])
    assert data.n_samples == 6
    assert [float(data.arrays["image"][i, 0, 0, 0]) for i in (0, 2, 4)] == [0.0, 1.0, 2.0]


def test_folder_of_npy_files_for_a_single_input_model(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 3, 4, 4), np.float32))
    np.save(tmp_path / "b.npy", np.ones((1, 3, 4, 4), np.float32))
    assert CalibrationSet.load(tmp_path, [IMAGE]).n_samples == 5


@pytest.mark.parametrize("arrays,inputs,message", [
    (dict(other=np.zeros((2, 3, 4, 4), np.float32)), [IMAGE], "no array for model input.*image"),
    (dict(image=np.zeros((2, 3, 5, 4), np.float32)), [IMAGE], "axis 2 differs"),
    (dict(image=np.zeros((3, 4, 4), np.float32)), [IMAGE], "rank 3"),
    (dict(image=np.zeros((2, 3, 4, 4), np.int64)), [IMAGE], "is int64, the model input is float32"),
    (dict(ids=np.zeros((2, 7), np.float32)), [TOKENS], "is float32, the model input is int64"),
    (dict(image=np.zeros((2, 3, 4, 4), np.float32), ids=np.zeros((3, 7), np.int64)), [IMAGE, TOKENS],
     "different sample counts"),
    (dict(image=np.zeros((0, 3, 4, 4), np.float32)), [IMAGE], "no samples"),
])
def test_mismatches_name_the_option_and_the_problem(tmp_path, arrays, inputs, message):
    path = tmp_path / "calib.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match=message) as info:
        CalibrationSet.load(path, inputs)
    assert str(info.value).startswith(f"--calib {path}")


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04 truncated"])
def test_corrupt_files_are_one_clear_error(tmp_path, content):
    path = tmp_path / "calib.npz"
    path.write_bytes(content)
    with pytest.raises(InputError, match="cannot read calib.npz"):
        CalibrationSet.load(path, [IMAGE])


def test_missing_path_empty_folder_and_bare_npy_for_two_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        CalibrationSet.load(tmp_path / "nope.npz", [IMAGE])
    with pytest.raises(InputError, match="no .npz or .npy"):
        CalibrationSet.load(tmp_path, [IMAGE])
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(InputError, match="bare .npy array"):
        CalibrationSet.load(tmp_path, [IMAGE, TOKENS])


def test_pickled_object_arrays_are_refused(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, image=np.array([object()], dtype=object))
    with pytest.raises(InputError, match="cannot read"):
        CalibrationSet.load(path, [IMAGE])


def test_split_holds_out_disjoint_samples_and_is_seeded():
    data = CalibrationSet({"image": np.arange(10, dtype=np.float32).reshape(10, 1)})
    fit, held = data.split(0.3, seed=1)
    assert (fit.n_samples, held.n_samples) == (7, 3)
    seen = np.concatenate([fit.arrays["image"], held.arrays["image"]]).ravel()
    assert sorted(seen.tolist()) == list(range(10))
    assert data.split(0.3, seed=1)[1].arrays["image"].tolist() == held.arrays["image"].tolist()
    one = CalibrationSet({"image": np.zeros((1, 1), np.float32)})
    assert one.split(0.5) == (one, one)  # a single sample is used for both


def test_batches_cover_every_sample_once():
    data = CalibrationSet({"image": np.arange(10, dtype=np.float32).reshape(10, 1)})
    batches = list(data.batches(4))
    assert [len(b["image"]) for b in batches] == [4, 4, 2] and data.n_batches(4) == 3
    assert np.concatenate([b["image"] for b in batches]).ravel().tolist() == list(range(10))


def test_random_samples_follow_types_and_need_static_sample_shapes():
    data = CalibrationSet.random([Value("image", FLOAT, (1, 3, 4, 4))], 3)
    assert data.arrays["image"].shape == (3, 3, 4, 4) and data.arrays["image"].dtype == np.float32
    with pytest.raises(InputError, match="dynamic dims"):
        CalibrationSet.random([TOKENS], 3)
    ids = CalibrationSet.random([TOKENS], 2, shapes={"ids": (5,)})
    assert ids.arrays["ids"].shape == (2, 5) and ids.arrays["ids"].dtype == np.int64
