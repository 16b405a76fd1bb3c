"""A saved LoRA is readable by peft as well as diffusers, for every family with a LoRA loader; load_lora reads a
folder in peft's format alone; and loading prints none of diffusers' notices about the text encoders."""
from __future__ import annotations

import logging

import pytest
import torch

from mst_clipiqa.integrations import add_lora, load_lora, save_lora
from mst_clipiqa.integrations.pipelines.families import pipeline_family
from mst_clipiqa.integrations.pipelines.tiny import (
    tiny_flux_pipeline,
    tiny_sd3_pipeline,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)

FAMILIES = {"sd": tiny_sd_pipeline, "sdxl": tiny_sdxl_pipeline, "sd3": tiny_sd3_pipeline, "flux": tiny_flux_pipeline}


def lora_state(denoiser: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA matrices by module, whatever the adapter's name."""
    return {".".join(p for p in name.split(".") if not p.startswith("default")): value.detach().clone()
            for name, value in denoiser.state_dict().items() if "lora_" in name}


@pytest.fixture(scope="module", params=list(FAMILIES))
def saved(request, tmp_path_factory):
    pipe = FAMILIES[request.param]()
    denoiser = pipeline_family(pipe).denoiser
    name = next(n for n in ("unet", "transformer") if getattr(pipe, n, None) is denoiser)
    add_lora(denoiser, rank=2, seed=0)
    with torch.no_grad():
        for p in denoiser.parameters():
            if p.requires_grad:
                p.normal_()  # a trained LoRA: B no longer zero
    folder = save_lora(pipe, denoiser, tmp_path_factory.mktemp(request.param) / "lora", name)
    return request.param, folder, lora_state(denoiser)


def test_peft_reads_the_saved_lora(saved):
    from peft import PeftModel

    family, folder, expected = saved
    denoiser = pipeline_family(FAMILIES[family]()).denoiser
    model = PeftModel.from_pretrained(denoiser, str(folder))
    got = {k.removeprefix("base_model.model."): v for k, v in lora_state(model).items()}
    assert got.keys() == expected.keys() and all(torch.equal(got[k], v) for k, v in expected.items())


def test_load_lora_reads_diffusers_file_and_peft_folder_alike_without_notices(saved, tmp_path):
    family, folder, expected = saved
    peft_only = tmp_path / "peft"
    peft_only.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (peft_only / name).write_bytes((folder / name).read_bytes())
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("diffusers").addHandler(handler)  # diffusers' loggers do not propagate to the root
    try:
        for source in (folder, peft_only):
            pipe = FAMILIES[family]()
            load_lora(pipe, source)
            assert {k: torch.equal(v, expected[k]) for k, v in lora_state(pipeline_family(pipe).denoiser).items()
                    } == dict.fromkeys(expected, True), source
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert not [r.getMessage() for r in records if r.levelno >= logging.WARNING]
