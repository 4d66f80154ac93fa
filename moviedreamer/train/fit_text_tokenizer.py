"""`moviedreamer train text-tokenizer`: the toy profile's text tokenizer (byte-level BPE, `tokenizer.json`).

The corpus is every string of generated toy stories — titles, style, character ids, names and descriptions,
scene ids, settings, plots, actions, cameras — exactly what the AR model reads as plain text, plus each catalogue
phrase once (every character description, every setting/action/camera template), so no toy word is left to bytes.
Deterministic: the same arguments give byte-identical files.

    moviedreamer train text-tokenizer [-o moviedreamer/weights/toy/text_tokenizer] [--stories 400] [--vocab 2048] [--seed 0]
    python -m moviedreamer.train.fit_text_tokenizer ...        (the same, without the CLI wiring)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Iterator

from moviedreamer.encoders.text import train_bpe_tokenizer
from moviedreamer.errors import UserError
from moviedreamer.toyworld import grammar
from moviedreamer.toyworld.story import generate_story
from moviedreamer.toyworld.world import CHARACTERS, SCENES

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "weights" / "toy" / "text_tokenizer"
HELP = "train the toy profile's text tokenizer (byte-level BPE) on generated toy-world stories"


def story_texts(story: dict) -> Iterator[str]:
    """Every string of a story in the user-facing format."""
    for key in ("title", "style"):
        if story.get(key):
            yield str(story[key])
    for c in story.get("characters", []):
        yield from (str(c["id"]), str(c["name"]), str(c["description"]))
    for sc in story.get("scenes", []):
        yield from (str(sc["id"]), str(sc["setting"]), str(sc["plot"]))
        for shot in sc.get("shots", []):
            yield from (str(shot["action"]), str(shot["camera"]), " ".join(shot["characters"]))


def catalogue_texts() -> Iterator[str]:
    """Each toy-world phrase once: character descriptions and names, setting templates, words of actions and cameras."""
    for c in CHARACTERS:
        yield from (c.id, c.name, grammar.describe_character(c))
    for s in SCENES:
        yield s.id
        yield from s.words
        yield from grammar.SETTING_TEMPLATES[s.id]
    for forms in (*grammar.VERB_WORDS.values(), *grammar.FRAMING_WORDS.values(), *grammar.MOVE_WORDS.values()):
        yield from forms


def corpus(stories: int, seed: int = 0, minutes: float = 2.0) -> list[str]:
    texts = list(catalogue_texts())
    for i in range(stories):
        texts.extend(story_texts(generate_story(minutes, seed * 1_000_003 + i)))
    return texts


def train_text_tokenizer(out: str | Path = DEFAULT_OUT, stories: int = 400, vocab_size: int = 2048, seed: int = 0,
                         min_frequency: int = 2) -> dict:
    t0 = time.time()
    texts = corpus(stories, seed)
    out = Path(out)
    tok = train_bpe_tokenizer(texts, vocab_size, out, min_frequency=min_frequency)
    sample = "Mia and Tom walk to the left. wide shot, slow pan right"
    info = {"command": "moviedreamer train text-tokenizer", "stories": stories, "seed": seed, "vocab_size_asked": vocab_size,
            "vocab_size": len(tok), "min_frequency": min_frequency, "texts": len(texts), "characters": sum(map(len, texts)),
            "tokens_per_char": round(sum(len(tok(t)["input_ids"]) - 1 for t in texts[:2000]) / sum(map(len, texts[:2000])), 4),
            "example": {"text": sample, "tokens": tok.convert_ids_to_tokens(tok(sample)["input_ids"])},
            "seconds": round(time.time() - t0, 2)}
    (out / "moviedreamer_train.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


MIN_VOCAB = 300  # 256 byte symbols + 4 specials, and room for merges


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moviedreamer train text-tokenizer", description=HELP)
    p.add_argument("--out", "-o", type=Path, default=DEFAULT_OUT, help="output folder (default: the toy profile's text_tokenizer)")
    p.add_argument("--stories", type=int, default=400, help="generated toy stories in the corpus (default 400)")
    p.add_argument("--vocab", "--vocab-size", dest="vocab", type=int, default=2048,
                   help="largest BPE vocabulary, specials included (default 2048; training stops earlier when no pair "
                        "occurs --min-frequency times)")
    p.add_argument("--min-frequency", type=int, default=2, help="a merge needs at least this many occurrences (default 2)")
    p.add_argument("--seed", type=int, default=0, help="story seeds start here (default 0)")
    return p


def run(argv: list[str] | None = None) -> int:
    """`moviedreamer train text-tokenizer ARGS` (moviedreamer/train/cli.py passes the words after the stage)."""
    try:
        args = parser().parse_args([str(a) for a in (argv or [])])
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return int(e.code or 0)
    if args.vocab < MIN_VOCAB:
        raise UserError(f"--vocab: expected at least {MIN_VOCAB} (256 bytes + 4 special tokens + merges), found {args.vocab}")
    if args.stories < 1:
        raise UserError(f"--stories: expected at least 1, found {args.stories}")
    info = train_text_tokenizer(args.out, args.stories, args.vocab, args.seed, args.min_frequency)
    print(f"text tokenizer: vocabulary of {info['vocab_size']} tokens from {info['texts']} texts of {info['stories']} stories "
          f"({info['tokens_per_char']} tokens/char) in {info['seconds']} s -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
