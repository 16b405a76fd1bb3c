"""trl's DDPOTrainer and AlignPropTrainer with the MST-CLIPIQA reward (trl <= 0.23.1: later trl has neither).

    python examples/trl_ddpo_alignprop.py --tiny            # offline: a tiny random SD pipeline, saved to --out
    python examples/trl_ddpo_alignprop.py --pipeline stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --model DIR_OR_HUB_ID --trainer alignprop --epochs 10 --steps 50 --mixed-precision fp16

DDPO (policy gradients) takes ``ddpo_reward_fn(reward)``, which scores without gradients;
AlignProp backpropagates the reward into the LoRA and takes ``ddpo_reward_fn(reward,
differentiable=True)``. Prints each epoch's mean reward per trainer.
"""
import argparse
from pathlib import Path

import torch
from accelerate import PartialState
from trl import AlignPropConfig, AlignPropTrainer, DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

from mst_clipiqa.integrations import ddpo_reward_fn
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward

PROMPTS = ["a cat on a sofa", "a lighthouse at dusk", "a bowl of fruit", "a red car"]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tiny", action="store_true", help="tiny random pipeline and reward (the default without "
                    "--pipeline)")
parser.add_argument("--pipeline", help="Stable Diffusion id or directory (trl's pipeline loads it by name)")
parser.add_argument("--model", help="MST-CLIPIQA save_pretrained directory or hub id")
parser.add_argument("--trainer", choices=["ddpo", "alignprop", "both"], default="both")
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--steps", type=int, default=2, help="sampling steps per image")
parser.add_argument("--batch-size", type=int, default=2)
parser.add_argument("--mixed-precision", default="no", help="trl's own setting (its default, fp16, needs a GPU)")
parser.add_argument("--out", default="demo_out/trl")
args = parser.parse_args()
out = Path(args.out)

if args.tiny or not args.pipeline:
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline

    pipeline_path = str(out / "tiny_sd")
    tiny_sd_pipeline().save_pretrained(pipeline_path)  # trl's pipeline is built from a name or a folder
    torch.manual_seed(0)
    reward = MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny("B")))
else:
    pipeline_path, reward = args.pipeline, MSTCLIPIQAReward.from_pretrained(args.model)
device = "cuda" if torch.cuda.is_available() else "cpu"
reward.to(device)  # a frozen reward: moved, never passed to accelerator.prepare


def recorded(reward_fn, epochs):
    """The reward function, keeping each call's mean reward."""
    def fn(images, prompts, metadata):
        rewards, named = reward_fn(images, prompts, metadata)
        epochs.append(float(rewards.detach().float().mean()))
        return rewards, named
    return fn


def prompt_fn():
    return PROMPTS[int(torch.randint(len(PROMPTS), ()))], {}


PartialState()  # trl's pipeline logs through accelerate's logger, which fails before any accelerate state exists
common = dict(num_epochs=args.epochs, sample_num_steps=args.steps, sample_guidance_scale=2.0, save_freq=10**6,
              train_batch_size=args.batch_size, mixed_precision=args.mixed_precision,
              project_kwargs={"project_dir": str(out / "runs")})
means: dict[str, list[float]] = {}
if args.trainer in ("ddpo", "both"):
    config = DDPOConfig(**common, sample_batch_size=args.batch_size, sample_num_batches_per_epoch=1,
                        train_timestep_fraction=1.0, per_prompt_stat_tracking=False)
    pipeline = DefaultDDPOStableDiffusionPipeline(pipeline_path, use_lora=True)
    means["ddpo"] = []
    DDPOTrainer(config, recorded(ddpo_reward_fn(reward), means["ddpo"]), prompt_fn, pipeline).train()
if args.trainer in ("alignprop", "both"):
    config = AlignPropConfig(**common, truncated_backprop_rand=False, truncated_backprop_timestep=args.steps - 1)
    pipeline = DefaultDDPOStableDiffusionPipeline(pipeline_path, use_lora=True)
    means["alignprop"] = []
    AlignPropTrainer(config, recorded(ddpo_reward_fn(reward, differentiable=True), means["alignprop"]), prompt_fn,
                     pipeline).train()
for name, values in means.items():
    print(f"{name}: mean reward per call " + " ".join(f"{v:.4f}" for v in values))
