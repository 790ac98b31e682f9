#!/usr/bin/env python3
"""Benchmark minie5 against transformers/torch and ONNX Runtime on CPU, all at 2 threads.

Recommended (full run, about 10 minutes on 2 idle cores), with OpenBLAS free to pick its kernel:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench.py --model DIR

    python scripts/bench.py --quick              # smoke run (about a minute; tests/test_bench.py)
    python scripts/bench.py --engines minie5-fast,ort --repeats 5 --json bench.json
    python scripts/bench.py --model /path/to/e5-small    # default: $MINIE5_MODEL, else the hub id

OPENBLAS_CORETYPE (or OPENBLAS_L2_SIZE) in the environment overrides the sgemm kernel OpenBLAS
picks for the CPU: on an AVX-512 machine, OPENBLAS_CORETYPE=Haswell runs numpy's sgemm on the
slower AVX2 kernel, which users' machines don't do. `env -u` unsets both for this one command;
the bench warns (header and JSON "warnings") when either is set.

Install: pip install torch==2.13.0 (CPU wheel) first, then pip install -e '.[bench]'.

Engines (skipped with a note when their packages are missing):
    minie5-fast  minie5's default fast path on packed tokens (Model.encode_ids, one call per batch):
                 Numba kernels, and for the linear layers and attention's products of
                 batches of 64 tokens or more numpy's sgemm, one OpenBLAS thread per Numba
                 thread (matmul="auto")
    minie5-numba the same with minie5's own Numba matmul for every product (matmul="numba")
    minie5-blas  the same with numpy's sgemm for every product (matmul="blas")
    minie5-ref   minie5's NumPy reference path, batches padded to the batch max; it is
                 slow, so it runs an evenly spaced 1/16 of W3-W5's batches (marked †)
                 unless --full-reference
    torch        transformers AutoModel, eager fp32 (no torch.compile, default SDPA
                 attention), mean pooling + L2 in torch
    ort          ONNX Runtime fp32: exported at bench time with torch.onnx.export(dynamo=False)
                 from the eager-attention model (the graph in which onnxruntime's BERT
                 optimiser fuses Attention, BiasGelu, SkipLayerNorm, EmbedLayerNorm),
                 optimize_model(opt_level=1), checked against torch, cached in
                 ~/.cache/minie5-bench (or $MINIE5_BENCH_CACHE, --cache-dir) per model dir.
                 --quick never exports: it runs ORT only when the cached model exists.
    minie5-int8  minie5's int8 model (int16 activations x int8 weights, minie5/engine/kernels_int8.py), loaded from the
                 directory `minie5 quantize` writes (made once, cached beside the ONNX models)
    ort-int8     ONNX Runtime on the ort engine's graph passed through
                 onnxruntime.quantization.quantize_dynamic(per_channel=True, weight_type=QInt8), cached

Workloads are token id lists, not texts, so every engine sees identical sequences:
windows of real token ids of the model's tokenizer (from tests/data/multilingual.txt),
wrapped in <s> ... </s> (token counts include both). All engines get the same batches;
W5 is sorted by length first, which is what a careful torch/ORT user does (minie5's
fast path packs each batch without padding, the padded engines pad to the batch max).

    W1  one 12-token query                        latency, ms
    W2  one 128-token passage                     latency, ms
    W3  256 passages x 128 tokens, batch 32       throughput, real tokens/s
    W4  16 passages x 512 tokens, batch 8         throughput
    W5  512 texts, log-normal lengths in [8, 512], batch 32 (fixed seed)   throughput

Method: one process runs every engine, interleaved round-robin (per workload: round 1
runs each engine once, then round 2, ...), so load on the machine hits all engines
alike; a short pause before each engine's turn lets the previous engine's spinning
worker threads go idle. Before timing, every engine's embeddings are compared with
torch's (or the reference's) on the same ids. Cold start (import + load + first embedding of one text) and peak RSS (on W3)
are measured in a fresh subprocess per engine. Useful GFLOP/s counts the model's
arithmetic per real token (linear layers 2*(4*H*H + 2*H*F) per layer, plus attention
4*T*H per layer for a text of T tokens), compared with numpy/OpenBLAS sgemm measured
in the same run at the same thread count.

Threads: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS and NUMBA_NUM_THREADS
are set to 2 before numpy is imported; torch and ORT get 2 intra-op threads explicitly.
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are left alone and printed (with a warning when set), with
the BLAS kernel threadpoolctl reports.
"""
from __future__ import annotations

import time

_T0 = time.perf_counter()  # start of the cold-start clock in --probe subprocesses

import os  # noqa: E402
import sys  # noqa: E402

