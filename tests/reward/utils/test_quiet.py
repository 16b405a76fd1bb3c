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


def test_import_notices_are_dropped_once_mst_clipiqa_is_imported_and_other_lines_pass(caplog):
    import mst_clipiqa  # noqa: F401 - importing it installs the filters
    from mst_clipiqa.reward.utils.quiet import IMPORT_NOTICES, drop_import_notices

    drop_import_notices()  # a second call adds no second filter
    for name, text in IMPORT_NOTICES:
        logger = logging.getLogger(name)
        assert sum(getattr(f, "text", None) == text for f in logger.filters) == 1
        with caplog.at_level(logging.WARNING, logger=name):
            logger.warning("<enum 'X'> is an Enum subclass ... Calling %s ... deprecated", text)
            logger.warning("something else went wrong")
        messages = [r.getMessage() for r in caplog.records if r.name == name]
        assert messages == ["something else went wrong"]
        caplog.clear()
