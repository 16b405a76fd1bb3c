"""Contact-sheet captions: rank, score and seed on their own, file names wrapped whole, never cut."""
import torch
from PIL import Image, ImageFont

from mst_clipiqa.integrations import contact_sheet
from mst_clipiqa.integrations.inference.grid import _wrap
from mst_clipiqa.integrations.inference.ranking import Candidate, Ranking


def test_long_file_names_wrap_instead_of_being_cut():
    font = ImageFont.load_default(size=12)
    name = "midjourney_lowstep_a_very_long_generated_file_name_277.jpg"
    wrapped = _wrap(f"rank 1  score 0.779\n{name}", 150, font)
    lines = wrapped.split("\n")
    assert lines[0] == "rank 1  score 0.779" and "".join(lines[1:]) == name and len(lines) >= 3
    assert all(font.getlength(line) <= 150 for line in lines)
    prompt = "a red circle above a blue square"
    lines = _wrap(prompt, 120, font).split("\n")
    assert len(lines) > 1 and " ".join(lines) == prompt  # broken at spaces: every word whole


def test_more_caption_lines_make_a_taller_sheet():
    images = [Image.new("RGB", (32, 32), "red")] * 2
    one = contact_sheet(images, ["rank 1", "rank 2"], thumb_size=100)
    three = contact_sheet(images, ["rank 1\nseed 4\nx", "rank 2\nseed 5\ny"], thumb_size=100)
    assert three.height > one.height > 100 and one.width == 2 * 100 + 8


def test_ranking_captions_separate_rank_score_and_seed_or_name():
    image = torch.rand(3, 8, 8)
    seeded = Ranking("p", [Candidate(rank=1, score=0.779, image=image, seed=4)]).contact_sheet
    named = Ranking(None, [Candidate(rank=1, score=0.779, image=image, name="AttnGAN_normal_007.jpg")]).contact_sheet
    assert list(seeded.getdata()) == list(contact_sheet([image], ["rank 1  score 0.779\nseed 4"]).getdata())
    assert list(named.getdata()) == list(contact_sheet([image], ["rank 1  score 0.779\nAttnGAN_normal_007.jpg"])
                                         .getdata())
