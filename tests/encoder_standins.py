"""The paper formats' tiny stand-ins, for the encoder tests: they live in moviedreamer/testing/formats.py (bench/ and
the paper-profile test share them); the names the tests import are re-exported here."""

from moviedreamer.testing.formats import (  # noqa: F401
    CLIP_VOCAB,
    LONG_CTX,
    SAMPLE_TEXTS,
    TINY_VIT_H_CFG,
    TinyGenderAge,
    TinySCRFD,
    make_hf_clip_full,
    make_hf_clip_text,
    make_hf_clip_vision,
    make_insightface_pack,
    make_llama_tokenizer_folder,
    make_longclip_pt,
    make_open_clip_vith_folder,
    randomize_,
)
