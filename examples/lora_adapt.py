"""Adapt a trained model to a new generator with a small LoRA adapter, then switch between adapters.

    python examples/lora_adapt.py                          # offline: tiny random backbones
    python examples/lora_adapt.py --base runs/agiqa3k-example/model

1. a base model: --base DIR, or (default) one trained here on the AGIQA-3K
   sample's images of every generator except Stable Diffusion 1.5;
2. an adapter trained on SD1.5 images only (fusion and heads stay frozen;
   the encoders are cached from step 1), saved apart from the model;
3. a fresh copy of the base model loads the adapter, and both are evaluated
   on the SD1.5 test images, switching the adapter off and on.
With the tiny model the numbers mean nothing; the steps are the real ones.
"""
import argparse
from pathlib import Path

from mst_clipiqa.reward import load_model
from mst_clipiqa.reward.datasets import load_agiqa3k, make_splits
from mst_clipiqa.reward.training import TrainConfig, evaluate_model, load_adapter, set_adapter, train

SAMPLE = Path(__file__).resolve().parent / "data" / "agiqa3k-mini"  # 48 images, shipped with the repository


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SAMPLE, help="AGIQA-3K folder (data.csv and images)")
    parser.add_argument("--base", default="tiny", help="a trained model directory, or tiny (offline)")
    parser.add_argument("--out", type=Path, default=Path("runs/lora-example"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cache-dir", help="feature cache folder (default: ~/.cache/mst-clipiqa/features)")
    args = parser.parse_args(argv)

    data = load_agiqa3k(args.data)
    new = [i for i, s in enumerate(data.samples) if s.image.name.startswith("sd1.5")]
    old = [i for i in range(len(data)) if i not in set(new)]
    settings = dict(epochs=args.epochs, lr=1e-3, n_splits=1, split_by="prompt", outputs=("quality",),
                    cache_dir=args.cache_dir)
    base = args.base
    if base == "tiny":  # train a base model on the other generators first
        train(load_model("tiny"), data.subset(old), TrainConfig(**settings), args.out / "base",
              resume=(args.out / "base" / "run.json").exists())
        base = args.out / "base" / "model"

    sd15 = data.subset(new)
    adapter_run = args.out / "sd15"
    train(load_model(str(base)), sd15, TrainConfig(**settings, lora_rank=8, adapter_name="sd15"), adapter_run,
          resume=(adapter_run / "run.json").exists())

    model = load_model(str(base))
    load_adapter(model, adapter_run / "adapter")
    test = make_splits(sd15, 1, by="prompt")  # the split the adapter run used: its test part was never trained on
    results = {}
    for name in (None, "sd15"):
        set_adapter(model, name)
        results[name or "base"] = evaluate_model(model, sd15, test, cache_dir=args.cache_dir, progress=False)
        srcc = results[name or "base"]["summary"]["quality"]["srcc"]["mean"]
        print(f"SD1.5 test images, {'adapter ' + name if name else 'base model'}: SRCC {srcc:.3f}")
    print(f"adapter: {adapter_run / 'adapter'} (load with reward.training.load_adapter)")
    return results


if __name__ == "__main__":
    main()
