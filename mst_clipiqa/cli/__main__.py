"""``python -m mst_clipiqa.cli`` (the same as ``python -m mst_clipiqa``)."""
from . import main

raise SystemExit(main())
