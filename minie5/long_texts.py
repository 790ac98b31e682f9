"""Texts longer than the model's window: truncation to any length, and sliding windows.

The model reads at most max_length tokens (512 for e5, <s> and </s> included).
encode() offers two ways to deal with a longer text:

  long="truncate"  keep the first max_length - 2 pieces of the text between
                   <s> and </s>: what transformers does with truncation=True.
  long="window"    cut ALL the text's pieces into consecutive windows of
                   max_length - 2 pieces, embed each window as its own sequence
                   <s> window </s>, and join the windows' pooled vectors by a
                   mean weighted by each window's token count (<s>, </s>
                   included). With mean pooling this is the mean of every token
                   state of every window. Then L2-normalise as usual.

A text that fits in one window has exactly one window, whose ids are the
plain (truncate-mode) ids, so it gets exactly the plain result.

Both need the text's pieces without truncation. The model's Tokenizer
truncates to its own max_length, and toggling truncation on that shared
object is not thread-safe, so this module keeps its own copy of the same
pipeline with truncation off (built once, about 1 s for e5's 17 MB
tokenizer.json).
"""
from __future__ import annotations

import threading

import numpy as np
from tokenizers import Tokenizer as HFTokenizer


def special_ids_around_text(tokenizer: HFTokenizer) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after a text: ([0], [2]) for XLM-R's <s> ... </s>.

    Found by encoding a probe text with and without special tokens, so that any
    single-text template ([CLS] ... [SEP] for BERT, or none at all) works alike.
    """
    probe = "hello world"
    plain = tokenizer.encode(probe, add_special_tokens=False).ids
    full = tokenizer.encode(probe, add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    raise ValueError(f"the tokenizer's post-processor does not keep a text's ids together "
                     f"({plain} is not inside {full}): minie5 cannot cut its texts into windows")


class UntruncatedTokenizer:
    """A copy of a tokenizers.Tokenizer pipeline with truncation off; texts -> their pieces' ids."""

    def __init__(self, backend: HFTokenizer):
        self._tokenizer = HFTokenizer.from_str(backend.to_str())  # same normalizer, pre-tokenizer, model
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.head, self.tail = special_ids_around_text(self._tokenizer)

    @property
    def num_special_tokens(self) -> int:
        """Ids added around one text (2 for XLM-R: <s> and </s>)."""
        return len(self.head) + len(self.tail)

    def content(self, texts: list[str]) -> list[list[int]]:
        """The ids of each text's pieces: no <s> / </s>, no truncation."""
        return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def add_special_tokens(self, content: list[int]) -> list[int]:
        """A text's (or window's) pieces -> the sequence the model reads, [<s>] + content + [</s>]."""
        return self.head + list(content) + self.tail

    def truncate(self, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
        """Ids truncated to max_length as transformers truncates them, and how many texts were cut.

        transformers (truncation=True, max_length=L) keeps the first
        L - num_special_tokens pieces and then adds <s> and </s>.
        """
        room = max_length - self.num_special_tokens
        contents = self.content(texts)
        truncated = sum(1 for c in contents if len(c) > room)
        return [self.add_special_tokens(c[:room]) for c in contents], truncated

    def windows(self, texts: list[str], max_length: int) -> tuple[list[list[int]], np.ndarray]:
        """Every text cut into windows of at most max_length ids each -> (windows, owner).

        owner[w] is the index of the text window w belongs to; a text's windows
        are consecutive, in reading order, and every text has at least one ("" -> <s></s>).
        """
        size = max_length - self.num_special_tokens  # pieces of text per window
        if size < 1:
            raise ValueError(f"max_length {max_length} leaves no room for text between the "
                             f"{self.num_special_tokens} special tokens")
        windows, owner = [], []
        for i, content in enumerate(self.content(texts)):
            for start in range(0, max(len(content), 1), size):
                windows.append(self.add_special_tokens(content[start:start + size]))
                owner.append(i)
        return windows, np.asarray(owner, dtype=np.int64)


class LazyUntruncatedTokenizer:
    """Builds the UntruncatedTokenizer of a pipeline on first use, once, even with several threads."""

    def __init__(self, backend: HFTokenizer):
        self._backend = backend
        self._built = None
        self._lock = threading.Lock()

    def get(self) -> UntruncatedTokenizer:
        with self._lock:
            if self._built is None:
                self._built = UntruncatedTokenizer(self._backend)
            return self._built


def combine_windows(pooled: np.ndarray, owner: np.ndarray, lengths: np.ndarray, n_texts: int) -> np.ndarray:
    """The windows' pooled vectors -> one vector per text: their token-count-weighted mean.

    pooled [W, H]: one row per window; owner [W]: the text of each window (as
    returned by UntruncatedTokenizer.windows); lengths [W]: ids in each window.
    A text with a single window gets that window's row unchanged, bit for bit.
    """
    counts = np.bincount(owner, minlength=n_texts)  # windows per text
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)  # each text's first window
    out = pooled[first].copy()  # already the answer for every one-window text
    for i in np.flatnonzero(counts > 1):
        rows = slice(first[i], first[i] + counts[i])
        weights = lengths[rows].astype(np.float64)
        out[i] = (weights @ pooled[rows].astype(np.float64)) / weights.sum()
    return out
