"""The `minie5` command line.

    minie5 embed "query: how much protein should a female eat"
    minie5 embed --prefix passage "Berlin is the capital of Germany." "Paris is in France."
    minie5 embed -i docs.txt -o docs.npy --prefix passage        # one text per line -> float32 [n, 384]
    minie5 embed -i docs.txt -o docs.npy --prefix passage --resume   # after a stopped run: the rows left
    minie5 embed --ray local -i corpus/ -o vectors/ --prefix passage   # Ray Data -> Parquet (minie5/distributed/)
    cat docs.jsonl | minie5 embed --field text -o docs.jsonl.out.jsonl
    minie5 search --corpus docs.txt "how do plants make sugar" -k 5 --index docs.npy
    minie5 info intfloat/multilingual-e5-small                  # architecture and parameters per block
    minie5 serve --port 8000                                     # OpenAI-compatible /v1/embeddings
    minie5 quantize intfloat/multilingual-e5-small -o e5-int8    # an int8 model directory (--quantize int8)
    minie5 eval mrtydi-sw/ --quantize none --quantize int8        # retrieval scores, BEIR layout (cli/evaluate.py)

`embed` reads texts from its arguments, from a file (-i FILE: one text per
line; JSON Lines with --field) or from stdin, and writes their embeddings to
-o FILE.npy (float32, row i = line i + 1), -o FILE.jsonl ({"index", "embedding"}
per line) or stdout. On stdout, TEXT arguments give one JSON value (one text ->
a list of floats, several -> a list of lists), file or stdin input gives JSON
Lines. `search` embeds a corpus as passages (or loads its saved embeddings) and
prints the lines closest to each query. The model is a hub repo id or a local
directory: --model, else $MINIE5_MODEL, else intfloat/multilingual-e5-small.
-i FILE -o FILE.npy writes through a hidden .partial file that --resume
continues (files.ResumableNpy); --ray hands the job to minie5/distributed/ray_command.py.

Each subcommand is one `add_<name>_parser` function (its arguments) and one
`run_<name>` function (what it does); main() wires them together.
Errors about the model or the input are printed as one line,
`minie5: error: ...`, with exit code 2 (the code argparse uses for usage errors);
warnings (truncated texts, replaced bytes) as `minie5: warning: ...`.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from ..version import __version__
from ..errors import InputError, Minie5Error, Minie5Warning
from ..io.files import (STDIN, atomic_path, ResumableNpy, TextFile, read_calibration, saved_index, saving_npy, write_blocks_jsonl,
                    write_jsonl_file, write_npy, write_quantized_npy)
from ..model import DEFAULT_CHUNK_SIZE, DEFAULT_MODEL, LONG_MODES, load
from ..embedding_precision import PRECISIONS, SCALAR_PRECISIONS
from ..checkpoint.quantize_model import BLOCKS, QUANTIZE_MODES
from .search import RESCORE_MULTIPLIER, binary_index_for, binary_search, float_search

PROG = "minie5"
EXIT_ERROR = 2
PREFIX_CHOICES = ("query", "passage", "none")
OUTPUT_SUFFIXES = (".npy", ".jsonl")
PROGRESS_DELAY = 2.0  # seconds: the progress bar appears only for jobs that run longer than this


def default_model() -> str:
    """The model used when --model is not given: $MINIE5_MODEL, else the hub id."""
    return os.environ.get("MINIE5_MODEL") or DEFAULT_MODEL


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="ID_OR_DIR",
                        help=f"hub repo id or local model directory (default: $MINIE5_MODEL, else {DEFAULT_MODEL})")


def add_quantize_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quantize", choices=QUANTIZE_MODES, default=None,
                        help="int8: quantise a float model's weights to int8 at load (a directory written by "
                             "`minie5 quantize` is int8 without it); docs/quantization.md")


def add_encoding_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of Model.encode shared by embed and search."""
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                        help="texts per forward pass (default: 32)")
    parser.add_argument("--max-length", type=positive_int, default=None, metavar="TOKENS",
                        help="tokens per text, <s> and </s> included (default and maximum: the model's, 512 "
                             "for e5)")
    parser.add_argument("--long", choices=LONG_MODES, default="truncate",
                        help="texts longer than --max-length: 'truncate' keeps their beginning, like "
                             "transformers (default; a warning gives the count); 'window' embeds all of them "
                             "as the token-weighted mean of windows of max-length - 2 tokens")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bar (by default one appears on a terminal for jobs over a few "
                             "seconds); warnings are still printed")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """How text files are read, shared by embed and search."""
    parser.add_argument("--field", default=None, metavar="NAME",
                        help="read JSON Lines: each line is an object whose NAME field is the text (default "
                             "'text' for *.jsonl files)")
    parser.add_argument("--errors", choices=("strict", "replace"), default="strict",
                        help="bytes that are not UTF-8: 'strict' stops with the line number (default), "
                             "'replace' embeds U+FFFD in their place and says how many lines it touched")


