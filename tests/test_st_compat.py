"""minie5.SentenceTransformer runs sentence-transformers code: the same snippets against both libraries.

Each snippet below is the model card's sentence-transformers example
(intfloat/multilingual-e5-small) or an example from sentence-transformers'
documentation (quickstart, semantic textual similarity, semantic search,
computing embeddings, embedding quantization, Matryoshka, bitext mining,
the package reference), written once against `lib`: the one changed import,
sentence_transformers or minie5. Models are the local fixtures (the hub is
unreachable): all-MiniLM-L6-v2 where the docs use it or a model we do not have,
e5-small where they use an e5. Adaptations are marked "adapted:".

Prompts: the e5 repositories declare none, and minie5 supplies e5's own for a
model whose name says e5 (minie5/integrations/sentence_transformers.py).
sentence-transformers reads them from the model directory, as it does for any
model that declares prompts: it loads a copy of the e5 directory (links to its
files) with a config_sentence_transformers.json that gives the prompts of e5's
model card ("query: " / "passage: "), written out here, not taken from minie5.

Outputs are compared by kind: embeddings by cosine per row (>= 0.99999),
scores by max |difference|, quantised arrays element by element, the rest
for equality. Each snippet prints one "parity st-compat ..." line.
"""
from __future__ import annotations

import copy
import time
import tracemalloc
import types
import warnings

import numpy as np
import pytest

import minie5
from conftest import requires_torch
from helpers import REPO, load_script

pytestmark = requires_torch

COSINE_MIN = 0.99999
SCORE_TOL = 1e-5  # max |difference| of cosine / dot scores; distances: relative to their size
SETTINGS = ("prompts", "default_prompt_name", "similarity_fn_name", "max_seq_length", "truncate_dim")  # what snippets change


# e5's model card: "Use "query: " and "passage: " correspondingly for asymmetric tasks"; sentence-transformers'
# encode_document takes the "document" prompt, minie5's e5 prompts also name it "passage".
E5_MODEL_CARD_PROMPTS = {"query": "query: ", "document": "passage: ", "passage": "passage: "}


@pytest.fixture(scope="module")
def e5_dir_with_prompts(e5_dir, tmp_path_factory):
    """The e5 directory as a repository that declares its prompts: links to its files, and
    config_sentence_transformers.json with the model card's prompts."""
    import json

    copy = tmp_path_factory.mktemp("st-prompts") / "multilingual-e5-small"
    copy.mkdir()
    for item in e5_dir.iterdir():
        if item.name != "config_sentence_transformers.json":
            (copy / item.name).symlink_to(item.resolve())
    (copy / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": E5_MODEL_CARD_PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"}))
    return copy


@pytest.fixture(scope="module")
def libraries(e5_dir, e5_dir_with_prompts, minilm_dir):
    """(name, lib) for both libraries; lib.SentenceTransformer takes a hub id of the docs and loads our copy."""
    import sentence_transformers

    local = {"intfloat/multilingual-e5-small": e5_dir, "intfloat/multilingual-e5-large": e5_dir,
             "sentence-transformers/all-MiniLM-L6-v2": minilm_dir,
             "mixedbread-ai/mxbai-embed-large-v1": minilm_dir, "nomic-ai/nomic-embed-text-v1.5": minilm_dir}

    loaded = {}  # sentence-transformers loads e5 in seconds: one model per (name, arguments), settings reset

    def st_model(name, **kwargs):
        kwargs.pop("trust_remote_code", None)  # nomic's remote code is not needed for the MiniLM stand-in
        directory = e5_dir_with_prompts if local[name] == e5_dir else local[name]  # e5: prompts from the files
        key = (name, repr(sorted(kwargs.items())))
        if key not in loaded:
            model = sentence_transformers.SentenceTransformer(str(directory), device="cpu", **kwargs)
            loaded[key] = (model, {attribute: copy.copy(getattr(model, attribute)) for attribute in SETTINGS})
        model, settings = loaded[key]
        for attribute, value in settings.items():  # as loaded, whatever an earlier snippet changed
            setattr(model, attribute, copy.copy(value))
        return model

    def minie5_model(name, **kwargs):
        kwargs.pop("trust_remote_code", None)
        return minie5.SentenceTransformer(str(local[name]), **kwargs)

    st_lib = types.SimpleNamespace(SentenceTransformer=st_model,
                                   SimilarityFunction=sentence_transformers.SimilarityFunction,
                                   quantize_embeddings=sentence_transformers.quantize_embeddings)
    minie5_lib = types.SimpleNamespace(SentenceTransformer=minie5_model, SimilarityFunction=minie5.SimilarityFunction,
                                       quantize_embeddings=minie5.quantize_embeddings)
    return {"sentence-transformers": st_lib, "minie5": minie5_lib}


