"""Options several commands share, each declared once with its help: model, data, device, output.

torch and ``reward`` are imported inside the functions that use them, so that building a parser (``--help``,
argument errors) stays fast.
"""
from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from _typeshed import DataclassInstance

    from mst_clipiqa.reward import MSTCLIPIQA
    from mst_clipiqa.reward.datasets import QualityDataset, Split

EPILOG_MODELS = """\
models (--model):
  tiny, tiny-hf     tiny random backbones (open_clip / transformers), offline; scores mean
                    nothing until trained, for trying the commands out
  paper-A, paper-B  the paper's architecture with OpenAI CLIP weights (downloaded once);
                    A = template head, no prompt needed; B = prompt-anchored head
  DIR or HUB_ID     a model written by save_pretrained (e.g. RUN_DIR/model) or a Hub repo
  --variant A|B (or one per output: A,B) and --outputs quality,correspondence shape the
  heads of tiny/paper models; for a saved model --outputs picks which of its outputs to use.
"""


def split_list(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; ``None`` stays ``None``."""
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when there is one; else ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, if present here."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = "expected auto, cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device name; {expected}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: no CUDA GPU is available here; use --device cpu (or auto)")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: Apple's MPS is not available here; use --device cpu (or auto)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: {expected}")
    return device


def check_precision(precision: str | None, device_type: str) -> None:
    """fp16 autocast needs a GPU: on the CPU torch has no fp16 kernels for most layers."""
    if precision == "fp16" and device_type == "cpu":
        raise ValueError("--mixed-precision fp16 needs a CUDA GPU and this run is on the CPU; "
                         "use --mixed-precision bf16 or no")


CACHE_HELP = "feature cache folder (default: $MST_CLIPIQA_CACHE or ~/.cache/mst-clipiqa/features)"


def add_model_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", required=required, help="tiny | tiny-hf | paper-A | paper-B | DIR | HUB_ID "
                                                          "(see 'models' below)")
    group.add_argument("--variant", help="head kind for built-in models: A (template), B (prompt) or a registered "
                                         "kind; comma-separated for one per output")
    group.add_argument("--outputs", help="comma-separated output names, e.g. quality,correspondence")
    group.add_argument("--adapter", action="append", default=[], metavar="DIR",
                       help="load a LoRA adapter (repeatable; the last one is active)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")


def model_from_args(args: argparse.Namespace, seed: int = 0) -> MSTCLIPIQA:
    """The model the model options name, on their device, in eval mode."""
    from mst_clipiqa.reward import load_model

    return load_model(args.model, variant=args.variant, outputs=split_list(args.outputs), seed=seed,
                      adapters=args.adapter, device=resolve_device(args.device))


def add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    # no argparse choices: the kinds are a registry in reward.datasets (which needs torch, and --help must not),
    # so an unknown kind is refused by load_dataset, naming every registered one
    group.add_argument("--dataset", required=True, metavar="KIND",
                       help="data set kind, e.g. agiqa3k, agiqa1k, aigciqa2023, aigiqa20k, csv (any registered "
                            "with reward.datasets.register_dataset_kind); 'synthetic': the procedural set in --data "
                            "(generated if absent)")
    group.add_argument("--data", required=True, type=Path, help="data set folder or annotation file")
    group.add_argument("--csv-columns", metavar="KEY=COLUMN,...",
                       help="for --dataset csv: image=..., prompt=..., group=... and score columns, "
                            "e.g. image=file,prompt=text,quality=mos")
    group.add_argument("--label-range", metavar="LOW,HIGH",
                       help="for --dataset csv: the units of its scores, e.g. 1,10 (default: the span of the labels; "
                            "the other data sets declare theirs)")
    group.add_argument("--split-file", type=Path,
                       help="splits to use: a JSON file (save_splits format), or a folder of published splits in "
                            "IPCE's layout (<k>/train.csv and <k>/val.csv, val being the test part)")


def _csv_kwargs(spec: str | None) -> dict[str, Any]:
    if not spec:
        return {}
    pairs = dict(item.split("=", 1) for item in split_list(spec) if "=" in item)
    if len(pairs) != len(split_list(spec)):
        raise ValueError(f"--csv-columns {spec!r}: expected KEY=COLUMN pairs separated by commas")
    kwargs = {f"{key}_col": pairs.pop(key) for key in ("image", "prompt", "group") if key in pairs}
    if pairs:
        kwargs["score_cols"] = pairs
    return kwargs


def data_from_args(args: argparse.Namespace) -> QualityDataset:
    """The data set the data options name."""
    from mst_clipiqa.reward.datasets import load_dataset

    extra = _csv_kwargs(args.csv_columns)
    if args.label_range:
        extra["label_range"] = _label_range(args.label_range)
    if extra and args.dataset != "csv":
        raise ValueError(f"--csv-columns and --label-range apply to --dataset csv only, not {args.dataset!r}")
    return load_dataset(args.dataset, args.data, **extra)


def _label_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--label-range {text!r}: expected LOW,HIGH, e.g. 1,10") from None
    return low, high


def splits_from_args(args: argparse.Namespace, dataset: QualityDataset, val_fraction: float = 0.0,
                     by: str | None = None, seed: int = 0) -> list[Split] | None:
    """The splits ``--split-file`` names (a validation part of ``val_fraction`` carved from published ones)."""
    if args.split_file is None:
        return None
    from mst_clipiqa.reward.datasets import load_split_source

    return load_split_source(args.split_file, dataset, val_fraction, by, seed)


def add_dataclass_options(group: argparse._ArgumentGroup, config_cls: type, choices: dict[str, Any],
                          presets: Mapping[str, Mapping[str, Any]] | None = None,
                          exclude: Collection[str] = ()) -> None:
    """One flag per field of a settings dataclass, its help taken from the field's ``help`` metadata.

    Booleans that default to on get a negative flag (the field's ``flag``, e.g. ``--no-cache``);
    fields with ``cli=False`` are left out. ``type``, ``nargs`` and ``metavar`` metadata go to argparse
    (e.g. for fields that default to None, or take several values). With ``presets`` (named sets of
    values, such as recipes) a flag left out is absent from the namespace, so a preset can fill it, and
    the help names each preset's value where it differs from the default. Fields named in ``exclude`` are
    left out too (flags another group already added).
    """
    for f in fields(config_cls):
        if not f.metadata.get("cli", True) or f.name in exclude:
            continue
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not MISSING else None
        help_text = f.metadata["help"] + _preset_note(f.name, default, presets or {})
        unset = argparse.SUPPRESS if presets is not None else default
        if "action" in f.metadata:  # e.g. argparse.BooleanOptionalAction for a None | bool field
            group.add_argument(flag, dest=f.name, action=f.metadata["action"], default=unset, help=help_text)
            continue
        if isinstance(default, bool):
            group.add_argument(flag, dest=f.name, action="store_false" if default else "store_true",
                               default=unset, help=("do not " if default else "") + help_text)
            continue
        kind = float if isinstance(default, float) else int if isinstance(default, int) else str
        extra = {key: f.metadata[key] for key in ("nargs", "metavar") if key in f.metadata}
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(flag, dest=f.name, type=f.metadata.get("type", kind), default=unset,
                           choices=sorted(choices[f.name]) if f.name in choices else None, **extra,
                           help=help_text + ("" if default is None or default == () else f" (default: {shown})"))


def _preset_note(name: str, default: Any, presets: Mapping[str, Mapping[str, Any]]) -> str:
    notes = [f"{preset}: {values[name]}" for preset, values in presets.items()
             if name in values and values[name] != default]
    return f" [{'; '.join(notes)}]" if notes else ""


def dataclass_values(args: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    """The values of the flags ``add_dataclass_options`` added (only those given, when it had presets)."""
    return {f.name: getattr(args, f.name) for f in fields(config_cls)
            if f.metadata.get("cli", True) and hasattr(args, f.name)}


def resolved_options(args: argparse.Namespace, config: DataclassInstance,
                     leave_out: Collection[str] = ("out", "resume")) -> dict:
    """The options a run used, as a ``--config`` file names them (``reward.utils.config_files``): the command's
    own flags and the settings dataclass ``config`` resolved (recipe, defaults and flags together); what names
    this one run (its folder, ``--resume``) left out, so that the file starts the same run elsewhere."""
    from mst_clipiqa.reward.utils.config_files import option_name, option_values

    resolved = option_values(config)
    covered = {f.name for f in fields(config) if f.metadata.get("cli", True)}
    own = {option_name(k): v for k, v in vars(args).items()
           if k not in covered and k not in {"func", "command", "config", *leave_out}}
    return {**own, **resolved}

