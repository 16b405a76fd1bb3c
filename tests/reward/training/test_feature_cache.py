"""The feature cache: encoders run once per image, keys follow content and settings, entries are safetensors."""
from __future__ import annotations

import dataclasses
import re
import shutil
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig
from mst_clipiqa.reward.datasets import QualityDataset
from mst_clipiqa.reward.datasets.synthetic import make_synthetic_dataset
from mst_clipiqa.reward.scoring.images import load_image
from mst_clipiqa.reward.training import FeatureCache, TrainConfig, Trainer
from mst_clipiqa.reward.training import feature_cache as feature_cache_module


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_scenes=3, levels=(0.5, 1.0))


def tiny(variant: str = "B", seed: int = 0) -> MSTCLIPIQA:
    torch.manual_seed(seed)
    return MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant, backend="transformers"))


def count_encoder_calls(model: MSTCLIPIQA) -> Counter:
    """Images through each vision encoder and prompts through the text encoder, counted from now on."""
    counts = Counter()

    def counting(key, function):
        def wrapper(x, *args):
            counts[key] += len(x)
            return function(x, *args)
        return wrapper

    model.coarse.encode_image = counting("coarse images", model.coarse.encode_image)
    model.fine.encode_image = counting("fine images", model.fine.encode_image)
    model.coarse.text_states = counting("prompts", model.coarse.text_states)
    return counts


def test_after_the_first_epoch_training_never_calls_the_encoders(dataset, tmp_path):
    model = tiny("B")
    counts = count_encoder_calls(model)
    after_epoch = []
    config = TrainConfig(epochs=3, n_splits=2, lr=1e-3, cache_dir=str(tmp_path / "cache"), progress=False, cpu=True)
    Trainer(model, dataset, config, tmp_path / "run", on_epoch_end=lambda *_: after_epoch.append(dict(counts))).run()
    n_prompts = len(set(s.prompt for s in dataset.samples))
    assert after_epoch[0] == {"coarse images": len(dataset), "fine images": len(dataset), "prompts": n_prompts}
    assert all(snapshot == after_epoch[0] for snapshot in after_epoch)  # 2 splits x 3 epochs
    assert counts == after_epoch[0]  # the final test evaluation and the report neither

    other_variant = tiny("A")  # same backbones, other head: the images are already cached
    counts = count_encoder_calls(other_variant)
    Trainer(other_variant, dataset, config, tmp_path / "run-A").run()
    assert sum(counts.values()) == 0


def test_cached_features_equal_direct_encoding(dataset, tmp_path):
    model = tiny("B")
    features = FeatureCache(tmp_path, model, progress=False).features(
        [s.image for s in dataset.samples], [s.prompt for s in dataset.samples])
    with torch.no_grad():
        f_coarse, f_fine = model.encode_images(torch.stack([load_image(s.image) for s in dataset.samples]))
        states, mask = model.encode_prompts([s.prompt for s in dataset.samples[:5]])
    assert torch.allclose(features.f_coarse, f_coarse, atol=1e-5)
    assert torch.allclose(features.f_fine, f_fine, atol=1e-5)
    cached_states, cached_mask = features.inputs(range(5))["text"]
    assert torch.equal(cached_mask, mask)
    assert torch.allclose(cached_states, states, atol=1e-6)


def _copy(dataset: QualityDataset, folder) -> QualityDataset:
    folder.mkdir()
    samples = []
    for sample in dataset.samples:
        shutil.copy(sample.image, folder / sample.image.name)
        samples.append(dataclasses.replace(sample, image=folder / sample.image.name))
    return QualityDataset(samples, "copy", dataset.outputs)


def _encoded_images(model: MSTCLIPIQA, root, paths) -> int:
    counts = count_encoder_calls(model)
    FeatureCache(root, model, progress=False).image_features(paths)
    return counts["coarse images"]


def test_keys_follow_image_content_and_encoder_settings(dataset, tmp_path):
    model, root = tiny("A"), tmp_path / "cache"
    paths = [s.image for s in dataset.samples]
    assert _encoded_images(model, root, paths) == len(paths)
    moved = [s.image for s in _copy(dataset, tmp_path / "moved").samples]
    assert _encoded_images(model, root, moved) == 0  # same bytes elsewhere: hits

    pixels = np.asarray(Image.open(moved[0])).copy()
    pixels[:8] = 255 - pixels[:8]
    Image.fromarray(pixels).save(moved[0])  # same name, other content
    assert _encoded_images(model, root, moved) == 1

    assert _encoded_images(tiny("A", seed=1), root, paths) == len(paths)  # other encoder weights
    keys = {FeatureCache(root, model, precision=p, progress=False).key for p in ("no", "bf16")}
    assert len(keys) == 2  # autocast changes embeddings, so it is part of the key
    with pytest.raises(ValueError, match="precision must be one of"):
        FeatureCache(root, model, precision="fp8")


