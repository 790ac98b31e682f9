"""`minie5 eval` (minie5/cli/evaluate.py): retrieval scores on BEIR-layout data.

tests/data/beir_tiny is made by hand: 5 documents, 4 queries (3 judged), 4
judgements, one graded (score 2). Its metric values are computed below by hand
from the ranking the model gives, which the test checks first (by cosine
similarity in NumPy, outside the eval code). trec_eval's conventions: the gain
of a document is its score (linear, not 2^score - 1), nDCG@k divides by the
ideal ranking's DCG@k, MAP@k and Recall@k divide by all the query's relevant
documents.

tests/data/beir_translations (scripts/make_beir_translations.py) is the larger
set docs/evaluation.md quotes figures on.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minie5
from minie5.cli import evaluate
from minie5.cli.main import main
from minie5.cli.search import RunningTopK, top_k
from minie5.errors import InputError

from cli_helpers import run_cli

DATA = Path(__file__).resolve().parent / "data"
TINY = DATA / "beir_tiny"
TRANSLATIONS = DATA / "beir_translations"

# The rankings the fixtures give on beir_tiny (checked by test_tiny_set_by_hand before the figures are used).
TINY_RANKINGS = {"q-germany": ["berlin", "munich", "paris"], "q-plants": ["sugar"], "q-france": ["paris", "berlin"]}
# By hand, from those rankings, with -k 1,3:
#   q-germany  berlin (2) at rank 1, paris (1) at rank 3:
#              nDCG@1 = 2/2 = 1; nDCG@3 = (2 + 1/log2(4)) / (2 + 1/log2(3)); MRR@1 = MRR@3 = 1;
#              Recall@1 = 1/2, Recall@3 = 1; MAP@1 = (1/1)/2, MAP@3 = (1/1 + 2/3)/2
#   q-plants   sugar (1) at rank 1: every metric 1
#   q-france   berlin (1) at rank 2: nDCG@1 = 0, nDCG@3 = 1/log2(3); MRR@1 = 0, MRR@3 = 1/2;
#              Recall@1 = 0, Recall@3 = 1; MAP@1 = 0, MAP@3 = (1/2)/1
GERMANY_NDCG3 = (2 + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
TINY_BY_HAND = {
    "nDCG@1": (1 + 1 + 0) / 3, "nDCG@3": (GERMANY_NDCG3 + 1 + 1 / math.log2(3)) / 3,
    "MRR@1": (1 + 1 + 0) / 3, "MRR@3": (1 + 1 + 1 / 2) / 3,
    "Recall@1": (1 / 2 + 1 + 0) / 3, "Recall@3": (1 + 1 + 1) / 3,
    "MAP@1": (1 / 2 + 1 + 0) / 3, "MAP@3": ((1 + 2 / 3) / 2 + 1 + 1 / 2) / 3,
}


def tiny_qrels() -> dict:
    return {"q-germany": {"berlin": 2, "paris": 1}, "q-plants": {"sugar": 1}, "q-france": {"berlin": 1}}


def test_metrics_by_hand_on_a_given_run():
    """pytrec_eval through retrieval_metrics, on a run written by hand with the rankings above."""
    run = {"q-germany": {"berlin": 0.9, "munich": 0.8, "paris": 0.7, "wall": 0.1, "sugar": 0.0},
           "q-plants": {"sugar": 0.9, "munich": 0.5, "wall": 0.4},
           "q-france": {"paris": 0.9, "berlin": 0.8, "munich": 0.7}}
    got = {evaluate.metric_label(k): v for k, v in evaluate.retrieval_metrics(tiny_qrels(), run, (1, 3)).items()}
    assert got == pytest.approx(TINY_BY_HAND, abs=1e-6)


def test_documents_joined_as_mteb_joins_them():
    """Title + " " + text, stripped; the text alone (stripped) when the title is empty: mteb's own function."""
    from mteb._create_dataloaders import _corpus_to_dict
    for title, text in [("Berlin", "Berlin is a city."), ("", "  Paris is in France. "), ("A title ", " text")]:
        assert evaluate.document_text(title, text) == _corpus_to_dict({"id": "d", "title": title, "text": text})["text"]


def test_running_top_k_equals_top_k_over_all_scores():
    """Block by block, ties included, the k best rows are those of one argsort over every score."""
    rng = np.random.default_rng(0)
    corpus = rng.integers(-2, 3, size=(300, 8)).astype(np.float32)  # small integers: many exact ties
    queries = rng.integers(-2, 3, size=(5, 8)).astype(np.float32)
    for block_rows in (1, 7, 64, 300):
        top = RunningTopK(queries, 20)
        for start in range(0, len(corpus), block_rows):
            top.add(corpus[start:start + block_rows])
        for j, found in enumerate(top.results()):
            scores = corpus @ queries[j]
            assert [row for row, _ in found] == list(top_k(scores, 20))
            assert [score for _, score in found] == [float(scores[i]) for i in top_k(scores, 20)]


