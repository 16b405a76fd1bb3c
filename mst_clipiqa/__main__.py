"""``python -m mst_clipiqa`` (what ``accelerate launch -m mst_clipiqa`` and ``torchrun -m`` run)."""
from .cli import main

raise SystemExit(main())
