"""`minie5 eval`: retrieval scores of a model on a data set in the BEIR layout.

    DATA_DIR/corpus.jsonl        {"_id": "d1", "title": "...", "text": "..."} per line (title may be absent)
    DATA_DIR/queries.jsonl       {"_id": "q1", "text": "..."} per line
    DATA_DIR/qrels/test.tsv      query-id <TAB> corpus-id <TAB> score, after a header line

The layout Mr. TyDi, MIRACL and BEIR are published in. Each judged query
(a query id of the split's qrels file) is embedded with the model's query
prompt, each document as title + " " + text (stripped; the text alone when the
title is empty, as sentence-transformers' and mteb's BEIR evaluations join
them) with its passage prompt. Search is exact: every document is scored,
block by block, and the best max(k) kept per query (search.RunningTopK), so
memory holds one block of the corpus, never all of it; --binary searches the
binary index and rescores the candidates in float (search.binary_search).
The scores (nDCG@k, MRR@k, Recall@k, MAP@k) are computed by pytrec_eval
(trec_eval's code, the library mteb uses): pip install "minie5[eval]".

Several settings (--quantize none --quantize int8, several --max-length, or
--compare) are evaluated side by side on one pass over the corpus: each block
of documents is read once and embedded by every setting. docs/evaluation.md
has the commands and measured figures.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, json_type
from ..model import DEFAULT_CHUNK_SIZE
from ..io.files import NpyWriter
from .search import RESCORE_MULTIPLIER, RunningTopK, binary_search, build_binary_index

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_DIR = "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")
DEFAULT_KS = (10, 100)
SHOWN_IDS = 5  # ids quoted in the error about ids the qrels name but the files lack
METRIC_NAMES = {"ndcg": "nDCG", "mrr": "MRR", "recall": "Recall", "map": "MAP"}


# ---------------------------------------------------------------- reading the BEIR layout
@dataclass
class Qrels:
    """The relevance judgements of one split: query id -> {corpus id: score}, and where each was read."""
    path: Path
    judgements: dict[str, dict[str, int]]
    lines: dict[tuple[str, str], int]  # (query id, corpus id) -> line number, for error messages


def json_lines(path: Path):
    """(line number, object) for each line of a JSON Lines file; InputError naming the file and line otherwise."""
    if not path.is_file():
        raise InputError("not found (the BEIR layout has corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv)", path)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path, number) from None
            if not line.strip():
                raise InputError("blank line (each line must be one JSON object)", path, number)
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e.msg} at column {e.colno})", path, number) from None
            if not isinstance(value, dict):
                raise InputError(f"expected a JSON object, got {json_type(value, article=True)}", path, number)
            yield number, value


def string_field(value: dict, name: str, path: Path, line: int, required: bool = True) -> str:
    """A field that must hold a string (ids may be JSON numbers, read as their text); "" if absent and optional."""
    if name not in value or value[name] is None:
        if required:
            raise InputError(f"no '{name}' field", path, line)
        return ""
    text = value[name]
    if name == "_id" and isinstance(text, int) and not isinstance(text, bool):
        return str(text)
    if not isinstance(text, str):
        raise InputError(f"field '{name}' must be a string, got {json_type(text, article=True)}", path, line)
    if name == "_id" and not text:
        raise InputError("field '_id' is empty", path, line)
    return text


def document_text(title: str, text: str) -> str:
    """A document as the model reads it: title and text joined by a space and stripped, as sentence-transformers'
    BEIR example (information_retrieval.py) and mteb (_create_dataloaders.py) join them."""
    return (title + " " + text).strip()


def read_ids_and_texts(path: Path, with_title: bool, wanted: set[str] | None = None):
    """Check a JSON Lines file of {_id, [title,] text}: every line, and ids unique.

    Returns (ids in file order, their line numbers); with `wanted`, also the texts of those ids
    (the queries: only the judged ones are kept in memory)."""
    ids: dict[str, int] = {}
    texts: dict[str, str] = {}
    for number, value in json_lines(path):
        doc_id = string_field(value, "_id", path, number)
        title = string_field(value, "title", path, number, required=False) if with_title else ""
        text = string_field(value, "text", path, number)
        if doc_id in ids:
            raise InputError(f"duplicate _id {doc_id!r} (first on line {ids[doc_id]})", path, number)
        ids[doc_id] = number
        if wanted is not None and doc_id in wanted:
            texts[doc_id] = document_text(title, text) if with_title else text
    return ids, texts


def corpus_texts(path: Path):
    """The corpus documents as the model reads them, in file order (read_ids_and_texts has checked the file)."""
    for _, value in json_lines(path):
        yield document_text(string_field(value, "title", path, 0, required=False), string_field(value, "text", path, 0))


def qrels_path(data_dir: Path, split: str) -> Path:
    """DATA_DIR/qrels/SPLIT.tsv; InputError naming the splits that exist if there is none."""
    path = data_dir / QRELS_DIR / f"{split}.tsv"
    if path.is_file():
        return path
    splits = sorted(p.stem for p in (data_dir / QRELS_DIR).glob("*.tsv")) if (data_dir / QRELS_DIR).is_dir() else []
    there = f"the splits there are: {', '.join(splits)}" if splits else f"{data_dir / QRELS_DIR} holds no SPLIT.tsv file"
    raise InputError(f"no qrels for split '{split}' ({there})", path)


def read_qrels(path: Path) -> Qrels:
    """qrels/SPLIT.tsv: a header line, then query-id, corpus-id, integer score per line, tab-separated."""
    judgements: dict[str, dict[str, int]] = {}
    lines: dict[tuple[str, str], int] = {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise InputError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path, number) from None
            fields = line.split("\t")
            if number == 1:
                if len(fields) != 3 or is_integer(fields[2]):
                    raise InputError(f"expected the header line '{chr(9).join(QRELS_HEADER)}' (tab-separated), "
                                     f"got {line!r}", path, number)
                continue
            if len(fields) != 3:
                raise InputError(f"expected 3 tab-separated fields (query-id, corpus-id, score), got "
                                 f"{len(fields)}: {line!r}", path, number)
            query_id, doc_id, score = fields
            if not query_id or not doc_id:
                raise InputError(f"empty query-id or corpus-id: {line!r}", path, number)
            if not is_integer(score):
                raise InputError(f"the score must be an integer, got {score!r}", path, number)
            if (query_id, doc_id) in lines:
                raise InputError(f"duplicate judgement of query {query_id!r}, document {doc_id!r} (first on line "
                                 f"{lines[query_id, doc_id]})", path, number)
            lines[query_id, doc_id] = number
            judgements.setdefault(query_id, {})[doc_id] = int(score)
    if not judgements:
        raise InputError("holds no judgements (only a header, or nothing)", path)
    return Qrels(path, judgements, lines)


def is_integer(text: str) -> bool:
    text = text.strip()
    return text.lstrip("+-").isdigit()


def unknown_ids(qrels: Qrels, known: dict[str, int], column: int) -> list[tuple[str, int]]:
    """The ids of a qrels column (0: query-id, 1: corpus-id) that `known` lacks: (id, first line), in line order."""
    first: dict[str, int] = {}
    for pair, line in qrels.lines.items():
        if pair[column] not in known and pair[column] not in first:
            first[pair[column]] = line
    return sorted(first.items(), key=lambda item: item[1])


def check_qrels_ids(qrels: Qrels, query_ids: dict, corpus_ids: dict, data_dir: Path, allow_missing: bool, warn):
    """Ids the qrels name that queries.jsonl or corpus.jsonl lack: an error, or with allow_missing a warning and
    those judgements left out (each count said)."""
    problems = []
    missing_queries = unknown_ids(qrels, query_ids, 0)
    missing_docs = unknown_ids(qrels, corpus_ids, 1)
    for missing, kind, file in ((missing_queries, "query", QUERIES_FILE), (missing_docs, "corpus", CORPUS_FILE)):
        if missing:
            shown = ", ".join(f"{i!r} (line {line})" for i, line in missing[:SHOWN_IDS])
            problems.append(f"{len(missing)} {kind} id{'s' if len(missing) > 1 else ''} not in {data_dir / file}: "
                            f"{shown}{', ...' if len(missing) > SHOWN_IDS else ''}")
    if not problems:
        return
    if not allow_missing:
        raise InputError("; ".join(problems) + " (--allow-missing-ids leaves their judgements out, with a warning)",
                         qrels.path)
    dropped = 0
    for query_id in list(qrels.judgements):
        if query_id not in query_ids:
            dropped += len(qrels.judgements.pop(query_id))
            continue
        kept = {d: s for d, s in qrels.judgements[query_id].items() if d in corpus_ids}
        dropped += len(qrels.judgements[query_id]) - len(kept)
        if kept:
            qrels.judgements[query_id] = kept
        else:
            del qrels.judgements[query_id]
    warn(f"{qrels.path}: " + "; ".join(problems) + f": left out {dropped} judgements; {len(qrels.judgements)} "
         f"queries remain")
    if not qrels.judgements:
        raise InputError("no judgement is left once the missing ids are left out", qrels.path)


@dataclass
class RetrievalData:
    """A split of a BEIR-layout data set, checked: the judged queries and the corpus ids (texts stay on disk)."""
    data_dir: Path
    split: str
    corpus_path: Path
    corpus_ids: list[str]  # in file order: row i of the embeddings is corpus_ids[i]
    query_ids: list[str]  # the judged queries, in queries.jsonl order
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    queries_in_file: int


def read_retrieval_data(data_dir, split: str = "test", allow_missing_ids: bool = False,
                        warn=lambda message: None) -> RetrievalData:
    """Read and check DATA_DIR (the BEIR layout, see the module docstring) for one split."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError("not a directory (expected corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv in it)", data_dir)
    qrels = read_qrels(qrels_path(data_dir, split))
    query_lines, query_texts = read_ids_and_texts(data_dir / QUERIES_FILE, with_title=False,
                                                  wanted=set(qrels.judgements))
    corpus_lines, _ = read_ids_and_texts(data_dir / CORPUS_FILE, with_title=True)
    if not corpus_lines:
        raise InputError("the corpus is empty (no document to search)", data_dir / CORPUS_FILE)
    check_qrels_ids(qrels, query_lines, corpus_lines, data_dir, allow_missing_ids, warn)
    judged = [q for q in query_lines if q in qrels.judgements]  # queries.jsonl order
    return RetrievalData(data_dir=data_dir, split=split, corpus_path=data_dir / CORPUS_FILE,
                         corpus_ids=list(corpus_lines), query_ids=judged, query_texts=[query_texts[q] for q in judged],
                         qrels=qrels.judgements, queries_in_file=len(query_lines))


