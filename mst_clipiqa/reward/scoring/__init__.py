"""The reward: input checks, image reading, the differentiable reward and the one batched scoring loop."""
from typing import TYPE_CHECKING

from mst_clipiqa.reward.utils.lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from .batching import score_in_batches
    from .images import IMAGE_SUFFIXES, as_image_list, collect_images, list_images, load_image
    from .inputs import check_image_values, straight_through_clamp
    from .reward import MSTCLIPIQAReward
    from .uncertainty import ScoresWithUncertainty

__all__ = ["IMAGE_SUFFIXES", "MSTCLIPIQAReward", "ScoresWithUncertainty", "as_image_list", "check_image_values",
           "collect_images", "list_images", "load_image", "score_in_batches", "straight_through_clamp"]

load_lazily(__name__)
