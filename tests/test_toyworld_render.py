"""The toy world's renderer: determinism, exact flow, boxes, visibility, speed-independent properties."""

import hashlib

import numpy as np
import pytest

from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import ACTIONS, CHARACTER_IDS, CHARACTERS, MOVES, SCENE_IDS, SCENES, ShotParams


def _digest(shots, size=(96, 96)):
    h = hashlib.sha256()
    for s in shots:
        for f in (0, 7):
            h.update(render_frame(s, f, 8, size).image.tobytes())
    return h.hexdigest()


def _shots(seed, n=20):
    rng = np.random.default_rng(seed)
    return [random_shot(rng, str(rng.choice(SCENE_IDS)), CHARACTER_IDS, 4.0, i) for i in range(n)]


def test_catalogue_is_rich_enough():
    assert len(CHARACTERS) >= 10 and len(SCENES) >= 6 and len(ACTIONS) >= 6 and len(MOVES) >= 5
    # look-alike pairs: same clothes and hat, different face
    pairs = [(a, b) for a in CHARACTERS for b in CHARACTERS if a.id < b.id and (a.clothes, a.clothes_colour, a.hat) == (b.clothes, b.clothes_colour, b.hat)]
    assert len(pairs) >= 3
    assert all((a.head_colour, a.head_shape, a.eyes) != (b.head_colour, b.head_shape, b.eyes) for a, b in pairs)


def test_same_seed_same_bytes_different_seed_differs():
    assert _digest(_shots(1)) == _digest(_shots(1))
    assert _digest(_shots(1)) != _digest(_shots(2))


@pytest.mark.parametrize("size", [(64, 64), (128, 96), (256, 256)])
def test_resolutions_and_boxes_inside(size):
    for shot in _shots(3, 10):
        fr = render_frame(shot, 3, 8, size)
        assert fr.image.shape == (size[1], size[0], 3) and fr.image.dtype == np.uint8
        for box in list(fr.boxes.values()) + list(fr.face_boxes.values()):
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
        for cid, (fx0, fy0, fx1, fy1) in fr.face_boxes.items():  # the face lies within the character
            bx0, by0, bx1, by1 = fr.boxes[cid]
            assert bx0 <= fx0 and by0 <= fy0 and fx1 <= bx1 and fy1 <= by1


def test_motion_is_real():
    shot = ShotParams("beach", ("mia",), "jump", None, "medium", "static", 4.0, 1)
    a, b = render_frame(shot, 0, 8).image, render_frame(shot, 4, 8).image
    assert (a != b).any(axis=-1).mean() > 0.01


@pytest.mark.parametrize("action,move", [("walk", "pan_right"), ("run", "zoom_in"), ("wave", "pan_left"), ("jump", "zoom_out"), ("turn", "static")])
def test_flow_is_exact_where_not_occluded(action, move):
    """Following the flow from frame t lands on the same colour in frame t+1, on shape interiors (edges are
    sampled differently after a zoom) and away from disocclusions."""
    direction = "left" if action in ("walk", "run") else None
    shot = ShotParams("city", ("tom", "ivy"), action, direction, "medium", move, 4.0, 5)
    size = (128, 128)
    biggest = 0.0
    for t in (2, 11):
        now = render_frame(shot, t, 8, size, flow=True)
        nxt = render_frame(shot, t + 1, 8, size).image
        ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
        tx, ty = np.rint(xs + now.flow[..., 0]).astype(int), np.rint(ys + now.flow[..., 1]).astype(int)
        inside = (tx >= 0) & (tx < size[0]) & (ty >= 0) & (ty < size[1])
        same = (nxt[ty.clip(0, size[1] - 1), tx.clip(0, size[0] - 1)] == now.image).all(-1)
        img = now.image.astype(int)
        pad = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
        interior = np.ones(size[::-1], bool)
        for dy in range(3):
            for dx in range(3):
                interior &= (pad[dy : dy + size[1], dx : dx + size[0]] == img).all(-1)
        check = inside & interior
        assert check.mean() > 0.5 and same[check].mean() > 0.95, (action, move, t, same[check].mean())
        biggest = max(biggest, float(np.abs(now.flow).max()))
    assert biggest > 0.05  # it moves


def test_flow_of_a_pure_pan_matches_the_camera_exactly():
    shot = ShotParams("desert", ("zed",), "stand", None, "wide", "pan_right", 4.0, 2)
    fr = render_frame(shot, 5, 8, (128, 128), flow=True)
    corner = fr.flow[:10, :10].reshape(-1, 2)  # sky: static in the world, moves by the pan only
    # the view centre moves 0.3 view-widths over the shot: 0.3 * 128 px / (4 s * 8 fps) per frame, leftwards
    np.testing.assert_allclose(corner, np.tile([-0.3 * 128 / 32, 0.0], (100, 1)), atol=1e-4)


def test_flow_of_a_walker_matches_its_speed_exactly():
    from moviedreamer.toyworld.render import SPEED, VIEW_WIDTH

    shot = ShotParams("park", ("ben",), "walk", "right", "medium", "static", 4.0, 3)
    shot_far = ShotParams("park", ("ben",), "stand", None, "medium", "static", 4.0, 3)
    fr = render_frame(shot, 6, 8, (128, 128), flow=True)
    x0, y0, x1, y1 = fr.face_boxes["ben"]
    head = fr.flow[(y0 + y1) // 2, (x0 + x1) // 2]
    # the camera tracks walkers, so the head is still on screen and the background slides by the walking speed
    np.testing.assert_allclose(head, [0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(fr.flow[2, 2], [-SPEED["walk"] / 8 * 128 / VIEW_WIDTH["medium"], 0.0], atol=1e-4)
    assert np.abs(render_frame(shot_far, 6, 8, (128, 128), flow=True).flow).max() < 1e-9  # nothing moves


def test_visible_characters_match_generated_scripts():
    for shot in _shots(9, 60):
        for f in (0, 31):
            assert set(render_frame(shot, f, 8).visible) == set(shot.characters)
