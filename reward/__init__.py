"""MST-CLIPIQA: a differentiable image-quality reward for diffusion models.

    from reward import MSTCLIPIQA, MSTCLIPIQAReward
    reward = MSTCLIPIQAReward(MSTCLIPIQA.from_pretrained("path/or/hub-id"))
    loss = reward.loss(images, prompts)   # images (B, 3, H, W) in [0, 1]
"""
from .config import BackboneConfig, MSTCLIPIQAConfig
from .model import MSTCLIPIQA
from .preprocess import ImageSpec, preprocess
from .reward import MSTCLIPIQAReward

__all__ = ["BackboneConfig", "ImageSpec", "MSTCLIPIQA", "MSTCLIPIQAConfig", "MSTCLIPIQAReward", "preprocess"]
