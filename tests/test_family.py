"""The model family: BERT and XLM-RoBERTa embedding checkpoints, each with its own pooling.

Every comparison is with an independent implementation fed the same directory:
transformers (AutoTokenizer, AutoModel) for token ids and hidden states,
sentence-transformers (SentenceTransformer.encode / encode_query /
encode_document) for the embeddings, which reads the same modules.json,
1_Pooling/config.json, sentence_bert_config.json and config_sentence_transformers.json.

a. all-MiniLM-L6-v2, real weights (BERT, uncased WordPiece, mean pooling,
   Normalize, max_seq_length 256): token ids on the multilingual corpus and
   edge cases (also under other tokenizer_config.json settings), last hidden
   state, embeddings.
b. Random-weight checkpoints with the exact configs of multilingual-e5-base
   (xlm-roberta, 768 wide, 12 layers) and bge-small-en-v1.5 (bert, CLS
   pooling), vocabulary shrunk to 1000 with a matching shrunk tokenizer:
   token ids, last hidden state on heavily padded batches (right and left
   padding, garbage under the mask, pad ids inside a text), embeddings with
   the prompts the directory declares.
c. Checkpoint layouts: "roberta." / "model." prefixes with extra heads, fp16 / bf16.
d. The sentence-transformers files: every pooling mode with and without
   Normalize, max_seq_length, prompts; and refusals that name the field.

Each parity test prints its measured figure (run with -s, or see the summary).
"""
from __future__ import annotations

import json
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import minie5
from conftest import requires_torch
from family_models import (BGE_SMALL_CONFIG, E5_BASE_CONFIG, SHRUNK_VOCAB, build_hf_model, shrink,
                           write_sentence_transformers, write_unigram_tokenizer, write_wordpiece_tokenizer)
from minie5.checkpoint.config import read_config
from minie5.tokenizer import Tokenizer
from tiny_models import max_abs_diff_on_mask

BACKENDS = ["reference", "fast"]
# the NumPy reference on every hidden-state batch takes a minute or more on 2 busy cores: in the slow tier
HIDDEN_BACKENDS = [pytest.param("reference", marks=pytest.mark.slow), "fast"]
HIDDEN_TOL = 1e-4
COSINE_MIN = 0.99999
CORPUS = Path(__file__).resolve().parent / "data" / "multilingual.txt"

LONG_EN = ("The quick brown fox jumps over the lazy dog near the riverbank, while a group of children "
           "watch from the old stone bridge and talk about the weather, the harvest and the coming winter. ") * 30
HAND_WRITTEN = [
    "how much protein should a female eat",
    "As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams per day.",
    "Straßenbahnhaltestelle, Größe, Äpfel, Übermut; naïve café, ÀÉÎÕÜ",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "机器学习是人工智能的一个分支。 富士山は日本最高峰である。 서울특별시는 대한민국의 수도이다.",
    "Berlin 柏林 Берлин برلين बर्लिन ベルリン 베를린",
    "hello [PAD] world <pad> [CLS] <s> tokens",  # pad tokens inside a text (XLM-R numbers them as padding)
    "Emoji 😀🎉👍🏽 and symbols ©®™ ≤ ≥ ∞ √ ｆｕｌｌｗｉｄｔｈ",
    "a",
    "",
    "   ",
]


def corpus_lines() -> list[str]:
    text = CORPUS.read_text(encoding="utf-8")
    return text[:-1].split("\n")


def family_texts(step: int) -> list[str]:
    """Every step-th line of the multilingual corpus, the hand-written texts and one long text."""
    return corpus_lines()[::step] + HAND_WRITTEN + [LONG_EN]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ------------------------------------------------------------------ shared comparisons