def test_tiny_set_by_hand(e5_dir, tmp_path, capsys):
    model = minie5.load(e5_dir)
    docs = [json.loads(line) for line in (TINY / "corpus.jsonl").read_text().splitlines()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (TINY / "queries.jsonl").read_text().splitlines())}
    vectors = model.encode([(d.get("title", "") + " " + d["text"]).strip() for d in docs], prefix="passage")
    for query_id, expected in TINY_RANKINGS.items():
        scores = vectors @ model.encode(queries[query_id], prefix="query")
        ranking = [docs[i]["_id"] for i in np.argsort(-scores)]
        assert ranking[:len(expected)] == expected, (query_id, ranking)  # the ranking the figures assume

    report = tmp_path / "tiny.json"
    assert main(["eval", str(TINY), "--model", str(e5_dir), "-k", "1,3", "--json", str(report), "-q"]) == 0
    out = capsys.readouterr().out
    assert "3 judged queries of 4, 5 documents, 4 judgements" in out
    assert "prompts: query 'query: ', passage 'passage: '" in out
    assert [line.split()[0] for line in out.splitlines()[3:]] == list(TINY_BY_HAND) + ["seconds"]
    saved = json.loads(report.read_text())
    assert saved["results"][0]["metrics"] == pytest.approx(TINY_BY_HAND, abs=1e-6)
    assert saved["results"][0]["settings"] == {"quantize": None, "max_length": None, "long": "truncate",
                                                "binary": False}
    assert (saved["queries"], saved["documents"], saved["k"]) == (3, 5, [1, 3])
    assert saved["seconds"] > 0 and saved["metric_library"].startswith("pytrec-eval")


def test_settings_side_by_side(e5_dir, tmp_path, capsys):
    """Two --max-length values with --binary: two columns from one pass; with 5 documents every row is a
    candidate, so binary search with rescoring gives the float ranking and the figures by hand."""
    report = tmp_path / "settings.json"
    assert main(["eval", str(TINY), "--model", str(e5_dir), "-k", "1,3", "--max-length", "64", "--max-length", "5",
                 "--binary", "--json", str(report), "-q"]) == 0
    captured = capsys.readouterr()
    assert "float32, max-length 64, binary" in captured.out and "float32, max-length 5, binary" in captured.out
    assert "were truncated" in captured.err  # max-length 5: 3 tokens of text at most
    results = json.loads(report.read_text())["results"]
    assert [r["settings"]["max_length"] for r in results] == [64, 5]
    assert results[0]["metrics"] == pytest.approx(TINY_BY_HAND, abs=1e-6)


