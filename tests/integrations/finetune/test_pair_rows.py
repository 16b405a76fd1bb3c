import io
import re

import pytest
from PIL import Image

from mst_clipiqa.integrations import RunConfig
from mst_clipiqa.integrations.finetune.dpo import DPOConfig, DPOTrainer
from mst_clipiqa.integrations.finetune.dpo_objective import pair_batch
from mst_clipiqa.integrations.finetune.pair_rows import check_pairs, row_problem

from ..preference_data import bright_pipe


def _png(size, value=0):
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def _row(label=1.0, size=32, **changes):
    return {"caption": "a cat", "jpg_0": _png(size, 200), "jpg_1": _png(size, 50), "label_0": label, **changes}


BAD = {
    "nan label": _row(float("nan")),
    "label 2": _row(2.0),
    "label -1": _row(-1),
    "soft label": _row(0.7),
    "label None": _row(None),
    "no label": {k: v for k, v in _row().items() if k != "label_0"},
    "text label": _row("1"),
    "not an image": _row(jpg_0=b"definitely not a png"),
    "same image": _row(jpg_1=_png(32, 200)),
    "caption None": _row(caption=None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_malformed_row_is_named(case):
    rows = [_row(), _row(0.0), BAD[case]]
    with pytest.raises(ValueError, match=r"1 of 3 pairs are invalid \(row 2: .*--drop-invalid"):
        check_pairs(rows)
    with pytest.raises(ValueError, match="pair row 0: "):
        pair_batch([BAD[case]], 16, 16)  # the API checks the rows it is given, too


def test_ties_are_found_before_training_and_dropped_on_request():
    rows = [_row(), _row(0.5), _row(0.0), _row(0.5)]
    with pytest.raises(ValueError, match=r"2 of 4 pairs are ties \(label_0 = 0.5.*rows 1, 3\).*--drop-ties"):
        check_pairs(rows)
    with pytest.warns(UserWarning, match=r"dropped 2 of 4 pairs \(0 invalid, 2 ties\); training on 2"):
        kept = check_pairs(rows, drop_ties=True)
    assert [r["label_0"] for r in kept] == [1.0, 0.0]
    with pytest.raises(ValueError, match="nothing to train on"):
        check_pairs([_row(0.5)], drop_ties=True)


def test_a_dataset_is_checked_by_columns_and_dropped_rows_counted():
    import datasets

    table = datasets.Dataset.from_list([_row(), _row(float("nan")), _row(0.0), _row(jpg_0=b"xx")])
    with pytest.warns(UserWarning, match=r"dropped 2 of 4 pairs \(2 invalid, 0 ties; row 1: label_0 is nan"):
        kept = check_pairs(table, drop_invalid=True)
    assert isinstance(kept, datasets.Dataset) and kept["label_0"] == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['label_0'\]"):
        check_pairs(table.remove_columns("label_0"))
    streaming = table.to_iterable_dataset()
    with pytest.raises(ValueError, match="streaming datasets.IterableDataset.*without streaming=True"):
        check_pairs(streaming)
    assert row_problem(_row()) is None


def test_pairs_of_different_sizes_are_resized_one_by_one():
    winners, losers, captions = pair_batch([_row(size=32), _row(0.0, size=64, jpg_1=_png(48, 9))], 16, 16)
    assert winners.shape == losers.shape == (2, 3, 16, 16) and captions == ["a cat", "a cat"]
    assert float(winners[0].mean()) == pytest.approx(200 / 255, abs=1e-3)  # label 1: jpg_0 wins
    assert float(winners[1].mean()) == pytest.approx(9 / 255, abs=1e-3)  # label 0: jpg_1 wins


def test_the_trainer_refuses_bad_pairs_before_anything_runs(tmp_path):
    rows = [_row(), _row(0.5), _row(0.0)]
    with pytest.raises(ValueError, match="1 of 3 pairs are ties"):
        DPOTrainer(bright_pipe(), rows, DPOConfig(run=RunConfig(max_steps=1, output_dir=str(tmp_path / "a"))))
    assert not (tmp_path / "a").exists()
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        config = DPOConfig(drop_ties=True, run=RunConfig(max_steps=1, progress_bar=False))
        trainer = DPOTrainer(bright_pipe(), rows, config)
    assert len(trainer.rows) == 2
    import datasets

    streaming = datasets.Dataset.from_list(rows[:1]).to_iterable_dataset()  # was a raw "has no len()" TypeError
    with pytest.raises(ValueError, match="streaming datasets.IterableDataset.*without streaming=True"):
        DPOTrainer(bright_pipe(), streaming, DPOConfig(run=RunConfig(max_steps=1, output_dir=str(tmp_path / "b"))))
    assert not (tmp_path / "b").exists()


def test_dpo_skip_drops_a_non_finite_batch_and_trains_on():
    rows = [_row(), _row(0.0, jpg_0=_png(32, 90))]
    trainer = DPOTrainer(bright_pipe(), rows, DPOConfig(run=RunConfig(max_steps=2, batch_size=1, on_nonfinite="skip",
                                                                      progress_bar=False)))
    real, calls = trainer.objective.loss, []

    def nan_once(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        calls.append(0)
        return (loss * float("nan"), stats) if len(calls) == 1 else (loss, stats)

    trainer.objective.loss = nan_once
    with pytest.warns(RuntimeWarning, match=r"dropped a batch \(loss non-finite"):
        log = trainer.train()  # raised NonFiniteError advising --on-nonfinite skip, which was set
    assert trainer.global_step == 2 and trainer.skipped_batches == 1 and len(log.history) == 2


def test_check_rows_reads_the_images_of_a_sample_and_every_label():
    import re

    from mst_clipiqa.integrations.finetune import pair_rows

    rows = [_row(jpg_0=b"not a png") for _ in range(5)] + [_row(float("nan"))]
    with pytest.raises(ValueError, match=r"of 6 pairs are invalid"):
        check_pairs(rows, check_rows="all")
    with pytest.warns(UserWarning, match=r"checking a random sample of 2 of the 6 pairs; .*--check-rows all"):
        with pytest.raises(ValueError, match=r"of 6 \(images: a sample of 2\) pairs are invalid") as error:
            check_pairs(rows, check_rows=2)
    named = re.findall(r"row (\d): (jpg_0|label_0)", str(error.value))
    assert ("5", "label_0") in named and len(named) <= 2  # every label; the images of 2 rows, not of 5
    clean = [_row(), _row(0.0)] * 3
    with pytest.warns(UserWarning, match=r"sample of 2 of the 6 pairs by default \(more than 2 rows\)"):
        pair_rows.CHECK_ALL_UP_TO, limit = 2, pair_rows.CHECK_ALL_UP_TO
        try:
            assert check_pairs(clean) is clean
        finally:
            pair_rows.CHECK_ALL_UP_TO = limit
    assert check_pairs(clean, check_rows=6) is clean  # a sample as large as the rows is all of them: no notice
    for bad in (0, -1, "some", True, 2.5):
        with pytest.raises(ValueError, match=r"check_rows must be 'all' or a number of rows >= 1"):
            DPOConfig(check_rows=bad)
    assert DPOConfig(check_rows="7").check_rows == 7


def test_check_rows_on_the_command_line(capsys):
    from mst_clipiqa.cli import build_parser, main

    args = ["finetune", "--method", "dpo", "--pairs", "pairs", "--pipeline", "tiny", "--model", "tiny", "--out", "o"]
    assert build_parser().parse_args([*args, "--check-rows", "all"]).check_rows == "all"
    assert build_parser().parse_args([*args, "--check-rows", "5000"]).check_rows == 5000
    with pytest.raises(SystemExit) as exit:
        main([*args, "--check-rows", "none"])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--check-rows: check_rows must be 'all' or a number of rows >= 1, got 'none'" in err[-1]


def test_finetune_dpo_refuses_a_tie_in_one_line_before_training_and_drops_it_on_request(tmp_path, capsys):
    import pyarrow.parquet as pq

    from mst_clipiqa.cli import main
    from mst_clipiqa.integrations import preference_pairs
    from mst_clipiqa.integrations.inference.preference_pairs import shard_path
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline

    from ..preference_data import PROMPTS, brightness

    pairs = tmp_path / "pairs"
    preference_pairs(tiny_sd_pipeline(), PROMPTS[:3], brightness, pairs, n=2, pairs="all", progress=False,
                     num_inference_steps=1, guidance_scale=1.0)
    table = pq.read_table(shard_path(pairs, 1))
    pq.write_table(table.set_column(table.schema.get_field_index("label_0"), "label_0", [[0.5] * len(table)]),
                   shard_path(pairs, 1))
    argv = ["finetune", "--method", "dpo", "--pairs", str(pairs), "--pipeline", "tiny", "--model", "tiny",
            "--max-steps", "1", "--batch-size", "1", "--eval-images", "0", "--quiet", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"1 of 3 pairs are ties \(label_0 = 0.5.*row 1\).*--drop-ties", err[0]), err
    assert not (tmp_path / "refused").exists()
    with pytest.warns(UserWarning, match=r"dropped 1 of 3 pairs \(0 invalid, 1 ties\); training on 2"):
        assert main([*argv, "--out", str(tmp_path / "run"), "--drop-ties"]) == 0
    assert (tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors").is_file()