def hf_last_hidden(hf_model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = hf_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    return out.last_hidden_state.numpy()


def text_batches(hf_tokenizer, texts: list[str], max_length: int, size: int = 8,
                 sides: tuple = ("right", "left")) -> list[tuple]:
    """transformers' padded batches of `size` texts in the given order, right- and/or left-padded."""
    batches = []
    for side in sides:
        hf_tokenizer.padding_side = side
        for start in range(0, len(texts), size):
            enc = hf_tokenizer(texts[start:start + size], padding=True, truncation=True, max_length=max_length,
                               return_tensors="np")
            batches.append((f"{side}-padded", enc["input_ids"].astype(np.int64),
                            enc["attention_mask"].astype(np.int64)))
    hf_tokenizer.padding_side = "right"
    return batches


def random_batches(vocab: int, pad_id: int, seed: int, width: int = 40) -> list[tuple]:
    """Random ids [6, width], heavily padded: right padding with garbage ids under the mask, left
    padding with pad ids, and pad ids inside the real tokens (XLM-R numbers those as padding)."""
    rng = np.random.default_rng(seed)
    lengths = [width, 1, 2, width // 2 - 3, width - 1, 3]
    batches = []
    for label in ("right, garbage under the mask", "left, pad ids", "pad ids inside texts"):
        ids = rng.integers(0, vocab, size=(len(lengths), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, n in enumerate(lengths):
            if label.startswith("left"):
                mask[row, width - n:] = 1
                ids[row, :width - n] = pad_id
            else:
                mask[row, :n] = 1
                if label.startswith("pad ids inside"):
                    ids[row, n:] = pad_id
                    ids[row, 1:n:3] = pad_id
        batches.append((label, ids, mask))
    return batches


def check_hidden(name: str, model: minie5.Model, hf_model, batches, backend: str, cache: dict) -> float:
    worst, tokens = 0.0, 0
    start = time.perf_counter()
    for label, ids, mask in batches:
        key = (label, ids.tobytes(), mask.tobytes())
        if key not in cache:
            cache[key] = hf_last_hidden(hf_model, ids, mask)
        out = model.forward(ids, mask, backend=backend)
        assert out.shape == cache[key].shape and out.dtype == np.float32
        worst = max(worst, max_abs_diff_on_mask(out, cache[key], mask))
        tokens += int(mask.sum())
    print(f"parity family {name} {backend}: last hidden max|diff| {worst:.1e} "
          f"({len(batches)} batches, {tokens} tokens, {time.perf_counter() - start:.1f} s)")
    return worst


def check_embeddings(name: str, model: minie5.Model, st, texts: list[str], backend: str,
                     prompt: str | None = None, st_prompt_name: str | None = None) -> tuple[float, float]:
    """minie5's encode(prefix=prompt) against sentence-transformers' encode(prompt_name=st_prompt_name),
    each taking the prompt's text from config_sentence_transformers.json."""
    expected = st.encode(texts, prompt_name=st_prompt_name, batch_size=16, convert_to_numpy=True)
    start = time.perf_counter()
    got = model.encode(texts, batch_size=16, backend=backend, prefix=model.config.prompt(prompt))
    elapsed = time.perf_counter() - start
    assert got.shape == expected.shape and got.dtype == np.float32
    cos = cosine_rows(got, expected)
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    print(f"parity family {name} {backend} encode (prompt {prompt}, {len(texts)} texts): min cosine {cos.min():.8f}, "
          f"max|diff| {diff:.1e}, {elapsed:.1f} s")
    return float(cos.min()), diff


def check_token_ids(hf_tokenizer, tok: Tokenizer, texts: list[str], max_length: int) -> int:
    expected = hf_tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    got, _ = tok.encode(texts)
    bad = [i for i in range(len(texts)) if got[i] != expected[i]]
    for i in bad[:5]:
        print(f"  mismatch {texts[i][:40]!r}: minie5 {got[i][:16]} transformers {expected[i][:16]}")
    assert not bad, f"{len(bad)} of {len(texts)} texts tokenized differently"
    return len(texts)


# =================================================================== a. all-MiniLM-L6-v2

@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return minie5.load(minilm_dir, backend="reference")


@pytest.fixture(scope="module")
def minilm_hf(minilm_dir):
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir), AutoModel.from_pretrained(minilm_dir).eval(), {}


@pytest.fixture(scope="module")
def minilm_st(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


def test_minilm_config(minilm):
    c = minilm.config
    assert (c.model_type, c.hidden_size, c.num_hidden_layers, c.vocab_size) == ("bert", 384, 6, 30522)
    assert (c.pooling, c.normalize, c.max_seq_length, c.position_offset) == ("mean", True, 256, 0)
    assert minilm.tokenizer.tokenizer_class == "BertTokenizer" and minilm.tokenizer.pad_token_id == 0
    assert minilm.tokenizer.encode(["Hello, World!"])[0] == [[101, 7592, 1010, 2088, 999, 102]]


@requires_torch
def test_minilm_token_ids(minilm_hf, minilm):
    from test_tokenizer import EDGE_CASES

    texts = corpus_lines() + list(EDGE_CASES.values()) + HAND_WRITTEN + [LONG_EN]
    n = check_token_ids(minilm_hf[0], minilm.tokenizer, texts, 256)
    print(f"tokenizer parity family minilm: {n} strings, ids identical to transformers' BertTokenizer")


TOKENIZER_SETTINGS = {  # tokenizer_config.json changes; transformers 5 rebuilds the pipeline from them
    "cased": {"do_lower_case": False},
    "cased-strip-accents": {"do_lower_case": False, "strip_accents": True},
    "uncased-keep-accents": {"strip_accents": False},
    "no-chinese-split": {"tokenize_chinese_chars": False},
    "no-tokenizer-config": None,  # the class comes from config.json's model_type, settings from defaults
}


@requires_torch
@pytest.mark.parametrize("setting", list(TOKENIZER_SETTINGS))
def test_bert_tokenizer_settings(minilm_dir, tmp_path, setting):
    from tokenizers import Tokenizer as RawTokenizer
    from transformers import AutoTokenizer

    for name in ("config.json", "tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    change = TOKENIZER_SETTINGS[setting]
    if change is not None:
        tokenizer_config = json.loads((minilm_dir / "tokenizer_config.json").read_text())
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, **change}))
    texts = corpus_lines()[::3] + HAND_WRITTEN + ["Ünïcödé ÀÉÎÕÜ naïve café", "日本語テキスト中文"]
    tok = Tokenizer(tmp_path, 128)
    check_token_ids(AutoTokenizer.from_pretrained(tmp_path), tok, texts, 128)
    if setting == "cased":  # tokenizer.json as written lower-cases: minie5 really follows tokenizer_config.json
        raw = RawTokenizer.from_file(str(tmp_path / "tokenizer.json"))
        assert raw.encode("Hello").ids != tok.encode(["Hello"])[0][0]


@requires_torch
@pytest.mark.parametrize("backend", HIDDEN_BACKENDS)
def test_minilm_last_hidden_state(minilm_hf, minilm, backend):
    hf_tokenizer, hf_model, cache = minilm_hf
    batches = (text_batches(hf_tokenizer, family_texts(100), 256, sides=("right",))
               + text_batches(hf_tokenizer, HAND_WRITTEN, 256, sides=("left",)) + random_batches(30522, 0, 1))
    assert check_hidden("minilm (real weights)", minilm, hf_model, batches, backend, cache) <= HIDDEN_TOL


@requires_torch
@pytest.mark.parametrize("backend", BACKENDS)
def test_minilm_embeddings(minilm_st, minilm, backend):
    assert minilm_st.max_seq_length == 256
    # the reference path's numbers are test_minilm_last_hidden_state's; here, its encode() on a few texts
    texts = family_texts(40) if backend == "fast" else HAND_WRITTEN[:6]
    cos, _ = check_embeddings("minilm (real weights)", minilm, minilm_st, texts, backend)
    assert cos >= COSINE_MIN


# =================================================================== b. e5-base and bge-small configs

FAMILY = {  # name: (config.json, pooling, prompts declared in config_sentence_transformers.json)
    "multilingual-e5-base": (shrink(E5_BASE_CONFIG), "mean", {"query": "query: ", "passage": "passage: "}),
    "bge-small-en-v1.5": (shrink(BGE_SMALL_CONFIG), "cls",
                          {"query": "Represent this sentence for searching relevant passages: "}),
}
# minie5's prefix names -> the prompt_name sentence-transformers is given for the same text:
# bge declares no passage prompt, so its passages are embedded as they are.
ST_PROMPT_NAMES = {
    "multilingual-e5-base": {None: None, "query": "query", "passage": "passage"},
    "bge-small-en-v1.5": {None: None, "query": "query", "passage": None},
}


class Family:
    def __init__(self, name: str, path: Path, hf_model, hf_tokenizer, model: minie5.Model):
        self.name, self.path, self.hf_model, self.hf_tokenizer, self.model = name, path, hf_model, hf_tokenizer, model
        self.cache: dict = {}
        self._st = None

    @property
    def st(self):
        if self._st is None:
            from sentence_transformers import SentenceTransformer
            self._st = SentenceTransformer(str(self.path), device="cpu")
        return self._st


@pytest.fixture(scope="module")
def family(tmp_path_factory, e5_dir, minilm_dir):
    built: dict[str, Family] = {}

    def get(name: str) -> Family:
        if name not in built:
            from transformers import AutoTokenizer

            config, pooling, prompts = FAMILY[name]
            path = tmp_path_factory.mktemp(name)
            hf_model = build_hf_model(config, path, seed=zlib.crc32(name.encode()))
            if config["model_type"] == "xlm-roberta":
                write_unigram_tokenizer(path, e5_dir)
            else:
                write_wordpiece_tokenizer(path, minilm_dir)
            write_sentence_transformers(path, config["hidden_size"], pooling=pooling, prompts=prompts)
            built[name] = Family(name, path, hf_model, AutoTokenizer.from_pretrained(path),
                                 minie5.load(path, backend="reference"))
        return built[name]

    return get


@requires_torch
@pytest.mark.parametrize("name", list(FAMILY))
def test_family_config(family, name):
    f = family(name)
    config, pooling, prompts = FAMILY[name]
    c = f.model.config
    assert (c.model_type, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == \
        (config["model_type"], config["hidden_size"], 12, 12, config["intermediate_size"])
    assert (c.vocab_size, c.pooling, c.normalize, c.max_seq_length) == (SHRUNK_VOCAB, pooling, True, 512)
    assert dict(c.prompts) == prompts
    if name == "multilingual-e5-base":
        assert (c.type_vocab_size, c.max_position_embeddings, c.layer_norm_eps) == (1, 514, 1e-5)
        assert (c.pad_token_id, c.position_offset, c.max_positions) == (1, 2, 512)
    else:
        assert (c.type_vocab_size, c.position_offset) == (2, 0)
    assert f.st.max_seq_length == 512


@requires_torch
def test_too_large_max_length_names_the_usable_positions_and_the_table_rows(family):
    """XLM-R numbers positions from pad_token_id + 1: e5-base's table has 514 rows, 512 of them usable."""
    model = family("multilingual-e5-base").model
    assert E5_BASE_CONFIG["max_position_embeddings"] == 514
    with pytest.raises(minie5.InputError) as info:
        model.encode("hello", max_length=513)
    assert str(info.value) == ("max_length 513 exceeds the 512 positions the model can embed "
                               "(max_position_embeddings 514 - 2 (XLM-R numbers positions from pad_token_id + 1))")
    assert model.encode("hello", max_length=512).shape == (768,)


@requires_torch
@pytest.mark.parametrize("name", list(FAMILY))
def test_family_token_ids(family, name):
    f = family(name)
    from test_tokenizer import EDGE_CASES

    texts = corpus_lines()[::2] + list(EDGE_CASES.values()) + HAND_WRITTEN + [LONG_EN]
    n = check_token_ids(f.hf_tokenizer, f.model.tokenizer, texts, 512)
    print(f"tokenizer parity family {name} (shrunk to {SHRUNK_VOCAB}): {n} strings identical")


@requires_torch
@pytest.mark.parametrize("backend", HIDDEN_BACKENDS)
@pytest.mark.parametrize("name", list(FAMILY))
def test_family_last_hidden_state(family, name, backend):
    f = family(name)
    pad_id = f.model.config.pad_token_id
    texts = HAND_WRITTEN + (corpus_lines()[::300] if name.startswith("bge") else [])
    batches = text_batches(f.hf_tokenizer, texts, 512) + random_batches(SHRUNK_VOCAB, pad_id, seed=2, width=24)
    assert check_hidden(name, f.model, f.hf_model, batches, backend, f.cache) <= HIDDEN_TOL


@requires_torch
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(FAMILY))
def test_family_embeddings(family, name, backend):
    """encode / encode_query / encode_document of sentence-transformers, with the declared prompts."""
    f = family(name)
    # the reference path's numbers are test_family_last_hidden_state's; here, its encode() on a few texts
    runs = {"reference": [(HAND_WRITTEN[:2], "query")],
            "fast": [(HAND_WRITTEN, None), (HAND_WRITTEN, "query"), (HAND_WRITTEN, "passage")]}[backend]
    if backend == "fast" and name.startswith("bge"):  # 384 wide: also texts past 512 tokens
        runs[0] = (HAND_WRITTEN + corpus_lines()[::300] + [LONG_EN], None)
    for texts, prompt in runs:
        cos, _ = check_embeddings(name, f.model, f.st, texts, backend, prompt, ST_PROMPT_NAMES[name][prompt])
        assert cos >= COSINE_MIN


# =================================================================== c. checkpoint layouts

SMALL = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 128}


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory, e5_dir, minilm_dir):
    """Shrunk tokenizer files, written once: {"xlm-roberta": dir, "bert": dir}."""
    root = tmp_path_factory.mktemp("tokenizers")
    (root / "xlm-roberta").mkdir()
    write_unigram_tokenizer(root / "xlm-roberta", e5_dir)
    (root / "bert").mkdir()
    write_wordpiece_tokenizer(root / "bert", minilm_dir)
    return {"xlm-roberta": root / "xlm-roberta", "bert": root / "bert"}


