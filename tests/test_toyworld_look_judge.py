"""The compositional frame judge's plumbing: slot labels left to right, the cast assignment, save/load."""

import numpy as np
import torch

from moviedreamer.toyworld.look_judge import ATTRIBUTE_SIZES, JUDGED, SLOTS, drawn, LookJudge, _assign, _cast_indices, load_look_judge, sample_batch, save_look_judge
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.world import ATTRIBUTES, ShotParams, character, look_id


def test_slot_labels_follow_faces_left_to_right():
    images, lab = sample_batch(np.random.default_rng(1), 12, augment=False)
    assert images.shape == (12, 128, 128, 3)
    for j, order in enumerate(lab["visible"]):
        assert lab["present"][j].sum() == len(order) <= SLOTS
        for s, cid in enumerate(order):
            assert ATTRIBUTES["head_colour"][lab["head_colour"][j, s]] == character(cid).head_colour
        assert (lab["kind"][j, len(order):] == -1).all()


def test_the_cast_assignment_picks_the_most_likely_members():
    a = look_id({"kind": "cat", "head_colour": "red", "clothes_colour": "blue"})
    b = look_id({"kind": "robot", "head_colour": "green", "clothes_colour": "white"})
    c = look_id({"kind": "cat", "head_colour": "red", "clothes_colour": "white"})  # a's look-alike but for the clothes
    cast = [a, b, c]
    logp = {k: torch.full((SLOTS, n), -9.0) for k, n in ATTRIBUTE_SIZES.items()}
    for slot, cid in ((0, b), (1, c)):  # slot 0 shows b, slot 1 shows c
        for k in ATTRIBUTE_SIZES:
            logp[k][slot, JUDGED[k].index(drawn(character(cid), k))] = 0.0
    assert _assign([0, 1], logp, cast, _cast_indices(cast)) == (b, c)
    assert _assign([], logp, cast, _cast_indices(cast)) == ()


def test_save_and_load_give_the_same_predictions(tmp_path):
    torch.manual_seed(0)
    model = LookJudge(width=8, slot_hidden=32).eval()
    frame = render_frame(ShotParams("beach", ("mia", "tom"), "wave", None, "medium", "static", 3.0, 2), 0).image[None]
    save_look_judge(model, tmp_path)
    again = load_look_judge(tmp_path)
    p, q = model.predict(frame), again.predict(frame)
    assert p[0]["scene"] == q[0]["scene"] and len(p[0]["looks"]) == len(q[0]["looks"])
