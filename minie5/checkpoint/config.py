"""ModelConfig: everything minie5 needs to know about a model, read once.

The encoder sizes come from config.json (the Hugging Face BertModel or
XLMRobertaModel config); how token vectors become one text vector (pooling,
normalisation, maximum length, prompts) comes from the sentence-transformers
files beside it:

    modules.json                        which modules run after the encoder (Normalize?)
    1_Pooling/config.json               mean / CLS / max pooling
    sentence_bert_config.json           max_seq_length
    config_sentence_transformers.json   prompts ("query: " ...) and the default prompt

Two architectures share one encoder: BERT and XLM-RoBERTa differ only in how
tokens are numbered for the position embeddings (see position_offset).

Nothing here is specific to multilingual-e5-small: its values are simply what
its config.json says (shown in the comments for orientation).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from ..errors import ModelFileError, UnsupportedModelError

SUPPORTED_MODEL_TYPES = ("bert", "xlm-roberta")
SUPPORTED_ACTIVATIONS = ("gelu",)  # exact erf GELU, as in BERT and e5
POOLING_MODES = ("mean", "cls", "max")
# The prompts of the e5 models, used when config_sentence_transformers.json declares none.
E5_PROMPTS = MappingProxyType({"query": "query: ", "passage": "passage: "})
# encode(prefix="passage") also finds a prompt declared under these names
# (as sentence-transformers' encode_document does).
PROMPT_ALIASES = {"query": ("query",), "passage": ("passage", "document", "corpus")}


@dataclass(frozen=True)
class ModelConfig:
    # --- the encoder, from config.json ------------------------------------
    model_type: str  # "bert" or "xlm-roberta"
    vocab_size: int  # rows of the word-embedding matrix (e5-small: 250037)
    hidden_size: int  # width of the residual stream (e5-small: 384)
    num_hidden_layers: int  # transformer blocks (e5-small: 12)
    num_attention_heads: int  # heads per block; head_dim = hidden / heads (12 -> 32)
    intermediate_size: int  # width of the feed-forward layer (e5-small: 1536)
    hidden_act: str  # FFN activation; only "gelu" (exact, with erf) is supported
    layer_norm_eps: float  # epsilon inside every LayerNorm (e5-small: 1e-12)
    max_position_embeddings: int  # rows of the position-embedding matrix (512)
    type_vocab_size: int  # rows of the token-type matrix; minie5 always uses type 0
    pad_token_id: int  # config.json's pad id (XLM-R: also the position row of pad tokens)
    # --- how token vectors become a text vector -----------------------------
    pooling: str = "mean"  # "mean" over real tokens, "cls" (first token) or "max"
    normalize: bool = True  # L2-normalise the pooled vector (a Normalize module)
    max_seq_length: int = 512  # tokens per text, <s> and </s> included; longer texts are truncated
    # prompt name -> text prepended by encode(prefix=name) (e5: "query" -> "query: ")
    prompts: Mapping[str, str] = dataclass_field(default_factory=lambda: E5_PROMPTS, hash=False)
    default_prompt_name: str | None = None  # the prompt encode(prefix=None) applies, if any

    @property
    def head_dim(self) -> int:
        """Width of one attention head (e5-small: 384 / 12 = 32)."""
        return self.hidden_size // self.num_attention_heads

    @property
    def positions_skip_padding(self) -> bool:
        """XLM-R numbers only the non-pad tokens of a row; BERT numbers every column."""
        return self.model_type == "xlm-roberta"

    @property
    def position_offset(self) -> int:
        """Position-embedding row of a text's first token.

        BERT: 0 (token t reads row t). XLM-R: pad_token_id + 1 (e5-base: 2), as
        fairseq numbers tokens; pad tokens read row pad_token_id.
        """
        return self.pad_token_id + 1 if self.positions_skip_padding else 0

    @property
    def max_positions(self) -> int:
        """The longest token sequence the position table can number (BERT 512; XLM-R 514 - 2 = 512)."""
        return self.max_position_embeddings - self.position_offset

    def max_positions_explained(self) -> str:
        """For error messages: "512 positions the model can embed (max_position_embeddings 514 - 2 (...))"."""
        offset = f" - {self.position_offset} (XLM-R numbers positions from pad_token_id + 1)" \
            if self.position_offset else ""
        return (f"{self.max_positions} positions the model can embed "
                f"(max_position_embeddings {self.max_position_embeddings}{offset})")

    def prompt(self, prefix: str | None) -> str:
        """The text encode() prepends for its prefix argument.

        None -> the default prompt if the model declares one, else "" (texts as given);
        a prompt name ("query", "passage", or any name the model declares) -> its text,
        "" when the model declares prompts but not that one; any other string -> itself.
        """
        if prefix is None:
            return self.prompts[self.default_prompt_name] if self.default_prompt_name else ""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str or None, got {type(prefix).__name__}")
        for name in PROMPT_ALIASES.get(prefix, (prefix,)):
            if name in self.prompts:
                return self.prompts[name]
        return "" if prefix in PROMPT_ALIASES else prefix

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
                source, f"field 'model_type' is '{model_type}', which minie5 does not run "
                        f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        hidden_act = field("hidden_act", str)
        if hidden_act not in SUPPORTED_ACTIVATIONS:
            raise UnsupportedModelError(
                source, f"field 'hidden_act' is '{hidden_act}', which minie5 does not run "
                        f"(supported: {', '.join(SUPPORTED_ACTIVATIONS)})"
            )
        position_type = field("position_embedding_type", str, "absolute")
        if position_type != "absolute":
            raise UnsupportedModelError(
                source, f"field 'position_embedding_type' is '{position_type}', which minie5 does not run "
                        f"(only 'absolute')"
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
        if "max_seq_length" not in overrides:  # all the position table allows (XLM-R: 514 - 2)
            config = dataclasses.replace(config, max_seq_length=config.max_positions)
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
        if self.max_seq_length > self.max_positions:
            raise ModelFileError(source, f"max_seq_length {self.max_seq_length} exceeds the "
                                         f"{self.max_positions_explained()}")
        if self.positions_skip_padding and not 0 <= self.pad_token_id < self.max_position_embeddings:
            raise ModelFileError(source, f"field 'pad_token_id' {self.pad_token_id} is not a row of the "
                                         f"position table (max_position_embeddings {self.max_position_embeddings})")
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ModelFileError(source, f"default_prompt_name '{self.default_prompt_name}' is not one of the "
                                         f"prompts {sorted(self.prompts)}")


def read_json(path: Path):
    """The JSON value a model file holds; ModelFileError naming the file if it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ModelFileError(path, f"is not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise ModelFileError(path, f"is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ModelFileError(path, f"cannot be read ({e.strerror})") from None


def read_json_object(path: Path) -> dict:
    """The JSON object ({...}) a model file holds; ModelFileError naming the file otherwise."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise ModelFileError(path, "must hold a JSON object")
    return value


def read_config(model_dir: str | Path) -> ModelConfig:
    """Read config.json and the sentence-transformers files of a model directory.

    Where a sentence-transformers file is absent, minie5 uses the e5 convention:
    mean pooling, L2 normalisation, the prompts "query: " / "passage: ", and
    max_seq_length = the smaller of what the position table allows and the
    tokenizer's model_max_length (as sentence-transformers does).
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelFileError(config_path, "not found (every model directory needs a config.json)")
    raw = read_json_object(config_path)

    overrides = {}
    pooling_path = model_dir / "1_Pooling" / "config.json"
    if pooling_path.is_file():
        overrides["pooling"] = _pooling_mode(read_json(pooling_path), pooling_path)

    modules_path = model_dir / "modules.json"
    if modules_path.is_file():
        modules = read_json(modules_path)
        if not isinstance(modules, list):
            raise ModelFileError(modules_path, "must hold a JSON list of modules")
        types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
        overrides["normalize"] = any(t.endswith(".Normalize") for t in types)

    st_path = model_dir / "sentence_bert_config.json"
    if st_path.is_file():
        st = read_json(st_path)
        if isinstance(st, dict) and st.get("max_seq_length") is not None:
            max_length = st["max_seq_length"]
            if isinstance(max_length, bool) or not isinstance(max_length, int):
                raise ModelFileError(st_path, f"field 'max_seq_length' must be an integer, got {max_length!r}")
            overrides["max_seq_length"] = max_length

    prompts_path = model_dir / "config_sentence_transformers.json"
    if prompts_path.is_file():
        overrides.update(_prompts(read_json(prompts_path), prompts_path))

    config = ModelConfig.from_dict(raw, source=str(config_path), **overrides)
    if "max_seq_length" not in overrides:  # no sentence_bert_config.json: also respect the tokenizer's limit
        tok_config_path = model_dir / "tokenizer_config.json"
        if tok_config_path.is_file():
            tok_config = read_json(tok_config_path)
            model_max = tok_config.get("model_max_length") if isinstance(tok_config, dict) else None
            if isinstance(model_max, int) and not isinstance(model_max, bool) and 0 < model_max < config.max_seq_length:
                config = dataclasses.replace(config, max_seq_length=model_max)
    return config


def _prompts(raw, path: Path) -> dict:
    """The prompts of config_sentence_transformers.json: {"prompts": ..., "default_prompt_name": ...}.

    A file without a "prompts" field (written by sentence-transformers < 2.4)
    declares nothing, and the e5 defaults stay.
    """
    if not isinstance(raw, dict):
        raise ModelFileError(path, "must hold a JSON object")
    found = {}
    if raw.get("prompts") is not None:
        prompts = raw["prompts"]
        if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in prompts.items()):
            raise ModelFileError(path, f"field 'prompts' must map prompt names to strings, got {prompts!r}")
        found["prompts"] = MappingProxyType(dict(prompts))
    name = raw.get("default_prompt_name")
    if name is not None:
        if not isinstance(name, str):
            raise ModelFileError(path, f"field 'default_prompt_name' must be a string, got {name!r}")
        if name not in found.get("prompts", E5_PROMPTS):
            raise ModelFileError(path, f"field 'default_prompt_name' is '{name}', which is not one of the prompts "
                                       f"{sorted(found.get('prompts', E5_PROMPTS))}")
        found["default_prompt_name"] = name
    return found


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
