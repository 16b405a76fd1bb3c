"""The `pairs` command: Diffusion-DPO pairs from a tiny pipeline and the tiny reward, offline."""

from mst_clipiqa.cli import main
from mst_clipiqa.integrations import load_pairs

from .written import written_list


def test_pairs_command_writes_a_loadable_data_set_and_resumes(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red car\na blue boat\n", encoding="utf-8")
    out = tmp_path / "pairs"
    argv = ["pairs", "--pipeline", "tiny", "--model", "tiny", "--prompts", str(prompts), "--out", str(out),
            "--n", "3", "--pairs", "all", "--inference-steps", "1", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 prompt shards" in printed and written_list(printed, out)
    rows = load_pairs(out, cache_dir=tmp_path / "cache")
    assert set(rows["caption"]) == {"a red car", "a blue boat"} and len(rows) >= 1
    assert main(argv) == 0
    assert "wrote 0 prompt shards (0 pairs), skipped 2" in capsys.readouterr().out


def test_pairs_command_names_a_bad_rule(tmp_path, capsys):
    argv = ["pairs", "--pipeline", "tiny", "--model", "tiny", "--prompts", str(tmp_path / "none.txt"),
            "--out", str(tmp_path / "o"), "--pairs", "best"]
    assert main(argv) == 2
    assert "pairs must be one of" in capsys.readouterr().err


def test_pairs_command_takes_a_model_or_a_served_reward_not_both(tmp_path, capsys):
    common = ["pairs", "--pipeline", "tiny", "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "o")]
    for flags, message in (([], "pass --model MODEL (scored in this process) or --reward-url URL"),
                           (["--model", "tiny", "--reward-url", "http://127.0.0.1:1"], "exactly one of them"),
                           (["--reward-url", "http://127.0.0.1:1", "--outputs", "quality"],
                            "--outputs describe a model loaded here; with --reward-url the server's model scores")):
        (tmp_path / "p.txt").write_text("a cat\n", encoding="utf-8")
        assert main([*common, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
