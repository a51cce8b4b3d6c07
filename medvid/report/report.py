"""A self-contained ``report.html``: one file, inline CSS, images and animations as data URIs,
no script or font fetched from anywhere, so it opens offline and can be mailed as is.

Sections: the metrics table (value, bootstrap interval, clip/frame counts, protocol; skipped
metrics with the file they need), real and generated clips side by side (animated GIFs), per-frame
strips, training curves and the run's configuration when the generated folder came from
``medvid sample`` of a run (a ``samples.json`` / ``sample.json`` / ``meta.json`` sidecar naming the
checkpoint), the judge's scores when the folder holds a ``judge.json``, and every generated video (or
image) beside its prompt (from the ``NAME.json`` sidecar ``medvid generate`` writes) with its own
per-video scores and judge scores.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from medvid.utils.logging import get_logger

__all__ = ["write_report", "find_run", "read_training_curves", "gif_data_uri", "strip_data_uri"]

log = get_logger("report")

SIDECARS = ("samples.json", "sample.json", "meta.json")
CHECKPOINT_KEYS = ("checkpoint", "checkpoint_path", "ckpt", "run_dir", "run")
MAX_SIDE = 160  # px: clips are downscaled for the page (the file stays small)


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) >= 1e4 or abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def _small(frames: np.ndarray) -> np.ndarray:
    from PIL import Image

    t, h, w, _ = frames.shape
    s = min(1.0, MAX_SIDE / max(h, w))
    if s == 1.0:
        return frames
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


def gif_data_uri(frames: np.ndarray, fps: float = 8.0) -> str:
    """uint8 (T, H, W, 3) -> ``data:image/gif;base64,...`` looping animation."""
    from PIL import Image

    imgs = [Image.fromarray(f) for f in _small(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    return "data:image/gif;base64," + base64.b64encode(buf.getvalue()).decode()


def strip_data_uri(frames: np.ndarray, max_frames: int = 8) -> str:
    """Evenly spaced frames side by side as one PNG data URI."""
    from PIL import Image

    idx = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    f = _small(frames[idx])
    pad = np.full((f.shape[1], 2, 3), 255, np.uint8)
    row = np.concatenate([x for fr in f for x in (fr, pad)][:-1], axis=1)
    buf = io.BytesIO()
    Image.fromarray(row).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ----------------------------------------------------------------------------- run discovery

def find_run(fake_dir: str | Path) -> dict | None:
    """The sidecar of ``medvid sample`` in ``fake_dir`` -> {"sidecar", "checkpoint", "run_dir", "config"}."""
    fake_dir = Path(fake_dir)
    for name in SIDECARS:
        f = fake_dir / name
        if not f.is_file():
            continue
        try:
            meta = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            log.warning("report: ignoring unreadable %s (%s)", f, e)
            continue
        info: dict[str, Any] = {"sidecar": str(f), "meta": meta}
        ckpt = next((meta[k] for k in CHECKPOINT_KEYS if isinstance(meta, dict) and meta.get(k)), None)
        if ckpt:
            cp = Path(ckpt)
            if not cp.is_absolute() and not cp.exists():
                cp = fake_dir / cp
            info["checkpoint"] = str(cp)
            step_dir = cp
            if not (cp / "state.json").is_file():
                from medvid.utils.checkpoint import latest_checkpoint

                step_dir = latest_checkpoint(cp) or cp
            run_dir = step_dir.parent if (step_dir / "state.json").is_file() else cp
            info["run_dir"] = str(run_dir)
            for cfg in (step_dir / "config.yaml", run_dir / "config.yaml"):
                if cfg.is_file():
                    info["config_file"] = str(cfg)
                    info["config"] = cfg.read_text()
                    break
        return info
    return None


def read_training_curves(run_dir: str | Path, max_points: int = 400) -> dict[str, list[tuple[float, float]]]:
    """Scalar curves of a run: TensorBoard event files, else ``metrics.jsonl``, else ``log.txt``."""
    run_dir = Path(run_dir)
    curves: dict[str, list[tuple[float, float]]] = {}
    events = sorted(run_dir.rglob("events.out.tfevents.*"))
    if events:
        try:
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

            for ev_file in events:
                acc = EventAccumulator(str(ev_file), size_guidance={"scalars": 0})
                acc.Reload()
                for tag in acc.Tags().get("scalars", []):
                    curves.setdefault(tag, []).extend((float(e.step), float(e.value)) for e in acc.Scalars(tag))
        except ImportError:
            log.warning("report: tensorboard is not installed; cannot read %s", events[0])
    if not curves and (run_dir / "metrics.jsonl").is_file():
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            step = rec.get("step")
            if step is None:
                continue
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    curves.setdefault(k, []).append((float(step), float(v)))
    if not curves and (run_dir / "log.txt").is_file():
        import re

        pat = re.compile(r"step[ =:]+(\d+).*?loss[ =:]+([-+0-9.eE]+)")
        for line in (run_dir / "log.txt").read_text(errors="replace").splitlines():
            m = pat.search(line)
            if m:
                curves.setdefault("loss", []).append((float(m.group(1)), float(m.group(2))))
    for k, pts in curves.items():
        pts.sort()
        if len(pts) > max_points:
            idx = np.linspace(0, len(pts) - 1, max_points).round().astype(int)
            curves[k] = [pts[i] for i in idx]
    return curves


def _svg_curve(name: str, pts: list[tuple[float, float]], w: int = 360, h: int = 180) -> str:
    xs = np.array([p[0] for p in pts], float)
    ys = np.array([p[1] for p in pts], float)
    ok = np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if len(xs) == 0:
        return ""
    x0, x1 = xs.min(), max(xs.max(), xs.min() + 1e-9)
    y0, y1 = ys.min(), max(ys.max(), ys.min() + 1e-12)
    m = 34
    px = m + (xs - x0) / (x1 - x0) * (w - m - 8)
    py = h - m + 10 - (ys - y0) / (y1 - y0) * (h - m - 8)
    path = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py))
    return (f'<figure class="curve"><svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{_esc(name)}">'
            f'<rect x="{m}" y="2" width="{w - m - 8}" height="{h - m + 8}" class="frame"/>'
            f'<polyline points="{path}" class="line"/>'
            f'<text x="{m}" y="{h - 6}" class="ax">{_esc(_fmt(float(x0)))}</text>'
            f'<text x="{w - 8}" y="{h - 6}" class="ax" text-anchor="end">{_esc(_fmt(float(x1)))} steps</text>'
            f'<text x="2" y="12" class="ax">{_esc(_fmt(float(y1)))}</text>'
            f'<text x="2" y="{h - m + 10}" class="ax">{_esc(_fmt(float(y0)))}</text>'
            f'</svg><figcaption>{_esc(name)}</figcaption></figure>')


# ----------------------------------------------------------------------------- page

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.muted{color:#57606a;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.skipped td{color:#8c959f}
.pairs{display:grid;grid-template-columns:max-content max-content max-content;gap:8px 16px;align-items:center}
.pairs img{image-rendering:pixelated;border:1px solid #d0d7de;background:#000}
.strip img{display:block;margin:2px 0 10px;border:1px solid #d0d7de}
.curve{display:inline-block;margin:4px 12px 4px 0} .curve figcaption{font-size:12px;text-align:center}
.curve .frame{fill:#fafbfc;stroke:#d0d7de} .curve .line{fill:none;stroke:#0969da;stroke-width:1.5}
.curve .ax{font-size:10px;fill:#57606a}
td.prompt{max-width:520px;font-size:13px}
pre{background:#f6f8fa;padding:8px;font-size:12px;overflow:auto;max-height:420px}
"""