def test_metric_library_imported_only_by_the_eval_command():
    """The command line imports pytrec_eval only when `minie5 eval` runs; without it, the error names the extra."""
    code = ("import sys, minie5, minie5.cli.main, minie5.cli.evaluate; "
            "assert 'pytrec_eval' not in sys.modules and 'mteb' not in sys.modules; "
            "sys.modules['pytrec_eval'] = None; "
            f"sys.exit(minie5.cli.main.main(['eval', {str(TINY)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert 'minie5 eval needs pytrec_eval, which is not installed' in result.stderr
    assert 'pip install "minie5[eval]"' in result.stderr


# ---------------------------------------------------------------- bad input
def copy_tiny(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(TINY, data)
    return data


def error_of(data: Path, *options: str) -> str:
    with pytest.raises(InputError) as caught:
        evaluate.read_retrieval_data(data, *options)
    return str(caught.value)


def test_ids_the_qrels_name_but_the_files_lack(tmp_path):
    data = copy_tiny(tmp_path)
    with open(data / "qrels" / "test.tsv", "a") as f:
        f.write("q-nowhere\tberlin\t1\n" + "".join(f"q-plants\tgone-{i}\t1\n" for i in range(7)))
    message = error_of(data)
    assert "qrels/test.tsv" in message
    assert "1 query id not in" in message and "'q-nowhere' (line 6)" in message
    assert "7 corpus ids not in" in message and "'gone-0' (line 7)" in message and "'gone-4'" in message
    assert "'gone-5'" not in message and "..." in message and "--allow-missing-ids" in message
    warnings = []
    kept = evaluate.read_retrieval_data(data, "test", True, warnings.append)
    assert len(warnings) == 1 and "left out 8 judgements" in warnings[0] and "3 queries remain" in warnings[0]
    assert kept.qrels == tiny_qrels()


@pytest.mark.parametrize("file, line, content, expected", [
    ("corpus.jsonl", 3, '{"_id": "berlin", "text": "again"}', "duplicate _id 'berlin' (first on line 1)"),
    ("queries.jsonl", 2, '{"_id": "q-germany", "text": "again"}', "duplicate _id 'q-germany' (first on line 1)"),
    ("corpus.jsonl", 2, '{"_id": "paris", "text": "unterminated', "not valid JSON"),
    ("corpus.jsonl", 4, '["not", "an", "object"]', "expected a JSON object, got a list"),
    ("corpus.jsonl", 5, '{"_id": "wall"}', "no 'text' field"),
    ("queries.jsonl", 1, '{"text": "no id"}', "no '_id' field"),
    ("corpus.jsonl", 2, '{"_id": "paris", "text": 42}', "field 'text' must be a string, got a number"),
    ("corpus.jsonl", 3, '', "blank line"),
    ("qrels/test.tsv", 3, 'q-germany\tparis', "expected 3 tab-separated fields"),
    ("qrels/test.tsv", 4, 'q-plants\tsugar\tvery', "the score must be an integer, got 'very'"),
    ("qrels/test.tsv", 5, 'q-germany\tberlin\t1', "duplicate judgement of query 'q-germany', document 'berlin' "
                                                  "(first on line 2)"),
    ("qrels/test.tsv", 1, 'q-germany\tberlin\t2', "expected the header line"),
])
def test_malformed_lines_name_file_and_line(tmp_path, file, line, content, expected):
    data = copy_tiny(tmp_path)
    path = data / file
    lines = path.read_text().splitlines()
    lines[line - 1] = content
    path.write_text("\n".join(lines) + "\n")
    message = error_of(data)
    assert f"{path}: line {line}: " in message and expected in message


def test_empty_corpus(tmp_path):
    data = copy_tiny(tmp_path)
    (data / "corpus.jsonl").write_text("")
    assert error_of(data).endswith("corpus.jsonl: the corpus is empty (no document to search)")


def test_split_without_qrels_names_the_splits_there_are(tmp_path):
    data = copy_tiny(tmp_path)
    shutil.copy(data / "qrels" / "test.tsv", data / "qrels" / "dev.tsv")
    message = error_of(data, "train")
    assert "qrels/train.tsv: no qrels for split 'train' (the splits there are: dev, test)" in message


def test_command_line_errors(tmp_path, capsys):
    data = copy_tiny(tmp_path)
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq-plants\tsugar\n")
    assert main(["eval", str(data), "--model", str(tmp_path / "no-model")]) == 2
    assert f"minie5: error: {data / 'qrels' / 'test.tsv'}: line 2: expected 3 tab-separated" in \
        capsys.readouterr().err
    assert main(["eval", str(data), "-k", "10,x"]) == 2
    assert "-k: expected positive integers" in capsys.readouterr().err
    assert main(["eval", str(data), "--compare", "--quantize", "int8"]) == 2


# ---------------------------------------------------------------- the translation set, on the command line
@pytest.mark.slow
def test_translation_set_float_int8_and_binary(minilm_dir, tmp_path):
    """`minie5 eval` as a user runs it, three settings in one pass (MiniLM: real weights, 6 layers)."""
    report = tmp_path / "translations.json"
    result = run_cli("eval", TRANSLATIONS, "--model", minilm_dir, "--compare", "--json", report)
    assert result.returncode == 0, result.stderr
    assert "437 judged queries, 2263 documents, 741 judgements" in result.stdout
    assert "nDCG@10" in result.stdout and "float32, binary" in result.stdout
    results = {r["label"]: r["metrics"] for r in json.loads(report.read_text())["results"]}
    float32, int8, binary = results["float32"], results["int8"], results["float32, binary"]
    print("eval translations minilm: " + "; ".join(f"{name} " + ", ".join(f"{k} {v:.4f}" for k, v in m.items())
                                                     for name, m in results.items()))
    # binary search rescores k x 100 = 10,000 candidates: the whole corpus here, so the float ranking exactly
    assert binary == float32
    # MiniLM is an English model and does not know e5's prompts: 0.073 measured, yet far above chance (about
    # 0.004 for a random ranking of 2,263 documents with 1.7 relevant ones per query)
    assert 0.04 < float32["nDCG@10"] < 1 and float32["Recall@100"] >= float32["Recall@10"]
    for name, value in float32.items():
        assert abs(int8[name] - value) <= 0.02, name
