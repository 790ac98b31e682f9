"""Text -> token ids, identical to transformers' AutoTokenizer.

minie5 runs the `tokenizers` library on the model's tokenizer.json, with one
correction: transformers 5 does not run a BERT or XLM-RoBERTa tokenizer.json
as written. Its tokenizer class (named by tokenizer_config.json, else
config.json, else implied by model_type) takes only the vocabulary from the
file and rebuilds the rest of the pipeline; minie5 rebuilds it the same way.

XLM-RoBERTa (SentencePiece Unigram): the pipeline is rebuilt the way
SentencePiece (which the model was trained with) tokenizes:

    normalizer     Precompiled(charsmap)            (tokenizer.json adds Replace(" {2,}", " "))
    pre-tokenizer  WhitespaceSplit, then Metaspace  (tokenizer.json has Metaspace alone)
    model          Unigram over the same vocabulary and scores
    post-processor <s> $A </s>

The difference shows on whitespace: for "hello world " transformers (and
SentencePiece) give [0, 33600, 31, 8999, 2]; tokenizer.json as written keeps
a "▁" piece for the trailing space and gives [0, 33600, 31, 8999, 6, 2].

BERT (WordPiece): the settings come from tokenizer_config.json, with
transformers' defaults where it is silent, not from tokenizer.json:

    normalizer     BertNormalizer(clean_text, handle_chinese_chars=tokenize_chinese_chars (True),
                                  strip_accents (None: follow lowercasing), lowercase=do_lower_case (True))
    pre-tokenizer  BertPreTokenizer (split on whitespace and punctuation)
    model          WordPiece over the same vocabulary, "##" continuations, unk_token
    post-processor [CLS] $A [SEP]

Any other tokenizer (a WordLevel test tokenizer, a class transformers loads
as written) runs as written. Either way minie5's ids equal transformers' ids.

Texts longer than max_length (512 for e5, <s> and </s> included): the
pipeline runs without truncation and gives a text's pieces; truncate() keeps
the first max_length - 2 between <s> and </s> (transformers' truncation=True),
windows() cuts all of them into runs of max_length - 2, each its own sequence
<s> window </s> (Model.encode(long="window") averages the windows' vectors).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, normalizers, pre_tokenizers, processors

from .checkpoint.config import read_json_object
from .errors import ModelFileError

XLMR_CLASSES = ("XLMRobertaTokenizer", "XLMRobertaTokenizerFast")
BERT_CLASSES = ("BertTokenizer", "BertTokenizerFast", "DistilBertTokenizer", "DistilBertTokenizerFast")
# The class AutoTokenizer picks from config.json's model_type when no file names one.
CLASS_OF_MODEL_TYPE = {"bert": "BertTokenizer", "xlm-roberta": "XLMRobertaTokenizer"}


def _find_precompiled(normalizer):
    """The SentencePiece Precompiled normalizer inside a (Sequence) normalizer, if any."""
    if isinstance(normalizer, normalizers.Precompiled):
        return normalizer
    if isinstance(normalizer, normalizers.Sequence):
        i = 0
        while True:
            try:
                inner = normalizer[i]
            except IndexError:
                return None
            found = _find_precompiled(inner)
            if found is not None:
                return found
            i += 1
    return None


def _rebuild_xlmr(tokenizer: HFTokenizer, tokenizer_config: dict) -> None:
    """Make the pipeline the one transformers 5's XLMRobertaTokenizer builds."""
    tokenizer.normalizer = _find_precompiled(tokenizer.normalizer)  # keep the charsmap, drop Replace
    scheme = "always" if tokenizer_config.get("add_prefix_space", True) else "never"
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme)]
    )
    bos = str(tokenizer_config.get("bos_token", "<s>"))
    eos = str(tokenizer_config.get("eos_token", "</s>"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=[bos, "$A", eos],
        pair=[bos, "$A", eos, eos, "$B", eos],
        special_tokens=[(bos, tokenizer.token_to_id(bos)), (eos, tokenizer.token_to_id(eos))],
    )


def _rebuild_bert(tokenizer: HFTokenizer, tokenizer_config: dict) -> None:
    """Make the pipeline the one transformers 5's BertTokenizer builds (settings from tokenizer_config.json)."""
    unk = tokenizer_config.get("unk_token") or "[UNK]"
    cls = tokenizer_config.get("cls_token") or "[CLS]"
    sep = tokenizer_config.get("sep_token") or "[SEP]"
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    tokenizer.model = models.WordPiece(vocab, unk_token=unk)  # "##", 100 chars per word: transformers' defaults
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=tokenizer_config.get("tokenize_chinese_chars", True),
        strip_accents=tokenizer_config.get("strip_accents"),  # None: strip accents when lower-casing
        lowercase=tokenizer_config.get("do_lower_case", True),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )


def _token_string(value) -> str | None:
    if isinstance(value, dict):  # {"content": "<pad>", ...} in older tokenizer_config files
        value = value.get("content")
    return value if isinstance(value, str) else None


def first_lone_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate in text ("\\ud800": not Unicode, cannot be tokenized), else None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


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
    raise ValueError(f"its post-processor does not keep a text's ids together ({plain} is not inside {full})")


class Tokenizer:
    """The model's tokenizer: text -> ids, then truncation or windows as plain steps on the ids.

        content_ids(texts)         each text's piece ids, no special tokens, nothing cut
        truncate(content, L)       <s> + the first L - 2 pieces + </s>: transformers' truncation=True
        windows(content, L)        <s> + each run of L - 2 pieces + </s>: all of the text
        encode(texts)              content_ids, then truncate to max_length (and count the texts cut)

    One tokenizers.Tokenizer, without truncation or padding, serves every
    max_length; nothing changes its settings after __init__, so threads share it.
    """

    def __init__(self, model_dir: str | Path, max_length: int):
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2 (room for <s> and </s>), got {max_length!r}")
        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelFileError(path, "not found (minie5 needs the fast-tokenizer file tokenizer.json)")
        try:
            self._tokenizer = HFTokenizer.from_file(str(path))
        except Exception as e:
            raise ModelFileError(path, f"cannot be parsed as a tokenizers file ({e})") from None
        tokenizer_config_path = model_dir / "tokenizer_config.json"
        tokenizer_config = read_json_object(tokenizer_config_path) if tokenizer_config_path.is_file() else {}
        for key in ("bos_token", "eos_token", "pad_token", "unk_token", "cls_token", "sep_token"):
            if key in tokenizer_config:
                tokenizer_config[key] = _token_string(tokenizer_config[key])
        # Which transformers class would load this tokenizer: tokenizer_config.json
        # names it, else config.json, else config.json's model_type (as AutoTokenizer does).
        try:
            model_config = read_json_object(model_dir / "config.json")
        except ModelFileError:
            model_config = {}  # config.json errors are reported by read_config
        self.tokenizer_class = (tokenizer_config.get("tokenizer_class") or model_config.get("tokenizer_class")
                                or CLASS_OF_MODEL_TYPE.get(model_config.get("model_type")))
        model = self._tokenizer.model  # only a vocabulary of the class's kind is rebuilt
        if self.tokenizer_class in XLMR_CLASSES and isinstance(model, models.Unigram):
            _rebuild_xlmr(self._tokenizer, tokenizer_config)
        elif self.tokenizer_class in BERT_CLASSES and isinstance(model, models.WordPiece):
            _rebuild_bert(self._tokenizer, tokenizer_config)
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()  # truncate() cuts the ids, at any max_length
        try:
            self.ids_before_text, self.ids_after_text = special_ids_around_text(self._tokenizer)
        except Exception as e:
            raise ModelFileError(path, f"cannot put special tokens around a text: {e}") from None
        self.max_length = max_length  # encode()'s default: the model's max_seq_length
        defaults = ("[PAD]", "<pad>") if self.tokenizer_class in BERT_CLASSES else ("<pad>", "[PAD]")
        pad = tokenizer_config.get("pad_token") or next(
            (t for t in defaults if self._tokenizer.token_to_id(t) is not None), defaults[0])
        self.pad_token_id = self._tokenizer.token_to_id(pad)
        if self.pad_token_id is None:
            raise ModelFileError(path, f"pad token '{pad}' is not in the vocabulary")
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> HFTokenizer:
        """The underlying tokenizers.Tokenizer (pipeline corrected, no truncation); shared: do not change it."""
        return self._tokenizer

    @property
    def num_special_tokens(self) -> int:
        """Ids added around one text (2 for XLM-R: <s> and </s>)."""
        return len(self.ids_before_text) + len(self.ids_after_text)

    def room(self, max_length: int) -> int:
        """Pieces of text that fit in a sequence of max_length ids (510 of 512 for XLM-R)."""
        return max_length - self.num_special_tokens

    # ---------------------------------------------------------------- text -> ids
    def content_ids(self, texts: list[str], max_length: int | None = None) -> list[list[int]]:
        """The ids of each text's pieces, without special tokens.

        max_length None: all of every text. With a max_length, only what
        truncate(content, max_length) keeps is guaranteed: a very long text may
        be tokenized from a head that already has more pieces than fit (_head).
        """
        if max_length is not None:
            texts = [self._head(t, max_length) for t in texts]
        return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def _head(self, text: str, max_length: int) -> str:
        """A prefix of a very long text whose pieces start like the whole text's and overflow max_length.

        `tokenizers` tokenizes a text in full, at a cost that grows with its
        length (a little faster than linearly), all of it wasted past the
        first max_length pieces when the text is truncated. Words are tokenized
        independently (the pre-tokenizer splits at whitespace), so cutting the
        text at a whitespace changes none of the pieces before the cut. The cut
        text must still have more pieces than fit: that is checked; otherwise
        the whole text is used.
        """
        limit = 16 * max_length  # characters: several per token in every script
        if len(text) <= 2 * limit:
            return text
        cut = max(text.rfind(c, 0, limit) for c in (" ", "\n", "\t"))
        if cut <= 0:
            return text  # no whitespace to cut at (one very long "word"): tokenize it all
        head = text[:cut]
        pieces = len(self._tokenizer.encode(head, add_special_tokens=False).ids)
        return head if pieces > self.room(max_length) else text

    # ---------------------------------------------------------------- ids -> model inputs
    def add_special_tokens(self, content: list[int]) -> list[int]:
        """A text's (or window's) pieces -> the sequence the model reads, [<s>] + content + [</s>]."""
        return self.ids_before_text + list(content) + self.ids_after_text

    def truncate(self, content: list[int], max_length: int) -> list[int]:
        """A text's pieces -> at most max_length ids, as transformers truncates (truncation=True).

        transformers keeps the first max_length - num_special_tokens pieces, then adds <s> and </s>.
        """
        return self.add_special_tokens(content[:self.room(max_length)])

    def windows(self, content: list[int], max_length: int) -> list[list[int]]:
        """A text's pieces cut into consecutive windows of at most max_length ids, each <s> ... </s>.

        Every text has at least one window ("" -> [<s>, </s>]); a text that
        fits has one, equal to truncate(content, max_length).
        """
        size = self.room(max_length)  # pieces of text per window
        if size < 1:
            raise ValueError(f"max_length {max_length} leaves no room for text between the "
                             f"{self.num_special_tokens} special tokens")
        return [self.add_special_tokens(content[start:start + size])
                for start in range(0, max(len(content), 1), size)]

    def encode(self, texts: list[str], max_length: int | None = None) -> tuple[list[list[int]], int]:
        """Texts -> (ids per text, specials included, cut to max_length (default self.max_length); texts cut)."""
        max_length = self.max_length if max_length is None else max_length
        contents = self.content_ids(texts, max_length)
        truncated = sum(1 for c in contents if len(c) > self.room(max_length))
        return [self.truncate(c, max_length) for c in contents], truncated

    def tokens(self, text: str) -> list[str]:
        """The pieces of one text as encode() gives them, for display."""
        return [self._tokenizer.id_to_token(i) for i in self.encode([text])[0][0]]

    def pad(self, ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad id lists into input_ids [batch, seq] int64 and attention_mask [batch, seq] int64."""
        seq = max((len(x) for x in ids), default=0)
        input_ids = np.full((len(ids), seq), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(ids), seq), dtype=np.int64)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = x
            attention_mask[row, : len(x)] = 1
        return input_ids, attention_mask
