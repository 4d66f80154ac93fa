"""The compositional frame judge's plumbing: face labels left to right, the face map's targets decode back to the
faces, crops hold the face, the cast assignment, save/load."""

import numpy as np
import torch

from moviedreamer.toyworld.look_judge import (
    ATTRIBUTE_SIZES,
    JUDGED,
    LookJudge,
    _assign,
    _cast_indices,
    crop_boxes,
    drawn,
    load_look_judge,
    save_look_judge,
)
from moviedreamer.toyworld.look_judge_data import face_targets, sample_batch
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.world import ATTRIBUTES, ShotParams, character, look_id


def test_face_labels_run_left_to_right_with_their_attributes():
    images, lab = sample_batch(np.random.default_rng(1), 12, augment=False)
    assert images.shape == (12, 128, 128, 3)
    row = 0
    for faces, order in zip(lab["faces"], lab["visible"]):
        assert len(faces) == len(order) <= 3
        assert (np.diff(faces[:, 0]) >= 0).all()
        for cid in order:
            assert ATTRIBUTES["head_colour"][lab["head_colour"][row]] == character(cid).head_colour
            row += 1
    assert all(len(lab[k]) == row for k in ATTRIBUTE_SIZES)


def test_the_face_map_targets_decode_back_to_the_faces():
    faces = [np.array([[20.0, 70.0, 12.0], [61.0, 66.0, 14.0]], np.float32), np.zeros((0, 3), np.float32), np.array([[64.0, 50.0, 52.0]], np.float32)]
    heat, cells, reg = face_targets(faces)
    assert heat.shape == (3, 32, 32) and heat[1].max() == 0
    face_map = torch.full((3, 4, 32, 32), -9.0)
    for (b, y, x), (log_size, ox, oy) in zip(cells.tolist(), reg.tolist()):
        face_map[b, :, y, x] = torch.tensor([9.0, log_size, float(torch.logit(torch.tensor(ox))), float(torch.logit(torch.tensor(oy)))])
    found = LookJudge.find_faces(face_map)
    for want, (centres, sizes) in zip(faces, found):
        assert len(centres) == len(want)
        if len(want):
            assert torch.allclose(centres, torch.from_numpy(want[:, :2]), atol=0.01)
            assert torch.allclose(sizes, torch.from_numpy(want[:, 2]), rtol=1e-3)


def test_a_crop_holds_the_face_and_what_is_below_it():
    box = crop_boxes(torch.tensor([[40.0, 50.0]]), torch.tensor([10.0]))[0]
    x0, y0, x1, y1 = box.tolist()
    assert x0 < 35 and x1 > 45 and y0 < 45 and y1 > 60  # the face box 35..45 x 45..55, and the clothes below


def test_the_cast_assignment_picks_the_most_likely_members():
    a = look_id({"kind": "cat", "head_colour": "red", "clothes_colour": "blue"})
    b = look_id({"kind": "robot", "head_colour": "green", "clothes_colour": "white"})
    c = look_id({"kind": "cat", "head_colour": "red", "clothes_colour": "white"})  # a's look-alike but for the clothes
    cast = [a, b, c]
    logp = {k: torch.full((2, n), -9.0) for k, n in ATTRIBUTE_SIZES.items()}
    for row, cid in ((0, b), (1, c)):  # the first face shows b, the second c
        for k in ATTRIBUTE_SIZES:
            logp[k][row, JUDGED[k].index(drawn(character(cid), k))] = 0.0
    assert _assign([0, 1], logp, cast, _cast_indices(cast)) == (b, c)
    assert _assign([], logp, cast, _cast_indices(cast)) == ()


def test_save_and_load_give_the_same_predictions(tmp_path):
    torch.manual_seed(0)
    model = LookJudge(width=8, reader_width=8).eval()
    frame = render_frame(ShotParams("beach", ("mia", "tom"), "wave", None, "medium", "static", 3.0, 2), 0).image[None]
    save_look_judge(model, tmp_path)
    again = load_look_judge(tmp_path)
    p, q = model.predict(frame), again.predict(frame)
    assert p[0]["scene"] == q[0]["scene"] and len(p[0]["looks"]) == len(q[0]["looks"])
