"""Best-of-N: generate N seeded candidates for a prompt, keep the best by MST-CLIPIQA score.

    python examples/best_of_n.py --tiny                  # offline: tiny random pipeline and reward
    python examples/best_of_n.py --pipeline stabilityai/stable-diffusion-2-1-base \
        --model DIR_OR_HUB_ID --prompt "a lighthouse at dusk" --n 16 --device cuda

Writes the best images, ranking.csv / ranking.json and contact_sheet.png to --out.
"""
import argparse

import torch

from mst_clipiqa.integrations import best_of_n, regenerate
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tiny", action="store_true", help="tiny random pipeline and reward (the default without "
                    "--pipeline)")
parser.add_argument("--pipeline", help="diffusers text-to-image pipeline id or directory")
parser.add_argument("--model", help="MST-CLIPIQA save_pretrained directory or hub id")
parser.add_argument("--prompt", default="a lighthouse at dusk, oil painting")
parser.add_argument("--n", type=int, default=8)
parser.add_argument("--chunk-size", type=int, default=4, help="candidates per pipeline call")
parser.add_argument("--steps", type=int, default=None)
parser.add_argument("--guidance", type=float, default=None)
parser.add_argument("--device", default="cpu")
parser.add_argument("--out", default="demo_out/best_of_n")
args = parser.parse_args()

if args.tiny or not args.pipeline:
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline

    pipe, steps, guidance = tiny_sd_pipeline(device=args.device), args.steps or 4, args.guidance or 3.0
else:
    from diffusers import AutoPipelineForText2Image

    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    pipe = AutoPipelineForText2Image.from_pretrained(args.pipeline, torch_dtype=dtype).to(args.device)
    steps, guidance = args.steps or 30, args.guidance or 7.0
torch.manual_seed(0)
model = MSTCLIPIQA.from_pretrained(args.model) if args.model else MSTCLIPIQA(MSTCLIPIQAConfig.tiny())
reward = MSTCLIPIQAReward(model.to(args.device).eval())

ranking = best_of_n(pipe, args.prompt, reward, n=args.n, chunk_size=args.chunk_size, top_k=3,
                    num_inference_steps=steps, guidance_scale=guidance)
for c in ranking.candidates:
    print(f"#{c.rank:<3} score {c.score:7.4f}  seed {c.seed}")
t = ranking.timings
print(f"generation {t['generation_s']:.2f}s, scoring {t['scoring_s']:.2f}s "
      f"({100 * t['scoring_s'] / t['generation_s']:.1f}% of generation)")

winner = ranking.winner
again = regenerate(pipe, args.prompt, winner.seed, batch_seeds=winner.batch_seeds, num_inference_steps=steps,
                   guidance_scale=guidance)
print(f"winner regenerated from seed {winner.seed} (batch {winner.batch_seeds}): max pixel difference "
      f"{(again - winner.image).abs().max().item():.2e}")
paths = ranking.save(args.out)
print("wrote", ", ".join(str(p) for p in paths.values()))