# ---------------------------------------------------------------- metrics (pytrec_eval)
def retrieval_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], ks) -> dict[str, float]:
    """Mean nDCG@k, MRR@k, Recall@k and MAP@k over the judged queries, computed by pytrec_eval.

    run: query id -> {corpus id: score} (the documents retrieved). nDCG, Recall and MAP are trec_eval's
    ndcg_cut.k, recall.k and map_cut.k; MRR@k is trec_eval's recip_rank on the run cut to its k best
    documents (trec_eval has no cut for it, so the run is cut first). trec_eval
    ranks by score, ties by document id.
    """
    from ..errors import MissingExtraError
    try:
        import pytrec_eval
    except ImportError as e:
        raise MissingExtraError(f"minie5 eval needs pytrec_eval, which is not installed ({e}): "
                                f"pip install \"minie5[eval]\"") from e
    cuts = ",".join(str(k) for k in ks)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{cuts}", f"recall.{cuts}", f"map_cut.{cuts}"})
    per_query = evaluator.evaluate(run)
    queries = list(qrels)
    metrics = {}
    for k in ks:
        metrics[f"ndcg@{k}"] = mean_over(per_query, queries, f"ndcg_cut_{k}")
    for k in ks:
        cut_run = {q: dict(sorted(found.items(), key=lambda item: -item[1])[:k]) for q, found in run.items()}
        per_query_rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut_run)
        metrics[f"mrr@{k}"] = mean_over(per_query_rr, queries, "recip_rank")
    for k in ks:
        metrics[f"recall@{k}"] = mean_over(per_query, queries, f"recall_{k}")
    for k in ks:
        metrics[f"map@{k}"] = mean_over(per_query, queries, f"map_cut_{k}")
    return metrics


