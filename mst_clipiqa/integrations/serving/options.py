"""How ``mst-clipiqa serve`` runs, as data that needs no Ray (flags are checked before Ray starts)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .files import FileRoot
from .local import check_exposure
from .protocol import Limits

__all__ = ["ServeOptions"]


@dataclass
class ServeOptions:
    """How ``mst-clipiqa serve`` runs: where it listens, how many replicas with what share of a GPU, how requests
    are batched and queued. ``max_batch_requests`` requests (each up to ``limits.max_images`` images) are scored
    together when they arrive within ``batch_wait_s``; past ``max_ongoing_requests`` per replica plus
    ``max_queued_requests`` waiting, a request gets 503 (clients back off). ``file_root``: the folder whose image
    files requests may name by path (None: requests carry every image)."""

    host: str = "127.0.0.1"
    port: int = 8000
    address: str | None = None
    token: str | None = None
    replicas: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    batch_size: int = 32
    max_batch_requests: int = 16
    batch_wait_s: float = 0.005
    max_ongoing_requests: int = 32
    max_queued_requests: int = 64
    limits: Limits = field(default_factory=Limits)
    file_root: str | None = None

    def __post_init__(self) -> None:
        check_exposure(self.host, self.token)
        if self.replicas < 1 or self.num_gpus < 0 or self.num_cpus < 0 or self.batch_size < 1:
            raise ValueError(f"replicas must be >= 1, num_gpus and num_cpus >= 0, batch_size >= 1; got "
                             f"{self.replicas}, {self.num_gpus}, {self.num_cpus}, {self.batch_size}")
        if self.max_batch_requests < 1 or self.batch_wait_s < 0:
            raise ValueError(f"max_batch_requests must be >= 1 and batch_wait_s >= 0, got {self.max_batch_requests}, "
                             f"{self.batch_wait_s}")
        if self.file_root is not None:
            FileRoot(self.file_root)  # a missing folder is named before Ray starts
