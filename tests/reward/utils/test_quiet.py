"""Other libraries' messages that repeat our own line are held back; everything else still gets through."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
QUIET = ROOT / "mst_clipiqa" / "reward" / "utils" / "quiet.py"


def test_a_root_log_line_of_one_package_is_dropped_and_installs_no_handler(tmp_path):
    """``logging.error`` in a library prints ``ERROR:root:...`` through a handler it installs; neither happens."""
    (tmp_path / "noisy").mkdir()
    (tmp_path / "noisy" / "__init__.py").write_text(textwrap.dedent("""\
        import logging
        def fail():
            logging.error("Failed to download weights for tag 'openai'")
            logging.error("something else")
        """))
    code = textwrap.dedent(f"""\
        import importlib.util, logging, noisy
        spec = importlib.util.spec_from_file_location("quiet", {str(QUIET)!r})  # the module alone: no torch to load
        quiet = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(quiet)
        log_dropped = quiet.log_dropped
        with log_dropped("Failed to download", module=noisy):
            noisy.fail()
        print(len(logging.getLogger().handlers), len(logging.getLogger().filters))
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0"]  # nothing left behind
    assert done.stderr == "ERROR:root:something else\n"


def test_quiet_loggers_pass_errors_only_and_are_restored():
    from mst_clipiqa.reward.utils.quiet import loggers_quiet

    library, logger = logging.getLogger("diffusers"), logging.getLogger("diffusers.pipelines.pipeline_utils")
    level, records = library.level, []
    handler = logging.Handler()
    handler.emit = records.append
    library.addHandler(handler)  # diffusers' own loggers may not propagate to the root
    try:
        with loggers_quiet("diffusers"):
            logger.warning("Couldn't connect to the Hub")
            logger.error("a real error")
    finally:
        library.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["a real error"] and library.level == level