# ---------------------------------------------------------------- embed
def add_embed_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed", help="embed texts from arguments, a file or stdin",
        description="Embed each TEXT, or each line of -i FILE or of stdin. Output: -o FILE.npy (float32 "
                    "[n, hidden], row i = input i), -o FILE.jsonl (one {\"index\", \"embedding\"} per line), or "
                    "stdout (JSON for TEXT arguments: one text gives a list of floats, several a list of lists; "
                    "JSON Lines for file or stdin input). A blank line is embedded as the empty string: the "
                    "output always has one row per input line.")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="text to embed (used as given unless --prefix)")
    parser.add_argument("-i", "--input", default=None, metavar="FILE",
                        help="read one text per line from FILE ('-' for stdin); without TEXT or -i, stdin is read")
    parser.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="write to FILE.npy or FILE.jsonl instead of stdout")
    add_model_argument(parser)
    add_quantize_argument(parser)
    parser.add_argument("--prefix", choices=PREFIX_CHOICES, default="none",
                        help="prepend 'query: ' or 'passage: ' to every text (default: none)")
    parser.add_argument("--no-normalize", action="store_true",
                        help="keep the pooled vectors as they are, without L2 normalisation")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="-o FILE.npy only: store int8 / uint8 (256 levels per dimension) or binary / ubinary "
                             "(one bit per dimension, 8 per byte), as sentence-transformers' quantize_embeddings "
                             "(default: float32)")
    parser.add_argument("--calibration", default=None, metavar="FILE.npy",
                        help="int8 / uint8: float embeddings [m, dim] whose per-dimension min and max are the "
                             "quantisation ranges (default: those of the embeddings written)")
    add_encoding_arguments(parser)
    add_input_arguments(parser)
    add_resume_and_ray_arguments(parser)
    parser.set_defaults(run=run_embed, parser=parser)


def add_resume_and_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """--resume, and the options of `embed --ray` (docs/scale-out.md)."""
    parser.add_argument("--resume", action="store_true",
                        help="continue a run that was stopped: -i FILE -o FILE.npy keeps the rows its hidden "
                             ".partial file holds; with --ray, the rows already in OUTDIR")
    group = parser.add_argument_group("scale-out on a Ray cluster (pip install 'minie5[ray]'; docs/scale-out.md)")
    group.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                       help="embed with Ray Data: 'local' starts a one-node cluster on this machine, 'auto' or "
                            "ADDRESS joins a running one. -i is then a file, a directory or a glob of text, JSON "
                            "Lines or Parquet files; -o a directory that receives Parquet files of id and embedding")
    for flag, metavar, kind, text in RAY_OPTIONS:
        group.add_argument(flag, type=kind, default=[] if kind is comma_list else None, metavar=metavar, help=text)

def comma_list(value: str) -> list[str]:
    """argparse type: "a,b" -> ["a", "b"]."""
    return [name.strip() for name in value.split(",") if name.strip()]


# The options of `embed --ray` besides --ray itself: flag, metavar, type, help.
RAY_OPTIONS = [
    ("--id-field", "NAME", str, "the JSON field or Parquet column holding each row's id (default: the row number, "
                                "from 0, over the files in sorted order)"),
    ("--keep-columns", "A,B", comma_list, "fields or columns copied from the input to the output rows"),
    ("--actors", "N", positive_int, "actors embedding at once (default: as many as the cluster holds, one CPU "
                                    "left free)"),
    ("--threads-per-actor", "N", positive_int, "Numba threads and CPUs per actor (default: 1)"),
    ("--rows-per-file", "N", positive_int, "rows per output Parquet file, at least (default: 10000)"),
]


def vector_to_json(vector: np.ndarray) -> list[float]:
    """A float32 vector -> Python floats; json.dumps writes each float32 value exactly."""
    return [float(x) for x in vector]


def output_kind(path: str | None) -> str:
    """-o FILE -> "npy", "jsonl" or "stdout"; an unknown suffix is an error (checked before any work)."""
    if path is None or path == "-":
        return "stdout"
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"-o {path}: unknown output format {suffix or '(no suffix)'!r}; "
                         f"use a .npy or .jsonl file, or no -o for stdout")
    if not Path(path).absolute().parent.is_dir():
        raise InputError(f"-o {path}: the directory {Path(path).absolute().parent} does not exist")
    return suffix[1:]