# ---------------------------------------------------------------- the snippets
MODEL_CARD_TEXTS = load_script("model_card_example.py").INPUT_TEXTS  # the model card's four texts, verbatim


def model_card(lib):
    """intfloat/multilingual-e5-small's model card, "Support for Sentence Transformers"."""
    model = lib.SentenceTransformer("intfloat/multilingual-e5-small")
    embeddings = model.encode(MODEL_CARD_TEXTS, normalize_embeddings=True)
    scores = (embeddings[:2] @ embeddings[2:].T) * 100  # the card's similarity scores, x 100
    return {"embeddings": ("vectors", embeddings), "scores x 100": ("scores", scores / 100)}


def quickstart(lib):
    """docs/quickstart.rst (and computing-embeddings/README.rst)."""
    model = lib.SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
    sentences = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    embeddings = model.encode(sentences)
    similarities = model.similarity(embeddings, embeddings)
    return {"shape": ("exact", embeddings.shape), "embeddings": ("vectors", embeddings),
            "similarities": ("scores", similarities)}


STS_1 = ["The new movie is awesome", "The cat sits outside", "A man is playing guitar"]
STS_2 = ["The dog plays in the garden", "The new movie is so great", "A woman watches TV"]


def semantic_textual_similarity(lib):
    """docs/sentence_transformer/usage/semantic_textual_similarity.rst, two lists of sentences."""
    model = lib.SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
    embeddings1 = model.encode(STS_1)
    embeddings2 = model.encode(STS_2)
    similarities = model.similarity(embeddings1, embeddings2)
    return {"embeddings1": ("vectors", embeddings1), "embeddings2": ("vectors", embeddings2),
            "similarities": ("scores", similarities)}


def similarity_function_at_init(lib):
    """semantic_textual_similarity.rst, "Similarity Calculation" 1: similarity_fn_name when loading."""
    model = lib.SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2",
                                    similarity_fn_name=lib.SimilarityFunction.DOT_PRODUCT)
    embeddings = model.encode(STS_1 + STS_2)
    return {"similarities": ("scores", model.similarity(embeddings, embeddings))}


def similarity_function_changed(lib):
    """semantic_textual_similarity.rst: cosine, then model.similarity_fn_name = MANHATTAN."""
    model = lib.SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
    sentences = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    embeddings = model.encode(sentences)
    cosine = model.similarity(embeddings, embeddings)
    model.similarity_fn_name = lib.SimilarityFunction.MANHATTAN
    manhattan = model.similarity(embeddings, embeddings)
    model.similarity_fn_name = "euclidean"  # adapted: the third function of the list, by its name
    euclidean = model.similarity(embeddings, embeddings)
    return {"name": ("exact", model.similarity_fn_name), "cosine": ("scores", cosine),
            "manhattan": ("scores", manhattan), "euclidean": ("scores", euclidean)}


def similarity_pairwise(lib):
    """semantic_textual_similarity.rst: similarity_pairwise, the score of each pair (sentences1[i], sentences2[i])."""
    model = lib.SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
    return {"pairwise": ("scores", model.similarity_pairwise(model.encode(STS_1), model.encode(STS_2)))}


