"""MST-CLIPIQA: a differentiable image-quality reward for diffusion models.

    from reward import MSTCLIPIQA, MSTCLIPIQAReward
    reward = MSTCLIPIQAReward(MSTCLIPIQA.from_pretrained("path/or/hub-id"))
    loss = reward.loss(images, prompts)   # images (B, 3, H, W) in [0, 1]
"""
from .config import BackboneConfig, MSTCLIPIQAConfig
from .model import MSTCLIPIQA
from .preprocess import ImageSpec, preprocess, straight_through_clamp
from .reward import MSTCLIPIQAReward

from_pretrained = MSTCLIPIQA.from_pretrained
from_official_checkpoint = MSTCLIPIQA.from_official_checkpoint

__all__ = ["BackboneConfig", "ImageSpec", "MSTCLIPIQA", "MSTCLIPIQAConfig", "MSTCLIPIQAReward", "from_official_checkpoint",
           "from_pretrained", "preprocess", "straight_through_clamp"]
