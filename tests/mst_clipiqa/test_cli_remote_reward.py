"""``mst-clipiqa pairs --reward-url``: preference pairs scored by a served reward (LocalServer), each chunk while the
next is generated, equal to those scored in process; an unreachable server is one line. Loopback namespace only
(run from tests/integrations/serving/test_in_namespace.py)."""
import numpy as np
import pyarrow.parquet as pq

from mst_clipiqa.cli import main
from mst_clipiqa.integrations.serving import LocalServer, ScoringService
from mst_clipiqa.reward import MSTCLIPIQAReward
from tests.integrations.serving.netns import loopback_only

pytestmark = loopback_only


def test_pairs_scored_by_a_served_reward_asynchronously_equal_those_scored_in_process(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red car\n", encoding="utf-8")
    common = ["pairs", "--pipeline", "tiny", "--prompts", str(prompts), "--n", "3", "--pairs", "all",
              "--inference-steps", "1", "--device", "cpu", "--chunk-size", "1"]
    assert main([*common, "--model", "tiny", "--out", str(tmp_path / "here")]) == 0
    with LocalServer(ScoringService(MSTCLIPIQAReward.from_pretrained("tiny"))) as server:
        assert main([*common, "--reward-url", server.url, "--async-scoring", "--out", str(tmp_path / "served")]) == 0
        assert server.service.stats["images"] == 3  # every sample scored there, one chunk at a time
    here, served = (pq.read_table(tmp_path / name / "data").to_pydict() for name in ("here", "served"))
    assert len(here["caption"]) == len(served["caption"]) == 3  # every pair of 3 samples
    assert here["seed_0"] == served["seed_0"] and here["label_0"] == served["label_0"]
    assert np.allclose(here["score_0"] + here["score_1"], served["score_0"] + served["score_1"], atol=1e-5, rtol=0)
    capsys.readouterr()


def test_an_unreachable_served_reward_is_one_line_naming_it(tmp_path, capsys):
    with LocalServer(ScoringService(lambda images: images.mean(dim=(1, 2, 3)))) as server:
        url = server.url  # stopped at once: nothing listens there now
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red car\n", encoding="utf-8")
    status = main(["pairs", "--pipeline", "tiny", "--prompts", str(prompts), "--n", "2", "--inference-steps", "1",
                   "--device", "cpu", "--reward-url", url, "--reward-retries", "1", "--out", str(tmp_path / "o")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert status == 2 and len(errors) == 1 and f"pairs: error: reward server {url} unreachable after 2 tries" in \
        errors[0], errors
