"""Train MST-CLIPIQA on the AGIQA-3K sample with the protocol recipe: ten seeded 8:2 splits grouped by prompt.

    python examples/train_agiqa3k.py                       # offline: tiny random backbones, 3 epochs
    python examples/train_agiqa3k.py --model paper-A       # the paper's architecture (downloads OpenAI CLIP)

Each split trains on 70% of the images, picks its best epoch on a 10%
validation part and reports SRCC / PLCC / KRCC / RMSE (in the data set's 0-5
units) on its 20% test part, beside a ridge probe on the same frozen
features; the report gives mean, median and std over the splits. Images are
encoded once (feature cache), so the ten splits cost little more than one.
Running the same command again continues (or just re-reports) the run in
--out. With the tiny model the numbers mean nothing; the steps are the real ones.
"""
import argparse
from pathlib import Path

from mst_clipiqa.reward import load_model
from mst_clipiqa.reward.datasets import load_agiqa3k
from mst_clipiqa.reward.training import TrainConfig, train

SAMPLE = Path(__file__).resolve().parent / "data" / "agiqa3k-mini"  # 48 images, shipped with the repository


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SAMPLE, help="AGIQA-3K folder (data.csv and images)")
    parser.add_argument("--model", default="tiny", help="tiny (offline), paper-A, paper-B, or a saved model")
    parser.add_argument("--out", type=Path, default=Path("runs/agiqa3k-example"))
    parser.add_argument("--epochs", type=int, help="default: 3 for tiny, the protocol recipe's otherwise")
    parser.add_argument("--cache-dir", help="feature cache folder (default: ~/.cache/mst-clipiqa/features)")
    args = parser.parse_args(argv)

    tiny = args.model.startswith("tiny")
    dataset = load_agiqa3k(args.data)  # quality (mos_quality) and correspondence (mos_align); groups = prompt ids
    model = load_model(args.model, outputs=["quality"])
    epochs = {"epochs": args.epochs or 3} if tiny or args.epochs else {}
    config = TrainConfig(outputs=("quality",), cache_dir=args.cache_dir, **epochs)  # the protocol recipe
    print(config.describe(dataset))
    report = train(model, dataset, config, args.out, resume=(args.out / "run.json").exists())

    srcc = report["summary"]["test"]["quality"]["srcc"]
    before = report["summary"]["untrained_test"]["quality"]["srcc"]
    probe = report["summary"]["probe_test"]["quality"]["srcc"]
    print(f"quality SRCC over {srcc['count']} splits: mean {srcc['mean']:.3f}, median {srcc['median']:.3f}, "
          f"std {srcc['std']:.3f} (untrained: {before['mean']:.3f}; ridge probe: {probe['mean']:.3f})")
    print(f"model: {report['model_dir']}   report and plots: {args.out}")
    return report


if __name__ == "__main__":
    main()
