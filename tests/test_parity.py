"""minie5 against Hugging Face transformers (torch CPU), both minie5 backends.

a. Tiny random BERTs built here (BertModel / BertForMaskedLM, torch seed
   fixed), saved with save_pretrained, loaded with minie5.load: last hidden
   state on random, heavily padded batches vs BertModel, under both of
   transformers' attention implementations (sdpa, eager).
b. The multilingual-e5-small fixture: token ids vs AutoTokenizer, last hidden
   state vs AutoModel on the same padded input, embeddings vs masked mean
   pooling + L2 normalisation (what sentence-transformers computes for e5).

Every comparison prints its measured figure (run with -s to see them).
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import minie5
from conftest import requires_torch
from helpers import ROUNDING
from tiny_models import init_scale, max_abs_diff_on_mask, random_batch, tiny_config, write_tokenizer

pytestmark = requires_torch

BACKENDS = ["reference", "fast"]
HIDDEN_TOL = 1e-4
COSINE_MIN = 0.99999


# =============================================================== a. tiny random BERTs

TINY = {  # name: (hidden, heads, layers, intermediate, vocab, head class)
    "h12a1l1": (12, 1, 1, 20, 100, "BertModel"),
    "h24a2l2": (24, 2, 2, 40, 257, "BertModel"),
    "h24a3l3": (24, 3, 3, 36, 300, "BertModel"),
    "h36a3l2": (36, 3, 2, 52, 1000, "BertModel"),  # hidden, FFN, head_dim 12: no multiple of 8
    "h44a4l3": (44, 4, 3, 76, 513, "BertModel"),  # head_dim 11
    "mlm-h36a3l2": (36, 3, 2, 52, 211, "BertForMaskedLM"),  # keys "bert.*" + cls.* heads
}
SEQ_LENGTHS = [1, 2, 7, 13, 33, 64]
MAX_POSITIONS = 64


@dataclass
class Tiny:
    name: str
    path: Path
    hf: object  # the transformers BertModel (the encoder inside, for BertForMaskedLM)
    keys: list[str]  # tensor names in the saved model.safetensors
    model: minie5.Model
    cache: dict = field(default_factory=dict)

    @property
    def vocab(self) -> int:
        return self.model.config.vocab_size

    def hf_forward(self, ids: np.ndarray, mask: np.ndarray, attn: str) -> np.ndarray:
        import torch

        self.hf.set_attn_implementation(attn)
        t_mask = torch.from_numpy(mask)
        with torch.no_grad():
            out = self.hf(input_ids=torch.from_numpy(ids), attention_mask=t_mask,
                          token_type_ids=torch.zeros_like(t_mask))
        return out.last_hidden_state.numpy()


def _randomize(model, seed: int) -> None:
    """Re-draw every parameter at test scale (tiny_models.init_scale): BERT's own init
    (std 0.02, zero biases, LayerNorm 1/0) makes attention near-uniform and hides bugs."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = name.removeprefix("bert.")
            centre, std = init_scale(base, tuple(p.shape))
            p.copy_(centre + std * torch.randn(p.shape))


