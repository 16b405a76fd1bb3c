"""Every command answers ``--help`` and a mistyped flag without importing torch (so in well under a second;
``benchmarks/bench_cli_startup.py`` times them)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mst_clipiqa.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import contextlib, io, json, sys
from mst_clipiqa.cli import main
answers = []
for argv in (sys.argv[1:] + ["--help"], sys.argv[1:] + ["--no-such-flag"]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exit:
            answers.append([exit.code, out.getvalue(), err.getvalue()])
print(json.dumps({"answers": answers, "torch": "torch" in sys.modules}))
"""


def probe(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_and_a_mistyped_flag_import_no_torch(command):
    result = probe(*[command] if command else [])
    (help_code, help_out, _), (error_code, _, error) = result["answers"]
    prog = f"mst-clipiqa {command}".strip()
    assert help_code == 0 and help_out.startswith(f"usage: {prog}")
    assert error_code == 2 and error.count("\n") == 1
    assert error.startswith(f"{prog}: error:")  # a required option missing, or the flag itself
    assert not result["torch"], f"'{prog} --help' imported torch"