def progress_setting(args: argparse.Namespace):
    """show_progress for Model.encode: a bar after PROGRESS_DELAY s on a terminal, none with --quiet."""
    if args.quiet or not sys.stderr.isatty():
        return False
    return PROGRESS_DELAY


def encode_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of Model.encode / encode_chunks given by the command line."""
    return dict(batch_size=args.batch_size, max_length=args.max_length, long=args.long,
                show_progress=progress_setting(args))


def open_text_file(path: str, args: argparse.Namespace) -> TextFile:
    """A TextFile, scanned: every line checked, texts counted, replaced bytes reported."""
    source = TextFile(path, field_name=args.field, errors=args.errors)
    source.scan()
    replaced = source.report.replaced_lines
    if replaced:
        shown = ", ".join(str(n) for n in replaced[:10]) + (", ..." if len(replaced) > 10 else "")
        warn(f"{source.name}: {len(replaced)} line{'s' if len(replaced) > 1 else ''} had bytes that are not "
             f"valid UTF-8, embedded with U+FFFD in their place (line{'s' if len(replaced) > 1 else ''} {shown})")
    return source


def embed_input(args: argparse.Namespace) -> TextFile | None:
    """The TextFile to read (None when the texts are arguments); usage errors name what is wrong."""
    if args.texts and args.input is not None:
        args.parser.error("give TEXT arguments or -i FILE, not both")
    if args.texts:
        return None
    if args.input is None and sys.stdin.isatty():
        args.parser.error("no texts: give TEXT arguments, -i FILE, or pipe one text per line on stdin")
    source = open_text_file(args.input or STDIN, args)
    if args.input is None and source.report.texts == 0:  # nothing piped in: surely a mistake
        source.close()
        args.parser.error("no texts: give TEXT arguments, -i FILE, or pipe one text per line on stdin "
                          "(stdin was empty)")
    return source


def check_precision_arguments(args: argparse.Namespace, kind: str) -> None:
    """--precision and --calibration: usage errors before any work."""
    if args.precision != "float32" and kind != "npy":
        args.parser.error(f"--precision {args.precision} writes a .npy file: give -o FILE.npy")
    if args.calibration is not None and args.precision not in SCALAR_PRECISIONS:
        args.parser.error(f"--calibration applies to --precision int8 or uint8, not {args.precision}")


RAY_ONLY = ("id_field", "keep_columns", "actors", "threads_per_actor", "rows_per_file")


def run_embed_on_ray(args: argparse.Namespace) -> int:
    """`embed --ray`: minie5/distributed/ray_command.py runs the job (it imports Ray, and names the extra if Ray is missing)."""
    if args.texts or args.input in (None, STDIN):
        args.parser.error("--ray reads -i INPUT: a file, a directory or a glob (not TEXT arguments or stdin)")
    if args.output is None or args.output == "-":
        args.parser.error("--ray writes to -o OUTDIR, a directory of Parquet files")
    if args.precision != "float32" or args.calibration is not None:
        args.parser.error("--ray writes float32 embeddings; --precision and --calibration apply to -o FILE.npy")
    args.model = args.model or default_model()
    args.threads_per_actor = args.threads_per_actor or 1
    args.rows_per_file = args.rows_per_file or 10_000
    from ..distributed.ray_command import run
    return run(args)


def run_embed(args: argparse.Namespace) -> int:
    if args.ray is not None:
        return run_embed_on_ray(args)
    used = [name for name in RAY_ONLY if getattr(args, name)]
    if used:
        args.parser.error(f"--{used[0].replace('_', '-')} works with --ray only")
    kind = output_kind(args.output)
    check_precision_arguments(args, kind)
    if args.resume and (kind != "npy" or args.texts or args.input in (None, STDIN) or args.precision != "float32"):
        args.parser.error("--resume continues -i FILE -o FILE.npy at float32 precision (or a --ray job)")
    source = embed_input(args)  # read and checked before the model loads: bad lines fail fast
    try:
        model = load_model(args.model, args.quantize)
        options = encode_options(args)
        options.update(prefix=None if args.prefix == "none" else args.prefix,
                       normalize=False if args.no_normalize else None)
        if source is None and kind == "stdout":  # TEXT arguments -> one JSON value, as in minie5 0.1
            vectors = model.encode(list(args.texts), **options)  # [n, hidden]
            result = vector_to_json(vectors[0]) if len(args.texts) == 1 else [vector_to_json(v) for v in vectors]
            print(json.dumps(result))
            return 0
        if kind == "npy" and args.precision == "float32" and source is not None and source.path != STDIN:
            return embed_file_to_npy(args, model, source, options)
        texts, total = (args.texts, len(args.texts)) if source is None else (source.texts(), source.report.texts)
        blocks = model.encode_chunks(texts, total=total, **options)  # options checked here, before any output
        if kind == "npy" and args.precision != "float32":
            calibration = None if args.calibration is None else read_calibration(args.calibration,
                                                                                   model.config.hidden_size)
            write_quantized_npy(args.output, blocks, total, model.config.hidden_size, args.precision, calibration)
        elif kind == "npy":
            write_npy(args.output, blocks, total, model.config.hidden_size)
        elif kind == "jsonl":
            write_jsonl_file(args.output, blocks)
        else:
            write_blocks_jsonl(sys.stdout, blocks)
        return 0
    finally:
        if source is not None:
            source.close()


def embed_file_to_npy(args: argparse.Namespace, model, source: TextFile, options: dict) -> int:
    """-i FILE -o FILE.npy through a .partial file that a stopped run leaves for --resume (files.ResumableNpy)."""
    total = source.report.texts
    stat = os.stat(source.path)
    signature = {"input": str(Path(source.path).resolve()), "input_bytes": stat.st_size,
                 "input_mtime_ns": stat.st_mtime_ns, "field": args.field, "errors": args.errors,
                 "model": str(model.model_dir.resolve()), "quantize": args.quantize, "prefix": args.prefix,
                 "normalize": not args.no_normalize,
                 "max_length": args.max_length, "long": args.long}
    with ResumableNpy(args.output, total, model.config.hidden_size, signature) as output:
        start, why = output.start(args.resume)
        if why:
            info(why)
        texts = itertools.islice(source.texts(), start, None)
        blocks = model.encode_chunks(texts, total=total - start, **options)  # options checked here
        try:
            output.write(blocks)
        except BaseException:
            if output.done:
                info(f"{output.done} of {total} rows are saved in {output.partial}; the same command with "
                     f"--resume goes on from there")
            raise
    return 0


# ---------------------------------------------------------------- search
def add_search_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "search", help="print the corpus lines closest to a query",
        description="Embed the lines of --corpus as passages (\"passage: \" prepended) and each QUERY as a query "
                    "(\"query: \" prepended), and print the K best lines per query: score (cosine similarity), "
                    "line number and text, tab-separated. Saved corpus embeddings are reused: --index FILE.npy, "
                    "else CORPUS.npy beside the corpus, if it has one row per line and is newer than the corpus.")
    parser.add_argument("queries", nargs="+", metavar="QUERY", help="what to search for")
    parser.add_argument("--corpus", required=True, metavar="FILE",
                        help="the documents, one per line (or JSON Lines with --field)")
    parser.add_argument("-k", type=positive_int, default=5, metavar="K", help="lines to print per query (default: 5)")
    parser.add_argument("--index", default=None, metavar="FILE.npy",
                        help="the corpus embeddings: loaded if they match the corpus, else computed and saved "
                             "here for the next search")
    parser.add_argument("--binary", action="store_true",
                        help="search the binary index (one bit per dimension, FILE.binary.npz beside the float "
                             "index; built and both saved if missing): Hamming distance picks k x "
                             "--rescore-multiplier candidates, whose float embeddings are then scored exactly")
    parser.add_argument("--rescore-multiplier", type=positive_int, default=None, metavar="M",
                        help=f"--binary: candidates rescored in float per result line (default: "
                             f"{RESCORE_MULTIPLIER})")
    add_model_argument(parser)
    add_quantize_argument(parser)
    add_encoding_arguments(parser)
    add_input_arguments(parser)
    parser.set_defaults(run=run_search, parser=parser)


def default_index_path(corpus: str) -> Path:
    """Where saved embeddings of a corpus are looked for when --index is not given: docs.txt -> docs.npy."""
    return Path(corpus).with_suffix(".npy")


def corpus_blocks(args: argparse.Namespace, model, source: TextFile, options: dict, keep: bool = False):
    """The corpus embeddings as [k, hidden] blocks: from a saved index, or computed (and saved with --index,
    or when keep)."""
    rows, dim = source.report.texts, model.config.hidden_size
    path = Path(args.index) if args.index else default_index_path(args.corpus)
    save = bool(args.index) or keep
    array, why_not = saved_index(path, args.corpus, rows, dim)
    if array is not None:
        if not args.quiet:
            info(f"using the corpus embeddings saved in {path}")
        yield from (array[start:start + DEFAULT_CHUNK_SIZE] for start in range(0, rows, DEFAULT_CHUNK_SIZE))
        return
    if save and path.exists() and not args.quiet:
        info(f"{why_not}: embedding the corpus again")
    blocks = model.encode_chunks(source.texts(), prefix="passage", total=rows, **options)
    if not save:
        yield from blocks
        return
    yield from saving_npy(path, blocks, rows, dim)
    if not args.quiet:
        info(f"saved the corpus embeddings in {path}")


def binary_results(args: argparse.Namespace, model, source: TextFile, options: dict, queries: np.ndarray):
    """--binary: the float index (embedded and saved if needed), its binary index (built and saved if needed),
    then search.binary_search: per query, k (row, score) best first."""
    path = Path(args.index) if args.index else default_index_path(args.corpus)
    rows, dim = source.report.texts, model.config.hidden_size
    if saved_index(path, args.corpus, rows, dim)[0] is None:
        for _ in corpus_blocks(args, model, source, options, keep=True):
            pass
    elif not args.quiet:
        info(f"using the corpus embeddings saved in {path}")
    index, what_happened = binary_index_for(path, rows, dim)
    if not args.quiet:
        info(what_happened)
    vectors = np.load(path, mmap_mode="r")  # [rows, dim] float32, read only at the candidates' rows
    multiplier = args.rescore_multiplier or RESCORE_MULTIPLIER
    return binary_search(index, vectors, queries, args.k, args.k * multiplier)


def run_search(args: argparse.Namespace) -> int:
    if args.corpus == STDIN:
        args.parser.error("--corpus must be a file (its saved embeddings are matched against it)")
    if args.rescore_multiplier is not None and not args.binary:
        args.parser.error("--rescore-multiplier applies to --binary search")
    if args.index and not Path(args.index).absolute().parent.is_dir():
        raise InputError(f"--index {args.index}: the directory {Path(args.index).absolute().parent} does not exist")
    source = open_text_file(args.corpus, args)
    try:
        if source.report.texts == 0:
            raise InputError("the corpus has no lines to search", args.corpus)
        model = load_model(args.model, args.quantize)
        options = encode_options(args)
        queries = model.encode(list(args.queries), prefix="query", batch_size=args.batch_size,
                               max_length=args.max_length, long=args.long)  # [q, hidden]
        if args.binary:
            results = binary_results(args, model, source, options, queries)
        else:
            results = float_search(corpus_blocks(args, model, source, options), queries, args.k)
        texts = source.texts_at([i for found in results for i, _ in found])
    finally:
        source.close()
    for j, query in enumerate(args.queries):
        if len(args.queries) > 1:
            print(("\n" if j else "") + f"# {query}")
        for i, score in results[j]:
            print(f"{score:.4f}\t{i + 1}\t{one_line(texts[i])}")
    sys.stdout.flush()
    return 0


def one_line(text: str) -> str:
    """A text printed on one line: tabs and line breaks (possible in JSON Lines fields) become spaces."""
    return text.translate({9: " ", 10: " ", 11: " ", 12: " ", 13: " ", 0x85: " ", 0x2028: " ", 0x2029: " "})


# ---------------------------------------------------------------- eval
def add_eval_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="retrieval scores (nDCG, MRR, Recall, MAP) on a data set in the BEIR layout",
        description="Embed the judged queries of DATA_DIR/queries.jsonl (query prompt) and every document of "
                    "DATA_DIR/corpus.jsonl (title + \" \" + text, passage prompt), search the corpus exactly for "
                    "each query, and print nDCG@k, MRR@k, Recall@k and MAP@k against DATA_DIR/qrels/SPLIT.tsv, "
                    "computed by pytrec_eval (pip install \"minie5[eval]\"). Several --quantize / --max-length "
                    "values, or --compare, are evaluated side by side in one pass over the corpus. "
                    "docs/evaluation.md.")
    parser.add_argument("data_dir", metavar="DATA_DIR",
                        help="corpus.jsonl ({_id, title, text}), queries.jsonl ({_id, text}) and qrels/SPLIT.tsv "
                             "(query-id, corpus-id, score, after a header line)")
    parser.add_argument("--split", default="test", help="the qrels file to score against: qrels/SPLIT.tsv "
                                                        "(default: test)")
    add_model_argument(parser)
    parser.add_argument("--quantize", choices=("none",) + QUANTIZE_MODES, action="append", default=None,
                        help="int8: quantise the model's weights to int8 at load; none: as stored (default). "
                             "Repeat to compare: --quantize none --quantize int8")
    parser.add_argument("--max-length", type=positive_int, action="append", default=None, metavar="TOKENS",
                        help="tokens per text, <s> and </s> included (default: the model's). Repeat to compare")
    parser.add_argument("--long", choices=LONG_MODES, default="truncate",
                        help="texts longer than --max-length: 'truncate' (default) or 'window' (the mean of "
                             "windows covering all of the text)")
    parser.add_argument("--binary", action="store_true",
                        help="search the binary index of the corpus (one bit per dimension) and rescore "
                             f"k x {RESCORE_MULTIPLIER} candidates in float, as `minie5 search --binary`")
    parser.add_argument("--compare", action="store_true",
                        help="evaluate float32, int8 (--quantize int8) and float32 with --binary side by side")
    parser.add_argument("-k", default="10,100", metavar="K[,K...]",
                        help="the cut-offs of the metrics (default: 10,100); the search keeps the largest")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the metrics, the settings and the seconds taken to FILE (JSON)")
    parser.add_argument("--allow-missing-ids", action="store_true",
                        help="judgements naming a query or document absent from the files are left out with a "
                             "warning (default: an error)")
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                        help="texts per forward pass (default: 32)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar; warnings are still printed")
    parser.set_defaults(run=run_eval, parser=parser)


def eval_settings(args: argparse.Namespace) -> list:
    """The columns of `minie5 eval`: every --quantize x every --max-length, or --compare's three."""
    from .evaluate import Setting
    if args.compare:
        if args.quantize or args.binary:
            args.parser.error("--compare sets --quantize and --binary itself: give neither with it")
        return [Setting(None, length, args.long, binary) if not q else Setting(q, length, args.long, False)
                for length in (args.max_length or [None])
                for q, binary in ((None, False), ("int8", False), (None, True))]
    quantizes = [None if q == "none" else q for q in dict.fromkeys(args.quantize or ["none"])]
    lengths = list(dict.fromkeys(args.max_length or [None]))
    return [Setting(q, length, args.long, args.binary) for q in quantizes for length in lengths]


