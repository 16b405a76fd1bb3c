"""The EMA of the LoRA weights follows diffusers' decay rule, and is what evaluation and the saved LoRA use."""

import torch

from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner, RunConfig
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward

STEPS = 3


def generate(pipe) -> torch.Tensor:
    with torch.no_grad():
        return pipe(["a dog", "a cat"], num_inference_steps=STEPS, guidance_scale=1.0, output_type="pt",
                    generator=[torch.Generator().manual_seed(s) for s in (7, 8)]).images


def test_ema_averages_each_step_and_serves_evaluation_and_the_saved_lora(tmp_path):
    torch.manual_seed(0)
    reward = MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny()))
    pipe = tiny_sd_pipeline()
    config = RewardFinetuneConfig(num_inference_steps=STEPS,
                                  run=RunConfig(learning_rate=1e-2, use_ema=True, ema_decay=0.6, max_grad_norm=None,
                                                progress_bar=False))
    trainer = RewardFinetuner(pipe, reward, ["a red car", "a cat on a sofa"], config)
    expected = [p.detach().clone() for p in trainer.params]
    for step in range(1, 6):
        trainer.train_step()
        # diffusers' EMAModel: decay min(decay, (1 + n) / (10 + n)) with n = step - 1, so step 1 copies
        decay = 0.0 if step == 1 else min(0.6, step / (9 + step))
        expected = [e - (1 - decay) * (e - p.detach()) for e, p in zip(expected, trainer.params)]
    for ema, want in zip(trainer.ema.weights, expected):
        torch.testing.assert_close(ema, want, rtol=1e-6, atol=1e-9)
    assert any(not torch.equal(ema, p) for ema, p in zip(trainer.ema.weights, trainer.params))

    trained = [p.detach().clone() for p in trainer.params]
    tuned = generate(pipe)  # the pipeline itself holds the trained weights
    evaluated = trainer.sample(["a dog", "a cat"], [7, 8])
    assert all(torch.equal(a, b) for a, b in zip(trained, trainer.params))  # restored after evaluation
    trainer.save_lora(tmp_path / "lora")
    fresh = tiny_sd_pipeline()
    fresh.load_lora_weights(tmp_path / "lora", weight_name="pytorch_lora_weights.safetensors")  # diffusers<0.40 offline
    saved = generate(fresh)
    torch.testing.assert_close(saved, evaluated, atol=1e-5, rtol=0)  # the saved LoRA is the EMA ...
    assert (saved - tuned).abs().max() > 1e-4  # ... not the trained weights
