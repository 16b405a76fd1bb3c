"""``mst-clipiqa serve``: its flags become the deployment's options, and a server that would listen beyond loopback
without a token, or bad scale flags, are refused in one line before Ray starts."""
import sys

import pytest

from mst_clipiqa.cli import main


@pytest.mark.parametrize(("flags", "message"), [
    (["--host", "0.0.0.0"], "listening on 0.0.0.0 (beyond this machine) needs a bearer token: pass --token"),
    (["--replicas", "0"], "replicas must be >= 1"),
    (["--max-images", "0"], "limit max_images must be > 0"),
])
def test_unsafe_or_bad_settings_are_one_line_before_ray_starts(flags, message, capsys, monkeypatch):
    monkeypatch.delenv("MST_CLIPIQA_TOKEN", raising=False)
    monkeypatch.setitem(sys.modules, "mst_clipiqa.integrations.serving.ray_app", None)  # importing it would fail
    status = main(["serve", "--model", "tiny", "--num-gpus", "0", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and message in err[0], err


def test_the_flags_reach_the_deployment(monkeypatch, capsys):
    ray_app = pytest.importorskip("mst_clipiqa.integrations.serving.ray_app",
                                  reason="mst-clipiqa[serve] (Ray Serve) is not installed")
    started = {}

    def serve_reward(model, options, **load):
        started.update(model=model, options=options, load=load)
        raise KeyboardInterrupt  # as Ctrl-C right after the start

    monkeypatch.setattr(ray_app, "serve_reward", serve_reward)
    monkeypatch.setattr(ray_app, "shutdown", lambda: started.setdefault("shut down", True))
    status = main(["serve", "--model", "runs/x/model", "--adapter", "a", "--outputs", "quality", "--port", "9000",
                   "--host", "0.0.0.0", "--token", "t", "--replicas", "4", "--num-gpus", "0.25",
                   "--batch-wait-ms", "10", "--max-pixels", "1000"])
    assert status == 130
    options = started["options"]
    assert started["model"] == "runs/x/model" and started["load"] == {"variant": None, "adapters": ["a"],
                                                                        "outputs": ["quality"]}
    assert (options.host, options.port, options.token, options.replicas, options.num_gpus) == \
        ("0.0.0.0", 9000, "t", 4, 0.25)
    assert options.batch_wait_s == 0.01 and options.limits.max_pixels == 1000
    assert "shut down" not in started  # nothing started, nothing to shut down