def copy_tokenizer(tokenizer_files: dict, model_type: str, model_dir: Path) -> None:
    for f in tokenizer_files[model_type].iterdir():
        shutil.copy(f, model_dir / f.name)


def saved_keys(model_dir: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), framework="numpy") as f:
        return list(f.keys())


LAYOUTS = {  # name: (config, transformers class saved, key prefix, dtype)
    "xlm-roberta MaskedLM (roberta. + lm_head)": (E5_BASE_CONFIG, "XLMRobertaForMaskedLM", "roberta.", None),
    "bert MaskedLM (bert. + cls)": (BGE_SMALL_CONFIG, "BertForMaskedLM", "bert.", None),
    "bert with model. prefix": (BGE_SMALL_CONFIG, None, "model.", None),
    "xlm-roberta float16": (E5_BASE_CONFIG, None, "", "float16"),
    "xlm-roberta bfloat16": (E5_BASE_CONFIG, None, "", "bfloat16"),
}


@requires_torch
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_checkpoint_layout(tokenizer_files, tmp_path, layout):
    from safetensors.numpy import load_file, save_file

    config, head, prefix, dtype = LAYOUTS[layout]
    config = shrink(config, **SMALL)
    hf_model = build_hf_model(config, tmp_path, seed=zlib.crc32(layout.encode()), head=head, dtype=dtype)
    copy_tokenizer(tokenizer_files, config["model_type"], tmp_path)
    if prefix == "model.":  # re-save the BertModel checkpoint with every key under "model."
        tensors = load_file(str(tmp_path / "model.safetensors"))
        save_file({prefix + k: v for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    keys = saved_keys(tmp_path)
    if prefix:
        assert all(k.startswith(prefix) for k in keys if not k.startswith(("lm_head.", "cls."))), keys
    if head:
        assert any(k.startswith(("lm_head.", "cls.")) for k in keys)
    params = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    worst = 0.0
    for backend in BACKENDS:
        model = minie5.load(tmp_path, backend=backend)
        for name, w in model.weights.items():  # every tensor is transformers' parameter (rounded, if half)
            np.testing.assert_array_equal(w, params[name], err_msg=name)
        for label, ids, mask in random_batches(SHRUNK_VOCAB, model.config.pad_token_id, seed=3):
            worst = max(worst, max_abs_diff_on_mask(model.forward(ids, mask), hf_last_hidden(hf_model, ids, mask),
                                                    mask))
    print(f"parity family layout {layout}: last hidden max|diff| {worst:.1e} (both backends)")
    assert worst <= HIDDEN_TOL


# =================================================================== d. the sentence-transformers files

POOLINGS = [  # (model_type, pooling, Normalize module): each mode with and without Normalize
    ("bert", "mean", False), ("bert", "cls", True), ("bert", "max", True),
    ("xlm-roberta", "mean", True), ("xlm-roberta", "cls", False), ("xlm-roberta", "max", False),
]


@requires_torch
@pytest.mark.parametrize("model_type, pooling, normalize", POOLINGS)
def test_pooling_modes(tokenizer_files, tmp_path, model_type, pooling, normalize):
    """Each pooling mode, with and without Normalize, and max_seq_length 24, against sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    config = shrink(E5_BASE_CONFIG if model_type == "xlm-roberta" else BGE_SMALL_CONFIG, **SMALL)
    build_hf_model(config, tmp_path, seed=zlib.crc32(f"{model_type}{pooling}".encode()))
    copy_tokenizer(tokenizer_files, model_type, tmp_path)
    write_sentence_transformers(tmp_path, SMALL["hidden_size"], pooling=pooling, normalize=normalize,
                                max_seq_length=24)
    st = SentenceTransformer(str(tmp_path), device="cpu")
    texts = HAND_WRITTEN + corpus_lines()[::400] + [LONG_EN]
    worst, diff = 1.0, 0.0
    expected = st.encode(texts, batch_size=7, convert_to_numpy=True)
    for backend in BACKENDS:
        model = minie5.load(tmp_path, backend=backend)
        assert (model.config.pooling, model.config.normalize, model.config.max_seq_length) == \
            (pooling, normalize, 24)
        got = model.encode(texts, batch_size=5)
        worst = min(worst, float(cosine_rows(got, expected).min()))
        diff = max(diff, float(np.abs(got.astype(np.float64) - expected).max()))
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    print(f"parity family pooling {model_type} {pooling} normalize={normalize} (both backends): "
          f"min cosine {worst:.8f}, max|diff| {diff:.1e}")
    assert worst >= COSINE_MIN


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_packed_positions_are_the_padded_positions(model_type):
    """encoder.position_rows (packed texts) and reference.position_ids (padded batch) agree,
    pad ids inside the texts included. No torch: the transformers check is test_family_last_hidden_state."""
    from minie5.checkpoint.config import ModelConfig
    from minie5.engine.encoder import pack, position_rows
    from minie5.reference import position_ids

    config = ModelConfig.from_dict(shrink(E5_BASE_CONFIG if model_type == "xlm-roberta" else BGE_SMALL_CONFIG))
    pad = config.pad_token_id
    rng = np.random.default_rng(4)
    texts = [list(rng.integers(0, 50, size=n)) for n in (1, 7, 30, 2, 12)]
    texts[2][3:9] = [pad] * 6
    texts[4][-1] = pad
    packed = pack(texts)
    rows = position_rows(config, *packed)
    for i, ids in enumerate(texts):
        got = rows[packed[2][i]:packed[2][i + 1]]
        np.testing.assert_array_equal(got, position_ids(config, np.array([ids]))[0])
    if model_type == "xlm-roberta":
        assert rows[packed[2][2]:][:4].tolist() == [2, 3, 4, 1]  # e5-base: first real token at row 2, pad at 1
    with pytest.raises(ValueError, match="max_position_embeddings"):
        position_rows(config, *pack([[5] * (config.max_positions + 1)]))


def write_config_dir(path: Path, config: dict, files: dict | None = None) -> Path:
    """A directory with config.json and the given {relative path: JSON value} files (no weights)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    for name, value in (files or {}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value))
    return path


def test_xlmr_max_seq_length_is_512_positions(tmp_path):
    config = shrink(E5_BASE_CONFIG)
    assert read_config(write_config_dir(tmp_path / "bare", config)).max_seq_length == 512  # 514 - 2
    too_long = write_config_dir(tmp_path / "long", config, {"sentence_bert_config.json": {"max_seq_length": 514}})
    with pytest.raises(minie5.ModelFileError, match="max_seq_length 514 exceeds the 512 positions"):
        read_config(too_long)
    bert = read_config(write_config_dir(tmp_path / "bert", shrink(BGE_SMALL_CONFIG)))
    assert (bert.max_seq_length, bert.max_positions) == (512, 512)


def test_pooling_mode_spelled_out(tmp_path):
    """Newer sentence-transformers write "pooling_mode": "cls" instead of the flags."""
    path = write_config_dir(tmp_path, shrink(BGE_SMALL_CONFIG), {"1_Pooling/config.json": {"pooling_mode": "max"}})
    assert read_config(path).pooling == "max"


def test_prompts(tmp_path):
    config = shrink(BGE_SMALL_CONFIG)
    e5 = read_config(write_config_dir(tmp_path / "none", config))  # no file: the e5 convention
    assert (e5.prompt("query"), e5.prompt("passage"), e5.prompt(None), e5.prompt("title: ")) == \
        ("query: ", "passage: ", "", "title: ")
    old = read_config(write_config_dir(tmp_path / "old", config, {"config_sentence_transformers.json": {
        "__version__": {"sentence_transformers": "2.2.2"}}}))  # declares no prompts: still the e5 convention
    assert old.prompt("query") == "query: "
    declared = read_config(write_config_dir(tmp_path / "declared", config, {"config_sentence_transformers.json": {
        "prompts": {"query": "Represent this: ", "document": "doc: ", "classification": "classify: "},
        "default_prompt_name": "classification"}}))
    assert declared.prompt("query") == "Represent this: "
    assert declared.prompt("passage") == "doc: "  # as encode_document: document, passage, corpus
    assert declared.prompt(None) == "classify: "  # the default prompt
    assert declared.prompt("classification") == "classify: " and declared.prompt("other ") == "other "
    empty = read_config(write_config_dir(tmp_path / "empty", config, {"config_sentence_transformers.json": {
        "prompts": {}, "default_prompt_name": None}}))  # declares that there are none
    assert (empty.prompt("query"), empty.prompt("passage"), empty.prompt(None)) == ("", "", "")
    with pytest.raises(TypeError, match="prefix"):
        e5.prompt(3)


def test_bad_default_prompt_names_the_field(tmp_path):
    path = write_config_dir(tmp_path, shrink(BGE_SMALL_CONFIG), {"config_sentence_transformers.json": {
        "prompts": {"query": "q: "}, "default_prompt_name": "passage"}})
    with pytest.raises(minie5.ModelFileError, match="default_prompt_name") as info:
        read_config(path)
    assert "config_sentence_transformers.json" in str(info.value)


UNSUPPORTED = {  # config.json change -> the field the error must name
    "gpt2": ({"model_type": "gpt2"}, "model_type"),
    "roberta": ({"model_type": "roberta"}, "model_type"),
    "relative_key": ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    "relative_key_query": ({"position_embedding_type": "relative_key_query"}, "position_embedding_type"),
    "gelu_new": ({"hidden_act": "gelu_new"}, "hidden_act"),
}


@pytest.mark.parametrize("base", ["bert", "xlm-roberta"])
@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_config_fails_at_load(tmp_path, base, case):
    change, field = UNSUPPORTED[case]
    config = {**shrink(E5_BASE_CONFIG if base == "xlm-roberta" else BGE_SMALL_CONFIG), **change}
    path = write_config_dir(tmp_path, config)
    with pytest.raises(minie5.UnsupportedModelError, match=f"field '{field}'") as info:
        minie5.load(path)
    assert str(path / "config.json") in str(info.value) and str(next(iter(change.values()))) in str(info.value)
