"""Resume keys: for each shot, a hash of everything its plan, keyframe and clip depend on.

plan(t)     = H(planner, encoder, character sheet, references, script of shot t, seed t, plan(t-1))
keyframe(t) = H(keyframe renderer, plan(t), script of shot t, resolution)
clip(t)     = H(clip renderer, keyframe(t), frames, fps, end frame: next keyframe if continuous / end_frame file)

The chain through plan(t-1) is what makes an edit re-render exactly the shots after it: the AR model's
history changes for all of them, and for nothing before.
"""

from __future__ import annotations

from dataclasses import dataclass

from moviedreamer.pipeline.state import file_digest, unit_key


@dataclass
class UnitKeys:
    plan: list[str]
    keyframe: list[str]
    clip: list[str]


def compute_keys(components, loaded, story, timeline) -> UnitKeys:
    def files(paths):
        return [file_digest(loaded.resolve(p)) for p in paths]

    sheet = {
        "style": story.style,
        "characters": [{"id": c.id, "name": c.name, "description": c.description, "faces": files(c.faces),
                        **({"references": files(c.references)} if c.references else {})} for c in story.characters],
        "references": files(story.references),
    }
    plan, keyframe, clip = [], [], []
    previous = unit_key("start", components.planner.fingerprint, components.encoder.fingerprint, sheet)
    scripts = []
    for shot in timeline:
        scene = story.scenes[shot.scene_index]
        script = {"scene": scene.id, "setting": scene.setting, "plot": scene.plot, "shot": shot.shot.model_dump(exclude={"end_frame", "motion_reference", "transition"})}
        scripts.append(script)
        previous = unit_key("plan", previous, script, shot.seed)
        plan.append(previous)
        keyframe.append(unit_key("keyframe", components.keyframes.fingerprint, previous, script, sheet["characters"], story.resolution))
    for shot in timeline:
        s = shot.shot
        if s.end_frame:
            end = ("file", file_digest(loaded.resolve(s.end_frame)))
        elif s.transition == "continuous" and shot.index + 1 < len(timeline):
            end = ("next", keyframe[shot.index + 1])
        else:
            end = None
        motion = ("motion", file_digest(loaded.resolve(s.motion_reference))) if s.motion_reference else None
        clip.append(unit_key("clip", components.clips.fingerprint, keyframe[shot.index], shot.n_frames, story.fps, end, scripts[shot.index], motion))
    return UnitKeys(plan, keyframe, clip)