THREADS = 2
THREAD_ENV = {name: str(THREADS) for name in
              ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
if __name__ == "__main__":  # numpy, numba and torch read these once, when they load
    os.environ.update(THREAD_ENV)

import argparse  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

ENGINES = ("minie5-fast", "minie5-numba", "minie5-blas", "minie5-ref", "torch", "ort", "minie5-int8", "ort-int8")
HUB_ID = "intfloat/multilingual-e5-small"
CORPUS = REPO / "tests" / "data" / "multilingual.txt"
FALLBACK_TEXT = ("Berlin is the capital and largest city of Germany. Paris est la capitale de la France. "
                 "東京は日本の首都です。 Москва — столица России. La ciudad de México es la capital de México. ")
COLD_TEXT = "query: how much protein should a female eat"
SEED = 20240531
SETTLE_S = 0.1  # pause before each engine's turn: the previous engine's spinning worker threads go idle
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_VERBOSE", "GOTO_NUM_THREADS")
KERNEL_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # force OpenBLAS's kernel choice: warned about
RECOMMENDED = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench.py --model DIR"
ONNX_OPSET = 17
PROBE_TAG = "PROBE_RESULT "
SUBSAMPLE_MARK = "†"
# The NumPy reference is many times slower than the other engines: it runs an evenly spaced
# subset of each throughput workload's batches (marked † in the tables) unless --full-reference.
REDUCED = {"minie5-ref": {"batch_fraction": 1 / 16, "latency_calls": 3}}


def log(message: str = "") -> None:
    print(message, flush=True)


# ====================================================================== workloads
@dataclass
class Workload:
    """A named list of batches of token id lists."""

    name: str
    label: str  # column header
    kind: str  # "latency" (report ms) or "throughput" (report real tokens/s)
    batches: list

    @property
    def texts(self) -> list:
        return [ids for batch in self.batches for ids in batch]

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids in self.texts)


@dataclass
class WorkloadSizes:
    """Sizes of the five workloads: the full spec, or reduced for --quick."""

    w3: tuple = (256, 128, 32)  # texts, tokens each, batch size
    w4: tuple = (16, 512, 8)
    w5: tuple = (512, 32)  # texts, batch size
    latency_calls: int = 10  # timed calls per engine per round for W1 / W2


QUICK_SIZES = WorkloadSizes(w3=(4, 128, 2), w4=(1, 512, 1), w5=(16, 4), latency_calls=2)


def token_pool(tokenizer) -> tuple[np.ndarray, int, int]:
    """Real token ids of a multilingual corpus, concatenated without specials; and the <s>, </s> ids."""
    lines = CORPUS.read_text(encoding="utf-8").split("\n") if CORPUS.is_file() else []
    lines = [line for line in lines if line.strip()] or [FALLBACK_TEXT] * 64
    ids, _ = tokenizer.encode(lines)
    bos, eos = ids[0][0], ids[0][-1]
    pool = np.fromiter((t for x in ids for t in x[1:-1]), dtype=np.int64)
    return pool, bos, eos


def draw_texts(pool: np.ndarray, bos: int, eos: int, lengths, rng) -> list:
    """One id list per length: <s>, a window of length-2 consecutive pool ids, </s>."""
    texts = []
    for n in lengths:
        start = int(rng.integers(0, len(pool) - (n - 2)))
        texts.append([bos, *pool[start:start + n - 2].tolist(), eos])
    return texts


def batched(texts: list, batch_size: int) -> list:
    return [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]


def lognormal_lengths(n: int, rng, lo: int = 8, hi: int = 512) -> list:
    """Token counts ~ log-normal (median 80, sigma 0.8: mean ~110, ~1 % hit 512), clipped to [lo, hi]."""
    raw = rng.lognormal(mean=np.log(80.0), sigma=0.8, size=n)
    return np.clip(np.rint(raw), lo, hi).astype(int).tolist()


def build_workloads(tokenizer, sizes: WorkloadSizes) -> list:
    """W1..W5 from real token ids (fixed seed): identical for every engine."""
    pool, bos, eos = token_pool(tokenizer)
    rng = np.random.default_rng(SEED)
    (n3, t3, b3), (n4, t4, b4), (n5, b5) = sizes.w3, sizes.w4, sizes.w5
    w5 = sorted(draw_texts(pool, bos, eos, lognormal_lengths(n5, rng), rng), key=len)
    return [
        Workload("W1", "W1 1x12 (ms)", "latency", [draw_texts(pool, bos, eos, [12], rng)]),
        Workload("W2", "W2 1x128 (ms)", "latency", [draw_texts(pool, bos, eos, [128], rng)]),
        Workload("W3", f"W3 {n3}x{t3} b{b3} (tok/s)", "throughput",
                 batched(draw_texts(pool, bos, eos, [t3] * n3, rng), b3)),
        Workload("W4", f"W4 {n4}x{t4} b{b4} (tok/s)", "throughput",
                 batched(draw_texts(pool, bos, eos, [t4] * n4, rng), b4)),
        Workload("W5", f"W5 {n5} mixed b{b5} (tok/s)", "throughput", batched(w5, b5)),
    ]


def linear_flops_per_token(config) -> int:
    """FLOPs of the linear layers per token: QKV, attention output, FFN up + down (e5-small: 42.5 M)."""
    H, F = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * 2 * (4 * H * H + 2 * H * F)


def model_flops(config, workload: Workload) -> float:
    """Useful FLOPs of one pass over the workload (real tokens only, no padding)."""
    H, L = config.hidden_size, config.num_hidden_layers
    linear = linear_flops_per_token(config)
    attention = sum(L * 4 * len(ids) * H * len(ids) for ids in workload.texts)  # QK^T + PV: 4*T*H per token
    return float(linear * workload.tokens + attention)


