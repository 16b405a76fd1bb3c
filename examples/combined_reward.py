"""Combine MST-CLIPIQA with another differentiable scorer (here an open_clip CLIP score), weighted,
to rank best-of-N candidates and to fine-tune with LoRA.

    python examples/combined_reward.py                  # offline: tiny random pipeline, reward and CLIP
    python examples/combined_reward.py --pipeline stabilityai/stable-diffusion-2-1-base --model DIR_OR_HUB_ID \
        --clip ViT-B-32 --clip-pretrained openai --steps 200 --device cuda

A dict of rewards is a combined reward: each one returns (B,) scores (or named ones), and
``weights`` (best-of-N) / ``reward_weights`` (fine-tuning) weight them by name. Any callable
``reward(images, prompts)``, image-only ``reward(images)``, trl-style
``reward_fn(images, prompts, metadata) -> (rewards, metadata)`` or ``nn.Module`` works; for
fine-tuning it must be differentiable in the images, as this CLIP score is.
"""
import argparse

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner, RunConfig, best_of_n, score_images
from mst_clipiqa.reward import MSTCLIPIQA, ImageSpec, MSTCLIPIQAConfig, MSTCLIPIQAReward, preprocess

TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                                             "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


class CLIPScore(nn.Module):
    """100 x cosine similarity of image and prompt embeddings, differentiable in the pixels."""

    def __init__(self, model: open_clip.CLIP, tokenizer, size: int):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.spec = ImageSpec(size, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        image = F.normalize(self.model.encode_image(preprocess(images, self.spec)), dim=-1)
        text = F.normalize(self.model.encode_text(self.tokenizer(list(prompts)).to(images.device)), dim=-1)
        return 100 * (image * text).sum(-1)


parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--pipeline", help="diffusers text-to-image pipeline id or directory (default: tiny, offline)")
parser.add_argument("--model", help="MST-CLIPIQA save_pretrained directory or hub id (default: tiny)")
parser.add_argument("--clip", help="open_clip model name (default: a tiny random CLIP built from a config)")
parser.add_argument("--clip-pretrained", help="open_clip weights tag or file for --clip, e.g. openai")
parser.add_argument("--clip-weight", type=float, default=0.02, help="weight of the CLIP score (quality: 1)")
parser.add_argument("--n", type=int, default=8, help="best-of-N candidates")
parser.add_argument("--steps", type=int, default=6, help="fine-tuning optimizer steps")
parser.add_argument("--device", default="cpu")
args = parser.parse_args()

torch.manual_seed(0)
if args.pipeline:
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(args.pipeline).to(args.device)
    inference_steps, lr = 30, 1e-4
else:
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline

    pipe, inference_steps, lr = tiny_sd_pipeline(device=args.device), 4, 1e-2
model = MSTCLIPIQA.from_pretrained(args.model) if args.model else MSTCLIPIQA(MSTCLIPIQAConfig.tiny())
if args.clip:
    clip = open_clip.create_model(args.clip, pretrained=args.clip_pretrained)
else:
    clip = open_clip.CLIP(**TINY_CLIP)
rewards = {"quality": MSTCLIPIQAReward(model),
           "clip": CLIPScore(clip, open_clip.get_tokenizer(args.clip or "ViT-B-32"), clip.visual.image_size[0])}
rewards = {name: r.to(args.device).eval() for name, r in rewards.items()}
weights = {"quality": 1.0, "clip": args.clip_weight}

prompt = "a lighthouse at dusk"
ranking = best_of_n(pipe, prompt, rewards, n=args.n, weights=weights, num_inference_steps=inference_steps,
                    guidance_scale=3.0)
for c in ranking.candidates:
    print(f"#{c.rank:<2} seed {c.seed:<3} objective {c.score:8.4f} = quality {c.scores['quality']:.4f} "
          f"+ {args.clip_weight} x clip {c.scores['clip']:.4f}")

prompts = [prompt, "a bowl of fruit on a table", "a portrait of an old sailor", "a city street at night"]
config = RewardFinetuneConfig(num_inference_steps=inference_steps, reward_weights=weights,
                              run=RunConfig(learning_rate=lr, max_steps=args.steps, max_grad_norm=None))
trainer = RewardFinetuner(pipe, rewards, prompts, config)
held_out = [p for p in prompts for _ in range(4)], [10_000 + i for i in range(4 * len(prompts))]


def held_out_scores() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return score_images(rewards, trainer.sample(*held_out), held_out[0], weights=weights)


before, named_before = held_out_scores()
trainer.train()
after, named_after = held_out_scores()
gain = after - before
print(f"held-out objective {before.mean():.4f} -> {after.mean():.4f}: gain {gain.mean():.4f} +- "
      f"{gain.std() / len(gain) ** 0.5:.4f} over {len(gain)} images")
for name in rewards:
    print(f"  {name}: {named_before[name].mean():.4f} -> {named_after[name].mean():.4f}")