def run_eval(args: argparse.Namespace) -> int:
    import time
    from . import evaluate

    start = time.perf_counter()
    try:
        ks = evaluate.parse_ks(args.k)
    except ValueError as e:
        args.parser.error(f"-k: {e}")
    settings = eval_settings(args)
    evaluate.retrieval_metrics({"q": {"d": 1}}, {"q": {"d": 1.0}}, (1,))  # the metric library is there: fail now
    if args.json and not Path(args.json).absolute().parent.is_dir():
        raise InputError(f"--json {args.json}: the directory {Path(args.json).absolute().parent} does not exist")
    data = evaluate.read_retrieval_data(args.data_dir, args.split, args.allow_missing_ids, warn)
    name = args.model or default_model()
    results = evaluate.evaluate(data, lambda quantize: load_model(name, quantize), settings, ks,
                                batch_size=args.batch_size, show_progress=progress_setting(args))
    prompts = results[0]["prompts"]  # the model's, whatever the setting
    seconds = time.perf_counter() - start
    print(f"{data.data_dir} (split {data.split}): {len(data.query_ids)} judged queries"
          f"{f' of {data.queries_in_file}' if data.queries_in_file != len(data.query_ids) else ''}, "
          f"{len(data.corpus_ids)} documents, {sum(len(j) for j in data.qrels.values())} judgements")
    print(f"model {name}; prompts: query {prompts['query']!r}, passage {prompts['passage']!r}; "
          f"metrics by {evaluate.metric_library()}")
    print("\n".join(evaluate.format_table(results)))
    sys.stdout.flush()
    if args.json:
        report = evaluate.json_report(data, name, prompts, ks, results, seconds)
        with atomic_path(Path(args.json)) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if not args.quiet:
            info(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------- info
def add_info_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "info", help="print a model's architecture and where its parameters are",
        description="Print the architecture (config.json and the sentence-transformers files) and a table of "
                    "parameters and bytes per block (embeddings, each layer's attention / FFN / LayerNorm, pooler, "
                    "total), counted from the model.safetensors header alone: no weight is loaded.")
    parser.add_argument("model_positional", nargs="?", default=None, metavar="MODEL",
                        help="hub repo id or local model directory (same as --model)")
    add_model_argument(parser)
    parser.set_defaults(run=run_info, parser=parser)