def pad(batch: list, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists to the batch max: input_ids, attention_mask [b, T] int64."""
    T = max(len(x) for x in batch)
    ids = np.full((len(batch), T), pad_id, np.int64)
    mask = np.zeros((len(batch), T), np.int64)
    for row, x in enumerate(batch):
        ids[row, :len(x)] = x
        mask[row, :len(x)] = 1
    return ids, mask


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over real tokens, then L2: [b, T, H], [b, T] -> [b, H] float32."""
    m = mask[:, :, None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / m.sum(axis=1)
    return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)


# ====================================================================== engines
class Engine:
    """One way of computing embeddings. Subclasses import their libraries in import_libs()."""

    name = "?"

    def import_libs(self) -> None:
        """Import the engine's packages (raises ImportError when missing)."""

    def load(self, model_dir: Path) -> None:
        raise NotImplementedError

    def embed_ids(self, batch: list) -> np.ndarray:
        """Token id lists -> L2-normalised mean-pooled embeddings [b, H] float32."""
        raise NotImplementedError

    def embed_text(self, text: str) -> np.ndarray:
        """One text through the engine's own tokenizer (the cold-start path)."""
        raise NotImplementedError

    def describe(self) -> str:
        return ""


class Minie5Engine(Engine):
    """minie5, fast (Numba, packed) or reference (NumPy, padded) backend."""

    def __init__(self, backend: str, matmul: str = "auto"):
        self.backend = backend
        self.matmul = matmul
        self.name = "minie5-ref" if backend == "reference" else {"auto": "minie5-fast", "numba": "minie5-numba",
                                                                  "blas": "minie5-blas"}[matmul]

    def import_libs(self):
        import minie5
        self.minie5 = minie5

    def load(self, model_dir):
        self.model = self.minie5.load(model_dir, backend=self.backend, matmul=self.matmul)

    def embed_ids(self, batch):
        # one batch as given (fast: packed; reference: padded to the batch max), L2-normalised
        return self.model.encode_ids(batch, batch_size=len(batch), normalize=True, backend=self.backend)

    def embed_text(self, text):
        return self.model.encode([text])

    def describe(self):
        version = self.minie5.__version__
        if self.backend != "fast":
            return f"minie5 {version} reference (NumPy)"
        import numba
        try:
            layer = numba.threading_layer()
        except ValueError:  # no parallel kernel has run yet
            layer = "not yet chosen"
        return (f"minie5 {version} fast, numba {numba.__version__} "
                f"({numba.config.NUMBA_NUM_THREADS} threads, threading layer {layer})")


class TorchEngine(Engine):
    """transformers AutoModel on torch CPU, fp32, eager (no torch.compile), default attention."""

    name = "torch"

    def import_libs(self):
        import torch
        import transformers
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        torch.set_num_threads(THREADS)
        self.torch, self.transformers = torch, transformers

    def load(self, model_dir):
        from transformers import AutoModel, AutoTokenizer
        self.model = AutoModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.pad_id = self.tokenizer.pad_token_id

    def _pool(self, ids, mask):
        torch = self.torch
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(dim=1) / m.sum(dim=1)
            return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    def embed_ids(self, batch):
        ids, mask = pad(batch, self.pad_id)
        return self._pool(self.torch.from_numpy(ids), self.torch.from_numpy(mask))

    def embed_text(self, text):
        enc = self.tokenizer([text], return_tensors="pt")
        return self._pool(enc["input_ids"], enc["attention_mask"])

    def describe(self):
        attn = getattr(self.model.config, "_attn_implementation", "?")
        return (f"torch {self.torch.__version__} ({self.torch.get_num_threads()} threads), transformers "
                f"{self.transformers.__version__}, attention={attn} (no torch.compile)")


class OrtEngine(Engine):
    """ONNX Runtime CPU on the optimised (fused) BERT graph."""

    name = "ort"

    def __init__(self, onnx_path: Path | None):
        self.onnx_path = onnx_path

    def import_libs(self):
        import onnxruntime
        self.ort = onnxruntime

    def load(self, model_dir):
        if self.onnx_path is None:
            raise RuntimeError("no optimised .onnx model")
        ort = self.ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.pad_id = _pad_id(model_dir)
        self.model_dir = Path(model_dir)

    def _run(self, ids, mask):
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feeds)[0]
        return mean_pool_normalize(hidden, mask)

    def embed_ids(self, batch):
        return self._run(*pad(batch, self.pad_id))

    def embed_text(self, text):
        # A lean ORT deployment tokenises with the `tokenizers` package, not transformers.
        from tokenizers import Tokenizer
        ids = Tokenizer.from_file(str(self.model_dir / "tokenizer.json")).encode(text).ids
        return self._run(np.array([ids], np.int64), np.ones((1, len(ids)), np.int64))

    def describe(self):
        return f"onnxruntime {self.ort.__version__} ({THREADS} intra-op threads), {self.onnx_path}"


class Minie5Int8Engine(Minie5Engine):
    """minie5's int8 model, from the directory `minie5 quantize` writes (int8_model_dir)."""

    def __init__(self):
        super().__init__("fast")
        self.name = "minie5-int8"

    def load(self, model_dir):
        self.model = self.minie5.load(int8_model_dir(Path(model_dir)))
        self.normalize = self.minie5.reference.l2_normalize

    def describe(self):
        return super().describe().replace(" fast,", " int8 (minie5 quantize),")


class OrtInt8Engine(OrtEngine):
    """ONNX Runtime on the ort engine's optimised graph after quantize_dynamic (per channel, QInt8)."""

    name = "ort-int8"

    def __init__(self, onnx_path: Path | None):
        super().__init__(None if onnx_path is None else quantize_onnx_int8(onnx_path))