def _build_tiny(name: str, root: Path) -> Tiny:
    import torch
    import transformers
    from safetensors import safe_open

    hidden, heads, layers, ffn, vocab, head_class = TINY[name]
    cfg = tiny_config(hidden, heads, layers, ffn, vocab, max_positions=MAX_POSITIONS)
    cfg = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "position_embedding_type")}
    config = transformers.BertConfig(**cfg)
    seed = zlib.crc32(name.encode()) % 2**31
    torch.manual_seed(seed)
    hf_model = getattr(transformers, head_class)(config).eval()
    _randomize(hf_model, seed)
    path = root / name
    hf_model.save_pretrained(path, safe_serialization=True)
    write_tokenizer(path, min(vocab, 200))
    with safe_open(str(path / "model.safetensors"), framework="numpy") as f:
        keys = list(f.keys())
    encoder = hf_model.bert if head_class == "BertForMaskedLM" else hf_model
    return Tiny(name, path, encoder.eval(), keys, minie5.load(path, backend="reference"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_bert")
    built: dict[str, Tiny] = {}

    def get(name: str) -> Tiny:
        if name not in built:
            built[name] = _build_tiny(name, root)
        return built[name]

    return get


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_checkpoint_layout(tiny, name):
    """What save_pretrained writes, and what minie5 makes of it."""
    t = tiny(name)
    if TINY[name][5] == "BertForMaskedLM":
        assert all(k.startswith(("bert.", "cls.")) for k in t.keys), t.keys
        assert any(k.startswith("cls.predictions.") for k in t.keys)
    else:
        assert not any(k.startswith("bert.") for k in t.keys)
        assert "embeddings.word_embeddings.weight" in t.keys and "pooler.dense.weight" in t.keys
    hidden, heads, layers, ffn, vocab, _ = TINY[name]
    c = t.model.config
    assert (c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.intermediate_size, c.vocab_size) == \
        (hidden, heads, layers, ffn, vocab)
    # every tensor minie5 holds is bit-identical to transformers' parameter
    params = {k: v.detach().numpy() for k, v in t.hf.state_dict().items()}
    assert set(t.model.weights) <= set(params)
    for k, w in t.model.weights.items():
        np.testing.assert_array_equal(w, params[k], err_msg=k)


@pytest.mark.parametrize("seq", SEQ_LENGTHS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(TINY))
def test_tiny_parity(tiny, name, backend, seq):
    t = tiny(name)
    rng = np.random.default_rng(zlib.crc32(f"{name}/{seq}".encode()))
    ids, mask = random_batch(rng, t.vocab, seq, pad_garbage=seq % 2 == 1)
    key = (seq,)
    if key not in t.cache:
        t.cache[key] = {attn: t.hf_forward(ids, mask, attn) for attn in ("sdpa", "eager")}
    expected = t.cache[key]

    start = time.perf_counter()
    out = t.model.forward(ids, mask, backend=backend)
    elapsed = time.perf_counter() - start
    assert out.shape == (ids.shape[0], seq, t.model.config.hidden_size) and out.dtype == np.float32
    assert np.isfinite(out[mask == 1]).all()
    diffs = {attn: max_abs_diff_on_mask(out, exp, mask) for attn, exp in expected.items()}
    hf_self = max_abs_diff_on_mask(expected["sdpa"], expected["eager"], mask)
    print(f"parity tiny {name} T={seq} {backend}: max|diff| {max(diffs.values()):.1e} "
          f"(vs sdpa {diffs['sdpa']:.1e}, eager {diffs['eager']:.1e}; hf sdpa-vs-eager {hf_self:.1e}; "
          f"rows {ids.shape[0]}, {elapsed * 1e3:.1f} ms)")
    assert max(diffs.values()) <= HIDDEN_TOL


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_tiny_half_precision_checkpoint(tiny, tmp_path, dtype, backend):
    """A checkpoint saved in float16 / bfloat16: minie5 upcasts to float32; transformers'
    reference is the same model with its parameters rounded to that dtype, run in float32."""
    import copy

    import torch
    from safetensors import safe_open

    t = tiny("h36a3l2")
    half = copy.deepcopy(t.hf).to(getattr(torch, dtype))
    half.save_pretrained(tmp_path, safe_serialization=True)
    write_tokenizer(tmp_path, 200)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert f.get_slice("embeddings.word_embeddings.weight").get_dtype() == {"float16": "F16",
                                                                               "bfloat16": "BF16"}[dtype]
    rounded = Tiny("rounded", tmp_path, half.to(torch.float32).eval(), [], minie5.load(tmp_path, backend=backend))
    rng = np.random.default_rng(7)
    ids, mask = random_batch(rng, rounded.vocab, 33)
    expected = rounded.hf_forward(ids, mask, "eager")
    out = rounded.model.forward(ids, mask)
    diff = max_abs_diff_on_mask(out, expected, mask)
    print(f"parity tiny h36a3l2 {dtype} checkpoint {backend}: max|diff| {diff:.1e}")
    assert diff <= HIDDEN_TOL


# =============================================================== b. multilingual-e5-small

LONG_EN = ("The quick brown fox jumps over the lazy dog near the riverbank, while a group of children "
           "watch from the old stone bridge and talk about the weather, the harvest and the coming winter. ")
LONG_MIX = ("北京是中华人民共和国的首都，也是全国的政治、文化和国际交往中心。"
            "Москва — столица России. बर्लिन जर्मनी की राजधानी है। ")

E5_TEXTS = [
    # English
    "query: how much protein should a female eat",
    "passage: As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 "
    "grams per day. But, as you can see from this chart, you'll need to increase that if you're expecting or "
    "training for a marathon.",
    "query: summit define",
    "passage: Definition of summit for English Language Learners: the highest point of a mountain.",
    "Hello, world!",
    "hello world ",
    "  leading and trailing spaces  ",
    "multiple    inner     spaces\tand\ttabs\nand\nnewlines",
    "UPPER CASE and lower case and MiXeD cAsE",
    "Numbers: 3.14159, 2,718, 1e-12, -42, 0x1F, 100%",
    "Code: def f(x): return x ** 2  # comment",
    "https://example.com/path?query=1&lang=en#anchor and an e-mail someone@example.org",
    "Emoji 😀🎉👍🏽 and symbols ©®™ ≤ ≥ ∞ √",
    "a",
    ".",
    # German
    "query: Wie hoch ist die Zugspitze?",
    "passage: Die Zugspitze ist mit 2962 m ü. NN der höchste Gipfel des Wettersteingebirges und zugleich "
    "Deutschlands höchster Berg.",
    "Straßenbahnhaltestelle, Donaudampfschifffahrtsgesellschaftskapitän, Größe, Äpfel, Übermut",
    # French
    "query: quelle est la capitale de la France ?",
    "passage: Paris est la capitale de la France et la plus grande ville du pays ; « la Ville Lumière ».",
    "L'été dernier, nous sommes allés à la plage où l'eau était très froide.",
    # Spanish / Portuguese / Italian
    "query: ¿Cuál es el río más largo del mundo?",
    "passage: El río Amazonas es el más caudaloso del mundo y, según algunas mediciones, también el más largo.",
    "O Brasil é o maior país da América do Sul, e a língua oficial é o português.",
    "La pizza margherita è nata a Napoli nel 1889.",
    # Russian
    "query: Когда был основан Санкт-Петербург?",
    "passage: Санкт-Петербург был основан Петром I 27 мая 1703 года в устье реки Невы.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    # Chinese
    "query: 如何学习机器学习？",
    "passage: 机器学习是人工智能的一个分支，它使计算机能够在没有明确编程的情况下从数据中学习。",
    "今天天气很好，我们去公园散步吧。",
    "繁體中文：臺灣的首都是臺北市。",
    # Japanese
    "query: 富士山の高さは？",
    "passage: 富士山は静岡県と山梨県にまたがる活火山で、標高3776mの日本最高峰である。",
    "東京タワーはカタカナとひらがなと漢字で書かれています。",
    # Korean
    "query: 한국의 수도는 어디인가요?",
    "passage: 서울특별시는 대한민국의 수도이자 최대 도시이다.",
    "안녕하세요, 만나서 반갑습니다.",
    # long texts (> 512 tokens: truncated to 512), kept together so one unsorted batch of 8 holds both
    "passage: " + LONG_EN * 40,
    "passage: " + LONG_MIX * 40,
    # Arabic
    "query: ما هي عاصمة مصر؟",
    "passage: القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها، وتقع على ضفاف نهر النيل.",
    "اللغة العربية جميلة جدا",
    # Hindi
    "query: भारत की राजधानी क्या है?",
    "passage: नई दिल्ली भारत की राजधानी है और यह दिल्ली राष्ट्रीय राजधानी क्षेत्र का हिस्सा है।",
    "मुझे हिंदी में किताबें पढ़ना पसंद है।",
    # Turkish, Vietnamese, Thai, Greek, Hebrew, Polish, Indonesian, Swahili
    "query: İstanbul'un nüfusu ne kadar?",
    "Tiếng Việt có sáu thanh điệu khác nhau.",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "ירושלים היא עיר עתיקה.",
    "Zażółć gęślą jaźń.",
    "passage: Jakarta adalah ibu kota Indonesia.",
    "Habari ya asubuhi, rafiki yangu.",
    # mixed scripts, short and odd
    "query: Berlin 柏林 Берлин برلين बर्लिन ベルリン 베를린",
    "ok",
    "?!",
    "query: ",
    "passage: ",
    "",
    "   ",
    "\n\t ",
    "ǅemal Ǆ ﬁ ① ｆｕｌｌｗｉｄｔｈ ＡＢＣ",  # compatibility characters the normalizer folds
    "A medium-length English sentence that talks about embeddings, retrieval, vector search and "
    "evaluation of multilingual models on benchmark datasets such as MIRACL and Mr. TyDi.",
    "passage: " + "Ein etwas längerer deutscher Absatz über Wälder, Flüsse und Berge. " * 5,
    "query: " + "日本語の長めの文章を作るために同じ文を繰り返します。" * 4,
]
N_LONG = 2  # texts past 512 tokens
LONG = [i for i, t in enumerate(E5_TEXTS) if len(t) > 2000]
SHORT = [i for i in range(len(E5_TEXTS)) if i not in LONG]
# The hidden-state runs, for both backends: the 64 non-truncated texts in their given order,
# batches of 8 (heavy padding); all 66 sorted by length in batches of 32 (the last batch holds
# the two 512-token texts).
RUNS = {"short, batch 8 unsorted": (SHORT, 8, False),
        "all, batch 32 sorted": (list(range(len(E5_TEXTS))), 32, True)}
# the NumPy reference on both runs takes a minute or more on 2 busy cores: in the slow tier
RUN_BACKENDS = [pytest.param("reference", marks=pytest.mark.slow), "fast", "fast-numba"]


@pytest.fixture(scope="module")
def hf_e5(e5_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(e5_dir)
    model = AutoModel.from_pretrained(e5_dir).eval()
    print(f"\ntransformers e5 load: {time.perf_counter() - start:.1f} s "
          f"({type(tokenizer).__name__}, attn {model.config._attn_implementation})")
    return tokenizer, model, {}


def _hf_batches(hf_e5, indices: list[int], batch_size: int, sort: bool):
    """Run transformers on texts[indices] in padded batches; cached per (indices, batch_size, sort).

    sort=True orders by token count first (as minie5's encode does: little padding,
    and with 66 texts the two 512-token ones form the last, small batch);
    sort=False keeps the given order (heavy padding).
    Returns [(row indices, input_ids, attention_mask, last_hidden_state, pooled+normalised)].
    """
    import torch

    tokenizer, model, cache = hf_e5
    key = (tuple(indices), batch_size, sort)
    if key in cache:
        return cache[key]
    texts = [E5_TEXTS[i] for i in indices]
    order = list(range(len(texts)))
    if sort:
        lengths = [len(x) for x in tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
        order.sort(key=lambda i: lengths[i])
    batches = []
    for s in range(0, len(order), batch_size):
        rows = [indices[i] for i in order[s:s + batch_size]]
        enc = tokenizer([E5_TEXTS[i] for i in rows], padding=True, truncation=True, max_length=512,
                        return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
            m = enc["attention_mask"][:, :, None].to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            emb = torch.nn.functional.normalize(pooled, p=2, dim=1)
        batches.append((rows, enc["input_ids"].numpy(), enc["attention_mask"].numpy(), hidden.numpy(),
                        emb.numpy()))
    cache[key] = batches
    return batches


def _hf_embeddings(hf_e5, indices: list[int]) -> np.ndarray:
    """transformers' e5 embeddings of texts[indices], from the run over all texts (batch 32, sorted)."""
    out = np.zeros((len(E5_TEXTS), 384), dtype=np.float32)
    for rows, _, _, _, emb in _hf_batches(hf_e5, list(range(len(E5_TEXTS))), 32, sort=True):
        out[rows] = emb
    return out[indices]


@pytest.fixture(scope="module")
def e5(e5_dir):
    return minie5.load(e5_dir, backend="reference")


def test_e5_text_list():
    assert len(E5_TEXTS) >= 64
    assert len(LONG) == N_LONG
    # with 66 texts, sorted batches of 8 or 32 leave the two longest alone in the last batch
    assert len(E5_TEXTS) % 8 == len(E5_TEXTS) % 32 == N_LONG


def test_e5_token_ids(hf_e5, e5):
    tokenizer = hf_e5[0]
    hf_ids = tokenizer(E5_TEXTS, truncation=True, max_length=512)["input_ids"]
    ids, truncated = e5.tokenizer.encode(E5_TEXTS)
    mismatched = [i for i in range(len(E5_TEXTS)) if ids[i] != hf_ids[i]]
    lengths = [len(x) for x in ids]
    print(f"e5 token ids: {len(E5_TEXTS)} texts, {len(E5_TEXTS) - len(mismatched)} identical; "
          f"lengths {min(lengths)}..{max(lengths)}, {truncated} truncated")
    for i in mismatched[:5]:
        print(f"  mismatch text {i} {E5_TEXTS[i][:40]!r}: minie5 {ids[i][:20]} hf {hf_ids[i][:20]}")
    assert not mismatched
    assert truncated == N_LONG
    assert sorted(lengths)[-N_LONG:] == [512] * N_LONG and sorted(lengths)[-N_LONG - 1] < 512
    assert ids[E5_TEXTS.index("")] == [0, 2] and ids[E5_TEXTS.index("   ")] == [0, 2]


@pytest.fixture(scope="module")
def e5_forward(e5, e5_dir):
    """minie5's last hidden states on transformers' padded batches of a run, cached per (backend, run):
    [(hidden [b, T, H], seconds)] in the order of _hf_batches. fast-numba: matmul="numba"."""
    models, cache = {"reference": e5, "fast": e5}, {}

    def run(hf_e5, backend: str, label: str):
        if (backend, label) not in cache:
            if backend not in models:
                models[backend] = minie5.load(e5_dir, matmul="numba")
            path = "fast" if backend == "fast-numba" else backend
            outputs = []
            for _, ids, mask, _, _ in _hf_batches(hf_e5, *RUNS[label]):
                start = time.perf_counter()
                outputs.append((models[backend].forward(ids, mask, backend=path), time.perf_counter() - start))
            cache[backend, label] = outputs
        return cache[backend, label]

    return run


@pytest.mark.parametrize("backend", RUN_BACKENDS)
def test_e5_last_hidden_state(hf_e5, e5_forward, backend):
    """fast-numba: the fast path with matmul="numba" (minie5's Numba matmul and attention everywhere)."""
    for label, (indices, batch_size, sort) in RUNS.items():
        batches = _hf_batches(hf_e5, indices, batch_size, sort)
        worst, worst_text, elapsed, tokens, padded = 0.0, None, 0.0, 0, 0
        for (rows, ids, mask, expected, _), (out, seconds) in zip(batches, e5_forward(hf_e5, backend, label)):
            elapsed += seconds
            tokens += int(mask.sum())
            padded += mask.size
            assert out.shape == expected.shape and out.dtype == np.float32
            for r, i in enumerate(rows):
                d = max_abs_diff_on_mask(out[r:r + 1], expected[r:r + 1], mask[r:r + 1])
                if d >= worst:
                    worst, worst_text = d, i
        print(f"parity e5 {backend} ({label}: {len(indices)} texts, {len(batches)} batches, {tokens} tokens "
              f"/ {padded} padded positions): last hidden max|diff| {worst:.2e} "
              f"(worst text {worst_text}), forward {elapsed:.1f} s")
        assert worst <= HIDDEN_TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_e5_embeddings(hf_e5, e5, backend):
    expected = _hf_embeddings(hf_e5, list(range(len(E5_TEXTS))))
    texts = E5_TEXTS
    # the reference's batch-size independence is test_e5_batching_drift's; one size here keeps it short
    for batch_size in ((8,) if backend == "reference" else (8, 32)):
        start = time.perf_counter()
        emb = e5.encode(texts, batch_size=batch_size, backend=backend)
        elapsed = time.perf_counter() - start
        assert emb.shape == (len(texts), 384) and emb.dtype == np.float32
        cos = np.sum(emb.astype(np.float64) * expected.astype(np.float64), axis=1) / (
            np.linalg.norm(emb, axis=1) * np.linalg.norm(expected, axis=1))
        diff = float(np.abs(emb - expected).max())
        print(f"parity e5 {backend} encode ({len(texts)} texts, batch {batch_size}): min cosine {cos.min():.8f} "
              f"(text {int(cos.argmin())}), max|diff| {diff:.2e}, norms {np.linalg.norm(emb, axis=1).min():.6f}.."
              f"{np.linalg.norm(emb, axis=1).max():.6f}, {elapsed:.1f} s")
        assert cos.min() >= COSINE_MIN
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_e5_prefix_argument(e5):
    """encode(prefix="query") is encode("query: " + text): same ids, same vectors."""
    texts = ["Wie hoch ist die Zugspitze?", "富士山の高さは？"]
    a = e5.encode(texts, prefix="query", backend="reference")
    b = e5.encode(["query: " + t for t in texts], backend="reference")
    np.testing.assert_array_equal(a, b)


def _pooled_rows(hf_e5, e5_forward, backend: str, label: str) -> dict:
    """{text index: mean-pooled, L2-normalised vector} of a run's outputs (minie5's, or "transformers")."""
    vectors = {}
    outputs = e5_forward(hf_e5, backend, label) if backend != "transformers" else None
    for b, (rows, _, mask, hf_hidden, _) in enumerate(_hf_batches(hf_e5, *RUNS[label])):
        hidden = (outputs[b][0] if outputs else hf_hidden).astype(np.float64)
        m = mask[:, :, None]  # [b, T, 1]
        pooled = np.where(m == 1, hidden, 0.0).sum(axis=1) / m.sum(axis=1)  # [b, H] mean over real tokens
        vectors.update(zip(rows, pooled / np.linalg.norm(pooled, axis=1, keepdims=True)))
    return vectors


@pytest.mark.parametrize("backend", RUN_BACKENDS)
def test_e5_batching_drift(hf_e5, e5_forward, backend):
    """A text's vector hardly depends on its batch: batch 8 unsorted (heavy padding) vs batch 32 sorted.
    minie5 stays within ROUNDING (docs/behaviour.md, "Determinism"); with matmul="numba" a row's
    products do not depend on its place, so it gives the same bits. transformers' drift, for context."""
    runs = list(RUNS)
    drift = {}
    for who in (backend, "transformers"):
        a, b = (_pooled_rows(hf_e5, e5_forward, who, label) for label in runs)
        drift[who] = max(float(np.abs(a[i] - b[i]).max()) for i in SHORT)
    print(f"parity e5 batching drift {backend} ({runs[0]} vs {runs[1]}, {len(SHORT)} texts): "
          f"max|diff| {drift[backend]:.1e} (transformers {drift['transformers']:.1e})")
    if backend == "fast-numba":
        assert drift[backend] == 0.0
    assert drift[backend] <= ROUNDING