def run_info(args: argparse.Namespace) -> int:
    from ..checkpoint.config import read_config
    from ..checkpoint.hub import resolve_model_dir
    from ..checkpoint.parameter_table import architecture_lines, parameter_table, read_header

    if args.model_positional and args.model:
        args.parser.error("give the model as MODEL or --model, not both")
    name = args.model_positional or args.model or default_model()
    model_dir = resolve_model_dir(name)
    config = read_config(model_dir)
    header = read_header(model_dir / "model.safetensors")
    print(f"{name}" + (f" ({model_dir})" if str(model_dir) != str(name) else ""))
    print("architecture")
    raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))  # read_config has checked it
    print("\n".join(architecture_lines(raw, config)))
    print(f"parameters (model.safetensors header: {len(header.tensors)} tensors, "
          f"{', '.join(sorted({t.dtype for t in header.tensors}))})")
    print("\n".join(parameter_table(header)))
    return 0


# ---------------------------------------------------------------- serve
def add_serve_parser(subparsers) -> None:
    from .server import ServerSettings
    defaults = ServerSettings()
    parser = subparsers.add_parser(
        "serve", help="serve an OpenAI-compatible embeddings API over HTTP",
        description="Serve POST /v1/embeddings (OpenAI's request and response format: point an OpenAI client's "
                    "base URL at http://HOST:PORT/v1), GET /v1/models and GET /health. The port opens at once; "
                    "/health answers 503 until the model is loaded and warmed up, then 200. Concurrent requests "
                    "are embedded together in shared batches. SIGTERM or Ctrl-C finish the requests in flight, "
                    "then exit. One log line per request on stderr.")
    add_model_argument(parser)
    add_quantize_argument(parser)
    parser.add_argument("--host", default=defaults.host, help=f"address to listen on (default: {defaults.host})")
    parser.add_argument("--port", type=port_number, default=defaults.port,
                        help=f"port to listen on, 0 for any free one (default: {defaults.port})")
    parser.add_argument("--served-model-name", default=None, metavar="NAME",
                        help="the model id /v1/models lists (default: the hub id, or the model directory's name)")
    parser.add_argument("--prefix", choices=PREFIX_CHOICES, default="none",
                        help="the prompt for requests that choose none by input_type or model name: 'query' "
                             "or 'passage' prepends 'query: ' / 'passage: ' (default: none)")
    parser.add_argument("--no-truncate", action="store_true",
                        help="answer 400 for an input longer than the model's max length instead of embedding "
                             "its first tokens")
    parser.add_argument("--api-key", default=os.environ.get("MINIE5_API_KEY") or None, metavar="KEY",
                        help="require 'Authorization: Bearer KEY' on /v1 routes (default: $MINIE5_API_KEY; "
                             "none: open)")
    parser.add_argument("--max-inputs", type=positive_int, default=defaults.max_inputs, metavar="N",
                        help=f"inputs per request (default: {defaults.max_inputs})")
    parser.add_argument("--max-request-tokens", type=positive_int, default=defaults.max_request_tokens,
                        metavar="N", help=f"tokens per request (default: {defaults.max_request_tokens})")
    parser.add_argument("--batch-tokens", type=positive_int, default=defaults.max_batch_tokens, metavar="N",
                        help=f"tokens per shared batch (default: {defaults.max_batch_tokens})")
    parser.add_argument("--max-wait-ms", type=float, default=defaults.max_wait * 1000, metavar="MS",
                        help=f"how long a request may wait for others to share its batch (default: "
                             f"{defaults.max_wait * 1000:g})")
    parser.add_argument("--max-body-bytes", type=positive_int, default=defaults.max_body_bytes, metavar="N",
                        help=f"request body size (default: {defaults.max_body_bytes})")
    parser.add_argument("--timeout", type=float, default=defaults.client_timeout, metavar="SECONDS",
                        help=f"a client's socket may stay silent this long; a request body must arrive "
                             f"within it (default: {defaults.client_timeout:g})")
    parser.add_argument("--max-connections", type=positive_int, default=defaults.max_connections, metavar="N",
                        help=f"open connections, one thread each; more are answered 503 (default: "
                             f"{defaults.max_connections})")
    parser.add_argument("--grace", type=float, default=defaults.grace, metavar="SECONDS",
                        help=f"on SIGTERM / SIGINT, how long requests in flight get to finish (default: "
                             f"{defaults.grace:g})")
    parser.set_defaults(run=run_serve, parser=parser)


