"""Pipelines by name: a downloaded one loads without other libraries' notices; offline and not cached, one line."""
from __future__ import annotations

import logging
import warnings

import pytest

from mst_clipiqa.cli.pipeline_loading import load_pipeline


def test_an_uncached_hub_pipeline_offline_is_one_short_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        with pytest.raises(ValueError) as error:
            load_pipeline("stabilityai/stable-diffusion-xl-base-1.0")
    message = str(error.value)
    assert "HF_HUB_OFFLINE=1" in message and "tiny-sdxl" in message and len(message) < 300 and "\n" not in message
    assert not caught and not caplog.records  # no torch_dtype deprecation, no "Couldn't connect to the Hub"


def test_a_saved_pipeline_loads_without_notices(tmp_path, caplog):
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline

    tiny_sd_pipeline().save_pretrained(tmp_path / "pipe")
    handler = logging.Handler()
    handler.emit = caplog.records.append
    logging.getLogger("diffusers").addHandler(handler)  # diffusers' loggers may not propagate to the root
    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
            warnings.simplefilter("always")
            pipe, tiny = load_pipeline(str(tmp_path / "pipe"))
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert tiny is None and type(pipe).__name__ == "StableDiffusionPipeline"
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