def semantic_search(lib):
    """examples/.../semantic-search/semantic_search.py: encode_document the corpus, encode_query each query."""
    embedder = lib.SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
    corpus = [
        "Machine learning is a field of study that gives computers the ability to learn without being explicitly "
        "programmed.",
        "Deep learning is part of a broader family of machine learning methods based on artificial neural networks "
        "with representation learning.",
        "Neural networks are computing systems vaguely inspired by the biological neural networks that constitute "
        "animal brains.",
        "Mars rovers are robotic vehicles designed to travel on the surface of Mars to collect data and perform "
        "experiments.",
        "The James Webb Space Telescope is the largest optical telescope in space, designed to conduct infrared "
        "astronomy.",
        "SpaceX's Starship is designed to be a fully reusable transportation system capable of carrying humans to "
        "Mars and beyond.",
        "Global warming is the long-term heating of Earth's climate system observed since the pre-industrial period "
        "due to human activities.",
        "Renewable energy sources include solar, wind, hydro, and geothermal power that naturally replenish over time.",
        "Carbon capture technologies aim to collect CO2 emissions before they enter the atmosphere and store them "
        "underground.",
    ]
    corpus_embeddings = embedder.encode_document(corpus)  # adapted: without convert_to_tensor=True
    queries = ["How do artificial neural networks work?", "What technology is used for modern space exploration?",
               "How can we address climate change challenges?"]
    out = {"corpus": ("vectors", corpus_embeddings)}
    top_k = min(5, len(corpus))
    for query in queries:
        query_embedding = embedder.encode_query(query)
        similarity_scores = np.asarray(embedder.similarity(query_embedding, corpus_embeddings)[0])
        indices = np.argsort(-similarity_scores)[:top_k]  # adapted: NumPy instead of torch.topk
        out[f"query {query[:20]}"] = ("vectors", query_embedding)
        out[f"top {top_k} of {query[:20]}"] = ("exact", indices.tolist())
        out[f"scores of {query[:20]}"] = ("scores", similarity_scores)
    return out


def prompt_templates(lib):
    """computing-embeddings/README.rst, "Prompt Templates": three ways to the same embedding."""
    model = lib.SentenceTransformer(
        "intfloat/multilingual-e5-large",  # adapted: our e5 is the small one
        prompts={
            "classification": "Classify the following text: ",
            "retrieval": "Retrieve semantically similar text: ",
            "clustering": "Identify the topic or theme based on the text: ",
        },
    )
    by_prompt = model.encode("How to bake a strawberry cake", prompt="Retrieve semantically similar text: ")
    by_name = model.encode("How to bake a strawberry cake", prompt_name="retrieval")
    model.default_prompt_name = "retrieval"
    by_default = model.encode("How to bake a strawberry cake")
    query = model.encode("How to bake a strawberry cake", prompt_name="query")  # e5's "query: " prompt
    return {"prompt": ("vectors", by_prompt), "prompt_name": ("vectors", by_name),
            "default_prompt_name": ("vectors", by_default), "same three": ("exact", bool(
                np.array_equal(by_prompt, by_name) and np.array_equal(by_name, by_default))),
            "query prompt": ("vectors", query)}


def input_sequence_length(lib):
    """computing-embeddings/README.rst, "Input Sequence Length": read and lower max_seq_length."""
    model = lib.SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
    before = model.max_seq_length
    model.max_seq_length = 200
    long_text = " ".join(["The cat sits outside and watches the birds in the old garden."] * 40)  # ~520 tokens
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", minie5.TruncationWarning)  # minie5 says it truncated; ST does not
        embedding = model.encode(long_text)
    return {"max_seq_length": ("exact", (before, model.max_seq_length)), "truncated text": ("vectors", embedding)}


def binary_quantization(lib):
    """embedding-quantization/README.md, "Binary Quantization in Sentence Transformers" (2a and 2b)."""
    model = lib.SentenceTransformer("mixedbread-ai/mxbai-embed-large-v1")  # adapted: MiniLM
    binary_embeddings = model.encode(["I am driving to the lake.", "It is a beautiful day."], precision="binary")
    embeddings = model.encode(["I am driving to the lake.", "It is a beautiful day."])
    binary_afterwards = lib.quantize_embeddings(embeddings, precision="binary")
    ubinary = model.encode(["I am driving to the lake.", "It is a beautiful day."], precision="ubinary")
    return {"embeddings": ("vectors", embeddings), "binary": ("bits", binary_embeddings),
            "binary afterwards": ("bits", binary_afterwards), "ubinary": ("bits", ubinary),
            "dtypes and shapes": ("exact", [(str(a.dtype), a.shape, a.nbytes)
                                            for a in (embeddings, binary_embeddings, ubinary)])}


