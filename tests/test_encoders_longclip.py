"""Descriptor encoder: LongCLIP .pt loaded faithfully (checked against an independent forward), HF LongCLIP,
the toy open_clip folder, truncation reporting, caching, clear errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from encoder_standins import make_hf_clip_full, make_hf_clip_text, make_longclip_pt
from moviedreamer.encoders.longclip import (
    CONTEXT_LENGTH,
    load_descriptor_encoder,
    merge_longclip_positional_embedding,
)
from moviedreamer.errors import CheckpointError, UserError

# ≥ 40 tokens, so the EOT sits past position 20 and both positional tables matter
LONG_TEXT = ("a girl with a round orange face, big black eyes, a blue dress and a red hat runs along the sunny beach "
             "while the wind lifts her kite over the blue sea and yellow sand")
SHORT_TEXT = "a snowy forest at night"


@pytest.fixture(scope="module")
def longclip_pt(tmp_path_factory):
    return make_longclip_pt(tmp_path_factory.mktemp("longclip"))


@pytest.fixture(scope="module")
def longclip(longclip_pt):
    return load_descriptor_encoder(longclip_pt, "longclip-pt")


def reference_text_forward(state: dict, ids: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's text transformer in plain torch ops, written independently of open_clip: token + positional
    embedding, pre-LN residual blocks (causal multi-head attention, QuickGELU MLP), ln_final, EOT pooling, projection."""
    w = {k: v.float() for k, v in state.items()}
    width = w["ln_final.weight"].shape[0]
    heads = width // 64
    layers = len({k.split(".")[2] for k in w if k.startswith("transformer.resblocks.")})
    n, length = ids.shape
    x = w["token_embedding.weight"][ids] + pe[:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps=1e-5)
        q, k, v = (h @ w[p + "attn.in_proj_weight"].T + w[p + "attn.in_proj_bias"]).split(width, dim=-1)
        q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads) + causal, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(n, length, width)
        x = x + o @ w[p + "attn.out_proj.weight"].T + w[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (width,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps=1e-5)
        h = h @ w[p + "mlp.c_fc.weight"].T + w[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ w[p + "mlp.c_proj.weight"].T + w[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (width,), w["ln_final.weight"], w["ln_final.bias"], eps=1e-5)
    eot = ids.argmax(dim=-1)
    return x[torch.arange(n), eot] @ w["text_projection"]


def test_longclip_pt_matches_an_independent_forward(longclip_pt, longclip):
    import open_clip

    state = torch.load(longclip_pt, weights_only=True)
    ids = open_clip.tokenize([LONG_TEXT, SHORT_TEXT], context_length=CONTEXT_LENGTH)
    assert (ids[0] > 0).sum() > 30  # the EOT of the long text is past position 20

    pe, pe_res = state["positional_embedding"].float(), state["positional_embedding_res"].float()
    merged = torch.cat([pe[:20], pe_res[20:]])
    expected = reference_text_forward(state, ids, merged)
    got = longclip.encode([LONG_TEXT, SHORT_TEXT]).embeddings
    assert got.shape == (2, state["text_projection"].shape[1])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    # the test can fail: a wrong merge gives a different embedding
    only_pe = reference_text_forward(state, ids, pe)  # ignores positional_embedding_res
    only_res = reference_text_forward(state, ids, pe_res)  # ignores the kept first 20 rows
    assert (only_pe[0] - got[0]).abs().max() > 1e-3
    assert (only_res - got).abs().max() > 1e-3


def test_merge_takes_first_20_rows_from_pe_and_the_rest_from_pe_res():
    pe, pe_res = torch.zeros(248, 4), torch.ones(248, 4)
    merged = merge_longclip_positional_embedding(pe, pe_res)
    assert merged.shape == (248, 4)
    assert merged[:20].eq(0).all() and merged[20:].eq(1).all()
    # LongCLIP's own formula: pe * mask1 + pe_res * mask2
    pe, pe_res = torch.randn(248, 4), torch.randn(248, 4)
    mask1 = torch.zeros(248, 1)
    mask1[:20] = 1
    torch.testing.assert_close(merge_longclip_positional_embedding(pe, pe_res), pe * mask1 + pe_res * (1 - mask1))


def test_truncation_is_reported(longclip, caplog):
    long = "the red kite flies high above the sea " * 40  # ~ 320 tokens
    out = longclip.encode([SHORT_TEXT, long])
    assert out.truncated == [False, True]
    assert out.n_tokens[0] < CONTEXT_LENGTH < out.n_tokens[1]
    assert out.any_truncated
    assert torch.isfinite(out.embeddings).all()
    assert "truncated" in caplog.text


def test_same_descriptor_is_encoded_once(longclip_pt):
    enc = load_descriptor_encoder(longclip_pt)  # format sniffed from the path
    seen = []
    forward = enc.model.forward
    enc.model.forward = lambda ids: (seen.append(ids.shape[0]), forward(ids))[1]
    a = enc.encode([SHORT_TEXT, LONG_TEXT, SHORT_TEXT])
    b = enc.encode([LONG_TEXT])
    assert seen == [2]  # one batch, two distinct texts; the second call is served from the cache
    torch.testing.assert_close(b.embeddings[0], a.embeddings[1])
    torch.testing.assert_close(a.embeddings[0], a.embeddings[2])
    assert enc.encode([SHORT_TEXT], normalize=True).embeddings.norm(dim=-1).sub(1).abs().max() < 1e-5
    # cached embeddings are ordinary tensors: a model trained on them can backpropagate
    torch.nn.Linear(enc.embed_dim, 2)(b.embeddings).sum().backward()


def test_more_texts_than_the_cache_holds(longclip_pt):
    enc = load_descriptor_encoder(longclip_pt, cache_size=2)
    texts = [f"shot number {i}" for i in range(5)]
    out = enc.encode(texts + texts[:1])
    assert out.embeddings.shape[0] == 6 and len(enc.cache) == 2
    torch.testing.assert_close(out.embeddings[0], out.embeddings[5])


def test_hf_longclip_folder(tmp_path):
    enc = load_descriptor_encoder(make_hf_clip_text(tmp_path / "longclip-hf"))
    assert enc.context_length == CONTEXT_LENGTH
    out = enc.encode([SHORT_TEXT, LONG_TEXT, "word " * 300])
    assert out.embeddings.shape == (3, 32) and torch.isfinite(out.embeddings).all()
    assert out.truncated == [False, False, True]
    assert len(enc.fingerprint) == 16


def test_whole_hf_clip_model_folder_gives_its_text_tower(tmp_path):
    """LongCLIP-L converted to HF is a whole CLIPModel folder (projection_dim at the top level)."""
    import open_clip
    from transformers import CLIPModel

    folder = make_hf_clip_full(tmp_path / "LongCLIP-L-hf")
    enc = load_descriptor_encoder(folder, "hf-model")
    assert enc.context_length == CONTEXT_LENGTH
    got = enc.encode(LONG_TEXT, normalize=True).embeddings
    with torch.no_grad():
        out = CLIPModel.from_pretrained(str(folder)).eval()(
            input_ids=open_clip.tokenize([LONG_TEXT], context_length=CONTEXT_LENGTH), pixel_values=torch.zeros(1, 3, 56, 56))
    torch.testing.assert_close(got, out.text_embeds)


def test_toy_open_clip_folder_matches_open_clip(tmp_path):
    import open_clip

    from moviedreamer.encoders.openclip_folder import build_clip, save_open_clip_folder, toy_clip_config

    cfg = toy_clip_config(embed_dim=16, image_size=32, patch_size=16, vision_width=32, vision_layers=1, text_width=32, text_heads=2, text_layers=1)
    torch.manual_seed(0)
    clip = build_clip(cfg).eval()
    save_open_clip_folder(clip, cfg, tmp_path / "clip")
    enc = load_descriptor_encoder(tmp_path / "clip")
    with torch.no_grad():
        expected = clip.encode_text(open_clip.tokenize([LONG_TEXT], context_length=CONTEXT_LENGTH))
    torch.testing.assert_close(enc.encode(LONG_TEXT).embeddings, expected)


def test_plain_clip_checkpoint_is_refused_clearly(tmp_path, longclip_pt):
    state = torch.load(longclip_pt, weights_only=True)
    del state["positional_embedding_res"]
    torch.save(state, tmp_path / "clip.pt")
    with pytest.raises(CheckpointError, match="positional_embedding_res"):
        load_descriptor_encoder(tmp_path / "clip.pt", "longclip-pt")


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "folder", "not_clip"])
def test_bad_longclip_files_name_the_file(tmp_path, case):
    path = tmp_path / "longclip-L.pt"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "corrupt":
        path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    elif case == "folder":
        path.mkdir()
    elif case == "not_clip":
        torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError) as err:
        load_descriptor_encoder(path, "longclip-pt")
    assert str(path) in str(err.value)


def test_bad_hf_folders_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_descriptor_encoder(tmp_path, "hf-clip-text")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json.*valid JSON"):
        load_descriptor_encoder(tmp_path, "hf-clip-text")
    (tmp_path / "config.json").write_text('{"model_type": "clip_text_model"}')
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_descriptor_encoder(tmp_path, "hf-clip-text")
    with pytest.raises(CheckpointError, match="no such"):
        load_descriptor_encoder(tmp_path / "nowhere")


def test_non_text_input_is_a_user_error(longclip):
    with pytest.raises(UserError, match="descriptor texts"):
        longclip.encode([SHORT_TEXT, 3])
