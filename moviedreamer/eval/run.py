"""Score a movie against its story: stream the frames shot by shot along the story's timeline (one shot
in memory at a time), then compute every metric whose components are available."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moviedreamer import metrics
from moviedreamer.errors import UserError, first_line
from moviedreamer.eval.motion_follow import follow, read_reference
from moviedreamer.eval.referee import Referee
from moviedreamer.media import read_frames
from moviedreamer.pipeline.profile import Profile
from moviedreamer.script import load_story
from moviedreamer.script.timeline import build_timeline
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.look_judge import drawn, slot_order
from moviedreamer.toyworld.story import read_story_params
from moviedreamer.toyworld.world import character

MAX_MOTION_PAIRS = 12  # flow pairs per shot (evenly spread): keeps hour-long movies cheap


@dataclass
class ShotFrames:
    index: int
    keyframe: np.ndarray
    flicker: float
    motion: float
    follow: dict | None = None  # how its motion follows its motion reference (eval/motion_follow.py)


@dataclass
class Evaluation:
    movie: str
    metrics: dict = field(default_factory=dict)
    per_shot: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    strips: list = field(default_factory=list)  # per shot: first / middle / last frame (for the report)

    def to_json(self) -> dict:
        return {"movie": self.movie, "metrics": self.metrics, "per_shot": self.per_shot, "notes": self.notes}


def find_movie(path: Path) -> Path:
    if path.is_dir():
        if (path / "movie.mp4").is_file():
            return path / "movie.mp4"
        raise UserError(f"{path}: expected a generate-movie folder with movie.mp4, found none")
    if path.is_file():
        return path
    raise UserError(f"{path}: no such file or folder (expected a movie (.mp4) or a generate-movie output folder)")


def story_for(path: Path, story: Path | None):
    if story is None and path.is_dir() and (path / "manifest.json").is_file():
        story = json.loads((path / "manifest.json").read_text()).get("story")
    if story is None:
        raise UserError(f"{path}: expected --story STORY.yaml (the story the movie was made from)")
    return load_story(story)


def stream_shots(movie: Path, timeline, referee: Referee | None = None, params=None, fps: int = 8, references: dict | None = None,
                 action_judge=None) -> list[ShotFrames]:
    """One shot in memory at a time; the referee (with the shots' toy-world parameters) sees each whole clip, and a
    shot with a motion reference ({shot index: video path}) is compared with it."""
    frames_iter, out = read_frames(movie), []
    for shot in timeline:
        frames = []
        for frame in frames_iter:
            frames.append(frame)
            if len(frames) == shot.n_frames:
                break
        if len(frames) < shot.n_frames:
            raise UserError(f"{movie}: has fewer frames than the story's {timeline[-1].end_frame} (ran out in shot {shot.index})")
        clip = np.stack(frames)
        stride = max(1, (len(clip) - 1) // MAX_MOTION_PAIRS)
        followed = None
        if references and shot.index in references:
            ref = read_reference(references[shot.index], len(clip), fps, (clip.shape[2], clip.shape[1]))
            followed = follow(clip, ref, action_judge)
        out.append(ShotFrames(shot.index, clip[0], metrics.flicker_score(clip), metrics.motion_magnitude(clip, stride), followed))
        if referee is not None:
            referee.add_shot(shot.index, params[shot.index], clip, fps)
    return out


def evaluate(path: Path, story_path: Path | None = None, profile: str | None = None) -> Evaluation:
    movie = find_movie(path)  # a missing folder is said as such, before the story is looked for
    loaded = story_for(path, story_path)
    timeline = build_timeline(loaded.story)
    models = Profile.load(profile)
    ev = Evaluation(str(movie))
    referee, params = make_referee(ev, loaded, models)
    references = {s.index: loaded.resolve(s.shot.motion_reference) for s in timeline if s.shot.motion_reference}
    judge = None
    if references:
        try:
            judge = models.action_judge
        except UserError as e:
            ev.notes.append(f"motion references: the action judge is unavailable ({first_line(e)}); flow figures only")
    shots = stream_shots(movie, timeline, referee, params, loaded.story.fps, references, judge)
    motion = [s.motion for s in shots]
    ev.metrics["flicker"] = float(np.mean([s.flicker for s in shots]))
    ev.metrics["motion_px_per_frame"] = float(np.mean(motion))
    ev.metrics["dynamic_degree"] = metrics.dynamic_degree(motion)
    ev.per_shot = [{"index": s.index, "flicker": round(s.flicker, 5), "motion": round(s.motion, 4)} | ({"motion_reference": s.follow} if s.follow else {})
                   for s in shots]
    followed = [s.follow for s in shots if s.follow]
    if followed:  # shots with a motion reference: how closely their motion follows it
        ev.metrics["motion_reference"] = {"shots": len(followed), "flow_follow": float(np.mean([f["flow_follow"] for f in followed]))}
        if all("action_agrees" in f for f in followed):
            ev.metrics["motion_reference"]["action_agreement"] = float(np.mean([f["action_agrees"] for f in followed]))
    keyframes = np.stack([s.keyframe for s in shots])
    if referee is not None:
        ev.metrics["referee"], rows = referee.summary()
        for row, ref in zip(ev.per_shot, rows):
            row["referee"] = {k: v for k, v in ref.items() if k != "index"}
        ev.strips = [s.strip for s in referee.shots]
    judge_keyframes(ev, loaded, keyframes, models)
    _faces_and_clip(ev, loaded, keyframes, timeline, models)
    return ev


def make_referee(ev: Evaluation, loaded, models: Profile) -> tuple[Referee | None, list | None]:
    """The video referee for stories in the toy vocabulary with a profile that has an action judge, else None."""
    try:
        params = read_story_params(loaded)
        referee = Referee(models.action_judge, models.vision, models.floor_vae)
    except UserError as e:
        ev.metrics["referee"] = None
        ev.notes.append(f"referee (action, frame distance, decay): not applicable ({first_line(e)})")
        return None, None
    return referee, params



def judge_keyframes(ev: Evaluation, loaded, keyframes: np.ndarray, models: Profile) -> None:
    """Script fidelity for stories in the toy vocabulary: the judge on each keyframe vs the ground truth."""
    try:
        params = read_story_params(loaded)
        judge = models.judge
    except UserError as e:
        ev.metrics["judge"] = None
        ev.notes.append(f"judge: not applicable ({first_line(e)})")
        return
    size = tuple(loaded.story.resolution)
    frames = [render_frame(p, 0, loaded.story.fps, size) for p in params]
    truths = [{"scene": p.scene, "characters": f.visible, "order": slot_order(f)} for p, f in zip(params, frames)]
    if getattr(judge, "reads_looks", False):  # the compositional judge: which of the story's characters, and how drawn
        preds = judge.predict(keyframes, cast=sorted({c for p in params for c in p.characters}))
    else:
        preds = judge.predict(keyframes)
    ev.metrics["judge"] = metrics.judge_fidelity(preds, truths)
    looks = look_fidelity(preds, truths)
    if looks is not None:
        ev.metrics["judge"]["look_attributes"] = looks
    for row, p, t in zip(ev.per_shot, preds, truths):
        row["judge"] = {"scene": p["scene"], "characters": list(p["characters"]), "correct": p["scene"] == t["scene"] and set(p["characters"]) == set(t["characters"])}


def look_fidelity(preds: list[dict], truths: list[dict]) -> float | None:
    """Share of the attributes (kind, face, clothes, hat) the judge reads as the script wrote them, over the
    characters of shots where it found as many characters as the truth shows (slot by slot, left to right);
    None for a judge that does not read looks."""
    hits = total = 0
    for p, t in zip(preds, truths):
        if "looks" not in p or len(p["looks"]) != len(t["order"]):
            continue
        for look, cid in zip(p["looks"], t["order"]):
            c = character(cid)
            hits += sum(look[k] == drawn(c, k) for k in look)
            total += len(look)
    return hits / total if total else None


def solo_appearances(faces, characters_per_shot, keyframes) -> dict[str, list[np.ndarray]]:
    """Character id → face embeddings of its solo shots, in order: a face is attributed to a character only when
    the shot lists that character alone (the largest face detected in the keyframe)."""
    appearances: dict[str, list] = {}
    for chars, frame in zip(characters_per_shot, keyframes):
        if len(chars) != 1:
            continue
        found = faces.detect_and_embed(frame)
        if found:
            biggest = max(found, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
            appearances.setdefault(chars[0], []).append(np.asarray(biggest.embedding))
    return appearances


def _faces_and_clip(ev: Evaluation, loaded, keyframes, timeline, models: Profile) -> None:
    try:
        faces = models.faces
        appearances = solo_appearances(faces, [shot.shot.characters for shot in timeline], keyframes)
        per_char = {}
        for char in loaded.story.characters:
            ref = np.asarray(faces.embed_reference(loaded.resolve(char.faces[0]))) if char.faces else None
            per_char[char.id] = metrics.consistency(appearances.get(char.id, []), ref)
        ev.metrics["consistency"] = per_char
    except UserError as e:
        ev.metrics["consistency"] = None
        ev.notes.append(f"consistency: unavailable ({first_line(e)})")
    try:
        descriptor, vision = models.descriptor, models.vision
        if not models.shares_descriptor_space():
            raise UserError("the descriptor and vision encoders are different models, so their embeddings are not comparable")
        texts = [f"{loaded.story.scenes[s.scene_index].setting}. {s.shot.action}. {s.shot.camera}" for s in timeline]
        text_emb = descriptor.encode(texts).embeddings.detach().cpu().numpy()
        image_emb = vision.encode_image(keyframes)[0].detach().cpu().numpy()
        ev.metrics["clip_score"] = metrics.clip_score(text_emb, image_emb)
    except UserError as e:
        ev.metrics["clip_score"] = None
        ev.notes.append(f"clip score: unavailable ({first_line(e)})")

