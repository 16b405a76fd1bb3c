"""The reward as a loss in a plain PyTorch loop: learn a small image filter that raises quality.

A 3x3 residual convolution is trained on the AGIQA-3K sample (or random
images) to maximise the reward, with an L2 term keeping it close to the input.
Gradients flow from the score through the model's own tensor preprocessing
to the filter; the CLIP encoders stay frozen.

    python examples/reward_as_loss.py [--model DIR_OR_HUB_ID] [--steps N]
"""
import argparse

import torch
from torch import nn

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward, straight_through_clamp

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", help="save_pretrained directory or hub id (default: tiny offline model)")
parser.add_argument("--steps", type=int, default=20)
args = parser.parse_args()

torch.manual_seed(0)
model = MSTCLIPIQA.from_pretrained(args.model) if args.model else MSTCLIPIQA(MSTCLIPIQAConfig.tiny())
reward = MSTCLIPIQAReward(model)
images = torch.rand(8, 3, 96, 96)

filt = nn.Conv2d(3, 3, 3, padding=1)
nn.init.zeros_(filt.weight), nn.init.zeros_(filt.bias)
optimizer = torch.optim.Adam(filt.parameters(), lr=1e-2)
for step in range(args.steps):
    enhanced = straight_through_clamp(images + filt(images))  # in [0, 1], gradients intact
    loss = reward.loss(enhanced) + 10.0 * (enhanced - images).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 5 == 0 or step == args.steps - 1:
        print(f"step {step:>3}  loss {loss.item():.4f}")
with torch.no_grad():
    before, after = reward(images).mean().item(), reward((images + filt(images)).clamp(0, 1)).mean().item()
print(f"mean reward before {before:.4f} -> after {after:.4f}")
