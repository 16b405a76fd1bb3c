"""The request handling servers share, without a server: the decoded images reach the reward in their stated
layout."""
import numpy as np
import torch

from mst_clipiqa.integrations.serving import ScoringService
from mst_clipiqa.integrations.serving.protocol import encode_request


def test_an_image_3_pixels_high_is_scored_as_in_process():
    def per_row(images):  # tells rows from columns: a layout read wrongly changes it
        return (images.mean(dim=1) * torch.arange(images.shape[2])[:, None]).mean(dim=(1, 2))

    images = torch.rand(2, 3, 3, 7, generator=torch.Generator().manual_seed(0))
    body, content_type = encode_request(images.numpy(), None)
    status, answer = ScoringService(per_row).handle("POST", "/v1/score", {"Content-Type": content_type}, body)
    assert status == 200 and np.allclose(answer["scores"], per_row(images).numpy(), atol=1e-6)
