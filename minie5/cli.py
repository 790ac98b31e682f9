"""The `minie5` command line.

    minie5 embed "query: how much protein should a female eat"
    minie5 embed --prefix passage "Berlin is the capital of Germany." "Paris is in France."
    minie5 embed --model ./my-e5-copy "some text"

`embed` prints JSON: one text -> a list of floats (its embedding), several
texts -> a list of such lists. The model is a hub repo id or a local
directory: --model, else $MINIE5_MODEL, else intfloat/multilingual-e5-small.

Each subcommand is one `add_<name>_parser` function (its arguments) and one
`run_<name>` function (what it does); main() wires them together.
Errors about the model or the input are printed as one line,
`minie5: error: ...`, with exit code 2 (the code argparse uses for usage errors).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import __version__
from .errors import Minie5Error
from .model import DEFAULT_MODEL, load

PROG = "minie5"
EXIT_ERROR = 2
PREFIX_CHOICES = ("query", "passage", "none")


def default_model() -> str:
    """The model used when --model is not given: $MINIE5_MODEL, else the hub id."""
    return os.environ.get("MINIE5_MODEL") or DEFAULT_MODEL


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="ID_OR_DIR",
                        help=f"hub repo id or local model directory (default: $MINIE5_MODEL, else {DEFAULT_MODEL})")


# ---------------------------------------------------------------- embed
def add_embed_parser(subparsers) -> None:
    parser = subparsers.add_parser("embed", help="print the embeddings of texts as JSON",
                                   description="Print the embedding of each TEXT as JSON: one text gives a "
                                               "list of floats, several texts a list of lists.")
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="text to embed (used as given unless --prefix)")
    add_model_argument(parser)
    parser.add_argument("--prefix", choices=PREFIX_CHOICES, default="none",
                        help="prepend 'query: ' or 'passage: ' to every text (default: none)")
    parser.set_defaults(run=run_embed)


def vector_to_json(vector: np.ndarray) -> list[float]:
    """A float32 vector -> Python floats; json.dumps writes each float32 value exactly."""
    return [float(x) for x in vector]


def run_embed(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    prefix = None if args.prefix == "none" else args.prefix
    vectors = model.encode(list(args.texts), prefix=prefix)  # [n, hidden]
    if len(args.texts) == 1:
        result = vector_to_json(vectors[0])
    else:
        result = [vector_to_json(row) for row in vectors]
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------- wiring
def load_model(name_or_path: str | None):
    return load(name_or_path or default_model())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="multilingual-e5-small text embeddings.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True)
    add_embed_parser(subparsers)
    return parser


def error(message: str) -> int:
    """Print one line `minie5: error: ...` on stderr; return the exit code."""
    first_line = " ".join(str(message).split())  # one line, whatever the message holds
    print(f"{PROG}: error: {first_line}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 on success, 2 on errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (code 2): argparse has printed them
        return int(e.code or 0)
    try:
        return args.run(args)
    except (Minie5Error, OSError) as e:  # model files missing or wrong, hub unreachable
        if isinstance(e, BrokenPipeError):  # `minie5 embed ... | head` stopped reading: not our error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # silence the flush at exit
            return 0
        return error(str(e))
    except KeyboardInterrupt:
        return error("interrupted")


if __name__ == "__main__":
    sys.exit(main())