def int8_model_dir(model_dir: Path) -> Path:
    """minie5's int8 copy of model_dir, written once into the bench cache ($MINIE5_BENCH_CACHE or the default)."""
    from minie5.checkpoint.quantize_model import DESCRIPTION, write_quantized
    cache_root = Path(os.environ.get("MINIE5_BENCH_CACHE", Path.home() / ".cache" / "minie5-bench")).expanduser()
    out = onnx_cache_path(model_dir, cache_root).parent / "minie5-int8"
    if not (out / DESCRIPTION).is_file():
        shutil.rmtree(out, ignore_errors=True)
        write_quantized(model_dir, out)
    return out


def quantize_onnx_int8(onnx_path: Path) -> Path:
    """ONNX Runtime's dynamic int8 quantisation of the optimised graph (per-channel int8 weights), cached beside it."""
    out = onnx_path.with_name("model.opt.int8.onnx")
    if not out.is_file():
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic
        partial = out.with_name("model.opt.int8.partial.onnx")
        # DefaultTensorType: ONNX shape inference cannot type the outputs of the optimiser's fused
        # com.microsoft operators; they are float32 (the quantiser's own error message suggests this).
        quantize_dynamic(str(onnx_path), str(partial), per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
        partial.rename(out)
    return out


def _pad_id(model_dir: Path) -> int:
    from minie5.tokenizer import Tokenizer
    return Tokenizer(model_dir, max_length=512).pad_token_id


def make_engine(name: str, onnx_path: Path | None = None) -> Engine:
    if name == "minie5-fast":
        return Minie5Engine("fast")
    if name == "minie5-numba":
        return Minie5Engine("fast", matmul="numba")
    if name == "minie5-blas":
        return Minie5Engine("fast", matmul="blas")
    if name == "minie5-ref":
        return Minie5Engine("reference")
    if name == "torch":
        return TorchEngine()
    if name == "ort":
        return OrtEngine(onnx_path)
    if name == "minie5-int8":
        return Minie5Int8Engine()
    if name == "ort-int8":
        return OrtInt8Engine(onnx_path)
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")


# ====================================================================== ONNX export
def onnx_cache_path(model_dir: Path, cache_root: Path) -> Path:
    """Where the optimised .onnx of this model dir lives (keyed by path and weights file)."""
    st = (model_dir / "model.safetensors").stat()
    key = hashlib.sha1(f"{model_dir.resolve()}|{st.st_size}|{st.st_mtime_ns}|opset{ONNX_OPSET}".encode())
    return cache_root / f"{model_dir.name}-{key.hexdigest()[:12]}" / "model.opt.onnx"


def export_onnx(model_dir: Path, out_path: Path) -> str:
    """Export with torch.onnx (TorchScript exporter), fuse with ORT's BERT optimizer, check it.

    Eager attention is exported on purpose: onnxruntime's optimiser recognises BERT
    attention in that graph (with the default SDPA attention it fuses none). Returns a
    note with the fused-operator counts and the max difference from torch.
    """
    import torch
    import transformers
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModel

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager", add_pooling_layer=False).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    wrapper = LastHidden(model).eval()
    ids = torch.tensor([[0, 5, 6, 7, 8, 9, 2], [0, 5, 6, 2, 1, 1, 1]])  # row 2: 3 padding positions
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    with torch.inference_mode():
        expected = wrapper(ids, mask).numpy()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    raw = out_path.with_name("model.raw.onnx")
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (ids, mask), str(raw), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=ONNX_OPSET, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes})
        # opt_level=1 (the optimiser's default for BERT): ORT's basic, portable rewrites, then
        # the BERT fusions; higher levels bake in hardware-specific layouts.
        optimized = optimize_model(str(raw), model_type="bert", num_heads=model.config.num_attention_heads,
                                   hidden_size=model.config.hidden_size, opt_level=1, use_gpu=False)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    partial = out_path.with_name(out_path.name + ".partial")
    optimized.save_model_to_file(str(partial))
    raw.unlink()
    import onnxruntime as ort
    session = ort.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    diff = float(np.abs(got - expected)[mask.numpy().astype(bool)].max())
    if diff > 1e-3:
        raise RuntimeError(f"optimised ONNX model differs from torch by {diff:.2e}")
    partial.rename(out_path)
    return f"exported and optimised: fused {fused}, max |ort - torch| = {diff:.1e}"


def prepare_onnx(model_dir: Path, cache_root: Path, allow_export: bool) -> tuple[Path | None, str]:
    """The cached optimised model, exporting it first if allowed. (path or None, note)."""
    path = onnx_cache_path(model_dir, cache_root)
    if path.is_file():
        return path, f"cached {path}"
    if not allow_export:
        return None, "no cached .onnx and --quick does not export (run once without --quick)"
    try:
        import onnx  # noqa: F401  (the optimiser needs it)
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        return None, f"exporting needs torch, transformers and onnx: {e}"
    t = time.perf_counter()
    try:
        note = export_onnx(model_dir, path)
    except Exception as e:  # report, and skip the engine
        shutil.rmtree(path.parent, ignore_errors=True)
        return None, f"export failed: {type(e).__name__}: {e}"
    return path, f"{note} in {time.perf_counter() - t:.0f} s -> {path}"


# ====================================================================== measurements
def measure_sgemm(repeats: int) -> dict:
    """numpy/OpenBLAS float32 matmul GFLOP/s (best of `repeats`) on the reference shapes."""
    shapes = {"2048^3": (2048, 2048, 2048), "QKV 4096x384x1152": (4096, 384, 1152),
              "FFN-down 4096x1536x384": (4096, 1536, 384)}
    rng = np.random.default_rng(0)
    result = {}
    for name, (M, K, N) in shapes.items():
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((K, N), dtype=np.float32)
        out = np.empty((M, N), np.float32)
        np.matmul(a, b, out=out)  # warm up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            np.matmul(a, b, out=out)
            times.append(time.perf_counter() - t)
        result[name] = 2.0 * M * K * N / min(times) / 1e9
    return result