def scalar_quantization(lib):
    """embedding-quantization/README.md, "Scalar (int8) Quantization": calibrated on a corpus."""
    model = lib.SentenceTransformer("mixedbread-ai/mxbai-embed-large-v1")  # adapted: MiniLM
    # adapted: the calibration corpus is 100 lines of tests/data/multilingual.txt, not nq_open
    corpus = (REPO / "tests" / "data" / "multilingual.txt").read_text(encoding="utf-8").splitlines()[:100]
    calibration_embeddings = model.encode(corpus)
    embeddings = model.encode(["I am driving to the lake.", "It is a beautiful day."])
    int8_embeddings = lib.quantize_embeddings(embeddings, precision="int8",
                                              calibration_embeddings=calibration_embeddings)
    uint8_in_encode = model.encode(corpus[:50], precision="uint8")  # adapted: encode's own calibration
    return {"calibration": ("vectors", calibration_embeddings), "int8": ("levels", int8_embeddings),
            "uint8 by encode": ("levels", uint8_in_encode),
            "dtype": ("exact", (str(int8_embeddings.dtype), int8_embeddings.shape))}


def matryoshka(lib):
    """training/matryoshka/README.md, inference with truncate_dim=64."""
    matryoshka_dim = 64
    model = lib.SentenceTransformer("nomic-ai/nomic-embed-text-v1.5", trust_remote_code=True,
                                    truncate_dim=matryoshka_dim)  # adapted: MiniLM
    embeddings = model.encode([
        "search_query: What is TSNE?",
        "search_document: t-distributed stochastic neighbor embedding (t-SNE) is a statistical method for "
        "visualizing high-dimensional data by giving each datapoint a location in a two or three-dimensional map.",
        "search_document: Amelia Mary Earhart was an American aviation pioneer and writer.",
    ])
    assert embeddings.shape[-1] == matryoshka_dim
    similarities = model.similarity(embeddings[0], embeddings[1:])
    return {"embeddings": ("vectors", embeddings), "similarities": ("scores", similarities),
            "dimension": ("exact", model.get_sentence_embedding_dimension())}


def truncate_embeddings_block(lib):
    """The package reference, SentenceTransformer.truncate_embeddings's example."""
    model = lib.SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
    with model.truncate_embeddings(truncate_dim=16):
        embeddings_truncated = model.encode(["hello there", "hiya"])
    assert embeddings_truncated.shape[-1] == 16
    full = model.encode(["hello there", "hiya"], truncate_dim=32, normalize_embeddings=True)
    return {"truncated": ("vectors", embeddings_truncated), "truncate_dim=32, normalised": ("vectors", full)}


def bitext_mining(lib):
    """parallel-sentence-mining/bitext_mining.py: normalised embeddings of two languages (adapted: 4 pairs)."""
    model = lib.SentenceTransformer("intfloat/multilingual-e5-small")  # adapted: a multilingual model we have
    source_sentences = ["The cat sits outside", "I love pasta", "Where is the station?", "It is raining"]
    target_sentences = ["Die Katze sitzt draußen", "Ich liebe Pasta", "Wo ist der Bahnhof?", "Es regnet"]
    source_embeddings = model.encode(source_sentences, show_progress_bar=False, convert_to_numpy=True,
                                     normalize_embeddings=True)
    target_embeddings = model.encode(target_sentences, show_progress_bar=False, convert_to_numpy=True,
                                     normalize_embeddings=True)
    return {"source": ("vectors", source_embeddings), "target": ("vectors", target_embeddings),
            "scores": ("scores", source_embeddings @ target_embeddings.T)}


