"""minie5.load("org/name") through the real huggingface_hub, offline.

A Hugging Face hub cache is built in tmp_path with the e5 fixture's files,
laid out as huggingface_hub lays out a download:

    hub/models--intfloat--multilingual-e5-small/
        blobs/<git sha1 | sha256>        file contents (big files: a symlink to the fixture)
        refs/main                        the commit hash
        snapshots/<commit>/config.json   -> ../../blobs/<hash>   (relative symlinks)
        snapshots/<commit>/1_Pooling/config.json -> ../../../blobs/<hash>

minie5 then resolves the repo id with hf_hub_download (no mocks). huggingface_hub
reads HF_HUB_CACHE / HF_HUB_OFFLINE into huggingface_hub.constants when it is
first imported, which in a pytest session has already happened (transformers,
sentence-transformers...), so every load runs in a fresh subprocess with the
environment set: that is how a user meets it, too.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minie5

REPO_ROOT = Path(__file__).resolve().parent.parent
REPO_ID = "intfloat/multilingual-e5-small"
COMMIT = "c007d7ef6fd86656326059b28395a7a03a7c5846"  # any 40-hex string: the cache only needs consistency
TEXTS = ["query: how tall is the Zugspitze?", "passage: Die Zugspitze ist 2962 m hoch.", "富士山", ""]
BIG = 1 << 20  # files above this are "LFS" files: sha256-named blob, symlinked to the fixture

# Runs in the subprocess: load, encode with the reference backend, report as JSON.
CHILD = r"""
import json, sys
import minie5
args = json.loads(sys.argv[1])
try:
    model = minie5.load(args["name"], revision=args.get("revision"), backend="reference")
except minie5.Minie5Error as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
    sys.exit(0)
import huggingface_hub.constants as c
emb = model.encode(args["texts"])
print(json.dumps({
    "model_dir": str(model.model_dir),
    "embeddings": emb.tolist(),
    "config": {k: getattr(model.config, k) for k in ("pooling", "normalize", "max_seq_length", "vocab_size")},
    "hf_hub_cache": c.HF_HUB_CACHE,
    "hf_hub_offline": c.HF_HUB_OFFLINE,
}))
"""


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def build_hub_cache(cache: Path, repo_id: str, commit: str, source: Path, skip: tuple[str, ...] = ()) -> Path:
    """Lay out source's files as huggingface_hub's cache of repo_id at commit; return the snapshot dir."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo_dir / "blobs", repo_dir / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)  # no newline, as huggingface_hub writes it
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = file.relative_to(source)
        if rel.as_posix() in skip:
            continue
        if file.stat().st_size > BIG:
            blob = blobs / _sha256(file)
            if not blob.exists():
                blob.symlink_to(file.resolve())  # no 470 MB copy; the hub cache follows symlinks
        else:
            data = file.read_bytes()
            blob = blobs / _git_blob_sha1(data)
            if not blob.exists():
                shutil.copyfile(file, blob)
        pointer = snapshot / rel
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    return snapshot


@pytest.fixture(scope="module")
def hub(e5_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    cache = root / "home" / "hub"
    snapshot = build_hub_cache(cache, REPO_ID, COMMIT, Path(e5_dir))
    # a second repo whose snapshot lacks a required file
    build_hub_cache(cache, "acme/broken-e5", COMMIT, Path(e5_dir), skip=("tokenizer.json",))
    return {"home": root / "home", "cache": cache, "snapshot": snapshot}


@pytest.fixture(scope="module")
def local_embeddings(e5_dir):
    return minie5.load(e5_dir, backend="reference").encode(TEXTS)


def run_child(hub, name: str, revision: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_")) and k not in ("TRANSFORMERS_CACHE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(hub["home"]), HF_HUB_CACHE=str(hub["cache"]), HF_HUB_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO_ROOT))
    args = json.dumps({"name": name, "revision": revision, "texts": TEXTS})
    proc = subprocess.run([sys.executable, "-c", CHILD, args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=str(hub["home"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cache_layout(hub):
    snap = hub["snapshot"]
    repo_dir = snap.parent.parent
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    for name in ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json"):
        assert (snap / name).is_symlink() and (snap / name).resolve().is_file()
        assert Path(os.readlink(snap / name)).parts[0] == ".."  # relative, into blobs/
    assert (snap / "model.safetensors").stat().st_size > 100_000_000


def test_load_repo_id_offline(hub, local_embeddings):
    out = run_child(hub, REPO_ID)
    assert "error" not in out, out
    assert out["hf_hub_offline"] is True and Path(out["hf_hub_cache"]) == hub["cache"]
    assert Path(out["model_dir"]) == hub["snapshot"]
    assert out["config"] == {"pooling": "mean", "normalize": True, "max_seq_length": 512, "vocab_size": 250037}
    emb = np.array(out["embeddings"], dtype=np.float32)
    diff = float(np.abs(emb - local_embeddings).max())
    print(f"hub {REPO_ID} (offline cache) vs local dir: max|diff| {diff:.1e}")
    assert diff <= 1e-6


def test_load_repo_id_revision(hub, local_embeddings):
    out = run_child(hub, REPO_ID, revision=COMMIT)
    assert "error" not in out, out
    assert Path(out["model_dir"]) == hub["snapshot"]
    diff = float(np.abs(np.array(out["embeddings"], dtype=np.float32) - local_embeddings).max())
    print(f"hub {REPO_ID}@{COMMIT[:8]} (offline cache) vs local dir: max|diff| {diff:.1e}")
    assert diff <= 1e-6


def test_unknown_repo_offline(hub):
    out = run_child(hub, "nobody-here/no-such-model")
    assert out.get("error") == "Minie5Error", out
    assert "nobody-here/no-such-model" in out["message"]
    assert "HF_HUB_OFFLINE" in out["message"]  # the hint: offline, and not in the cache
    print(f"unknown repo offline: {out['message'][:200]}")


def test_unknown_revision_offline(hub):
    other = "0" * 40
    out = run_child(hub, REPO_ID, revision=other)
    assert out.get("error") == "Minie5Error", out
    assert REPO_ID in out["message"] and other in out["message"]
    print(f"unknown revision offline: {out['message'][:200]}")


def test_missing_required_file_offline(hub):
    out = run_child(hub, "acme/broken-e5")
    assert out.get("error") == "Minie5Error", out
    assert "acme/broken-e5" in out["message"] and "tokenizer.json" in out["message"]
    print(f"repo without tokenizer.json offline: {out['message'][:200]}")


def test_revision_with_local_directory_refused(e5_dir):
    with pytest.raises(ValueError, match="revision"):
        minie5.load(e5_dir, revision=COMMIT)
