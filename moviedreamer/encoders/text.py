"""Text tokenizer for identifiers (character ids, names): the tokens the AR model reads as plain text.

- toy profile: a small byte-level BPE trained here with `tokenizers` on toy scripts, saved as a Hugging Face
  `tokenizer.json` (+ `tokenizer_config.json`) and loaded with `PreTrainedTokenizerFast`;
- paper profile: the LLaMA-2 tokenizer from its folder (`tokenizer.json`, or only Meta's `tokenizer.model`).

Everything returned is a `transformers` fast tokenizer, so callers use one API (`__call__`, `encode`, `decode`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from moviedreamer.errors import CheckpointError, UserError, first_line
from moviedreamer.safeio import load_json

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def load_text_tokenizer(path: str | Path):
    """A fast tokenizer from a folder holding `tokenizer.json` or a SentencePiece `tokenizer.model`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected a tokenizer folder holding tokenizer.json or tokenizer.model, found "
                              + ("a file" if path.exists() else "no such folder"))
    config_file = path / "tokenizer_config.json"
    config = load_json(config_file) if config_file.is_file() else {}
    is_llama = "llama" in str(config.get("tokenizer_class", "")).lower()

    if (path / "tokenizer.json").is_file():
        try:
            json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path / 'tokenizer.json'}: expected a Hugging Face tokenizer.json, found invalid JSON ({e})") from None
        cls = _llama_class() if is_llama else _fast_class()
        try:
            return cls.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # tokenizers raises its own exception types
            raise CheckpointError(f"{path / 'tokenizer.json'}: could not load the tokenizer ({first_line(e)})") from None
    if (path / "tokenizer.model").is_file():
        return _llama_from_sentencepiece(path / "tokenizer.model", config)
    raise CheckpointError(f"{path}: expected tokenizer.json (Hugging Face) or tokenizer.model (SentencePiece) in this folder, found neither")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path, min_frequency: int = 2):
    """Train a byte-level BPE on `texts`, save it as a HF tokenizer folder, return it loaded from there.

    Byte-level means every string encodes (no <unk>) and decodes back exactly. A <s> is prepended like LLaMA's.
    """
    # tokenizers: loaded only when fitting a BPE
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    out_dir = Path(out_dir)
    specials = list(SPECIAL_TOKENS.values())
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    fast = _fast_class()(tokenizer_object=tok, model_max_length=512, **SPECIAL_TOKENS)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    # name the class every transformers version knows (5.x writes its internal "TokenizersBackend")
    config = load_json(out_dir / "tokenizer_config.json")
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return load_text_tokenizer(out_dir)


def _fast_class():
    # transformers is heavy: loaded only on the paths that read HF folders
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast


def _llama_class():
    """transformers 5 has one (fast, `tokenizers`-backed) LlamaTokenizer; 4.x calls it LlamaTokenizerFast."""
    # transformers is heavy: loaded only on the paths that read HF folders
    import transformers

    return getattr(transformers, "LlamaTokenizerFast", None) or transformers.LlamaTokenizer


def _llama_from_sentencepiece(model_file: Path, config: dict):
    """Build the LLaMA tokenizer from Meta's SentencePiece `tokenizer.model` without the `sentencepiece` package.

    The file is a protobuf (ModelProto); transformers ships its schema. Like transformers' own converter, the BPE
    vocabulary is the pieces in id order and the merges are derived from it (lower id = earlier merge).
    """
    # transformers is heavy: loaded only on the paths that read HF folders
    from transformers.convert_slow_tokenizer import import_protobuf
    from transformers.tokenization_utils_base import generate_merges

    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString(model_file.read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise CheckpointError(f"{model_file}: expected a SentencePiece model (protobuf), found something else ({first_line(e)})") from None
    if not proto.pieces:
        raise CheckpointError(f"{model_file}: expected a SentencePiece model with a vocabulary, found no pieces")
    if proto.trainer_spec.model_type != 2:  # 1 = unigram, 2 = BPE (LLaMA)
        raise UserError(f"{model_file}: expected a BPE SentencePiece model (LLaMA), found model_type {proto.trainer_spec.model_type}")
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    merges = generate_merges(vocab)

    def piece(idx, default):
        return proto.pieces[idx].piece if 0 <= idx < len(proto.pieces) else default

    kwargs = {
        "unk_token": piece(proto.trainer_spec.unk_id, "<unk>"),
        "bos_token": piece(proto.trainer_spec.bos_id, "<s>"),
        "eos_token": piece(proto.trainer_spec.eos_id, "</s>"),
        "add_bos_token": True,
        "add_eos_token": False,
    }
    for key in ("add_bos_token", "add_eos_token", "legacy", "model_max_length", "add_prefix_space"):
        if key in config:
            kwargs[key] = config[key]
    for key in ("unk_token", "bos_token", "eos_token", "pad_token"):
        value = config.get(key)
        if isinstance(value, dict):  # {"__type": "AddedToken", "content": "<s>", ...}
            value = value.get("content")
        if isinstance(value, str):
            kwargs[key] = value
    return _llama_class()(vocab=vocab, merges=merges, **kwargs)

