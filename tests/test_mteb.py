"""minie5 through the real mteb package (minie5.integrations.mteb), against sentence-transformers through mteb.

The hub's datasets cannot be reached from CI, so the two tasks are defined from
local files: a retrieval task made of the first queries of
tests/data/beir_translations (scripts/make_beir_translations.py), with their
relevant documents and a slice of the other documents, and an STS task of
sentence pairs from the translation groups (tests/data/multilingual_groups.txt):
two translations of one message score 5, lines of different messages 0.

The check: the main score mteb reports for minie5 equals the one it reports
for sentence-transformers (mteb's own wrapper) on the same model directory
within 1e-4, on the e5 fixture and on MiniLM (real fp32 weights). Both sides
get the same prompts: mteb's registry gives multilingual-e5-small
{"query": "query: ", "document": "passage: "}, which minie5 reads from the
model's config; MiniLM's directory declares none, so minie5 falls back to the
e5 convention (minie5/checkpoint/config.py), and sentence-transformers is given
those same prompts.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import mteb  # the test extra installs it: this file fails, never skips, without it
from datasets import Dataset, DatasetDict  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData  # noqa: E402
from mteb.abstasks.sts import AbsTaskSTS  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402

from minie5.integrations.mteb import Minie5Encoder  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
BEIR = DATA / "beir_translations"
QUERIES = 40  # queries of the retrieval task
DISTRACTORS = 200  # documents no chosen query judges relevant
STS_GROUPS = 40  # groups whose pairs make the STS task
E5_PROMPTS = {"query": "query: ", "document": "passage: "}

TASK_FIELDS = dict(
    description="A local test task built from minie5's tests/data.", reference="https://github.com/",
    dataset={"path": "minie5/tests-data", "revision": "local"}, category="t2t", eval_splits=["test"],
    eval_langs=["eng-Latn"], date=("2026-01-01", "2026-01-01"), dialect=[], domains=[], task_subtypes=[],
    license="not specified", annotations_creators="derived", modalities=["text"], sample_creation="found",
    bibtex_citation="")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def distinct_texts(model_dirs: list[Path]):
    """A test that texts each fixture's tokenizer reads without an unknown token and tells apart from the texts
    seen before. Texts in scripts a vocabulary lacks (Cherokee, Dhivehi... for e5, most non-Latin ones for
    MiniLM) all become one unknown token: their embeddings are identical and their ranks, tied, differ
    between any two engines by float rounding alone."""
    from tokenizers import Tokenizer
    tokenizers = [Tokenizer.from_file(str(d / "tokenizer.json")) for d in model_dirs]
    tokenizers = [(tok, "<unk>" if tok.token_to_id("<unk>") is not None else "[UNK]") for tok in tokenizers]
    seen = [set() for _ in tokenizers]

    def keep(text: str) -> bool:
        encodings = [(tok.encode(text).ids, tok.token_to_id(unk)) for tok, unk in tokenizers]
        if any(unk_id in ids for ids, unk_id in encodings) or any(tuple(ids) in s for (ids, _), s in
                                                                  zip(encodings, seen)):
            return False
        for (ids, _), s in zip(encodings, seen):
            s.add(tuple(ids))
        return True
    return keep


def retrieval_split(model_dirs: list[Path]) -> RetrievalSplitData:
    """QUERIES queries of beir_translations with a relevant document, their relevant documents and DISTRACTORS
    others; only texts both fixtures read and tell apart (distinct_texts)."""
    keep = distinct_texts(model_dirs)
    judgements: dict[str, dict[str, int]] = {}
    for line in (BEIR / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query_id, doc_id, score = line.split("\t")
        judgements.setdefault(query_id, {})[doc_id] = int(score)
    documents = {d["_id"]: d for d in read_jsonl(BEIR / "corpus.jsonl") if keep(d["text"])}
    queries, relevant = [], {}
    for query in read_jsonl(BEIR / "queries.jsonl"):
        found = {d: s for d, s in judgements.get(query["_id"], {}).items() if d in documents}
        if found and len(queries) < QUERIES and keep(query["text"]):
            queries.append(query)
            relevant[query["_id"]] = found
    judged = {d for docs in relevant.values() for d in docs}
    corpus = [documents[d] for d in documents if d in judged]
    corpus += [documents[d] for d in documents if d not in judged][:DISTRACTORS]
    return RetrievalSplitData(
        queries=Dataset.from_list([{"id": q["_id"], "text": q["text"]} for q in queries]),
        corpus=Dataset.from_list([{"id": d["_id"], "title": d["title"], "text": d["text"]} for d in corpus]),
        relevant_docs=relevant, top_ranked=None)


class LocalTranslationRetrieval(AbsTaskRetrieval):
    metadata = TaskMetadata(type="Retrieval", name="Minie5LocalTranslationRetrieval", main_score="ndcg_at_10",
                            **TASK_FIELDS)

    split_data: RetrievalSplitData  # set by local_tasks

    def load_data(self, num_proc=None, **kwargs) -> None:
        self.dataset = {"default": {"test": self.split_data}}
        self.data_loaded = True


def sts_pairs(model_dirs: list[Path]) -> Dataset:
    """Pairs of lines: each group's first line with its second (score 5) and with the next group's first (0),
    over the groups with two lines both fixtures read and tell apart (distinct_texts)."""
    keep = distinct_texts(model_dirs)
    lines = (DATA / "multilingual.txt").read_text(encoding="utf-8").split("\n")
    groups = [[lines[int(n) - 1] for n in g.split()] for g in (DATA / "multilingual_groups.txt").read_text(
        encoding="utf-8").splitlines()]
    groups = [kept for kept in ([text for text in g if keep(text)] for g in groups) if len(kept) >= 2]
    first, second, scores = [], [], []
    for group, other in zip(groups[:STS_GROUPS], groups[1:STS_GROUPS + 1]):
        first += [group[0], group[0]]
        second += [group[1], other[0]]
        scores += [5.0, 0.0]
    return Dataset.from_dict({"sentence1": first, "sentence2": second, "score": scores})


class LocalTranslationSTS(AbsTaskSTS):
    metadata = TaskMetadata(type="STS", name="Minie5LocalTranslationSTS", main_score="cosine_spearman",
                            **TASK_FIELDS)
    min_score = 0
    max_score = 5

    pairs: Dataset  # set by local_tasks

    def load_data(self, num_proc=None, **kwargs) -> None:
        self.dataset = DatasetDict({"test": self.pairs})
        self.data_loaded = True


@pytest.fixture(scope="module")
def task_data(e5_dir, minilm_dir) -> tuple[RetrievalSplitData, Dataset]:
    return retrieval_split([e5_dir, minilm_dir]), sts_pairs([e5_dir, minilm_dir])


def local_tasks(task_data) -> list:
    """Fresh task objects (mteb keeps state in them) on the data of task_data."""
    retrieval, sts = LocalTranslationRetrieval(), LocalTranslationSTS()
    retrieval.split_data, sts.pairs = task_data
    return [retrieval, sts]


def main_scores(model, tasks) -> dict[str, float]:
    """mteb.evaluate on the tasks, no results cache: task name -> the main score of its test split."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mteb's notes about local tasks (no hub revision, no statistics)
        result = mteb.evaluate(model, tasks, cache=None, show_progress_bar=False)
    return {task.task_name: task.get_score() for task in result.task_results}


