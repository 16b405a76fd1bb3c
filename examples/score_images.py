"""Score a folder of images (default: the AGIQA-3K sample) and print them ranked.

    python examples/score_images.py [FOLDER] [--model DIR_OR_HUB_ID] [--prompt TEXT]

Without --model it uses tiny random backbones: the ranking then means nothing,
but every step runs offline.
"""
import argparse
from pathlib import Path

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward, collect_images

SAMPLE = Path(__file__).resolve().parent / "data" / "agiqa3k-mini" / "images"

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("folder", nargs="?", default=SAMPLE, type=Path)
parser.add_argument("--model", help="save_pretrained directory or hub id (default: tiny offline model)")
parser.add_argument("--prompt", help="generation prompt, for models with a prompt head")
parser.add_argument("--top", type=int, default=10)
args = parser.parse_args()

model = MSTCLIPIQA.from_pretrained(args.model) if args.model else MSTCLIPIQA(MSTCLIPIQAConfig.tiny())
reward = MSTCLIPIQAReward(model)
paths = collect_images([args.folder])
scores = reward.score(paths, args.prompt)  # batched, no gradients
ranked = sorted(zip(scores.tolist(), paths), reverse=True)
print(f"{len(paths)} images scored in range {reward.score_range}")
for rank, (score, path) in enumerate(ranked[: args.top], 1):
    print(f"{rank:>3}  {score:6.3f}  {path.name}")
