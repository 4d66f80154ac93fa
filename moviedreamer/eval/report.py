"""metrics.json and an offline report.html (charts as PNG files drawn with PIL, no plotting library)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLOURS = [(66, 133, 244), (234, 67, 53), (52, 168, 83), (251, 188, 5)]


NO_DATA = "n/a"


def has_data(series: dict[str, list[float | None]]) -> bool:
    return any(v is not None for vs in series.values() for v in vs)


def bar_chart(path: Path, title: str, labels: list[str], series: dict[str, list[float | None]], vmax: float | None = None) -> Path:
    """Grouped bars: one group per label, one bar per series; a group with no value at all says "n/a"."""
    font = ImageFont.load_default()
    values = [v for vs in series.values() for v in vs if v is not None]
    vmax = vmax or (max(values) if values else 1.0) or 1.0
    group_w, bar_w, h, top, left = max(24, 12 * len(series) + 12), 12, 180, 30, 40
    width = left + group_w * len(labels) + 20
    img = Image.new("RGB", (max(width, 320), h + top + 60), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 8), title, fill="black", font=font)
    d.line([(left, top), (left, top + h), (width - 10, top + h)], fill="black")
    d.text((4, top - 4), f"{vmax:.3g}", fill="black", font=font)
    d.text((4, top + h - 8), "0", fill="black", font=font)
    for gi, label in enumerate(labels):
        x0 = left + gi * group_w + 6
        for si, (name, vs) in enumerate(series.items()):
            v = vs[gi]
            if v is None:
                continue
            bh = int(h * max(0.0, min(v / vmax, 1.0)))
            d.rectangle([x0 + si * bar_w, top + h - bh, x0 + si * bar_w + bar_w - 2, top + h], fill=COLOURS[si % len(COLOURS)])
        if all(vs[gi] is None for vs in series.values()):
            d.text((x0, top + h - 14), NO_DATA, fill="grey", font=font)
        if len(labels) <= 40:
            d.text((x0, top + h + 4), label[:6], fill="black", font=font)
    for si, name in enumerate(series):
        d.rectangle([left + si * 150, top + h + 26, left + si * 150 + 10, top + h + 36], fill=COLOURS[si % len(COLOURS)])
        d.text((left + si * 150 + 14, top + h + 25), name if len(name) <= 22 else name[:21] + "…", fill="black", font=font)
    img.save(path)
    return path


def strip_sheet(path: Path, strips: list[list[np.ndarray]], labels: list[str]) -> Path:
    """One row per shot: its first, middle and last frame side by side, the shot's label on the left."""
    font = ImageFont.load_default()
    h, w = strips[0][0].shape[:2]
    label_w, pad = 220, 4
    sheet = Image.new("RGB", (label_w + 3 * (w + pad), len(strips) * (h + pad) + 16), "white")
    d = ImageDraw.Draw(sheet)
    for j, name in enumerate(("first", "middle", "last")):
        d.text((label_w + j * (w + pad), 2), name, fill="black", font=font)
    for i, (frames, label) in enumerate(zip(strips, labels)):
        y = 16 + i * (h + pad)
        for j, frame in enumerate(frames):
            sheet.paste(Image.fromarray(frame), (label_w + j * (w + pad), y))
        for k, line in enumerate(label.split("\n")[:4]):
            d.text((4, y + 4 + 12 * k), line, fill="black", font=font)
    sheet.save(path)
    return path


