"""A local directory or a Hugging Face repo id -> a local model directory.

For a repo id, minie5 downloads only the files it reads, through
huggingface_hub, so the usual hub machinery applies unchanged: the shared
cache (HF_HOME / HF_HUB_CACHE), HF_HUB_OFFLINE=1, tokens, `revision`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import Minie5Error, ModelFileError

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
OPTIONAL_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
    "minie5_quantization.json",  # an int8 model directory (quantize_model.py)
)


# "name" or "org/name": letters, digits, '-', '_', '.'; anything else is a path.
_REPO_ID = re.compile(r"^(?![.])[\w.-]+(/[\w.-]+)?$")


def resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """Return a local directory holding the model's files.

    An existing directory is used as it is. Anything else is taken as a hub
    repo id ("intfloat/multilingual-e5-small") and fetched with huggingface_hub.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub repo ids, not to the local directory {path}")
        return path
    name = str(name_or_path)
    if path.exists():
        raise ModelFileError(path, "is a file; pass the model directory that holds config.json")
    if not _REPO_ID.match(name) or name.endswith("/"):
        raise ModelFileError(path, "no such directory (and it is not a hub repo id like 'org/name')")
    return _download(name, revision)


def _download(repo_id: str, revision: str | None) -> Path:
    # Imported here: huggingface_hub is only needed when a repo id is given.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    def fetch(filename: str) -> Path:
        return Path(hf_hub_download(repo_id, filename, revision=revision, library_name="minie5"))

    repo = f"hub repo '{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    filename = REQUIRED_FILES[0]
    where = f"{filename} from {repo}"
    try:
        model_dir = fetch(filename).parent
        for filename in REQUIRED_FILES[1:]:
            where = f"{filename} from {repo}"
            fetch(filename)
    except LocalEntryNotFoundError as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        hint = " HF_HUB_OFFLINE is set and the file is not in the hub cache." if offline else ""
        raise Minie5Error(f"cannot fetch {where}: {str(e).rstrip('.')}.{hint}") from e
    except EntryNotFoundError as e:
        raise Minie5Error(f"{repo} lacks {filename}, a file minie5 needs: {e}") from e
    except Exception as e:  # RepositoryNotFoundError, RevisionNotFoundError, HTTP errors...
        raise Minie5Error(f"cannot fetch {where}: {type(e).__name__}: {e}") from e
    for filename in OPTIONAL_FILES:
        try:
            fetch(filename)
        except (EntryNotFoundError, LocalEntryNotFoundError):
            pass  # optional: the defaults in config.read_config apply
    return model_dir
