"""Published split files in IPCE's layout: written and read back, matched by image key, validation carved."""
import csv
import warnings
from pathlib import Path

import pytest

from mst_clipiqa.reward.datasets import (
    QualityDataset,
    QualitySample,
    load_split_folder,
    load_split_source,
    make_splits,
    save_split_folder,
    save_splits,
)


def dataset(name: str, n: int = 30, per_prompt: int = 3, models: tuple[str, ...] = ()) -> QualityDataset:
    """Samples of a named data set; the files need not exist (splits never open them)."""
    outputs = {"agiqa3k": ("quality", "correspondence"), "aigciqa2023": ("quality", "authenticity",
                                                                           "correspondence")}.get(name, ("quality",))
    samples = []
    for i in range(n):
        model = models[i % len(models)] if models else None
        image = f"{i // len(models):03d}-1.png" if models else f"SD_normal_{i // per_prompt:03d}_{i}.jpg"
        samples.append(QualitySample(Path("/nowhere") / (model or "") / image, f"prompt {i // per_prompt}",
                                     dict.fromkeys(outputs, 1.0 + i / n), group=str(i // per_prompt),
                                     key=f"{model}/{image}" if model else image))
    return QualityDataset(samples, name, outputs, split_by="prompt" if name == "agiqa3k" else "image")


def rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_round_trip_keeps_test_and_training_parts(tmp_path):
    data = dataset("agiqa3k")
    splits = make_splits(data, 3, val_fraction=0.1, by="prompt", seed=4)
    folder = save_split_folder(splits, data, tmp_path / "Database" / "AGIQA-3K")
    assert sorted(p.name for p in folder.iterdir()) == ["1", "2", "3"]
    written = rows(folder / "1" / "val.csv")
    assert written[0] == ["name", "prompt", "mos_quality", "mos_align"]  # the annotation file's columns
    assert [r[0] for r in written[1:]] == [data.keys()[i] for i in splits[0].test]
    read = load_split_folder(folder, data, val_fraction=0.1, seed=4)
    for old, new in zip(splits, read, strict=True):
        assert new.test == old.test and sorted(new.train + new.val) == sorted(old.train + old.val)
        assert new.val and new.by == "prompt"
        new.check_groups(data.groups())
    without_val = load_split_folder(folder, data, val_fraction=0.0)
    assert [(s.train, s.test) for s in without_val] == [(sorted(s.train + s.val), s.test) for s in splits]
    assert read[0].meta["source"] == str(folder / "1")


def test_keys_of_two_columns_and_files_without_a_header(tmp_path):
    generators = ("Controlnet", "DALLE")  # AIGCIQA2023: the same file name under every generator
    data = dataset("aigciqa2023", n=20, models=generators)
    assert data.keys()[:2] == ["Controlnet/000-1.png", "DALLE/000-1.png"]
    splits = make_splits(data, 2, val_fraction=0.0, seed=1)
    folder = save_split_folder(splits, data, tmp_path / "AIGCIQA2023")
    assert rows(folder / "2" / "train.csv")[0] == ["model", "image_name", "mosz1", "mosz2", "mosz3", "prompt"]
    assert [(s.train, s.test) for s in load_split_folder(folder, data, 0.0)] == [(s.train, s.test) for s in splits]

    twenty = dataset("aigiqa20k", n=12)  # info_train.csv as circulated: no header row
    splits = make_splits(twenty, 1, val_fraction=0.0, seed=2)
    folder = save_split_folder(splits, twenty, tmp_path / "AIGC")
    assert rows(folder / "1" / "val.csv")[0][0] == twenty.keys()[splits[0].test[0]]
    assert load_split_folder(folder / "1", twenty, 0.0)[0].test == splits[0].test  # one split's own folder


def write_split(folder: Path, train: list[str], test: list[str]) -> None:
    folder.mkdir(parents=True)
    for name, keys in (("train.csv", train), ("val.csv", test)):
        with (folder / name).open("w", newline="") as f:
            csv.writer(f).writerows([["Image", "Prompt", "MOS"], *[[k, "p", 2.5] for k in keys]])


def test_published_quirks_numbering_duplicates_and_foreign_images(tmp_path):
    data = dataset("agiqa1k", n=12)
    keys = data.keys()
    for k in (1, 2, 10):  # IPCE numbers 1..10 (AGIQA-1K: 0..10); read in numeric order
        write_split(tmp_path / "AGIQA-1K" / str(k), keys[k % 3:10], keys[:k % 3])
    write_split(tmp_path / "AGIQA-1K" / "0", keys[2:10] + keys[:1], keys[:2])  # keys[0] on both sides
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_split_folder(tmp_path / "AGIQA-1K", data, val_fraction=0.0)
    assert str(caught[0].message).endswith("0: 1 image(s) listed in both parts kept in test only; "
                                           "2 image(s) of the data set in neither part left out")
    assert len(caught) == 4  # every split leaves keys[10:] out
    assert [s.meta["source"][-2:] for s in splits] == ["/0", "/1", "/2", "10"]
    assert splits[0].test == [0, 1] and splits[0].train == list(range(2, 10))
    assert splits[3].test == [0] and splits[3].train == list(range(1, 10))

    write_split(tmp_path / "other" / "1", ["SD_normal_099_99.jpg"], keys[:2])
    with pytest.raises(ValueError, match=r"1 image\(s\) are not in the data set, e.g. \['SD_normal_099_99\.jpg'\]"):
        load_split_folder(tmp_path / "other", data)
    with pytest.raises(ValueError, match="no split found; expected train.csv and val.csv"):
        load_split_folder(tmp_path, data)


def test_a_split_by_image_is_refused_as_grouped_by_prompt(tmp_path):
    data = dataset("agiqa3k", n=12)
    keys = data.keys()  # keys[0..2] share prompt 0: 0 and 1 train, 2 test
    write_split(tmp_path / "1", keys[:2] + keys[3:], keys[2:3])
    with pytest.raises(ValueError, match="is in both train and test: this split file is not grouped by prompt"):
        load_split_folder(tmp_path, data)
    assert load_split_folder(tmp_path, data, 0.0, by="image")[0].test == [2]


def test_split_source_reads_json_or_a_folder(tmp_path):
    data = dataset("agiqa3k")
    splits = make_splits(data, 2, by="prompt")
    save_splits(splits, tmp_path / "splits.json")
    assert load_split_source(tmp_path / "splits.json", data) == splits
    save_split_folder(splits, data, tmp_path / "ipce")
    assert [s.test for s in load_split_source(tmp_path / "ipce", data)] == [s.test for s in splits]