def time_workload(engine: Engine, workload: Workload) -> float:
    """Seconds for one pass over all batches of the workload."""
    t = time.perf_counter()
    for batch in workload.batches:
        engine.embed_ids(batch)
    return time.perf_counter() - t


@dataclass
class Plan:
    """What one engine runs for one workload in each round."""

    workload: Workload  # the workload, or an evenly spaced subset of its batches
    calls: int  # timed passes per round (W1 / W2: several)
    subsampled: bool = False


def subsample(workload: Workload, k: int) -> Workload:
    """k of the workload's batches, evenly spaced (the middle one for k = 1; W5's are length-sorted,
    so that is its median-length batch)."""
    n = len(workload.batches)
    picks = sorted({int((i + 0.5) * n / k) for i in range(k)})
    return Workload(workload.name, workload.label, workload.kind, [workload.batches[i] for i in picks])


def make_plans(engines: dict, workloads: list, latency_calls: int, full_reference: bool) -> dict:
    """plans[engine][workload]: the full workloads, except for engines listed in REDUCED (the
    NumPy reference), which run an evenly spaced 1/16 of the batches (at least one: the
    middle one) and fewer W1/W2 calls.

    The plans depend on nothing measured, so every run times the same work.
    """
    plans = {}
    for name in engines:
        reduced = None if full_reference else REDUCED.get(name)
        plans[name] = {}
        for w in workloads:
            if reduced is None:
                plans[name][w.name] = Plan(w, latency_calls if w.kind == "latency" else 1)
            elif w.kind == "latency":
                plans[name][w.name] = Plan(w, min(latency_calls, reduced["latency_calls"]))
            else:
                k = max(1, round(len(w.batches) * reduced["batch_fraction"]))
                plans[name][w.name] = Plan(subsample(w, k), 1, subsampled=k < len(w.batches))
    return plans


def warm_up(engines: dict, plans: dict) -> None:
    """Each engine runs W1, W2 and the first batch of each of its other workloads once
    (compilation, shape-specific set-up, workspace growth). Reduced engines (plain NumPy,
    nothing to warm) only run W1 and W2."""
    for name, engine in engines.items():
        for plan in plans[name].values():
            if plan.workload.kind == "latency" or name not in REDUCED:
                engine.embed_ids(plan.workload.batches[0])


def check_agreement(engines: dict, workloads: list) -> dict:
    """Max |difference| of each engine's embeddings from a baseline engine's: W2, W5's shortest
    batch (mixed lengths, so padding matters) and one 512-token text from W4."""
    by_name = {w.name: w for w in workloads}
    batches = [by_name["W2"].batches[0], by_name["W5"].batches[0], [by_name["W4"].batches[0][0]]]
    outputs = {name: np.concatenate([e.embed_ids(b) for b in batches]) for name, e in engines.items()}
    base = next((n for n in ("torch", "minie5-ref") if n in outputs), next(iter(outputs)))
    return {"baseline": base,
            "max_abs_diff": {n: float(np.abs(o - outputs[base]).max()) for n, o in outputs.items() if n != base}}


def run_interleaved(engines: dict, plans: dict, workloads: list, rounds: int) -> dict:
    """times[engine][workload] = list of seconds per pass. Per workload, `rounds` rounds of one
    turn per engine (a turn: plan.calls passes), so load on the machine hits all engines alike."""
    times = {name: {w.name: [] for w in workloads} for name in engines}
    for workload in workloads:
        t = time.perf_counter()
        for _ in range(rounds):
            for name, engine in engines.items():
                plan = plans[name][workload.name]
                gc.collect()
                time.sleep(SETTLE_S)
                for _ in range(plan.calls):
                    times[name][workload.name].append(time_workload(engine, plan.workload))
        log(f"  {workload.name}: {rounds} round(s) x {len(engines)} engines in {time.perf_counter() - t:.0f} s")
    return times


