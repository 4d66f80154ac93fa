"""Best-of-N identity reranking (rerank/identity.py): the score, the candidate seeds, early acceptance, and the
renderer and pipeline wiring. Fakes stand in for the face pack where the arithmetic is what is tested; the real toy
face pack checks that a rendered character's own face scores higher than another character's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moviedreamer.errors import UserError
from moviedreamer.rerank.identity import IdentityScorer, candidate_seed, given_faces
from moviedreamer.tokenizer.render import decode_reranked

TOY_FACES = Path(__file__).resolve().parents[1] / "moviedreamer" / "weights" / "toy" / "faces"


class FakeFaces:
    """A face pack whose detector finds one face per listed embedding (encoded in the image's first pixels)."""

    fingerprint = "fake"

    def __init__(self, found: list[torch.Tensor]):
        self.found = found
        self.finder = self
        self.recognizer = self

    def find_faces(self, image):
        return list(range(len(self.found)))

    def crop(self, image, det):
        return det

    def embed_crops(self, crops):
        return torch.stack([self.found[i] for i in crops]) if crops else torch.zeros(0, 4)


def unit(*v):
    return F.normalize(torch.tensor(v, dtype=torch.float32), dim=0)


def test_score_is_the_mean_assigned_cosine_less_intruders():
    a, b, c = unit(1, 0, 0, 0), unit(0, 1, 0, 0), unit(0, 0, 1, 0)
    image = np.zeros((8, 8, 3), np.uint8)
    given = torch.stack([a, b])
    assert IdentityScorer(FakeFaces([b, a])).score(image, given) == pytest.approx(1.0)  # order does not matter
    assert IdentityScorer(FakeFaces([a])).score(image, given) == pytest.approx(0.5)  # b is missing: counts 0
    assert IdentityScorer(FakeFaces([])).score(image, given) == 0.0
    # a left-over detection like a given face (drawn twice) costs the duplicate penalty; a stranger the intruder one
    assert IdentityScorer(FakeFaces([a, b, a]), duplicate_penalty=0.1).score(image, given) == pytest.approx(0.95)
    assert IdentityScorer(FakeFaces([a, b, a]), duplicate_penalty=0.0).score(image, given) == pytest.approx(1.0)
    assert IdentityScorer(FakeFaces([a, b, c]), intruder_penalty=0.5).score(image, given) == pytest.approx(0.75)
    assert IdentityScorer(FakeFaces([a, b, c]), intruder_penalty=0.0).score(image, given) == pytest.approx(1.0)
    # Hungarian, not greedy: the best total, even if one face then takes its second choice
    ab = F.normalize(a + 0.9 * b, dim=0)
    s = IdentityScorer(FakeFaces([ab, a])).score(image, given)
    assert s == pytest.approx(float(ab @ b + a @ a) / 2) and s > float(ab @ a) / 2
    # zero rows are absent characters; no given face at all: nothing to check
    assert IdentityScorer(FakeFaces([a])).score(image, torch.stack([a, torch.zeros(4)])) == pytest.approx(1.0)
    assert IdentityScorer(FakeFaces([])).score(image, None) == 1.0
    # the script's character count: a character without a face embedding is credited for a stranger's detection
    scorer = IdentityScorer(FakeFaces([a, c]), intruder_penalty=0.5)
    assert scorer.score(image, torch.stack([a]), characters=2) == pytest.approx(1.0)  # a + the faceless one
    assert scorer.score(image, torch.stack([a])) == pytest.approx(0.5)  # count unknown: c is an intruder
    assert scorer.score(image, None, characters=2) == pytest.approx(1.0)  # no faces at all: the count alone
    assert scorer.score(image, None, characters=1) == pytest.approx(0.5)  # one too many
    assert scorer.score(image, None, characters=3) == pytest.approx(2 / 3)  # one missing
    assert scorer.score(image, None, characters=0) == pytest.approx(0.0)  # nobody meant: two intruders
    assert IdentityScorer(FakeFaces([])).score(image, None, characters=0) == 1.0


def test_a_pack_without_detector_is_refused():
    faces = FakeFaces([])
    faces.finder = None
    with pytest.raises(UserError, match="no face detector"):
        IdentityScorer(faces)


def test_candidate_seeds():
    assert candidate_seed(7, 0) == 7
    seeds = [candidate_seed(7, k) for k in range(1, 50)] + [candidate_seed(8, k) for k in range(1, 50)]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    assert candidate_seed(7, 3) == candidate_seed(7, 3) and candidate_seed(2**70, 1) >= 0


class SeedTokenizer:
    """decode() paints each row with its seed, so the test can read back which candidate was decoded."""

    def __init__(self):
        self.calls = []

    def decode(self, tokens, descriptors=None, faces=None, seed=0, **kw):
        self.calls.append(list(seed))
        return torch.stack([torch.full((3, 4, 4), (s % 251) / 255.0) for s in seed])


class SeedScorer:
    """Scores a candidate by its painted seed, from a table {seed: score}."""

    def __init__(self, table):
        self.table, self.seen = table, []

    def score(self, image, faces, characters=None, looks=None, cast=None, token_cos=None):
        self.seen.append((looks, cast))
        value = int(image[0, 0, 0])
        return next(v for s, v in self.table.items() if s % 251 == value)


def test_decode_reranked_keeps_the_best_and_stops_when_accepted():
    tok = SeedTokenizer()
    seeds = [candidate_seed(10, k) for k in range(4)] + [candidate_seed(11, k) for k in range(4)]
    table = dict(zip(seeds, [0.5, 0.97, 0.2, 0.99] + [0.3, 0.6, 0.8, 0.7]))
    out = decode_reranked(tok, SeedScorer(table), torch.zeros(2, 2, 3), seed=[10, 11], candidates=4, accept=0.95)
    assert out.picked == [1, 2] and out.tried == [2, 4]  # keyframe 0 accepted at its second candidate
    assert out.scores == [pytest.approx(0.97), pytest.approx(0.8)]
    assert tok.calls == [[seeds[0], seeds[4]], [seeds[1], seeds[5]], [seeds[6]], [seeds[7]]]  # rounds over the rest
    assert torch.equal(out.images[1], torch.full((3, 4, 4), (seeds[6] % 251) / 255.0))
    # the scorer gets each character's description (the descriptor slots after the fixed ones, in face order) and the cast
    desc, faces, cast = torch.randn(2, 6, 3), torch.randn(2, 2, 5), [torch.randn(4, 3), torch.randn(3, 3)]
    scorer = SeedScorer(table)
    decode_reranked(SeedTokenizer(), scorer, torch.zeros(2, 2, 3), desc, faces, seed=[10, 11], candidates=2, accept=0.95, cast=cast)
    (looks0, cast0), (looks1, cast1) = scorer.seen[:2]
    assert torch.equal(looks0, desc[0, 4:6]) and torch.equal(looks1, desc[1, 4:6]) and cast0 is cast[0] and cast1 is cast[1]
    # one candidate: the plain decode, with the plain seed, no scoring
    tok = SeedTokenizer()
    one = decode_reranked(tok, None, torch.zeros(2, 2, 3), seed=10, candidates=1)
    assert tok.calls == [[10, 11]] and one.tried == [1, 1] and one.picked == [0, 0]


def test_renderer_reranks_with_the_real_toy_face_pack(tmp_path):
    """Renders of two toy characters: the renderer keeps the candidate that shows the character whose face is given."""
    from moviedreamer.encoders.faces import load_face_pack
    from moviedreamer.script import load_story
    from moviedreamer.tokenizer.render import TokenizerRenderer
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.story import generate_story, read_story_params
    from moviedreamer.script.write import write_story

    faces = load_face_pack(TOY_FACES)
    scorer = IdentityScorer(faces)
    write_story(generate_story(1.0, seed=5001, resolution=(128, 128)), tmp_path / "story.yaml")
    loaded = load_story(tmp_path / "story.yaml")
    frames = {}
    for params, (_, _, _, shot) in zip(read_story_params(loaded), loaded.story.shots()):
        if len(shot.characters) == 1 and shot.characters[0] not in frames:
            frame = render_frame(params, 0, loaded.story.fps, (128, 128)).image
            found = faces.detect_and_embed(frame)
            if found:
                frames[shot.characters[0]] = (frame, found[0].embedding)
        if len(frames) == 2:
            break
    assert len(frames) == 2, "the story has two solo shots with detectable faces"
    (a_img, a_emb), (b_img, b_emb) = frames.values()
    assert scorer.score(a_img, a_emb[None]) > scorer.score(b_img, a_emb[None]) + 0.2

    class TwoPictures:
        """A 'tokenizer' whose candidates alternate between the two renders (the plain decode shows the wrong one)."""

        class decoder:
            class config:
                candidates, accept = 2, 0.95

        fingerprint = "two"

        def decode(self, tokens, descriptors=None, faces=None, seed=0, **kw):
            pick = [b_img if s == 3 else a_img for s in seed]
            return torch.stack([torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in pick])

    r = TokenizerRenderer(TwoPictures(), scorer=scorer)
    out = r.render(torch.zeros(2, 4), {"descriptors": None, "faces": a_emb[None]}, seed=3, size=(128, 128))
    assert r.last.picked == [1] and np.abs(out.astype(int) - a_img).max() <= 1
    assert "rerank2" in r.fingerprint
    plain = TokenizerRenderer(TwoPictures())  # no scorer: one candidate
    assert plain.candidates == 1 and np.abs(plain.render(torch.zeros(2, 4), None, seed=3, size=(128, 128)).astype(int) - b_img).max() <= 1


def test_config_checks_and_the_pipeline_wiring(caplog):
    from moviedreamer.encoders.faces import load_face_pack
    from moviedreamer.pipeline.loading import keyframe_renderer
    from moviedreamer.tokenizer.decoder import DecoderConfig

    with pytest.raises(UserError, match="candidates must be >= 1"):
        DecoderConfig(candidates=0).check()
    with pytest.raises(UserError, match="accept must be in"):
        DecoderConfig(accept=1.5).check()

    class Tok:
        class decoder:
            config = DecoderConfig(candidates=3)

    faces = load_face_pack(TOY_FACES)
    r = keyframe_renderer(Tok(), faces)
    assert r.candidates == 3 and isinstance(r.scorer, IdentityScorer) and r.scorer.look is None
    # the look check: on where the decoder config weighs it and the profile gives an image encoder in the descriptor space
    with pytest.raises(UserError, match="look_weight must be"):
        DecoderConfig(look_weight=-1).check()

    class LookTok:
        class decoder:
            config = DecoderConfig(candidates=3, look_weight=2.0, look_temperature=30.0, token_weight=0.5)

    vision = object()
    r = keyframe_renderer(LookTok(), faces, look_vision=vision)
    assert r.scorer.look.vision is vision and r.scorer.look.weight == 2.0 and r.scorer.look.temperature == 30.0
    assert r.scorer.token_weight == 0.5
    assert keyframe_renderer(LookTok(), faces).scorer.look is None  # no shared-space encoder: faces only
    assert keyframe_renderer(Tok(), faces, candidates=1).scorer is None
    no_detector = FakeFaces([])
    no_detector.finder = None
    with caplog.at_level("WARNING"):
        r = keyframe_renderer(Tok(), no_detector)
    assert r.candidates == 1 and "no detector" in caplog.text


def test_generate_movie_refuses_zero_candidates(tmp_path, run_cli):
    story = Path(__file__).resolve().parents[1] / "stories" / "toy" / "lost_kite.yaml"
    code, _, stderr = run_cli("generate-movie", story, "-o", tmp_path / "out", "--keyframe-candidates", "0")
    assert code == 2 and "--keyframe-candidates" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out" / "movie.mp4").exists()


def test_evaluate_reranks_and_reports_tries_and_face_counts(tmp_path):
    from moviedreamer.encoders.clip_vision import load_vision_encoder
    from moviedreamer.tokenizer.autoencoder import load_vae
    from moviedreamer.tokenizer.evaluate import evaluate
    from moviedreamer.testing.tokenizer import make_clip_folder, make_vae_folder, tiny_tokenizer

    torch.set_num_threads(1)
    make_clip_folder(tmp_path / "clip")
    make_vae_folder(tmp_path / "vae")
    vision = load_vision_encoder(tmp_path / "clip")
    model = tiny_tokenizer(vision, load_vae(tmp_path / "vae"), seed=1)
    imgs = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    pooled, patches = vision.encode_image((imgs * 255).to(torch.uint8))
    c = model.decoder.config
    items = [{"patches": patches[i], "pooled": pooled[i], "desc": torch.randn(2, c.descriptor_dim),
              "faces": torch.randn(1, c.face_dim) if i < 2 else torch.zeros(1, c.face_dim), "reference": imgs[i]} for i in range(3)]

    class Scorer:  # never satisfied where faces are given; its detector finds one face in everything
        def __init__(self):
            self.faces = self
            self.finder = self

        def find_faces(self, image):
            return [0]

        def score(self, image, faces, characters=None, looks=None, cast=None, token_cos=None):
            return 1.0 if given_faces(faces).shape[0] == 0 else 0.1

    r = evaluate(model, items, ("all",), batch=3, steps=1, scorer=Scorer(), candidates=3)["all"]
    assert r["tried"] == pytest.approx((3 + 3 + 1) / 3) and r["face_count"] == 1.0
    plain = evaluate(model, items, ("all",), batch=3, steps=1)["all"]
    assert plain["tried"] == 1.0 and "face_count" not in plain


def test_token_consistency_prefers_the_candidate_read_back_as_its_tokens():
    import math

    class ReadBack(SeedTokenizer):
        """encode(): a candidate's painted value as an angle, so its tokens' cosine to [1, 0] falls with the value."""

        def encode(self, images):
            angle = images[:, 0, 0, 0] * 255 / 251 * math.pi
            return torch.stack([torch.cos(angle), torch.sin(angle)], -1)[:, None]

    seeds = [candidate_seed(10, k) for k in range(4)]
    tokens = torch.tensor([[[1.0, 0.0]]])
    out = decode_reranked(ReadBack(), IdentityScorer(FakeFaces([]), token_weight=1.0), tokens, seed=[10], candidates=4, accept=2.0)
    closest = min(range(4), key=lambda k: seeds[k] % 251)
    assert out.picked == [closest] and out.tried == [4]
    assert out.scores[0] == pytest.approx(math.cos((seeds[closest] % 251) / 251 * math.pi))  # 1 - (1 - cos)
    plain = decode_reranked(ReadBack(), IdentityScorer(FakeFaces([])), tokens, seed=[10], candidates=4, accept=2.0)
    assert plain.picked == [0]  # without the weight every candidate scores 1: the first is kept


def test_only_a_profile_whose_vision_encoder_is_its_descriptor_encoder_shares_the_space():
    from moviedreamer.pipeline.profile import Profile

    assert Profile.load("toy").shares_descriptor_space()  # one CLIP folder for both
    assert not Profile.load("paper").shares_descriptor_space()  # LongCLIP-L text vs ViT-H images
