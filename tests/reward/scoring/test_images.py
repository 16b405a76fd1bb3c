"""The one image reader: modes by their real range, EXIF orientation, alpha on white, the same for every consumer."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mst_clipiqa.cli import main
from mst_clipiqa.reward import MSTCLIPIQAReward, load_image
from mst_clipiqa.reward.datasets import load_dataset

HALF_16 = 32768


@pytest.fixture()
def reward_a(tiny_models):
    return MSTCLIPIQAReward(tiny_models("A"))


def test_16_bit_images_are_read_by_their_range_and_score_as_their_grey(reward_a, tmp_path):
    grey = np.full((40, 48), HALF_16, np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert Image.fromarray(grey).mode == "I;16"  # the file opens as I;16 (recent Pillow) or I (older)
    expected = torch.full((3, 40, 48), HALF_16 / 65535)
    for item in (tmp_path / "grey16.png", Image.fromarray(grey), Image.fromarray(grey.astype(np.int32)), grey):
        assert torch.equal(load_image(item), expected)
    assert torch.equal(load_image(Image.fromarray(np.full((40, 48), 0.25, np.float32))), torch.full((3, 40, 48), 0.25))
    mid_grey = reward_a(torch.full((1, 3, 40, 48), 0.5)).detach()
    torch.testing.assert_close(reward_a.score(tmp_path / "grey16.png"), mid_grey, atol=1e-4, rtol=0)
    white = reward_a(torch.ones(1, 3, 40, 48)).detach()
    assert not torch.allclose(mid_grey, white, atol=1e-3)  # the bug read it as white: the test can tell


def test_out_of_range_16_bit_and_float_modes_are_named():
    with pytest.raises(ValueError, match=r"PIL image: mode I image with values in \[70000, 70000\]; expected 16-bit"):
        load_image(Image.fromarray(np.full((4, 4), 70000, np.int32)))
    with pytest.raises(ValueError, match=r"mode F, floats in \[0, 1\]\) have values in \[255, 255\]"):
        load_image(Image.fromarray(np.full((4, 4), 255.0, np.float32)))


def test_8_bit_images_are_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    for mode, shape in (("RGB", (20, 30, 3)), ("L", (20, 30))):
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(array).save(tmp_path / f"{mode}.png")
        rgb = np.array(Image.open(tmp_path / f"{mode}.png").convert("RGB"))
        assert torch.equal(load_image(tmp_path / f"{mode}.png"), torch.from_numpy(rgb).permute(2, 0, 1) / 255.0)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 30, 3), np.uint8)
    array[0, 0] = 255  # top-left; orientation 6 shows the image turned 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array).save(tmp_path / "rotated.png", exif=exif)
    upright = np.ascontiguousarray(np.rot90(array, k=-1))
    assert torch.equal(load_image(tmp_path / "rotated.png"), torch.from_numpy(upright).permute(2, 0, 1) / 255.0)


def test_transparency_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 1] = (0, 0, 0, 0)  # transparent black becomes white
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black becomes mid grey
    pixels = load_image(Image.fromarray(rgba))
    assert pixels[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and pixels[:, 0, 1].tolist() == [1.0, 1.0, 1.0]
    torch.testing.assert_close(pixels[:, 1, 0], torch.full((3,), 127 / 255))
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 0, 0, 255])
    palette.info["transparency"] = 0
    assert load_image(palette)[:, 0].tolist() == [[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]]


@pytest.mark.parametrize("image, name", [(Image.new("RGB", (0, 5)), "PIL image"),
                                         (np.zeros((0, 5, 3), np.uint8), r"an image of shape \(0, 5, 3\)"),
                                         (torch.zeros(3, 4, 0), r"an image of shape \(3, 4, 0\)")])
def test_zero_sized_images_are_refused(reward_a, image, name):
    with pytest.raises(ValueError, match=f"{name} has a zero-sized side"):
        reward_a.score([image])


def test_damaged_image_file_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(ValueError, match=f"cannot read image {tmp_path / 'broken.png'}"):
        load_image(tmp_path / "broken.png")


def test_score_cli_and_data_set_loader_read_images_alike(reward_a, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((40, 48), HALF_16, np.uint16)).save(folder / "a_grey16.png")
    Image.fromarray(np.full((40, 48, 4), (0, 0, 0, 0), np.uint8)).save(folder / "b_clear.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.arange(40 * 64 * 3, dtype=np.uint8).reshape(40, 64, 3)).save(folder / "c_turned.png", exif=exif)
    names = sorted(p.name for p in folder.iterdir())
    (tmp_path / "data.csv").write_text("image,prompt,mos\n" + "".join(f"images/{n},a cat,3\n" for n in names))
    dataset = load_dataset("csv", tmp_path / "data.csv")
    for i, name in enumerate(names):
        assert torch.equal(dataset[i]["image"], load_image(folder / name))
    api = reward_a.score(folder)
    assert main(["score", str(folder), "--model", "tiny", "--format", "json", "--device", "cpu"]) == 0
    cli = [row["quality"] for row in json.loads(capsys.readouterr().out)]
    torch.testing.assert_close(torch.tensor(cli), api, atol=1e-6, rtol=0)
    white = reward_a(torch.ones(1, 3, 40, 48)).detach()
    torch.testing.assert_close(api[1:2], white, atol=1e-6, rtol=0)  # the clear image scores as white