def port_number(value: str) -> int:
    """argparse type: a TCP port, 0 to 65535."""
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value!r}")
    return int(value)


def served_model_name(model: str) -> str:
    """The id /v1/models lists: a local directory's name, else the hub id as given."""
    path = Path(model)
    return path.resolve().name if path.is_dir() else model


def run_serve(args: argparse.Namespace) -> int:
    from .server import ServerSettings, serve
    model = args.model or default_model()
    if args.max_wait_ms < 0 or args.timeout <= 0 or args.grace < 0:
        args.parser.error("--max-wait-ms and --grace must be >= 0, --timeout > 0")
    settings = ServerSettings(
        host=args.host, port=args.port, model_name=args.served_model_name or served_model_name(model),
        prefix=None if args.prefix == "none" else args.prefix, truncate=not args.no_truncate,
        api_key=args.api_key, max_inputs=args.max_inputs, max_request_tokens=args.max_request_tokens,
        max_batch_tokens=args.batch_tokens, max_wait=args.max_wait_ms / 1000, max_body_bytes=args.max_body_bytes,
        client_timeout=args.timeout, max_connections=args.max_connections, grace=args.grace)
    return serve(settings, lambda: load_model(model, args.quantize))


# ---------------------------------------------------------------- wiring
def load_model(name_or_path: str | None, quantize: str | None = None):
    return load(name_or_path or default_model(), quantize=quantize)