def e5_query_and_document(lib):
    """The sentence-transformers prompts of an e5 model: encode_query / encode_document / prompt_name."""
    model = lib.SentenceTransformer("intfloat/multilingual-e5-small")
    queries = model.encode_query(["how much protein should a female eat", "南瓜的家常做法"])
    documents = model.encode_document(["Women need about 46 grams of protein a day.", "南瓜去皮切丝,快速翻炒。"])
    by_name = model.encode("how much protein should a female eat", prompt_name="query")
    return {"queries": ("vectors", queries), "documents": ("vectors", documents), "prompt_name": ("vectors", by_name),
            "similarity": ("scores", model.similarity(queries, documents)),
            "prompts": ("exact", dict(model.prompts))}


SNIPPETS = [model_card, quickstart, semantic_textual_similarity, similarity_function_at_init,
            similarity_function_changed, similarity_pairwise, semantic_search, prompt_templates,
            input_sequence_length, binary_quantization, scalar_quantization, matryoshka, truncate_embeddings_block,
            bitext_mining, e5_query_and_document]


# ---------------------------------------------------------------- comparing
def as_numpy(value) -> np.ndarray:
    """A NumPy array from either library's output (sentence-transformers gives torch tensors for scores)."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def compare(kind: str, ours, theirs) -> str:
    """Assert one output agrees; return its figure for the printed line."""
    if kind == "exact":
        assert ours == theirs, (ours, theirs)
        return "equal"
    a, b = as_numpy(ours), as_numpy(theirs)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    if kind == "vectors":
        rows_a, rows_b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
        cosine = (rows_a * rows_b).sum(1) / (np.linalg.norm(rows_a, axis=1) * np.linalg.norm(rows_b, axis=1))
        assert cosine.min() >= COSINE_MIN, cosine
        return f"min cosine 1 - {1 - cosine.min():.1e}"
    if kind == "scores":
        diff = float(np.abs(a.astype(np.float64) - b).max())
        assert diff <= SCORE_TOL * max(1.0, float(np.abs(b).max())), diff
        return f"max|diff| {diff:.1e}"
    if kind == "bits":  # a bit flips only for a dimension within float rounding of 0
        same = np.unpackbits(a.view(np.uint8)) == np.unpackbits(b.view(np.uint8))
        assert same.mean() >= 0.995, same.mean()
        return f"{same.mean():.2%} bits equal"
    assert kind == "levels"  # int8 / uint8 buckets: a value within float rounding of a boundary moves by one
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 1, diff.max()
    return f"{(diff == 0).mean():.2%} equal, max |diff| {diff.max()} level"


@pytest.mark.filterwarnings("ignore:The `get_sentence_embedding_dimension` method:FutureWarning")  # ST 6 renamed it
@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.__name__ for s in SNIPPETS])
def test_snippet_gives_what_sentence_transformers_gives(snippet, libraries):
    timings, outputs = {}, {}
    for name, lib in libraries.items():
        start = time.perf_counter()
        outputs[name] = snippet(lib)
        timings[name] = time.perf_counter() - start
    ours, theirs = outputs["minie5"], outputs["sentence-transformers"]
    assert ours.keys() == theirs.keys()
    figures = [f"{key}: {compare(kind, ours[key][1], theirs[key][1])}" for key, (kind, _) in theirs.items()]
    print(f"parity st-compat {snippet.__name__}: " + "; ".join(figures) +
          f" (minie5 {timings['minie5']:.1f} s, sentence-transformers {timings['sentence-transformers']:.1f} s)")


# ---------------------------------------------------------------- distances at scale
def distance_cases(n: int, m: int, seed: int = 23) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows as embeddings are, [n, 384] and [m, 384] float32: a quarter of b copies rows of a (distance
    exactly 0), a quarter is those rows moved by about 2e-3 (where |a|^2 + |b|^2 - 2ab cancels), the rest random."""
    rng = np.random.default_rng(seed)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    a, b = unit(rng.normal(size=(n, 384))), unit(rng.normal(size=(m, 384)))
    quarter = min(n, m) // 4
    b[:quarter] = a[:quarter]
    b[quarter:2 * quarter] = unit(a[quarter:2 * quarter] + rng.normal(scale=1e-4, size=(quarter, 384)))
    return a, b


