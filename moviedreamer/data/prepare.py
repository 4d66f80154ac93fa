"""`prepare-data`: a folder of videos → training shards (docs/data_format.md), one episode per video.

Resumable: `prepare_state.json` in the output folder records each video (by name, size and mtime) with its
episode id, or why it was skipped; a finished video is not processed again, a failed one is retried. Every file
is written atomically and `index.json` is rewritten after each video, so a killed run leaves a valid dataset of
the videos finished so far. A video that cannot be decoded is reported and skipped, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from moviedreamer.data.captions import find_sidecar, read_captions
from moviedreamer.data.characters import MAX_DISTANCE, cluster_faces
from moviedreamer.data.video import VIDEO_SUFFIXES, BrokenVideo, detect_shots, dis_flow, grab_frames, probe
from moviedreamer.errors import UserError
from moviedreamer.safeio import load_json, save_safetensors
from moviedreamer.script.models import MAX_SHOT_SECONDS
from moviedreamer.script.write import write_story

logger = logging.getLogger(__name__)
FORMAT = {"format": "moviedreamer-shards", "version": 1}
STATE_FILE = "prepare_state.json"


@dataclass(frozen=True)
class PrepareOptions:
    size: tuple[int, int] = (128, 128)  # (W, H) of keyframes and clips
    fps: int = 8  # training fps of the clips
    clip_frames: int = 8
    face_size: int = 64
    cut_detector: str = "adaptive"  # PySceneDetect AdaptiveDetector (or "content")
    cut_threshold: float | None = None  # None: the detector's default (data/video.py)
    min_shot_seconds: float = 0.5
    cluster_distance: float = MAX_DISTANCE
    episodes_per_shard: int = 64


@dataclass
class PrepareReport:
    prepared: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # video → why


def list_videos(videos_dir: Path) -> list[Path]:
    if not videos_dir.is_dir():
        raise UserError(f"{videos_dir}: expected a folder of videos ({', '.join(VIDEO_SUFFIXES)}), found " + ("a file" if videos_dir.exists() else "no such folder"))
    videos = sorted(p for p in videos_dir.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        raise UserError(f"{videos_dir}: expected video files ({', '.join(VIDEO_SUFFIXES)}), found none")
    return videos


def prepare_data(videos_dir: Path, out_dir: Path, captions_dir: Path | None = None, faces=None, options: PrepareOptions = PrepareOptions(),
                 progress: bool = True) -> PrepareReport:
    """`faces`: a FaceEmbedder with a detector (moviedreamer.encoders.faces), or None to skip faces and characters."""
    videos = list_videos(Path(videos_dir))
    if captions_dir is not None and not Path(captions_dir).is_dir():
        raise UserError(f"--captions {captions_dir}: expected a folder of caption sidecars (NAME.srt/.json/.yaml), found none")
    out = Path(out_dir)
    state = _load_state(out, options)
    report = PrepareReport()
    bar = tqdm(videos, desc="prepare-data", unit="video", disable=not progress)
    for video in bar:
        name = str(video.relative_to(videos_dir))
        key = _file_key(video)
        entry = state["videos"].get(name)
        if entry and entry.get("status") == "done" and entry.get("key") == key and _episode_complete(out, entry):
            report.reused.append(name)
            continue
        episode = entry["episode"] if entry and "episode" in entry else f"ep-{state['next_episode']:06d}"
        if not (entry and "episode" in entry):
            state["next_episode"] += 1
        shard = f"shard-{int(episode[3:]) // options.episodes_per_shard:05d}"
        try:
            info = _prepare_video(video, out / shard / episode, find_sidecar(captions_dir, video), faces, options, len(state["identities"]))
        except BrokenVideo as e:
            logger.warning("skipping %s", e)
            bar.write(f"warning: skipped {e}")
            state["videos"][name] = {"status": "failed", "key": key, "episode": episode, "error": str(e)}
            report.skipped[name] = str(e)
        else:
            state["identities"] += [f"{episode}/{n}" for n in info["characters"]]  # face_identity indexes this list
            state["videos"][name] = {"status": "done", "key": key, "episode": episode, "shard": shard, **info}
            report.prepared.append(name)
        _write_json(state, out / STATE_FILE)
        _write_index(out, state, options)
    if not report.prepared and not report.reused:
        raise UserError(f"{videos_dir}: no video could be prepared:\n" + "\n".join(f"  {v}: {why}" for v, why in report.skipped.items()))
    return report


def _prepare_video(video: Path, base: Path, sidecar: Path | None, faces, o: PrepareOptions, identity_offset: int) -> dict:
    captions = read_captions(sidecar)
    info = probe(video)
    shots = detect_shots(video, info, o.cut_threshold, o.min_shot_seconds, o.cut_detector)
    step = info.fps / o.fps
    picks = [[min(b - 1, a + round(k * step)) for k in range(o.clip_frames)] for a, b in shots]
    frames = grab_frames(video, sorted({i for p in picks for i in p}), o.size)
    clips = np.stack([np.stack([frames[i] for i in p]) for p in picks])  # [S, T, H, W, 3]
    keyframes = clips[:, 0]
    flow = np.stack([dis_flow(c) for c in clips])

    crops, embeddings, face_shot, face_boxes = [], [], [], []
    if faces is not None:
        for s, kf in enumerate(keyframes):
            for f in faces.detect_and_embed(kf):
                crops.append(_resize(faces.recognizer.crop(kf, f), o.face_size))
                embeddings.append(np.asarray(f.embedding, np.float32))
                face_shot.append(s)
                face_boxes.append([round(float(v), 1) for v in f.bbox])
    labels = cluster_faces(np.stack(embeddings), o.cluster_distance) if embeddings else np.zeros(0, np.int64)
    names = [f"c{k + 1}" for k in range(int(labels.max()) + 1 if len(labels) else 0)]

    meta, story_shots = [], []
    for s, (a, b) in enumerate(shots):
        start, end = a / info.fps, b / info.fps
        text = captions.for_shot(start, end)
        here = sorted({names[labels[i]] for i in range(len(labels)) if face_shot[i] == s}, key=names.index)
        boxes = {names[labels[i]]: face_boxes[i] for i in range(len(labels)) if face_shot[i] == s}
        meta.append({"scene": text["setting"], "characters": here, "action": text["action"], "camera": text["camera"],
                     "boxes": {}, "face_boxes": boxes, "start": round(start, 3), "end": round(end, 3), "frames": [a, b]})
        story_shots.append({"duration": round(min(MAX_SHOT_SECONDS, max(end - start, 1 / info.fps)), 3), "characters": here,
                            "action": text["action"], "camera": text["camera"], "_setting": text["setting"]})
    counts = {n: int((labels == k).sum()) for k, n in enumerate(names)}
    story = {
        "title": captions.title or video.stem, "fps": o.fps, "resolution": list(o.size), "seed": 0,
        "characters": [{"id": n, "name": f"Character {n[1:]}", "description": f"a person seen in {counts[n]} shot(s) of {video.name}"} for n in names],
        "scenes": _scenes(story_shots),
    }
    tensors = {
        "keyframes": torch.from_numpy(np.ascontiguousarray(keyframes)),
        "clips": torch.from_numpy(clips),
        "flow": torch.from_numpy(flow),
        "faces": torch.from_numpy(np.stack(crops) if crops else np.zeros((0, o.face_size, o.face_size, 3), np.uint8)),
        "face_identity": torch.from_numpy(labels.astype(np.int64) + identity_offset),
        "face_shot": torch.tensor(face_shot, dtype=torch.int64),
    }
    if faces is not None:  # the ArcFace embeddings the clustering used, aligned with `faces`: the AR stage reads them
        tensors["face_embeddings"] = torch.from_numpy(np.stack(embeddings) if embeddings else np.zeros((0, faces.embed_dim), np.float32))
    base.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(tensors, base.with_suffix(".safetensors"))
    tmp = base.with_name(base.name + ".yaml.partial")
    write_story(story, tmp)
    os.replace(tmp, base.with_suffix(".yaml"))
    _write_json(meta, base.with_suffix(".json"))  # written last: marks the episode complete
    return {"shots": len(shots), "faces": len(labels), "characters": names, "fps": info.fps, "seconds": round(info.seconds, 3)}


def _scenes(shots: list[dict]) -> list[dict]:
    """Consecutive shots with the same setting form one scene."""
    scenes = []
    for shot in shots:
        setting = shot.pop("_setting")
        if not scenes or scenes[-1]["setting"] != setting:
            scenes.append({"id": f"scene{len(scenes) + 1}", "setting": setting, "shots": []})
        scenes[-1]["shots"].append(shot)
    return scenes


def _write_index(out: Path, state: dict, o: PrepareOptions) -> None:
    """index.json over the finished episodes; identities are `episode/cK`, in the order they were found."""
    done = sorted((e for e in state["videos"].values() if e.get("status") == "done"), key=lambda e: e["episode"])
    episodes = [{"id": e["episode"], "shard": e["shard"], "shots": e["shots"], "faces": e["faces"]} for e in done]
    index = {**FORMAT, "source": "prepare-data", "resolution": list(o.size), "fps": o.fps, "clip_frames": o.clip_frames,
             "face_size": o.face_size, "identities": state["identities"], "episodes_per_shard": o.episodes_per_shard, "episodes": episodes}
    _write_json(index, out / "index.json")


def _load_state(out: Path, o: PrepareOptions) -> dict:
    opts = json.loads(json.dumps(asdict(o)))
    path = out / STATE_FILE
    if not path.is_file():
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{out}: expected an empty folder or one prepare-data wrote before (with {STATE_FILE}), found other files")
        out.mkdir(parents=True, exist_ok=True)
        return {"options": opts, "next_episode": 0, "identities": [], "videos": {}}
    state = load_json(path)
    if state.get("options") != opts:
        changed = [k for k in opts if state.get("options", {}).get(k) != opts[k]]
        raise UserError(f"{out}: was prepared with other settings ({', '.join(changed)}); use the same settings to resume, or a new folder")
    return state


def _episode_complete(out: Path, entry: dict) -> bool:
    base = out / entry.get("shard", "") / entry["episode"]
    return all(base.with_suffix(s).is_file() for s in (".safetensors", ".yaml", ".json"))


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    # OpenCV is heavy: loaded only for optical flow
    import cv2

    return rgb if rgb.shape[:2] == (size, size) else cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def _write_json(data, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
