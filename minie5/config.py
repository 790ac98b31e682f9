"""ModelConfig: everything minie5 needs to know about a model, read once.

The encoder sizes come from config.json (the Hugging Face BertModel config);
how token vectors become one text vector (pooling, normalisation, maximum
length) comes from the sentence-transformers files beside it:

    modules.json                 which modules run after the encoder (Normalize?)
    1_Pooling/config.json        mean / CLS / max pooling
    sentence_bert_config.json    max_seq_length

Nothing here is specific to multilingual-e5-small: its values are simply what
its config.json says (shown in the comments for orientation).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelFileError, UnsupportedModelError

SUPPORTED_MODEL_TYPES = ("bert",)
SUPPORTED_ACTIVATIONS = ("gelu",)  # exact erf GELU, as in BERT and e5
POOLING_MODES = ("mean", "cls", "max")


@dataclass(frozen=True)
class ModelConfig:
    # --- the encoder, from config.json ------------------------------------
    model_type: str  # "bert"
    vocab_size: int  # rows of the word-embedding matrix (e5-small: 250037)
    hidden_size: int  # width of the residual stream (e5-small: 384)
    num_hidden_layers: int  # transformer blocks (e5-small: 12)
    num_attention_heads: int  # heads per block; head_dim = hidden / heads (12 -> 32)
    intermediate_size: int  # width of the feed-forward layer (e5-small: 1536)
    hidden_act: str  # FFN activation; only "gelu" (exact, with erf) is supported
    layer_norm_eps: float  # epsilon inside every LayerNorm (e5-small: 1e-12)
    max_position_embeddings: int  # rows of the position-embedding matrix (512)
    type_vocab_size: int  # rows of the token-type matrix; minie5 always uses type 0
    pad_token_id: int  # config.json's pad id (informational: padding is found by the mask)
    # --- how token vectors become a text vector -----------------------------
    pooling: str = "mean"  # "mean" over real tokens, "cls" (first token) or "max"
    normalize: bool = True  # L2-normalise the pooled vector (a Normalize module)
    max_seq_length: int = 512  # tokens per text, <s> and </s> included; longer texts are truncated

    @property
    def head_dim(self) -> int:
        """Width of one attention head (e5-small: 384 / 12 = 32)."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json", **overrides) -> "ModelConfig":
        """Build a config from the fields of a config.json dictionary."""

        def field(name, kind, default=None):
            if name not in raw or raw[name] is None:
                if default is not None:
                    return default
                raise ModelFileError(source, f"missing required field '{name}'")
            value = raw[name]
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ModelFileError(source, f"field '{name}' must be an integer, got {value!r}")
            if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ModelFileError(source, f"field '{name}' must be a number, got {value!r}")
            if kind is str and not isinstance(value, str):
                raise ModelFileError(source, f"field '{name}' must be a string, got {value!r}")
            return kind(value)

        model_type = field("model_type", str)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                source, f"model_type '{model_type}' is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        hidden_act = field("hidden_act", str)
        if hidden_act not in SUPPORTED_ACTIVATIONS:
            raise UnsupportedModelError(
                source, f"hidden_act '{hidden_act}' is not supported (supported: {', '.join(SUPPORTED_ACTIVATIONS)})"
            )
        overrides.setdefault("max_seq_length", field("max_position_embeddings", int))
        position_type = field("position_embedding_type", str, "absolute")
        if position_type != "absolute":
            raise UnsupportedModelError(
                source, f"position_embedding_type '{position_type}' is not supported (only 'absolute')"
            )
        config = cls(
            model_type=model_type,
            vocab_size=field("vocab_size", int),
            hidden_size=field("hidden_size", int),
            num_hidden_layers=field("num_hidden_layers", int),
            num_attention_heads=field("num_attention_heads", int),
            intermediate_size=field("intermediate_size", int),
            hidden_act=hidden_act,
            layer_norm_eps=field("layer_norm_eps", float),
            max_position_embeddings=field("max_position_embeddings", int),
            type_vocab_size=field("type_vocab_size", int),
            pad_token_id=field("pad_token_id", int, 0),
            **overrides,
        )
        config.check(source)
        return config

    def check(self, source: str = "config.json") -> None:
        """Refuse sizes that cannot describe a working encoder."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "max_seq_length"):
            if getattr(self, name) <= 0:
                raise ModelFileError(source, f"field '{name}' must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ModelFileError(
                source,
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}",
            )
        if not self.layer_norm_eps > 0:
            raise ModelFileError(source, f"field 'layer_norm_eps' must be positive, got {self.layer_norm_eps}")
        if self.pooling not in POOLING_MODES:
            raise ModelFileError(source, f"pooling '{self.pooling}' is not one of {POOLING_MODES}")
        if self.max_seq_length > self.max_position_embeddings:
            raise ModelFileError(
                source,
                f"max_seq_length {self.max_seq_length} exceeds max_position_embeddings {self.max_position_embeddings}",
            )


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ModelFileError(path, f"is not valid JSON ({e})") from None
    except OSError as e:
        raise ModelFileError(path, f"cannot be read ({e.strerror})") from None


def read_config(model_dir: str | Path) -> ModelConfig:
    """Read config.json and the sentence-transformers files of a model directory.

    Where a sentence-transformers file is absent, minie5 uses the e5 convention:
    mean pooling, L2 normalisation, and max_seq_length = the smaller of
    max_position_embeddings and the tokenizer's model_max_length.
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelFileError(config_path, "not found (every model directory needs a config.json)")
    raw = _read_json(config_path)
    if not isinstance(raw, dict):
        raise ModelFileError(config_path, "must hold a JSON object")

    overrides = {}
    pooling_path = model_dir / "1_Pooling" / "config.json"
    if pooling_path.is_file():
        overrides["pooling"] = _pooling_mode(_read_json(pooling_path), pooling_path)

    modules_path = model_dir / "modules.json"
    if modules_path.is_file():
        modules = _read_json(modules_path)
        if not isinstance(modules, list):
            raise ModelFileError(modules_path, "must hold a JSON list of modules")
        types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
        overrides["normalize"] = any(t.endswith(".Normalize") for t in types)

    max_length = None
    st_path = model_dir / "sentence_bert_config.json"
    if st_path.is_file():
        st = _read_json(st_path)
        if isinstance(st, dict) and st.get("max_seq_length") is not None:
            max_length = st["max_seq_length"]
            if isinstance(max_length, bool) or not isinstance(max_length, int):
                raise ModelFileError(st_path, f"field 'max_seq_length' must be an integer, got {max_length!r}")
    if max_length is None:
        max_length = raw.get("max_position_embeddings", 512)
        tok_config_path = model_dir / "tokenizer_config.json"
        if tok_config_path.is_file():
            model_max = _read_json(tok_config_path).get("model_max_length")
            if isinstance(model_max, int) and 0 < model_max < max_length:
                max_length = model_max
    overrides["max_seq_length"] = max_length
    return ModelConfig.from_dict(raw, source=str(config_path), **overrides)


def _pooling_mode(raw, path: Path) -> str:
    """Translate a sentence-transformers Pooling config into one mode name."""
    if not isinstance(raw, dict):
        raise ModelFileError(path, "must hold a JSON object")
    if "pooling_mode" in raw:  # newer sentence-transformers spell it out
        mode = {"mean": "mean", "cls": "cls", "max": "max"}.get(str(raw["pooling_mode"]))
        if mode is None:
            raise UnsupportedModelError(path, f"pooling_mode '{raw['pooling_mode']}' is not supported")
        return mode
    flags = {
        "mean": raw.get("pooling_mode_mean_tokens", False),
        "cls": raw.get("pooling_mode_cls_token", False),
        "max": raw.get("pooling_mode_max_tokens", False),
    }
    unsupported = [k for k in ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                               "pooling_mode_lasttoken") if raw.get(k)]
    chosen = [mode for mode, on in flags.items() if on]
    if unsupported or len(chosen) != 1:
        raise UnsupportedModelError(
            path, f"exactly one of mean/cls/max pooling must be enabled, got {chosen + unsupported or 'none'}"
        )
    return chosen[0]