def test_entries_are_safetensors_with_readable_settings(dataset, tmp_path):
    model = tiny("B")
    FeatureCache(tmp_path, model, progress=False).features([s.image for s in dataset.samples[:3]],
                                                           [s.prompt for s in dataset.samples[:3]])
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".safetensors", ".json"}
    assert sorted(p.name for p in files if p.suffix == ".json") == ["settings.json", "settings.json"]
    image_entry = next(p for p in files if p.parent.name.startswith("images-") and p.suffix == ".safetensors")
    assert set(load_file(str(image_entry))) == {"coarse", "fine"}


def test_augmented_inputs_train_from_images_but_evaluate_from_the_cache(dataset, tmp_path):
    flipped = QualityDataset(dataset.samples, "flipped", dataset.outputs, transform=lambda x: x.flip(-1))
    model = tiny("A")
    counts = count_encoder_calls(model)
    config = TrainConfig(epochs=2, n_splits=1, lr=1e-3, cache_dir=str(tmp_path / "cache"), progress=False, cpu=True)
    trainer = Trainer(model, flipped, config, tmp_path / "run")
    report = trainer.run()
    assert not trainer.trains_from_cache and trainer.features is not None
    n_train = report["splits"][0]["n_train"]
    assert counts["coarse images"] == len(dataset) + 2 * n_train  # cache once, then each epoch's training images


def _flip_a_low_bit(path):
    data = bytearray(path.read_bytes())
    data[-4] ^= 1  # lowest mantissa byte of the last float: still finite, still the right shape
    path.write_bytes(bytes(data))


def _with_nan(path):
    tensors = load_file(str(path))
    tensors[next(iter(tensors))].view(-1)[0] = float("nan")
    feature_cache_module.save_entry(tensors, path)  # with a digest that matches: only the NaN check finds it


DAMAGE = {
    "empty": lambda path: path.write_bytes(b""),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2]),
    "wrong shape": lambda path: save_file({"coarse": torch.zeros(3), "fine": torch.zeros(3)}, str(path)),
    "wrong dtype": lambda path: save_file({k: v.half() for k, v in load_file(str(path)).items()}, str(path)),
    "nan": _with_nan,
    "flipped bit": _flip_a_low_bit,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_image_entry_is_named_once_and_encoded_again(dataset, tmp_path, damage):
    paths, prompts = [s.image for s in dataset.samples[:6]], [s.prompt for s in dataset.samples[:6]]
    clean = FeatureCache(tmp_path, tiny("B"), progress=False).features(paths, prompts)
    entry = sorted(next(tmp_path.glob("images-*")).glob("*.safetensors"))[0]
    DAMAGE[damage](entry)
    model = tiny("B")
    counts = count_encoder_calls(model)
    with pytest.warns(UserWarning) as caught:
        repaired = FeatureCache(tmp_path, model, progress=False).features(paths, prompts)
    messages = [str(w.message) for w in caught if "feature cache" in str(w.message)]
    assert len(messages) == 1 and f"re-encoding 1 damaged entries: {entry}" in messages[0]
    assert counts == {"coarse images": 1, "fine images": 1}
    assert torch.allclose(repaired.f_coarse, clean.f_coarse, rtol=0, atol=1e-6)
    assert torch.allclose(repaired.f_fine, clean.f_fine, rtol=0, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FeatureCache(tmp_path, model, progress=False).features(paths, prompts)  # repaired on disk
    assert counts == {"coarse images": 1, "fine images": 1}


def test_a_damaged_prompt_entry_is_encoded_again_and_old_entries_without_a_digest_are_kept(dataset, tmp_path):
    paths, prompts = [s.image for s in dataset.samples[:6]], [s.prompt for s in dataset.samples[:6]]
    clean = FeatureCache(tmp_path, tiny("B"), progress=False).features(paths, prompts)
    damaged, *others = sorted(next(tmp_path.glob("prompts-*")).glob("*.safetensors"))
    damaged.write_bytes(damaged.read_bytes()[:20])
    for entry in others:  # as written before entries carried a digest
        save_file(load_file(str(entry)), str(entry))
    model = tiny("B")
    counts = count_encoder_calls(model)
    with pytest.warns(UserWarning, match=re.escape(f"re-encoding 1 damaged entries: {damaged} does not load")):
        repaired = FeatureCache(tmp_path, model, progress=False).features(paths, prompts)
    assert counts == {"prompts": 1}
    for mine, theirs in zip(repaired.prompt_states, clean.prompt_states):
        assert torch.allclose(mine, theirs, rtol=0, atol=1e-6)
