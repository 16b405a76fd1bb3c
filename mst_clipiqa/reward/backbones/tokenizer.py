"""OpenAI CLIP's tokenizer for the transformers backend, built offline.

open_clip ships the byte-pair vocabulary OpenAI CLIP was trained with; a
transformers ``CLIPTokenizer`` built from it gives the same ids as
``CLIPTokenizer.from_pretrained("openai/clip-vit-base-patch32")`` without a
download.
"""
from functools import lru_cache

from open_clip.tokenizer import SimpleTokenizer
from transformers import CLIPTokenizer

_SPECIAL = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


@lru_cache(maxsize=1)
def openai_clip_tokenizer() -> CLIPTokenizer:
    """A transformers CLIPTokenizer with OpenAI CLIP's vocabulary (49,408 ids)."""
    simple = SimpleTokenizer()
    vocab = {_SPECIAL.get(token, token): i for token, i in simple.encoder.items()}
    merges = [pair for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
