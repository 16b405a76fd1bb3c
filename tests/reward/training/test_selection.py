"""A joint run's result says which epoch serves every output and what each output's own best would have been."""
from __future__ import annotations

from mst_clipiqa.reward.training.selection import per_output_best


def test_each_output_keeps_its_own_best_next_to_the_shared_epoch():
    curve = {"quality": [0.05, 0.31, 0.16, 0.37], "correspondence": [0.4, 0.1, 0.3, 0.2]}
    history = [{"val": {o: {"srcc": v[e]} for o, v in curve.items()}} for e in range(4)]
    result = per_output_best(history, ["quality", "correspondence"], "srcc", chosen_epoch=4)
    assert result["quality"] == {"own_best_epoch": 4, "own_best_val": 0.37, "chosen_epoch_val": 0.37}
    assert result["correspondence"] == {"own_best_epoch": 1, "own_best_val": 0.4, "chosen_epoch_val": 0.2}


def test_without_validation_there_is_no_own_best():
    result = per_output_best([{"val": {}}, {"val": {}}], ["quality"], "srcc", chosen_epoch=2)
    assert result["quality"] == {"own_best_epoch": None, "own_best_val": None, "chosen_epoch_val": None}
