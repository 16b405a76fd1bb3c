"""benchmarks/gpu_recipes.py is prepared for a GPU; --tiny runs the same code on the tiny pipelines on the CPU."""
from benchmarks import gpu_recipes


def test_gpu_recipes_runs_with_tiny_pipelines(capsys):
    rows = gpu_recipes.main(["--tiny", "--steps", "1"])
    out = capsys.readouterr().out
    assert "device: CPU" in out and "| sdxl-draft |" in out and "| sd35m-grpo |" in out
    for row in rows[:2]:
        assert row["s_per_step"] > 0 and row["plan_GiB"] > 0 and 0 < row["reward_share"] < 1
    assert rows[2]["reward_TFLOPs"] > 0 and rows[2]["matmul_TFLOPs"] > 0