def mean_over(per_query: dict, queries: list[str], measure: str) -> float:
    """The mean of a measure over all judged queries; a query the run found nothing for counts 0."""
    return float(sum(per_query.get(q, {}).get(measure, 0.0) for q in queries) / len(queries))


def metric_label(key: str) -> str:
    """"ndcg@10" -> "nDCG@10"."""
    name, k = key.split("@")
    return f"{METRIC_NAMES[name]}@{k}"


# ---------------------------------------------------------------- settings and search
@dataclass(frozen=True)
class Setting:
    """One column of the table: how the model is loaded, how texts are cut, how the corpus is searched."""
    quantize: str | None = None  # None: the model as stored; "int8": quantised at load
    max_length: int | None = None  # None: the model's max_seq_length
    long: str = "truncate"
    binary: bool = False

    def label(self) -> str:
        parts = [self.quantize or "float32"]
        if self.max_length is not None:
            parts.append(f"max-length {self.max_length}")
        if self.long != "truncate":
            parts.append(f"long {self.long}")
        if self.binary:
            parts.append("binary")
        return ", ".join(parts)


@dataclass
class SettingRun:
    """What one setting needs while the corpus streams past: its model, query embeddings, and where blocks go."""
    setting: Setting
    model: object
    queries: np.ndarray  # [q, hidden]
    top: RunningTopK | None = None  # float search
    writer: NpyWriter | None = None  # binary search: the float index, written to a temporary .npy
    index_path: Path | None = None
    seconds: float = 0.0
    blocks: object = None  # the setting's encode_chunks generator
    feed: "ChunkFeed" = field(default=None)