def sentence_transformers_model(model_dir: Path, prompts: dict):
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer
    return SentenceTransformerEncoderWrapper(SentenceTransformer(str(model_dir), device="cpu"),
                                             model_prompts=dict(prompts))


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["e5_dir", "minilm_dir"])
def test_mteb_main_scores_match_sentence_transformers(fixture, request, task_data):
    model_dir = request.getfixturevalue(fixture)
    minie5_model = Minie5Encoder(model_dir)
    assert minie5_model.model_prompts == E5_PROMPTS  # queries and passages get their prompts
    ours = main_scores(minie5_model, local_tasks(task_data))
    theirs = main_scores(sentence_transformers_model(model_dir, E5_PROMPTS), local_tasks(task_data))
    name = fixture.removesuffix("_dir")
    for task in theirs:
        print(f"parity mteb {name} {task}: minie5 {ours[task]:.6f} sentence-transformers {theirs[task]:.6f} "
              f"|diff| {abs(ours[task] - theirs[task]):.1e}")
    assert set(ours) == set(theirs) == {"Minie5LocalTranslationRetrieval", "Minie5LocalTranslationSTS"}
    for task in theirs:
        assert ours[task] == pytest.approx(theirs[task], abs=1e-4), task


def test_prompts_reach_the_texts(e5_dir):
    """What mteb asks for queries, documents and STS sentences: the model's query / passage prompt, or none."""
    model = Minie5Encoder(e5_dir)
    retrieval, sts = LocalTranslationRetrieval().metadata, LocalTranslationSTS().metadata
    assert model.prompt_for(retrieval, mteb.types.PromptType.query) == "query: "
    assert model.prompt_for(retrieval, mteb.types.PromptType.document) == "passage: "
    assert model.prompt_for(sts, None) == ""
    replaced = Minie5Encoder(e5_dir, model_prompts={"query": "search: ", "document": "doc: "})
    assert replaced.prompt_for(retrieval, mteb.types.PromptType.query) == "search: "
