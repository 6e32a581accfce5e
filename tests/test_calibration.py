"""Calibration inputs: .npy / .npz in either layout, image folders, synthetic data, and each error."""
from __future__ import annotations

import numpy as np
import pytest

from hub.artifacts import TensorSpec
from hub.convert.calibration import activation_range, build_calibration, parse_input_range
from hub.errors import InputError

IMAGE = [TensorSpec("image", (1, 3, 16, 12), "float32")]


def test_synthetic_samples_cover_the_range_and_are_held_out_apart():
    cal = build_calibration(IMAGE, input_range=(-1.0, 1.0))
    x, held = cal.samples["image"], cal.held_out["image"]
    assert cal.synthetic and cal.source == "synthetic"
    assert x.shape == (32, 3, 16, 12) and x.dtype == np.float32
    assert -1.0 <= x.min() < -0.99 and 0.99 < x.max() <= 1.0
    assert not any(np.array_equal(h, s) for h in held for s in x)
    assert "synthetic" in cal.summary()["note"]


def test_npy_in_onnx_layout(tmp_path):
    data = np.random.default_rng(0).random((10, 3, 16, 12), dtype=np.float32)
    np.save(tmp_path / "c.npy", data)
    cal = build_calibration(IMAGE, tmp_path / "c.npy")
    assert cal.layout == "NCHW" and not cal.synthetic
    assert cal.samples["image"].shape == (8, 3, 16, 12) and cal.held_out["image"].shape == (2, 3, 16, 12)
    np.testing.assert_array_equal(np.concatenate([cal.samples["image"], cal.held_out["image"]]), data)


def test_npy_channels_last_is_detected_and_transposed(tmp_path):
    data = np.random.default_rng(0).random((5, 16, 12, 3), dtype=np.float32)
    np.save(tmp_path / "c.npy", data)
    cal = build_calibration(IMAGE, tmp_path / "c.npy")
    assert cal.layout == "NHWC" and cal.summary()["layout"] == "NHWC"
    np.testing.assert_array_equal(cal.samples["image"][0], data[0].transpose(2, 0, 1))


def test_ambiguous_square_shape_follows_the_source_layout(tmp_path):
    spec = [TensorSpec("x", (1, 4, 4, 4), "float32")]
    data = np.arange(2 * 64, dtype=np.float32).reshape(2, 4, 4, 4)
    np.save(tmp_path / "c.npy", data)
    assert build_calibration(spec, tmp_path / "c.npy").layout == "NCHW"
    keras = build_calibration(spec, tmp_path / "c.npy", source_layouts={"x": "NHWC"})
    assert keras.layout == "NHWC"
    np.testing.assert_array_equal(keras.samples["x"][0], data[0].transpose(2, 0, 1))


def test_npz_by_input_name(tmp_path):
    specs = [TensorSpec("a", (1, 4), "float32"), TensorSpec("b", (1, 2, 3), "float32")]
    np.savez(tmp_path / "c.npz", a=np.ones((6, 4), np.float32), b=np.zeros((6, 2, 3), np.float32))
    cal = build_calibration(specs, tmp_path / "c.npz")
    assert set(cal.samples) == {"a", "b"} and len(cal.samples["a"]) == 5


def test_npz_with_labels_beside_the_samples(tmp_path):
    """MLPerf Tiny's calibration_samples.npz holds `specs` and `labels`: the array that fits is taken."""
    specs = np.random.default_rng(0).random((10, 3, 16, 12), dtype=np.float32)
    np.savez(tmp_path / "c.npz", specs=specs, labels=np.arange(10))
    cal = build_calibration(IMAGE, tmp_path / "c.npz")
    np.testing.assert_array_equal(cal.samples["image"], specs[:8])
    assert cal.summary()["notes"] == ["array 'specs' of specs, labels calibrates input 'image' (its shape fits)"]


