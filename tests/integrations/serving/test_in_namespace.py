"""The server tests, run inside a loopback-only network namespace (see netns.py)."""
from pathlib import Path

import pytest

from .netns import ONLY_LOOPBACK, run_in_namespace, why_no_namespace

HERE = Path(__file__).parent
SERVER_MODULES = ["test_local.py", "test_remote.py", "test_ray_app.py",
                  "../../mst_clipiqa/test_cli_remote_reward.py"]


def test_the_server_modules_pass_inside_a_loopback_only_namespace():
    if ONLY_LOOPBACK:
        pytest.skip("already inside a loopback-only namespace: the server modules run directly")
    reason = why_no_namespace()
    if reason:
        pytest.skip(reason)
    result = run_in_namespace([str(HERE / name) for name in SERVER_MODULES], timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "deselected" not in summary, summary