class ChunkFeed:
    """An iterator over texts that the caller refills one chunk at a time: several encode_chunks generators then
    embed the same chunk each, and the corpus is read once whatever the number of settings."""

    def __init__(self):
        self.texts: list[str] = []

    def put(self, texts: list[str]) -> None:
        self.texts = list(reversed(texts))

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if not self.texts:
            raise StopIteration
        return self.texts.pop()


def search_corpus(data: RetrievalData, runs: list[SettingRun], k: int, encode: dict, show_progress,
                  workdir: Path) -> None:
    """Stream the corpus once: each chunk of documents is embedded by every setting, then searched (float) or
    written to the setting's float index (binary; searched at the end)."""
    rows = len(data.corpus_ids)
    for i, run in enumerate(runs):
        run.feed = ChunkFeed()
        run.blocks = run.model.encode_chunks(
            run.feed, prefix="passage", total=rows, chunk_size=DEFAULT_CHUNK_SIZE, max_length=run.setting.max_length,
            long=run.setting.long, show_progress=show_progress if i == 0 else False, **encode)
        if run.setting.binary:
            run.index_path = workdir / f"setting{i}.npy"
            run.writer = NpyWriter(run.index_path, rows, run.model.config.hidden_size, np.float32)
        else:
            run.top = RunningTopK(run.queries, k)
    texts = corpus_texts(data.corpus_path)
    while True:
        chunk = [text for _, text in zip(range(DEFAULT_CHUNK_SIZE), texts)]
        if not chunk:
            break
        for run in runs:
            start = time.perf_counter()
            run.feed.put(chunk)
            block = next(run.blocks)  # [len(chunk), hidden]
            if run.writer is not None:
                run.writer.write(block)
            else:
                run.top.add(block)
            run.seconds += time.perf_counter() - start
    for run in runs:
        run.blocks.close()  # the truncation warning, with its count over the corpus
        if run.writer is not None:
            start = time.perf_counter()
            run.writer.close()
            vectors = np.load(run.index_path, mmap_mode="r")  # [rows, hidden]
            found = binary_search(build_binary_index(vectors), vectors, run.queries, k, k * RESCORE_MULTIPLIER)
            run.top = found
            run.seconds += time.perf_counter() - start


