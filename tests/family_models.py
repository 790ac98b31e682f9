"""Model directories for the model-family tests (tests/test_family.py).

    BGE_SMALL_CONFIG, E5_BASE_CONFIG   the exact config.json of BAAI/bge-small-en-v1.5 (bert)
                                       and intfloat/multilingual-e5-base (xlm-roberta)
    shrink(config, vocab, **sizes)     the same config with a smaller vocabulary (and optionally sizes)
    write_wordpiece_tokenizer(...)     a 1000-entry uncased WordPiece tokenizer cut from all-MiniLM-L6-v2's
    write_unigram_tokenizer(...)       a 1000-piece XLM-R SentencePiece tokenizer cut from multilingual-e5-small's
    write_sentence_transformers(...)   modules.json, 1_Pooling/config.json, sentence_bert_config.json,
                                       config_sentence_transformers.json
    build_hf_model(config, seed, ...)  a transformers model with test-scale random weights, saved to a directory

The shrunk tokenizers keep real pieces (the most frequent ones come first in
both vocabularies), so real text tokenizes into a mix of words, pieces and
unknowns, and token ids stay inside the shrunk embedding matrix.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tiny_models import init_scale

# BAAI/bge-small-en-v1.5 config.json
BGE_SMALL_CONFIG = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": None,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 384,
    "id2label": {"0": "LABEL_0"},
    "initializer_range": 0.02,
    "intermediate_size": 1536,
    "label2id": {"LABEL_0": 0},
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "torch_dtype": "float32",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
}

# intfloat/multilingual-e5-base config.json
E5_BASE_CONFIG = {
    "architectures": ["XLMRobertaModel"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "classifier_dropout": None,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "model_type": "xlm-roberta",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "output_past": True,
    "pad_token_id": 1,
    "position_embedding_type": "absolute",
    "torch_dtype": "float32",
    "type_vocab_size": 1,
    "use_cache": True,
    "vocab_size": 250002,
}

SHRUNK_VOCAB = 1000
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def shrink(config: dict, vocab: int = SHRUNK_VOCAB, **sizes) -> dict:
    """A copy of config.json with vocab_size = vocab and any other sizes replaced."""
    return {**config, "vocab_size": vocab, **sizes}


def write_wordpiece_tokenizer(model_dir: Path, minilm_dir: Path, size: int = SHRUNK_VOCAB, **settings) -> list[str]:
    """An uncased BERT WordPiece tokenizer of `size` entries, cut from all-MiniLM-L6-v2's vocab.txt.

    Entries: the five specials (ids 0-4), every one-character ASCII token and its
    "##" continuation, then whole words in the original (frequency) order.
    Writes tokenizer.json, vocab.txt, tokenizer_config.json (BertTokenizer,
    do_lower_case true, plus `settings`) and special_tokens_map.json.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    full = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    chars = [t for t in full if len(t) == 1 and t.isascii() and t.isprintable() and t != " "]
    pieces = [t for t in full if len(t) == 3 and t.startswith("##") and t[2].isascii()]
    words = [t for t in full[1996:] if t.isalpha() and t.isascii() and len(t) > 1]
    vocab = list(dict.fromkeys(BERT_SPECIALS + chars + pieces + words))[:size]
    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(BERT_SPECIALS)
    tok.save(str(model_dir / "tokenizer.json"))
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    specials = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), BERT_SPECIALS))
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512,
                        "strip_accents": None, "tokenize_chinese_chars": True, **specials, **settings}
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (model_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    return vocab


def write_unigram_tokenizer(model_dir: Path, e5_dir: Path, size: int = SHRUNK_VOCAB) -> None:
    """An XLM-R SentencePiece (Unigram) tokenizer of `size` pieces, cut from multilingual-e5-small's.

    The first size - 1 pieces keep their ids and scores (<s> <pad> </s> <unk> first),
    <mask> moves to the last id; the normalizer (SentencePiece charsmap) is kept.
    """
    data = json.loads((e5_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["vocab"] = data["model"]["vocab"][:size - 1] + [["<mask>", 0.0]]
    added = [t for t in data["added_tokens"] if t["id"] < size - 1]
    mask = next(t for t in data["added_tokens"] if t["content"] == "<mask>")
    data["added_tokens"] = added + [{**mask, "id": size - 1}]
    (model_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(e5_dir / name, model_dir / name)


def write_sentence_transformers(model_dir: Path, hidden: int, pooling: str = "mean", normalize: bool = True,
                                max_seq_length: int | None = 512, prompts: dict | None = None,
                                default_prompt_name: str | None = None) -> None:
    """The sentence-transformers files: Transformer -> Pooling(pooling) [-> Normalize]."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (model_dir / "modules.json").write_text(json.dumps(modules, indent=2))
    (model_dir / "1_Pooling").mkdir(exist_ok=True)
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
    }, indent=2))
    if max_seq_length is not None:
        (model_dir / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2))
    if prompts is not None:
        (model_dir / "config_sentence_transformers.json").write_text(json.dumps(
            {"__version__": {"sentence_transformers": "6.2.0"}, "prompts": prompts,
             "default_prompt_name": default_prompt_name}, indent=2))


def randomize(model, seed: int) -> None:
    """Re-draw every parameter of an encoder at test scale (tiny_models.init_scale).

    The transformers init (std 0.02, zero biases, LayerNorm 1 / 0) makes attention
    near-uniform and hides mistakes; these scales give peaked attention.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            centre, std = init_scale(name, tuple(p.shape))
            p.normal_(centre, std, generator=generator)


def build_hf_model(config: dict, model_dir: Path, seed: int, head: str | None = None, dtype: str | None = None):
    """A transformers model for config (BertModel / XLMRobertaModel, or `head`, e.g.
    "XLMRobertaForMaskedLM"), its encoder randomised, saved to model_dir with
    save_pretrained (in `dtype` if given). Returns the float32 encoder, in eval mode."""
    import torch
    import transformers
    from transformers.initialization import no_init_weights

    cfg = {k: v for k, v in config.items() if k not in ("architectures", "torch_dtype")}
    model_type = cfg.pop("model_type")
    hf_config = transformers.AutoConfig.for_model(model_type, **cfg)
    torch.manual_seed(seed)  # the heads (MLM, pooler) keep transformers' own init
    if head is None:
        with no_init_weights():  # randomize() draws every parameter: skip transformers' init (seconds at 768 wide)
            model = transformers.AutoModel.from_config(hf_config)
        encoder = model
    else:
        model = getattr(transformers, head)(hf_config)
        encoder = model.base_model
    model.eval()
    randomize(encoder, seed)
    if dtype is not None:  # the encoder transformers runs is the saved one, rounded, in float32
        model.to(getattr(torch, dtype))
        model.save_pretrained(model_dir, safe_serialization=True)
        model.to(torch.float32)
    else:
        model.save_pretrained(model_dir, safe_serialization=True)
    return encoder.eval()