def _metrics_table(res: dict) -> str:
    rows = []
    for name, r in res.get("metrics", {}).items():
        ci = r.get("ci")
        ci_s = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "–"
        if "num_real" in r:
            counts = f"{r['num_real']} real / {r['num_fake']} fake {r.get('unit', '')}"
        elif "num_fake" in r:
            counts = f"{r['num_fake']} fake {r.get('unit', '')}"
        else:
            counts = f"{r.get('num_videos', '')} {r.get('unit', '')}"
        value = _fmt(r.get("value"))
        if "std" in r and "ci" not in r:
            value += f" ± {_fmt(r['std'])}"
        ref = r.get("real")
        ref_s = f"{_fmt(ref['value'])}" + (f" [{_fmt(ref['ci'][0])}, {_fmt(ref['ci'][1])}]" if ref.get("ci") else "") if ref else "–"
        rows.append(f"<tr><td><b>{_esc(name)}</b></td><td class='num'>{_esc(value)}</td><td class='num'>{_esc(ci_s)}</td>"
                    f"<td class='num'>{_esc(ref_s)}</td><td>{_esc(counts)}</td><td class='muted'>{_esc(r.get('protocol', ''))}</td></tr>")
    for name, why in res.get("skipped", {}).items():
        rows.append(f"<tr class='skipped'><td>{_esc(name)}</td><td colspan='4'>skipped</td><td>{_esc(why)}</td></tr>")
    return ("<table id='metrics'><thead><tr><th>metric</th><th>generated</th><th>95% bootstrap CI</th>"
            "<th>real (reference)</th><th>counts</th><th>protocol</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _references_table(results: dict, references: dict[str, dict]) -> str:
    """The generated set next to reference rows (training clips, a noisy baseline, the VAE round trip
    of the held-out clips, ...), all scored against the same real set: which stage limits quality."""
    rows = {"generated": {k: m.get("value") for k, m in results.get("metrics", {}).items()}}
    for k, m in results.get("metrics", {}).items():
        if m.get("ci"):
            rows["generated"][k + "_ci"] = m["ci"]
    rows.update(references)
    names = [k for k in rows["generated"] if not k.endswith("_ci")]
    for r in references.values():
        names += [k for k in r if not k.endswith("_ci") and k not in names]
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    body = []
    for label, r in rows.items():
        cells = []
        for n in names:
            v, ci = r.get(n), r.get(n + "_ci")
            cells.append(f"<td class='num'>{_esc(_fmt(v, 3)) if v is not None else '–'}"
                         + (f"<div class='muted'>[{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]</div>" if ci else "") + "</td>")
        body.append(f"<tr><td><b>{_esc(label)}</b></td>{''.join(cells)}</tr>")
    return (f"<table id='references'><thead><tr><th>row</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "<p class='muted'>Each row scored against the same real clips. Reading it: the generated row cannot beat "
            "the VAE round trip (the decoder's ceiling); the noisy baseline is a floor to clear; motion (grey levels "
            "per frame) should be near the real clips' value.</p>")


def _round_trip_strips(real_dir, round_trip_dir, num: int = 2) -> str:
    from medvid.metrics.inputs import list_videos

    try:
        real, rt = list_videos(real_dir, "--real"), {v.name: v for v in list_videos(round_trip_dir, "round trip")}
    except ValueError as e:
        return f"<p class='muted'>no round-trip clips to show: {_esc(e)}</p>"
    out = []
    for v in real[:num]:
        if v.name in rt:
            out.append(f"<div class='strip'><div class='muted'>real {_esc(v.name)}</div><img alt='real strip' "
                       f"src='{strip_data_uri(v.read())}'><div class='muted'>through the VAE</div>"
                       f"<img alt='round-trip strip' src='{strip_data_uri(rt[v.name].read())}'></div>")
    return "".join(out)


def _judge_table(fake_dir: Path) -> str:
    f = fake_dir / "judge.json"
    if not f.is_file():
        return ""
    try:
        items = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f"<h2>Judge scores</h2><p class='muted'>{_esc(f)} is unreadable: {_esc(e)}</p>"
    if isinstance(items, dict):
        items = items.get("items") or items.get("results") or []
    keys = ["text_alignment", "medical_plausibility", "visual_quality"]
    rows, sums = [], {k: [] for k in keys}
    for it in items:
        sc = it.get("scores", {}) or {}
        for k in keys:
            if isinstance(sc.get(k), (int, float)):
                sums[k].append(float(sc[k]))
        reasons = it.get("reasons", "")
        if isinstance(reasons, dict):
            reasons = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        rows.append("<tr><td>" + _esc(it.get("video", "")) + "</td><td>" + _esc(it.get("prompt", "")) + "</td>"
                    + "".join(f"<td class='num'>{_esc(_fmt(sc.get(k)))}</td>" for k in keys)
                    + f"<td class='muted'>{_esc(reasons)}</td></tr>")
    mean = "".join(f"<td class='num'><b>{_esc(_fmt(float(np.mean(v))) if v else '–')}</b></td>" for v in sums.values())
    rows.append(f"<tr><td colspan='2'><b>mean over {len(items)} videos</b></td>{mean}<td></td></tr>")
    return ("<h2>Judge scores</h2><table id='judge'><thead><tr><th>video</th><th>prompt</th>"
            + "".join(f"<th>{k}</th>" for k in keys) + "<th>reasons</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


MAX_PROMPT_ROWS = 64  # animated rows in the prompt table; the rest are listed without animation


def _prompt_of(fake_dir: Path, name: str) -> str | None:
    side = fake_dir / f"{name}.json"
    try:
        obj = json.loads(side.read_text()) if side.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
    return obj.get("prompt") if isinstance(obj, dict) and isinstance(obj.get("prompt"), str) else None


def _judge_by_video(fake_dir: Path) -> dict[str, dict]:
    f = fake_dir / "judge.json"
    try:
        items = json.loads(f.read_text()) if f.is_file() else []
    except (OSError, json.JSONDecodeError):
        return {}
    if isinstance(items, dict):
        items = items.get("items") or items.get("results") or []
    return {Path(str(it.get("video", ""))).stem: (it.get("scores") or {}) for it in items if isinstance(it, dict)}


def _prompts_section(results: dict, fake_dir: Path) -> str:
    """Each generated video (or image) beside its prompt, its per-video scores and the judge's."""
    from medvid.metrics.inputs import list_videos

    try:
        sources = list_videos(fake_dir, "--fake")
    except ValueError as e:
        return f"<p class='muted'>{_esc(e)}</p>"
    prompts = {s.name: _prompt_of(fake_dir, s.name) for s in sources}
    if not any(prompts.values()):
        return ""
    per = {k: r["per_video"] for k, r in results.get("metrics", {}).items() if isinstance(r.get("per_video"), dict)}
    judge = _judge_by_video(fake_dir)
    jkeys = sorted({k for sc in judge.values() for k in sc})
    head = ("<tr><th>generated</th><th>prompt</th>" + "".join(f"<th>{_esc(k)}</th>" for k in per)
            + "".join(f"<th>judge: {_esc(k)}</th>" for k in jkeys) + "</tr>")
    rows = []
    for i, src in enumerate(sources):
        if i < MAX_PROMPT_ROWS:
            fr = src.read()
            uri = gif_data_uri(fr) if len(fr) > 1 else strip_data_uri(fr, 1)
            cell = f"<img class='clip' alt='{_esc(src.name)}' src='{uri}'><div class='muted'>{_esc(src.name)}</div>"
        else:
            cell = f"<div class='muted'>{_esc(src.name)}</div>"
        rows.append("<tr><td>" + cell + f"</td><td class='prompt'>{_esc(prompts.get(src.name) or '–')}</td>"
                    + "".join(f"<td class='num'>{_esc(_fmt(v.get(src.name)))}</td>" for v in per.values())
                    + "".join(f"<td class='num'>{_esc(_fmt(judge.get(src.name, {}).get(k)))}</td>" for k in jkeys)
                    + "</tr>")
    note = (f"<p class='muted'>first {MAX_PROMPT_ROWS} of {len(sources)} animated</p>"
            if len(sources) > MAX_PROMPT_ROWS else "")
    return ("<h2>Generated videos and their prompts</h2><table id='prompts'><thead>" + head + "</thead><tbody>"
            + "".join(rows) + "</tbody></table>" + note)


def _videos_section(real_dir, fake_dir, num: int, clip_length: int, seed: int) -> str:
    from medvid.metrics.inputs import list_videos, select_clips

    out = []
    try:
        real_clips, _ = select_clips(list_videos(real_dir, "--real"), num, clip_length, True, seed)
        fake_clips, _ = select_clips(list_videos(fake_dir, "--fake"), num, clip_length, False, seed)
    except ValueError as e:
        return f"<p class='muted'>no clips to show: {_esc(e)}</p>"
    pairs, strips = [], []
    for i in range(max(len(real_clips), len(fake_clips))):
        cells = [f"<div class='muted'>#{i}</div>"]
        for side, clips in (("real", real_clips), ("generated", fake_clips)):
            if i < len(clips):
                fr = clips[i].read()
                h, w = fr.shape[1:3]
                # shown at most MAX_SIDE px on the long side; small clips enlarged (pixelated) to 128 px
                long_side = max(128, min(max(h, w), MAX_SIDE))
                cells.append(f"<img class='clip {side}' width='{round(w * long_side / max(h, w))}' "
                             f"alt='{side} {_esc(clips[i].source.name)}' title='{side}: "
                             f"{_esc(clips[i].source.name)} from frame {clips[i].start}' src='{gif_data_uri(fr)}'>")
                strips.append(f"<div class='strip'><div class='muted'>{side} #{i}: {_esc(clips[i].source.name)}, "
                              f"frames {clips[i].start}–{clips[i].start + len(fr) - 1}</div><img alt='{side} strip' src='{strip_data_uri(fr)}'></div>")
            else:
                cells.append("<div></div>")
        pairs.append("".join(cells))
    out.append("<div class='pairs'><div></div><div><b>real</b></div><div><b>generated</b></div>" + "".join(pairs) + "</div>")
    out.append("<h2>Per-frame strips</h2>" + "".join(strips))
    return "".join(out)


def write_report(results: dict, path: str | Path, real_dir=None, fake_dir=None, num_videos: int = 4,
                 references: dict[str, dict] | None = None, round_trip_dir=None) -> Path:
    """Render ``results`` (the dict ``evaluate`` returns) into a self-contained HTML file.

    ``references``: rows {label: {metric: value, metric_ci: [lo, hi]}} shown in a table beside the
    generated set; ``round_trip_dir``: real clips through the VAE (same names as in ``real_dir``),
    shown as strips under the real ones."""
    path = Path(path)
    settings = results.get("settings", {})
    real_d, fake_d = results.get("real") or {}, results.get("fake", {})
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>medvid evaluation</title>",
        f"<meta name='viewport' content='width=device-width'><style>{CSS}</style></head><body>",
        "<h1>medvid evaluation report</h1>",
        (f"<div class='muted'>real: {_esc(real_d.get('path'))} ({real_d.get('num_videos')} videos, {real_d.get('num_clips')} clips"
         f"{', %d too short' % real_d['dropped_short'] if real_d.get('dropped_short') else ''}) · generated: "
         if real_d else "<div class='muted'>no real set · generated: ") +
        f"{_esc(fake_d.get('path'))} ({fake_d.get('num_videos')} videos, {fake_d.get('num_clips')} clips"
        f"{', %d too short' % fake_d['dropped_short'] if fake_d.get('dropped_short') else ''}) · "
        f"{settings.get('clip_length', 16)}-frame clips · seed {settings.get('seed', 0)} · "
        f"{results.get('total_seconds', '?')} s</div>",
        "<h2>Metrics</h2>", _metrics_table(results),
        "<p class='muted'>Distances: lower is better; intervals are percentile bootstrap intervals over clips/frames "
        "(both sets resampled). fd_effnet_* use EfficientNet-Lite0 ImageNet features and are not comparable with "
        "published FID/FVD numbers. Consistency scores are in [0, 1] (MedSora reports FC in percent).</p>",
    ]
    if references:
        parts += ["<h2>Against reference rows</h2>", _references_table(results, references)]
    if round_trip_dir is not None and real_dir is not None:
        parts += ["<h2>Held-out clips through the VAE</h2>", _round_trip_strips(real_dir, round_trip_dir)]
    if real_dir is not None and fake_dir is not None:
        parts += ["<h2>Real and generated clips</h2>",
                  _videos_section(real_dir, fake_dir, num_videos, settings.get("clip_length", 16), settings.get("seed", 0))]
    if fake_dir is not None:
        run = find_run(fake_dir)
        if run is not None:
            parts.append("<h2>Training run</h2>")
            parts.append(f"<div class='muted'>sidecar {_esc(run['sidecar'])}"
                         + (f" · checkpoint {_esc(run['checkpoint'])}" if run.get("checkpoint") else " · names no checkpoint")
                         + "</div>")
            if run.get("run_dir"):
                curves = read_training_curves(run["run_dir"])
                if curves:
                    parts.append("<div id='curves'>" + "".join(_svg_curve(k, v) for k, v in sorted(curves.items())) + "</div>")
                else:
                    parts.append(f"<p class='muted'>no TensorBoard events, metrics.jsonl or log.txt under {_esc(run['run_dir'])}</p>")
            if run.get("config"):
                parts.append(f"<h2>Run configuration</h2><div class='muted'>{_esc(run['config_file'])}</div><pre>{_esc(run['config'])}</pre>")
            parts.append(f"<h3>Sampling settings</h3><pre>{_esc(json.dumps(run['meta'], indent=1))}</pre>")
        parts.append(_judge_table(Path(fake_dir)))
        parts.append(_prompts_section(results, Path(fake_dir)))
    parts.append("<h2>Evaluation settings</h2><pre>" + _esc(json.dumps(settings, indent=1)) + "</pre></body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path
