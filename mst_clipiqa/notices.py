"""Notices other libraries log on import that tell a user of this library nothing they can act on, dropped for the
whole process when :mod:`mst_clipiqa` is imported (logging filters: importing this module imports nothing else)."""
from __future__ import annotations

import logging

IMPORT_NOTICES = (  # (logger, text)
    # torchao (imported by peft and diffusers whenever it is installed) registers its enums with torch's pytree, and
    # torch warns that this is deprecated, one line per enum, on every import
    ("torch.utils._pytree", "register_constant() on Enum subclasses"),
    # diffusers' torchao quantizer imports a module torchao 0.18 removed, and says so on import; it only matters for
    # checkpoints serialized with torchao, which this library neither writes nor reads
    ("diffusers.quantizers.torchao.torchao_quantizer", "Unable to import `torchao` Tensor objects"),
    # bitsandbytes (imported by peft whenever it is installed) fetches a CPU inference kernel from the Hub on import and
    # says so when it cannot; --quantize nf4 trains, and its layers never take that kernel's path
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
    ("kernels._internals.hf_hub", "Skipping publisher trust check"),
)


class _Notice(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def drop_import_notices() -> None:
    """Keep :data:`IMPORT_NOTICES` from the user for the rest of the process; a second call adds nothing."""
    for name, text in IMPORT_NOTICES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Notice) and f.text == text for f in logger.filters):
            logger.addFilter(_Notice(text))
