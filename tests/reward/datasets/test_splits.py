import json

import pytest

from mst_clipiqa.reward.datasets.splits import Split, load_splits, make_splits, save_splits


def parts(split):
    return set(split.train), set(split.val), set(split.test)


def test_by_image_sizes_disjoint_and_covering():
    splits = make_splits(100, n_splits=10, seed=3)
    assert len(splits) == 10
    for s in splits:
        train, val, test = parts(s)
        assert (len(train), len(val), len(test)) == (70, 10, 20)
        assert not (train & val or train & test or val & test)
        assert train | val | test == set(range(100))
        assert s.test == sorted(s.test)
    assert len({tuple(s.test) for s in splits}) == 10  # the repetitions differ


def test_deterministic_by_seed_and_prefix_stable():
    a = make_splits(50, n_splits=4, seed=7)
    assert a == make_splits(50, n_splits=4, seed=7)
    assert a[:2] == make_splits(50, n_splits=2, seed=7)
    assert a[0].test != make_splits(50, n_splits=1, seed=8)[0].test


def test_by_prompt_keeps_groups_whole():
    groups = [f"g{i // 5}" for i in range(60)] + ["big"] * 15 + ["g0"] * 2  # g0 not contiguous
    splits = make_splits(len(groups), n_splits=10, by="prompt", groups=groups, seed=1)
    for s in splits:
        s.check_groups(groups)
        train, val, test = parts(s)
        assert train | val | test == set(range(len(groups)))
        assert val and test and train
        assert abs(len(test) - 0.2 * len(groups)) <= 15  # within one group of the target


def test_by_prompt_uses_dataset_groups():
    class Toy:
        def __len__(self):
            return 30

        def groups(self):
            return [str(i % 6) for i in range(30)]

    split = make_splits(Toy(), n_splits=1, by="prompt", val_fraction=0.0)[0]
    assert split.val == [] and len(split.test) == 5  # one group of 5 is closest to 6
    split.check_groups(Toy().groups())


def test_invalid_arguments():
    with pytest.raises(ValueError, match="needs groups"):
        make_splits(10, by="prompt")
    with pytest.raises(ValueError, match="3 groups given for 4 samples"):
        make_splits(4, by="prompt", groups=["a", "b", "c"])
    with pytest.raises(ValueError, match="2 groups; need at least 3"):
        make_splits(4, by="prompt", groups=["a", "a", "b", "b"])
    with pytest.raises(ValueError, match="test_fraction=0.8, val_fraction=0.3"):
        make_splits(10, test_fraction=0.8, val_fraction=0.3)
    with pytest.raises(ValueError, match="by='scene'"):
        make_splits(10, by="scene")


def test_round_trip(tmp_path):
    groups = [str(i // 3) for i in range(30)]
    splits = make_splits(30, n_splits=3, by="prompt", groups=groups, seed=5)
    path = tmp_path / "splits.json"
    save_splits(splits, path)
    document = json.loads(path.read_text())
    assert {k: document[k] for k in ("n", "by", "seed", "test_fraction", "val_fraction")} == {
        "n": 30, "by": "prompt", "seed": 5, "test_fraction": 0.2, "val_fraction": 0.1}
    assert load_splits(path, n=30, groups=groups) == splits


def corrupt(tmp_path, edit):
    path = tmp_path / "splits.json"
    save_splits(make_splits(20, n_splits=2), path)
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["splits"][1]["test"].append(25), r"split 1: invalid split: test holds index 25, "
                                                   r"out of range 0\.\.19"),
    (lambda d: d["splits"][0]["val"].append(d["splits"][0]["train"][0]),
     r"split 0: invalid split: index \d+ appears in train and val"),
    (lambda d: d["splits"][0]["train"].append("3"), r"train holds '3'; expected integers"),
    (lambda d: d["splits"][0].pop("test"), r"split 0: missing key 'test'"),
    (lambda d: d.update(format="other"), r"not a splits file"),
    (lambda d: d.update(splits=[]), r"non-empty list of splits"),
])
def test_rejects_corrupted_files(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        load_splits(corrupt(tmp_path, edit))


def test_rejects_wrong_n_straddling_groups_and_bad_json(tmp_path):
    path = tmp_path / "s.json"
    save_splits(make_splits(20, n_splits=1, seed=0), path)
    with pytest.raises(ValueError, match="splits are for n=20 samples; expected n=21"):
        load_splits(path, n=21)
    groups = [str(i // 2) for i in range(20)]
    straddling = Split(list(range(0, 15)), [], list(range(15, 20)), 20, by="prompt")
    save_splits([straddling], path)  # 14/15 share group "7" but 14 is train, 15 is test
    with pytest.raises(ValueError, match="group '7' is in both train and test"):
        load_splits(path, groups=groups)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read splits JSON"):
        load_splits(path)


def test_splits_draw_from_a_stream_of_their_own(tmp_path):
    """Split k of seed s once used default_rng([s, k]), the very stream that picks the synthetic set's
    mismatched prompts ([seed, 2]): split 2 of seed 0 then trained on no mismatched image at all."""
    from mst_clipiqa.reward.datasets import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path, n_scenes=2, levels=(1.0,))
    mismatched = {i for i, s in enumerate(data.samples) if s.scores["correspondence"] < 5}
    for split in make_splits(data, n_splits=3, seed=0):
        assert mismatched & set(split.train)
