"""Annotation rows cannot read files outside the data folder, and an image that vanishes after loading is
named when it is read."""
import pytest

from mst_clipiqa.reward.datasets import load_csv
from mst_clipiqa.reward.training import evaluate_model

from .test_loaders import png, write_csv


@pytest.mark.parametrize("name", ["../outside.png", "sub/../../outside.png", "/abs/outside.png"])
def test_image_names_escaping_the_data_folder_are_refused(tmp_path, name):
    png(tmp_path / "outside.png")
    png(tmp_path / "data" / "inside.png")
    if name.startswith("/"):
        name = str(tmp_path / "outside.png")
    path = write_csv(tmp_path / "data" / "ann.csv", ["image", "prompt", "mos"], [["inside.png", "p", 1],
                                                                                 [name, "q", 2]])
    with pytest.raises(ValueError, match=r"line 3: image name .* points outside the data folder"):
        load_csv(path)
    with pytest.warns(UserWarning):
        ds = load_csv(path, on_error="skip")
    assert [s.image.name for s in ds.samples] == ["inside.png"]


def test_a_path_below_the_data_folder_is_fine(tmp_path):
    png(tmp_path / "sub" / "a.png")
    ds = load_csv(write_csv(tmp_path / "ann.csv", ["image", "prompt", "mos"], [["sub/./a.png", "p", 1]]))
    assert ds.samples[0].image.is_file()


def test_an_image_deleted_after_loading_is_named(tmp_path, tiny_models):
    image = png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    ds = load_csv(write_csv(tmp_path / "ann.csv", ["image", "prompt", "mos"], [["a.png", "p", 1], ["b.png", "q", 2]]))
    image.unlink()
    with pytest.raises(ValueError, match=r"sample 0: image file not found: .*a\.png"):
        ds[0]
    with pytest.raises(ValueError, match=r"image file .*a\.png no longer exists \(deleted or moved"):
        evaluate_model(tiny_models("A"), ds, cache_dir=tmp_path / "cache", progress=False)