def run_probe_subprocess(engine: str, model_dir: Path, onnx_path, w3_file, numba_cache, timeout) -> dict:
    """Cold start (and peak RSS on W3 if w3_file) of one engine in a fresh interpreter."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", engine, "--model", str(model_dir)]
    if onnx_path:
        cmd += ["--onnx", str(onnx_path)]
    if w3_file:
        cmd += ["--probe-w3", str(w3_file)]
    env = dict(os.environ, **THREAD_ENV)
    if numba_cache:
        env["NUMBA_CACHE_DIR"] = str(numba_cache)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(PROBE_TAG):
            return json.loads(line[len(PROBE_TAG):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over
    from the parent across fork + exec, so a subprocess would report the bench's own peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB -> MB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe_main(args) -> int:
    """--probe: import + load + first embedding (cold start), then W3 for peak RSS; print JSON."""
    engine = make_engine(args.probe, Path(args.onnx) if args.onnx else None)
    engine.import_libs()
    t_import = time.perf_counter()
    engine.load(Path(args.model))
    t_load = time.perf_counter()
    engine.embed_text(COLD_TEXT)
    t_first = time.perf_counter()
    result = {"import_s": t_import - _T0, "load_s": t_load - t_import, "first_s": t_first - t_load,
              "cold_start_s": t_first - _T0}
    if args.probe_w3:
        for batch in json.loads(Path(args.probe_w3).read_text()):
            engine.embed_ids(batch)
        result["peak_rss_mb"] = peak_rss_mb()
    print(PROBE_TAG + json.dumps(result), flush=True)
    return 0


def run_probes(plans: dict, model_dir: Path, onnx_path, quick: bool) -> dict:
    """Cold start + peak RSS (on the engine's W3 plan) per engine in fresh subprocesses;
    minie5-fast also once with an empty Numba cache (not in --quick)."""
    results = {}
    timeout = 300 if quick else 900
    with tempfile.TemporaryDirectory(prefix="minie5-bench-") as tmp:
        for name, per_workload in plans.items():
            w3_file = Path(tmp) / f"w3-{name}.json"
            w3_file.write_text(json.dumps(per_workload["W3"].workload.batches))
            onnx = onnx_path if name in ("ort", "ort-int8") else None
            results[name] = run_probe_subprocess(name, model_dir, onnx, w3_file, None, timeout)
            log(f"  {name}: {_probe_summary(results[name])}")
        if "minie5-fast" in plans and not quick:
            empty = Path(tmp) / "numba-cache"
            empty.mkdir()
            result = run_probe_subprocess("minie5-fast", model_dir, None, None, empty, timeout)
            results["minie5-fast (empty Numba cache)"] = result
            log(f"  minie5-fast, empty Numba cache: {_probe_summary(result)}")
    return results


def _probe_summary(r: dict) -> str:
    if "error" in r:
        return r["error"]
    text = (f"cold start {r['cold_start_s']:.1f} s (import {r['import_s']:.1f}, load {r['load_s']:.1f}, "
            f"first {r['first_s']:.1f})")
    return text + (f", peak RSS {r['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in r else "")


# ====================================================================== environment
def environment_info() -> dict:
    """CPU, load, thread settings, BLAS kernel (threadpoolctl), minie5 revision."""
    info = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(),
            "python": sys.version.split()[0], "numpy": np.__version__,
            "thread_env": {k: os.environ.get(k) for k in THREAD_ENV},
            "blas_env": {k: os.environ.get(k) for k in BLAS_ENV},
            "minie5_git": _git_revision()}
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "version", "architecture",
                                                      "num_threads", "threading_layer", "filepath")}
                               for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    info["blas_kernel"] = blas_kernel(info["threadpools"])
    info["warnings"] = kernel_warnings(info["blas_env"], info["blas_kernel"])
    return info


def blas_kernel(threadpools) -> str:
    """numpy's BLAS and the kernel it runs, as threadpoolctl reports it ("openblas SkylakeX")."""
    if isinstance(threadpools, str):
        return f"unknown ({threadpools})"
    blas = [f"{p['internal_api']} {p.get('architecture') or '(kernel not reported)'}"
            for p in threadpools if p.get("user_api") == "blas"]
    return ", ".join(dict.fromkeys(blas)) or "unknown (no BLAS loaded)"


def kernel_warnings(blas_env: dict, kernel: str) -> list:
    """[a warning] when OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE overrides OpenBLAS's own kernel choice, else []."""
    forced = [f"{name}={blas_env[name]}" for name in KERNEL_OVERRIDES if blas_env.get(name)]
    if not forced:
        return []
    return [f"{' and '.join(forced)} set: numpy's BLAS runs the kernel forced on it ({kernel}), not the one "
            "OpenBLAS picks for this CPU (on AVX-512 machines OPENBLAS_CORETYPE=Haswell means the slower AVX2 "
            "sgemm); users' machines don't do this, so the sgemm and minie5 figures are not theirs. "
            f"Run: {RECOMMENDED}"]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "minie5"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return (rev or "unknown") + (" (minie5/ modified)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def print_environment(info: dict) -> None:
    log(f"CPU: {info['cpu']} ({info['cpu_count']} logical), load average {info['loadavg_start'][0]:.2f}; "
        f"python {info['python']}, numpy {info['numpy']}, minie5 git {info['minie5_git']}")
    log(f"BLAS kernel: {info['blas_kernel']} (threadpoolctl)")
    for warning in info["warnings"]:
        log(f"WARNING: {warning}")
    log("threads: " + ", ".join(f"{k}={v}" for k, v in info["thread_env"].items()))
    log("BLAS env (left as found): " + ", ".join(f"{k}={v if v is not None else '(unset)'}"
                                                  for k, v in info["blas_env"].items()))
    if isinstance(info["threadpools"], str):
        log(f"threadpools: {info['threadpools']}")
    else:
        for p in info["threadpools"]:
            log(f"threadpool: {p['internal_api']} {p['version'] or ''} kernel={p.get('architecture') or '-'} "
                f"threads={p['num_threads']} layer={p.get('threading_layer') or '-'} "
                f"({Path(p['filepath']).name})")


# ====================================================================== report
def summarise(times: dict, plans: dict, config) -> dict:
    """stats[engine][workload] = {median, min, max (ms or tok/s), speed (1/s or tok/s), gflops,
    subsampled}, over what the engine actually ran (its plan)."""
    stats = {}
    for engine, per_workload in times.items():
        stats[engine] = {}
        for name, secs in per_workload.items():
            if not secs:
                continue
            plan = plans[engine][name]
            w = plan.workload
            med = statistics.median(secs)
            if w.kind == "latency":
                values = [s * 1e3 for s in secs]
                speed = 1.0 / med
            else:
                values = [w.tokens / s for s in secs]
                speed = w.tokens / med
            stats[engine][name] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                                   "speed": speed, "gflops": model_flops(config, w) / med / 1e9,
                                   "subsampled": plan.subsampled, "batches": len(w.batches),
                                   "tokens": w.tokens, "samples": len(secs)}
    return stats


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _cold_cell(probes: dict, engine: str) -> str:
    r = probes.get(engine, {})
    cell = f"{r['cold_start_s']:.1f} s" if "cold_start_s" in r else "n/a"
    empty = probes.get(f"{engine} (empty Numba cache)")
    if empty is not None:
        cell += f" (empty cache {empty['cold_start_s']:.1f} s)" if "cold_start_s" in empty else " (empty cache n/a)"
    return cell


def markdown_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main_table(stats: dict, workloads: list, probes: dict) -> str:
    header = ["engine"] + [w.label for w in workloads] + ["cold start", "peak RSS W3"]
    rows = []
    for engine, per in stats.items():
        row = [engine]
        for w in workloads:
            s = per.get(w.name)
            mark = SUBSAMPLE_MARK if s and s["subsampled"] else ""
            row.append(f"{_num(s['median'])}{mark} ({_num(s['min'])}-{_num(s['max'])})" if s else "n/a")
        rss = probes.get(engine, {}).get("peak_rss_mb")
        row += [_cold_cell(probes, engine), f"{rss:,.0f} MB" if rss else "n/a"]
        rows.append(row)
    return markdown_table(header, rows)


def ratio_table(stats: dict, workloads: list) -> str:
    """Speed of A / speed of B for every pair (> 1: A is faster), medians."""
    names = list(stats)
    if len(names) < 2:
        return "(one engine: no speed ratios)"
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            row = [f"{a} / {b}"]
            for w in workloads:
                sa, sb = stats[a].get(w.name), stats[b].get(w.name)
                mark = SUBSAMPLE_MARK if sa and sb and (sa["subsampled"] or sb["subsampled"]) else ""
                row.append(f"{sa['speed'] / sb['speed']:.2f}x{mark}" if sa and sb else "n/a")
            rows.append(row)
    return markdown_table(["speed ratio"] + [w.name for w in workloads], rows)


def gflops_table(stats: dict, workloads: list, peak: float) -> str:
    rows = []
    for engine, per in stats.items():
        row = [engine]
        for w in workloads:
            s = per.get(w.name)
            mark = SUBSAMPLE_MARK if s and s["subsampled"] else ""
            row.append(f"{s['gflops']:.1f}{mark} ({100 * s['gflops'] / peak:.0f} %)" if s else "n/a")
        rows.append(row)
    return markdown_table(["GFLOP/s (% of sgemm 2048^3)"] + [w.name for w in workloads], rows)


# ====================================================================== main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__[:__doc__.index("\nInstall:")],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.environ.get("MINIE5_MODEL", HUB_ID),
                   help="model directory or hub id (default: $MINIE5_MODEL or %(default)s)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ", ".join(ENGINES))
    p.add_argument("--repeats", type=int, default=None,
                   help="rounds per workload (default 2, --quick 1); W1/W2 time several calls per round")
    p.add_argument("--quick", action="store_true", help="smoke run: small workloads, one round, no ONNX export")
    p.add_argument("--full-reference", action="store_true",
                   help="run the slow NumPy reference on all batches (default: an evenly spaced 1/16)")
    p.add_argument("--json", metavar="PATH", help="save raw timings and results as JSON")
    p.add_argument("--cache-dir", default=os.environ.get("MINIE5_BENCH_CACHE",
                                                         str(Path.home() / ".cache" / "minie5-bench")),
                   help="where exported ONNX models are cached (default %(default)s)")
    p.add_argument("--probe", help=argparse.SUPPRESS)  # internal: cold-start / RSS subprocess
    p.add_argument("--probe-w3", help=argparse.SUPPRESS)
    p.add_argument("--onnx", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in args.engines if e not in ENGINES]
    if unknown:
        p.error(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def load_engines(names: list, model_dir: Path, onnx_path, notes: list) -> dict:
    """Import and load each requested engine; missing packages become notes, not crashes."""
    engines = {}
    for name in names:
        engine = make_engine(name, onnx_path)
        try:
            engine.import_libs()
        except ImportError as e:
            notes.append(f"{name}: skipped, not installed ({e})")
            continue
        if name in ("ort", "ort-int8") and onnx_path is None:
            continue  # prepare_onnx already left a note
        t = time.perf_counter()
        try:
            engine.load(model_dir)
        except Exception as e:
            notes.append(f"{name}: skipped, failed to load ({type(e).__name__}: {e})")
            continue
        engines[name] = engine
        log(f"  {name} loaded in {time.perf_counter() - t:.1f} s")
    return engines


def prepare_engines(args, model_dir: Path, notes: list) -> tuple[dict, Path | None]:
    """The ORT model (exported if needed, not in --quick) and every engine that can run."""
    onnx_path = None
    if {"ort", "ort-int8"} & set(args.engines):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            pass  # load_engines notes the missing package
        else:
            onnx_path, note = prepare_onnx(model_dir, Path(args.cache_dir).expanduser(), allow_export=not args.quick)
            if onnx_path is None:
                notes.append(f"ort: {note}")
            else:
                log(f"ort model: {note}")
    log("loading engines:")
    return load_engines(args.engines, model_dir, onnx_path, notes), onnx_path


def report_agreement(engines: dict, workloads: list) -> dict:
    agreement = check_agreement(engines, workloads)
    if agreement["max_abs_diff"]:
        log(f"agreement with {agreement['baseline']} (max |difference| of normalised embeddings): "
            + ", ".join(f"{n} {d:.1e}" for n, d in agreement["max_abs_diff"].items()))
    return agreement


def result_notes(args, stats: dict, workloads: list) -> list:
    """Notes on what the tables do not show: subsets run, cold-start caveats."""
    notes = []
    by_name = {w.name: w for w in workloads}
    for engine, per in stats.items():
        cut = [f"{w} {s['batches']} of {len(by_name[w].batches)} batches" for w, s in per.items() if s["subsampled"]]
        if cut:
            notes.append(f"{engine}: {SUBSAMPLE_MARK} ran {', '.join(cut)} (evenly spaced, to keep the run "
                         "short; --full-reference runs all); its throughput counts the tokens it ran")
    if "minie5-fast" in stats:
        notes.append("minie5-fast: empty-Numba-cache cold start not measured in --quick (it compiles every kernel)"
                     if args.quick else "minie5-fast compiles its Numba kernels on first use; the 'empty cache' "
                     "cold start (NUMBA_CACHE_DIR set to a fresh directory) is that first-ever start")
    return notes


def print_report(stats: dict, workloads: list, probes: dict, sgemm: dict, notes: list, blas_warnings: list) -> None:
    log()
    log(main_table(stats, workloads, probes))
    log()
    log(ratio_table(stats, workloads))
    log()
    log(gflops_table(stats, workloads, sgemm["2048^3"]))
    log()
    log("sgemm peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in sgemm.items())
        + f" (numpy/OpenBLAS, {THREADS} threads); load average now {os.getloadavg()[0]:.2f}")
    for note in notes:
        log(f"note: {note}")
    for warning in blas_warnings:  # again under the tables, which it concerns
        log(f"WARNING: {warning}")


def save_json(path: str, args, **results) -> None:
    """Raw timings (seconds per pass), stats, probes, environment and notes."""
    raw = {"args": {k: v for k, v in vars(args).items() if not k.startswith("probe") and k != "onnx"},
           **results, "loadavg_end": os.getloadavg()}
    Path(path).write_text(json.dumps(raw, indent=1, default=str))
    log(f"raw numbers: {path}")


def run_bench(args) -> int:
    """The whole benchmark: set-up, interleaved timing, subprocess probes, report."""
    from minie5.checkpoint.config import read_config
    from minie5.checkpoint.hub import resolve_model_dir
    from minie5.tokenizer import Tokenizer

    started = time.perf_counter()
    os.environ["MINIE5_BENCH_CACHE"] = str(Path(args.cache_dir).expanduser())  # where minie5-int8 finds its model
    model_dir = resolve_model_dir(args.model)
    config = read_config(model_dir)
    info = environment_info()
    log(f"# minie5 benchmark{' (--quick smoke run: reduced workloads, numbers not meaningful)' if args.quick else ''}")
    log(f"model: {model_dir}")
    print_environment(info)
    sgemm_repeats = 2 if args.quick else 5
    sgemm = measure_sgemm(sgemm_repeats)
    log(f"sgemm peak (numpy/OpenBLAS, {THREADS} threads, best of {sgemm_repeats}): "
        + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in sgemm.items()))

    sizes = QUICK_SIZES if args.quick else WorkloadSizes()
    workloads = build_workloads(Tokenizer(model_dir, max_length=config.max_seq_length), sizes)
    log(f"model cost: {linear_flops_per_token(config) / 1e6:.1f} MFLOP per token in the linear layers "
        "(+ attention 4*T*H per layer); workloads: "
        + ", ".join(f"{w.name} {len(w.texts)} texts / {w.tokens} tokens" for w in workloads))

    notes = []
    engines, onnx_path = prepare_engines(args, model_dir, notes)
    if not engines:
        log("no engine could run:\n" + "\n".join(f"- {n}" for n in notes))
        return 1
    plans = make_plans(engines, workloads, sizes.latency_calls, args.full_reference)
    warm_up(engines, plans)
    for engine in engines.values():
        log(f"  {engine.name}: {engine.describe()}")
    agreement = report_agreement(engines, workloads)

    log(f"timing, {args.repeats} round(s), engines interleaved:")
    times = run_interleaved(engines, plans, workloads, args.repeats)
    log("cold start and peak RSS (fresh subprocess per engine):")
    probes = run_probes(plans, model_dir, onnx_path, args.quick)

    stats = summarise(times, plans, config)
    notes += result_notes(args, stats, workloads)
    print_report(stats, workloads, probes, sgemm, notes, info["warnings"])
    log(f"total bench time {time.perf_counter() - started:.0f} s")
    if args.json:
        save_json(args.json, args, warnings=info["warnings"], model_dir=str(model_dir), environment=info,
                  sgemm_gflops=sgemm,
                  engines={n: e.describe() for n, e in engines.items()},
                  workloads={w.name: {"label": w.label, "kind": w.kind, "texts": len(w.texts), "tokens": w.tokens,
                                      "batches": len(w.batches), "flops": model_flops(config, w)}
                             for w in workloads},
                  times_s=times, stats=stats, probes=probes, agreement=agreement, notes=notes)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.probe:
        return probe_main(args)
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
