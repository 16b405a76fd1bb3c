"""Quality maps overlaid on their images: where the heatmap goes, and best-of-N contact sheets with maps."""
import numpy as np
import pytest
import torch
from matplotlib import colormaps

from mst_clipiqa.integrations import NamedScores, best_of_n, overlay_map
from mst_clipiqa.integrations.inference.grid import to_pil
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward


def test_the_heatmap_covers_the_centre_square_the_fine_stream_sees_one_block_per_region():
    image = torch.full((3, 40, 64), 0.5)  # wide: the fine stream sees the centre 40 x 40
    values = torch.tensor([[1.0, 5.0], [5.0, 3.0]])
    drawn = np.asarray(overlay_map(image, values, (1.0, 5.0), alpha=1.0)).astype(int)
    grey = np.asarray(to_pil(image)).astype(int)
    colour = {v: (np.asarray(colormaps["magma"](f)[:3]) * 255).round().astype(int) for v, f in
              ((1.0, 0.0), (5.0, 1.0), (3.0, 0.5))}
    assert np.array_equal(drawn[:, :12], grey[:, :12]) and np.array_equal(drawn[:, 52:], grey[:, 52:])
    for (row, column), value in {(0, 0): 1.0, (0, 1): 5.0, (1, 0): 5.0, (1, 1): 3.0}.items():
        block = drawn[20 * row: 20 * row + 20, 12 + 20 * column: 32 + 20 * column]
        assert np.array_equal(block, np.broadcast_to(colour[value], block.shape))
    half = np.asarray(overlay_map(image, values, (1.0, 5.0), alpha=0.5)).astype(int)
    assert np.abs(half[0, 12] - (grey[0, 12] + colour[1.0]) / 2).max() <= 1
    with pytest.raises(ValueError, match="alpha must be in"):
        overlay_map(image, values, (1.0, 5.0), alpha=2)


def test_best_of_n_with_maps_overlays_each_candidates_own_map_in_its_contact_sheet():
    torch.manual_seed(0)
    reward = MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant="A"))).eval()
    rewards = {"mst": NamedScores(reward), "bright": lambda images: images.mean((1, 2, 3))}
    pipe = tiny_sd_pipeline()
    plain = best_of_n(pipe, "a red car", rewards, n=3, num_inference_steps=1, progress=False)
    ranking = best_of_n(pipe, "a red car", rewards, n=3, num_inference_steps=1, progress=False, maps=True)
    assert ranking.map_range == reward.score_range and plain.map_range is None
    assert [c.seed for c in ranking.candidates] == [c.seed for c in plain.candidates]
    for candidate in ranking.candidates:
        torch.testing.assert_close(candidate.quality_map, reward.quality_map(candidate.image[None])[0],
                                   rtol=1e-5, atol=1e-5)
    first = ranking.candidates[0]
    assert ranking.sheet_images()[0].tobytes() == overlay_map(first.image, first.quality_map,
                                                              reward.score_range).tobytes()
    assert ranking.contact_sheet.size == plain.contact_sheet.size
    assert ranking.contact_sheet.tobytes() != plain.contact_sheet.tobytes()
    with pytest.raises(ValueError, match="quality maps need an MSTCLIPIQAReward"):
        best_of_n(pipe, "a red car", rewards["bright"], n=2, num_inference_steps=1, progress=False, maps=True)


def test_rank_images_with_maps_gives_each_image_its_map_alone_or_in_a_mapping_and_ranks_as_without():
    from mst_clipiqa.integrations import rank_images

    torch.manual_seed(0)
    reward = MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant="A"))).eval()
    images = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    expected = reward.quality_map(images).detach()
    for rewards in (reward, {"mst": NamedScores(reward), "bright": lambda x: x.mean((1, 2, 3))}):
        plain = rank_images(images, None, rewards)
        ranking = rank_images(images, None, rewards, maps=True)
        assert ranking.map_range == reward.score_range and plain.map_range is None
        assert [c.score for c in ranking.candidates] == pytest.approx([c.score for c in plain.candidates], abs=1e-5)
        for candidate in ranking.candidates:
            index = next(i for i in range(3) if torch.equal(images[i], candidate.image))
            torch.testing.assert_close(candidate.quality_map, expected[index], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="quality maps need an MSTCLIPIQAReward"):
        rank_images(images, None, lambda x: x.mean((1, 2, 3)), maps=True)