def write_report(out_dir: Path, evaluations: dict[str, dict], strips: dict[str, list] | None = None) -> Path:
    """evaluations: name → Evaluation.to_json(); writes metrics.json, charts and report.html into out_dir. `strips`:
    name → per shot the first / middle / last frame, drawn as one sheet per movie."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(evaluations, indent=1))
    names = list(evaluations)
    rows = _summary_rows(evaluations)
    charts = []
    first = evaluations[names[0]]
    n = len(first["per_shot"])
    shots = [str(i) for i in range(n)]
    charts.append(bar_chart(out_dir / "motion.png", "motion per shot (DIS flow, px/frame)", shots, {k: [s["motion"] for s in e["per_shot"]] for k, e in evaluations.items()}))
    charts.append(bar_chart(out_dir / "flicker.png", "temporal flicker score per shot (1 = steady)", shots, {k: [s["flicker"] for s in e["per_shot"]] for k, e in evaluations.items()}, vmax=1.0))
    if all(e["metrics"].get("judge") for e in evaluations.values()):
        charts.append(bar_chart(out_dir / "judge.png", "judge: shot matches the script (1) or not (0)", shots,
                                {k: [float(s["judge"]["correct"]) for s in e["per_shot"]] for k, e in evaluations.items()}, vmax=1.0))
    empty = []  # (chart title, why): charts with no value at all, said as "n/a" instead of drawn as empty axes
    chars = list(first["metrics"].get("consistency") or {})
    for kind in ("st", "lt"):
        title = f"face consistency {kind.upper()} per character (cosine)"
        series = {k: [((e["metrics"].get("consistency") or {}).get(c) or {}).get(kind) for c in chars] for k, e in evaluations.items()}
        (out_dir / f"consistency_{kind}.png").unlink(missing_ok=True)
        if has_data(series):
            charts.append(bar_chart(out_dir / f"consistency_{kind}.png", title, chars, series, vmax=1.0))
        elif not all(e["metrics"].get("consistency") for e in evaluations.values()):
            empty.append((title, "the face encoder was unavailable: see the notes"))
        else:
            empty.append((title, "no character was seen alone with a detected face in two or more shots"))
    sheets = []
    for k, per_shot in (strips or {}).items():
        if per_shot and all(per_shot):
            labels = [_shot_label(s) for s in evaluations[k]["per_shot"]]
            sheets.append((k, strip_sheet(out_dir / f"strips_{len(sheets)}.png", per_shot, labels)))
    notes = sorted({note for e in evaluations.values() for note in e["notes"]})
    movies = ", ".join(f"{k}: {e['movie']}" for k, e in evaluations.items())
    body = [f"<h1>MovieDreamer evaluation</h1><p>{html.escape(movies)}</p>",
            "<table><tr><th>metric</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in names) + "</tr>"]
    for label, values in rows:
        body.append(f"<tr><td>{html.escape(label)}</td>" + "".join(f"<td>{_fmt(v)}</td>" for v in values) + "</tr>")
    body.append("</table>")
    body += [f'<p><img src="{c.name}" alt="{c.stem}"></p>' for c in charts]
    body += [f"<p><b>{html.escape(title)}</b>: {NO_DATA} ({html.escape(why)})</p>" for title, why in empty]
    for name, sheet in sheets:
        body.append(f"<h2>Frames of {html.escape(name)}: first / middle / last of each shot</h2><p><img src=\"{sheet.name}\" alt=\"strips\"></p>")
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    body.append("<p>Formulas: docs/eval.md.</p>")
    style = "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>MovieDreamer evaluation</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _summary_rows(evaluations):
    names = list(evaluations)
    get = lambda e, *keys: _dig(e["metrics"], keys)  # noqa: E731
    rows = [("flicker (1 = steady)", [get(evaluations[k], "flicker") for k in names]),
            ("motion (px/frame)", [get(evaluations[k], "motion_px_per_frame") for k in names]),
            ("dynamic degree", [get(evaluations[k], "dynamic_degree") for k in names]),
            ("judge: scene", [get(evaluations[k], "judge", "scene") for k in names]),
            ("judge: characters", [get(evaluations[k], "judge", "characters") for k in names]),
            ("judge: scene + characters", [get(evaluations[k], "judge", "scene_and_characters") for k in names]),
            ("CLIP score", [get(evaluations[k], "clip_score") for k in names]),
            ("referee: action accuracy", [get(evaluations[k], "referee", "action_accuracy") for k in names]),
            ("referee: direction accuracy", [get(evaluations[k], "referee", "direction_accuracy") for k in names]),
            ("referee: camera move accuracy", [get(evaluations[k], "referee", "camera_move_accuracy") for k in names]),
            ("referee: frame distance to the truth", [get(evaluations[k], "referee", "frame_distance") for k in names]),
            ("referee: its floor (truth through the VAE)", [get(evaluations[k], "referee", "frame_distance_floor") for k in names]),
            ("referee: decay (last / first quarter)", [get(evaluations[k], "referee", "decay") for k in names])]
    for kind in ("st", "lt", "ref"):
        rows.append((f"face consistency {kind.upper()} (mean over characters)", [_mean_consistency(evaluations[k], kind) for k in names]))
    return rows


def _shot_label(row: dict) -> str:
    ref = row.get("referee")
    if not ref:
        return f"shot {row['index']}"
    truth, judged = ref["truth"], ref["judged"]
    say = lambda d: f"{d['action']}{' ' + d['direction'] if d.get('direction') else ''}, {d['move']}"  # noqa: E731
    return f"shot {row['index']}\nscript: {say(truth)}\njudged: {say(judged)}\ndistance {ref['frame_distance']:.3g}, decay {ref['decay']:.2f}"


def _mean_consistency(e, kind):
    per = e["metrics"].get("consistency")
    vals = [c[kind] for c in (per or {}).values() if c[kind] is not None]
    return sum(vals) / len(vals) if vals else None


def _dig(d, keys):
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def _fmt(v):
    return "—" if v is None else f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