# ---------------------------------------------------------------- quantize
def add_quantize_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantize", help="write an int8 copy of a model (about a quarter of the size)",
        description="Write DIR, a model directory whose linear layers and word embeddings are int8 (one float32 "
                    "scale per row), which minie5 loads as any other model. Format and accuracy: docs/quantization.md.")
    parser.add_argument("model_positional", metavar="MODEL", help="hub repo id or local directory of a float model")
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="the directory to write (must not exist, or be empty)")
    parser.add_argument("--keep-float", action="append", default=[], choices=tuple(BLOCKS), metavar="BLOCK",
                        help=f"leave a block in float32 (repeatable): {', '.join(BLOCKS)}; closer to the float "
                             f"model, larger and slower (ffn-down matters most)")
    parser.set_defaults(run=run_quantize, parser=parser)


def run_quantize(args: argparse.Namespace) -> int:
    from ..checkpoint.quantize_model import write_quantized
    written = write_quantized(args.model_positional, args.output, keep_float=tuple(args.keep_float))
    info(f"wrote {args.output}: model.safetensors {written['bytes'] / 1e6:,.1f} MB, "
         f"{100 * written['bytes'] / written['source_bytes']:.1f} % of the float file's "
         f"{written['source_bytes'] / 1e6:,.1f} MB ({len(written['quantized'])} int8 tensors)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="multilingual-e5-small text embeddings.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True)
    add_embed_parser(subparsers)
    add_search_parser(subparsers)
    add_eval_parser(subparsers)
    add_info_parser(subparsers)
    add_serve_parser(subparsers)
    add_quantize_parser(subparsers)
    return parser