@pytest.fixture(scope="module")
def minilm_st(minilm_dir):
    return minie5.SentenceTransformer(str(minilm_dir))


def sentence_transformers_scores(name: str, a, b, pairwise: bool = False) -> np.ndarray:
    """sentence-transformers' own function for a similarity name, on float64 copies of the arrays.

    float64, because its float32 euclidean (torch.cdist's matmul form) is itself
    about 1e-3 from the exact distance for vectors close together: the figure
    printed as "sentence-transformers float32".
    """
    from sentence_transformers import SimilarityFunction
    from sentence_transformers.util import pairwise_euclidean_sim, pairwise_manhattan_sim

    function = ({"euclidean": pairwise_euclidean_sim, "manhattan": pairwise_manhattan_sim}[name] if pairwise
                else SimilarityFunction.to_similarity_fn(name))
    return as_numpy(function(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)))


@pytest.mark.parametrize("name", ["euclidean", "manhattan"])
def test_distances_equal_sentence_transformers(minilm_st, name):
    a, b = distance_cases(300, 200)
    minilm_st.similarity_fn_name = name
    ours = minilm_st.similarity(a, b)
    theirs = sentence_transformers_scores(name, a, b)
    assert ours.shape == (300, 200) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    assert np.abs(ours[np.arange(50), np.arange(50)]).max() <= 1e-7  # the copied rows: 0, within float64 rounding
    ours64 = minilm_st.similarity(a.astype(np.float64), b.astype(np.float64))
    assert ours64.dtype == np.float64
    np.testing.assert_allclose(ours64, theirs, rtol=0, atol=1e-7)  # both float64: the cancellation near 0, 1e-8
    halves = minilm_st.similarity(a[:20].astype(np.float16), b[:20].astype(np.float16))  # float32, as in ST
    assert halves.dtype == np.float32
    np.testing.assert_allclose(halves, sentence_transformers_scores(name, a[:20].astype(np.float16),
                                                                    b[:20].astype(np.float16)), rtol=0, atol=1e-5)
    pairs = minilm_st.similarity_pairwise(a[:200], b)
    np.testing.assert_allclose(pairs, sentence_transformers_scores(name, a[:200], b, pairwise=True), rtol=0, atol=1e-5)
    from sentence_transformers import SimilarityFunction
    st_float32 = as_numpy(SimilarityFunction.to_similarity_fn(name)(a, b))
    print(f"parity st-compat {name} [300, 200]: max|diff| {np.abs(ours - theirs).max():.1e} (float64 input "
          f"{np.abs(ours64 - theirs).max():.1e}; sentence-transformers float32 "
          f"{np.abs(st_float32 - theirs).max():.1e})")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["euclidean", "manhattan"])
def test_distances_of_4000_by_4000_in_bounded_memory(minilm_st, name):
    """The [4000, 4000] scores without the [4000, 4000, 384] array of differences (24.6 GB in float32)."""
    a, b = distance_cases(4000, 4000)
    minilm_st.similarity_fn_name = name
    minilm_st.similarity(a[:2], b[:2])  # compile the manhattan kernel outside the measurement
    tracemalloc.start()
    try:
        start = time.perf_counter()
        ours = minilm_st.similarity(a, b)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]  # NumPy reports its array buffers to tracemalloc
    finally:
        tracemalloc.stop()
    difference_array = 4000 * 4000 * 384 * 4
    assert peak <= ours.nbytes + 100 * 2**20, peak  # the [4000, 4000] result (61 MiB) and blocks of at most 100 MiB
    theirs = sentence_transformers_scores(name, a, b)
    diff = float(np.abs(ours - theirs).max())
    assert diff <= 1e-5, diff
    print(f"parity st-compat {name} [4000, 4000]: max|diff| {diff:.1e}, peak memory {peak / 2**20:.0f} MiB "
          f"(the difference array: {difference_array / 2**30:.1f} GiB), minie5 {seconds:.1f} s")