def test_npz_array_chosen_by_name(tmp_path):
    a, b = (np.full((5, 3, 16, 12), v, np.float32) for v in (0.25, 0.75))
    np.savez(tmp_path / "c.npz", a=a, b=b)
    with pytest.raises(InputError, match="several arrays fit input 'image'.*--calibration c.npz:ARRAY"):
        build_calibration(IMAGE, tmp_path / "c.npz")
    cal = build_calibration(IMAGE, f"{tmp_path / 'c.npz'}:b")
    assert cal.samples["image"].max() == 0.75 and cal.source.endswith("c.npz:b")
    with pytest.raises(InputError, match="has no array 'c'; it has a, b"):
        build_calibration(IMAGE, f"{tmp_path / 'c.npz'}:c")
    np.savez(tmp_path / "d.npz", image=a, alt=b)  # the name given wins over the input's own name
    assert build_calibration(IMAGE, f"{tmp_path / 'd.npz'}:alt").samples["image"].max() == 0.75


def test_image_folder_is_resized_and_scaled(tmp_path):
    import cv2

    for i in range(3):
        img = np.full((40, 30, 3), 255 if i else 0, np.uint8)
        img[..., 0] = 0  # blue channel off in BGR: red stays full after RGB conversion
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    (tmp_path / "notes.txt").write_text("not an image")
    cal = build_calibration(IMAGE, tmp_path, input_range=(-1.0, 1.0))
    x = np.concatenate([cal.samples["image"], cal.held_out["image"]])
    assert x.shape == (3, 3, 16, 12) and cal.layout == "images"
    assert x[0].max() == -1.0  # black image -> LO
    np.testing.assert_allclose(x[1, 0], 1.0)  # red channel full -> HI
    np.testing.assert_allclose(x[1, 2], -1.0)  # blue channel off (RGB order)


@pytest.mark.parametrize("array,message", [
    (np.zeros((4, 3, 8, 8), np.float32), "expected \\(N, 3, 16, 12\\)"),
    (np.zeros((3, 16, 12), np.float32), "single sample"),
    (np.zeros((1, 3, 16, 12), np.float32), "single sample"),
    (np.zeros((4, 3, 16, 12), np.complex64), "numeric array|dtype"),
    (np.array(["a", "b"]), "numeric array"),
    (np.full((4, 3, 16, 12), np.nan, np.float32), "NaN"),
])
def test_calibration_errors_are_clear(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(InputError, match=message) as info:
        build_calibration(IMAGE, tmp_path / "bad.npy")
    assert "bad.npy" in info.value.one_line()


def test_other_calibration_errors(tmp_path):
    (tmp_path / "c.csv").write_text("1,2,3")
    with pytest.raises(InputError, match=".npy, a .npz or a folder"):
        build_calibration(IMAGE, tmp_path / "c.csv")
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match="cannot read"):
        build_calibration(IMAGE, tmp_path / "broken.npy")
    np.savez(tmp_path / "c.npz", other=np.zeros((3, 3, 8, 8), np.float32), more=np.zeros(2))
    with pytest.raises(InputError, match=r"other \(3, 3, 8, 8\), more \(2,\) and no array fits .*c.npz:ARRAY"):
        build_calibration(IMAGE, tmp_path / "c.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="0 readable image"):
        build_calibration(IMAGE, tmp_path / "empty")


@pytest.mark.parametrize("text,expected", [(None, (0.0, 1.0)), ("-1,1", (-1.0, 1.0)), ("0,255", (0.0, 255.0))])
def test_input_range(text, expected):
    assert parse_input_range(text) == expected


@pytest.mark.parametrize("text", ["1", "a,b", "1,0", "0,inf"])
def test_bad_input_range(text):
    with pytest.raises(InputError, match="--input-range"):
        parse_input_range(text)


def test_activation_ranges_clip_outliers_and_keep_zero():
    values = np.concatenate([np.random.default_rng(0).uniform(0.0, 1.0, 100_000), [50.0]])  # one outlier
    assert activation_range(values, "minmax") == (0.0, 50.0)
    lo, hi = activation_range(values, "percentile")
    assert lo == 0.0 and 0.99 < hi < 1.0
    assert activation_range(values, "mse")[1] > 0.9 * 50  # one value in 100,000: clipping it costs more than rounding saves
    tails = np.random.default_rng(1).laplace(0.0, 1.0, 100_000)  # a long tail on both sides: clipping it pays
    lo, hi = activation_range(tails, "mse")
    assert tails.min() < lo < 0.0 < hi < tails.max()
    assert activation_range(np.full(10, 3.0), "percentile") == (0.0, 3.0)  # the range always holds 0