def one_line_message(message) -> str:
    return " ".join(str(message).split())


def error(message: str) -> int:
    """Print one line `minie5: error: ...` on stderr; return the exit code."""
    print(f"{PROG}: error: {one_line_message(message)}", file=sys.stderr)
    return EXIT_ERROR


def warn(message: str) -> None:
    """Print one line `minie5: warning: ...` on stderr."""
    print(f"{PROG}: warning: {one_line_message(message)}", file=sys.stderr, flush=True)


def info(message: str) -> None:
    """Print one line `minie5: ...` on stderr (what the command is doing)."""
    print(f"{PROG}: {one_line_message(message)}", file=sys.stderr, flush=True)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the command line: minie5's warnings as one `minie5: warning:` line."""
    if issubclass(category, Minie5Warning):
        warn(str(message))
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 on success, 2 on errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (code 2): argparse has printed them
        return int(e.code or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", Minie5Warning)  # each call's truncation count, every time
            warnings.showwarning = show_warning
            return args.run(args)
    except SystemExit as e:  # usage errors found after parsing (args.parser.error)
        return int(e.code or 0)
    except (Minie5Error, OSError) as e:  # model files missing or wrong, bad input lines, hub unreachable
        if isinstance(e, BrokenPipeError):  # `minie5 embed ... | head` stopped reading: not our error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # silence the flush at exit
            return 0
        return error(str(e))
    except KeyboardInterrupt:
        return error("interrupted")


if __name__ == "__main__":
    sys.exit(main())