def results_of(run: SettingRun) -> list[list[tuple[int, float]]]:
    return run.top if isinstance(run.top, list) else run.top.results()


def evaluate(data: RetrievalData, load_model, settings: list[Setting], ks=DEFAULT_KS, batch_size: int = 32,
             show_progress=False) -> list[dict]:
    """Each setting's metrics on the data, with its seconds: [{"setting", "metrics", "seconds"}], in order.

    load_model(quantize) -> a minie5 Model; called once per quantize value."""
    models = {}
    runs = []
    for setting in settings:
        start = time.perf_counter()
        if setting.quantize not in models:
            models[setting.quantize] = load_model(setting.quantize)
        model = models[setting.quantize]
        queries = model.encode(data.query_texts, prefix="query", batch_size=batch_size,
                               max_length=setting.max_length, long=setting.long)  # [q, hidden]
        runs.append(SettingRun(setting, model, queries, seconds=time.perf_counter() - start))
    depth = max(ks)
    with tempfile.TemporaryDirectory(prefix="minie5-eval-") as workdir:
        search_corpus(data, runs, min(depth, len(data.corpus_ids)), {"batch_size": batch_size}, show_progress,
                      Path(workdir))
    results = []
    for run in runs:
        start = time.perf_counter()
        found = results_of(run)
        ranking = {q: {data.corpus_ids[row]: score for row, score in found[j]} for j, q in enumerate(data.query_ids)}
        metrics = retrieval_metrics(data.qrels, ranking, ks)
        run.seconds += time.perf_counter() - start
        prompts = {"query": run.model.config.prompt("query"), "passage": run.model.config.prompt("passage")}
        results.append({"setting": run.setting, "metrics": metrics, "seconds": run.seconds, "prompts": prompts})
    return results


# ---------------------------------------------------------------- output
def format_table(results: list[dict]) -> list[str]:
    """Rows: the metrics (then seconds), columns: the settings."""
    labels = [r["setting"].label() for r in results]
    keys = list(results[0]["metrics"])
    width = max(len("seconds"), *(len(metric_label(k)) for k in keys))
    columns = [max(len(label), 6) for label in labels]
    lines = ["  ".join([" " * width] + [label.rjust(c) for label, c in zip(labels, columns)])]
    for key in keys:
        values = [f"{r['metrics'][key]:.4f}".rjust(c) for r, c in zip(results, columns)]
        lines.append("  ".join([metric_label(key).ljust(width)] + values))
    lines.append("  ".join(["seconds".ljust(width)] + [f"{r['seconds']:.1f}".rjust(c) for r, c in zip(results, columns)]))
    return lines


def json_report(data: RetrievalData, model_name: str, prompts: dict, ks, results: list[dict], seconds: float) -> dict:
    return {
        "data": str(data.data_dir), "split": data.split, "queries": len(data.query_ids),
        "documents": len(data.corpus_ids), "judgements": sum(len(j) for j in data.qrels.values()),
        "model": model_name, "prompts": prompts, "k": list(ks), "metric_library": metric_library(),
        "results": [{"settings": asdict(r["setting"]), "label": r["setting"].label(),
                     "metrics": {metric_label(k): v for k, v in r["metrics"].items()},
                     "seconds": round(r["seconds"], 3)} for r in results],
        "seconds": round(seconds, 3),
    }


def metric_library() -> str:
    from importlib.metadata import PackageNotFoundError, version
    for name in ("pytrec-eval-terrier", "pytrec-eval"):
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            continue
    return "pytrec_eval"


def parse_ks(value: str) -> tuple[int, ...]:
    """-k "10,100" -> (10, 100); ValueError on anything but positive integers."""
    try:
        ks = tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"expected positive integers separated by commas, got {value!r}") from None
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"expected positive integers separated by commas, got {value!r}")
    return ks
