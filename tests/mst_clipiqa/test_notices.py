"""Other libraries' import notices are dropped once mst_clipiqa is imported."""
import logging


def test_import_notices_are_dropped_once_mst_clipiqa_is_imported_and_other_lines_pass(caplog):
    import mst_clipiqa  # noqa: F401 - importing it installs the filters
    from mst_clipiqa.notices import IMPORT_NOTICES, drop_import_notices

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
