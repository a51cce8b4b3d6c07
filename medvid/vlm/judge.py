"""``medvid judge --videos DIR --model DIR --out FILE``: a vision-language model scores generated videos.

Three criteria, each an integer on a stated scale (default 1-5) with the model's short reason:
``text_alignment`` (does the video show what its prompt asked), ``medical_plausibility`` and
``visual_quality``. Videos without a prompt (``medvid sample`` output) get the last two only.
Prompts come from ``--prompts``: a JSON / JSONL / CSV / TXT prompts file, or ``sidecars`` (the
default): the ``"prompt"`` of the JSON file next to each video that ``medvid generate`` writes.

Writes ``judge.json`` (a list of ``{video, prompt, scores, reasons, status, raw, model}``),
``judge.csv`` and ``judge_summary.json`` (mean / std / count per criterion), and prints the table.
A reply the parser cannot read is kept in ``raw`` with status ``unparsed``; it never stops the
run. Rerunning with the same output skips videos this model already judged.

Many processes: under ``torchrun --nproc-per-node N -m medvid judge ...`` rank r judges videos
r, r + N, ... (file-name order) and appends its results to ``.judge.json.parts/rank-0000r.jsonl``;
rank 0 writes ``judge.json``, ``judge.csv`` and the summary from them. ``--shard I/N`` jobs do the
same without a launcher and ``--merge`` writes the files.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medvid.data.manifest import write_json
from medvid.curation.reader import find_videos, sample_frames
from medvid.utils.logging import get_logger
from medvid.utils.sharding import add_shard_arguments
from medvid.vlm.parse import CRITERIA, UNPARSED, parse_judgement
from medvid.vlm.model import add_model_arguments
from medvid.vlm.prompts import default_template, load_template
from medvid.utils.text import read_text

log = get_logger("judge")

SECTIONS = ("with_prompt", "without_prompt")
PLACEHOLDERS = {"prompt", "num_frames", "scale_min", "scale_max"}
JUDGED_SUFFIXES = (".mp4", ".gif", ".avi", ".mov", ".mkv", ".webm")


@dataclass
class JudgeConfig:
    videos: str = ""
    model: str = ""
    out: str | None = None              # default: VIDEOS/judge.json, where `medvid evaluate`'s report finds it
    prompts: str | None = None          # FILE or "sidecars" (default)
    batch_size: int = 2
    prompt_template: str | None = None  # default: medvid/prompts/judge.txt
    scale_min: int = 1
    scale_max: int = 5
    num_frames: int = 8
    image_size: int = 448
    max_new_tokens: int = 160
    trust_remote_code: bool = False
    device: str = "auto"  # auto: CUDA when present
    dtype: str = "auto"
    model_name: str | None = None

    def __post_init__(self):
        if self.scale_min >= self.scale_max:
            raise ValueError(f"scale {self.scale_min}-{self.scale_max}: scale_min must be below scale_max")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


def _out_paths(out: str | Path) -> tuple[Path, Path, Path]:
    out = Path(out)
    if out.suffix.lower() != ".json":
        out = out / "judge.json"
    return out, out.with_suffix(".csv"), out.with_name(out.stem + "_summary.json")


def _prompt_of(entry: Any, where: str) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("prompt"), str):
        return entry["prompt"]
    raise ValueError(f"{where}: expected a string or an object with a 'prompt' string, got {entry!r}")


def _video_key(entry: dict) -> str | None:
    for k in ("video", "file", "file_name", "path", "name"):
        if isinstance(entry.get(k), str):
            return Path(entry[k]).name
    return None


def resolve_prompts(videos: list[Path], prompts: str | None) -> dict[Path, str | None]:
    """Video -> prompt (None when it has none). See the module doc for the accepted forms."""
    if prompts in (None, "", "sidecars"):
        out: dict[Path, str | None] = {}
        for v in videos:
            side = v.with_suffix(".json")
            p = None
            if side.is_file():
                try:
                    meta = json.loads(side.read_text(encoding="utf-8"))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{side}: sidecar is not valid JSON ({e.msg}); fix or delete it") from e
                p = meta.get("prompt") if isinstance(meta, dict) else None
            out[v] = p if isinstance(p, str) and p.strip() else None
        return out
    path = Path(prompts)
    if not path.is_file():
        raise ValueError(f"--prompts {prompts}: no such file; give a prompts file (JSON/JSONL/CSV/TXT) or 'sidecars'")
    text = read_text(path, "utf-8-sig")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            entries: Any = list(csv.DictReader(io.StringIO(text)))
        elif suffix == ".jsonl":
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".json":
            entries = json.loads(text)
        else:
            entries = [line.strip() for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}); fix the file") from e
    if isinstance(entries, dict):  # {"video.mp4": "prompt", ...}
        entries = [{"video": k, "prompt": v} for k, v in entries.items()]
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of prompts or of {{video, prompt}} objects")
    keyed = [e for e in entries if isinstance(e, dict) and _video_key(e)]
    if keyed and len(keyed) == len(entries):
        by_name = {_video_key(e): _prompt_of(e, f"{path} entry {i}") for i, e in enumerate(entries)}
        unknown = sorted(set(by_name) - {v.name for v in videos})
        if unknown:
            log.warning("%s: %d prompt(s) name videos that are not in the folder, e.g. %s", path, len(unknown), unknown[0])
        return {v: by_name.get(v.name) for v in videos}
    if len(entries) != len(videos):
        raise ValueError(f"{path}: {len(entries)} prompts for {len(videos)} videos and no 'video' key to match them; "
                         "give one prompt per video (in file-name order) or objects with 'video' and 'prompt'")
    return {v: _prompt_of(e, f"{path} entry {i}") for i, (v, e) in enumerate(zip(videos, entries))}


def summarize(entries: list[dict], scale: tuple[int, int]) -> dict:
    rows = {}
    for c in CRITERIA:
        vals = [e["scores"][c] for e in entries if e["scores"].get(c) is not None]
        applicable = sum(1 for e in entries if e["reasons"].get(c) != "no prompt")
        rows[c] = {"mean": round(float(np.mean(vals)), 4) if vals else None,
                   "std": round(float(np.std(vals)), 4) if vals else None,
                   "parsed": len(vals), "videos": applicable}
    return {"scale": list(scale), "videos": len(entries),
            "unparsed": sum(e["status"] == UNPARSED for e in entries), "criteria": rows}


def format_table(summary: dict) -> str:
    lo, hi = summary["scale"]
    lines = [f"{'criterion':<22}{'mean':>8}{'std':>8}{'parsed':>10}   (scale {lo}-{hi})"]
    for c, r in summary["criteria"].items():
        mean = f"{r['mean']:.2f}" if r["mean"] is not None else "-"
        std = f"{r['std']:.2f}" if r["std"] is not None else "-"
        lines.append(f"{c:<22}{mean:>8}{std:>8}{r['parsed']:>6}/{r['videos']:<3}")
    return "\n".join(lines)


def judge(cfg: JudgeConfig, model=None, progress: bool = True, shard: str | None = None, merge: bool = False) -> dict:
    """Score every video under ``cfg.videos``; returns the summary (files are written to cfg.out).

    Under torchrun (or with ``shard="I/N"``) only this process's share is judged; ``merge=True``
    writes the files from the shares of earlier ``--shard`` jobs (see the module doc)."""
    from medvid.utils.sharding import sharding

    with sharding(shard, cfg.device, merge) as sh:
        return _judge(cfg, model, progress, sh, merge)


def _judge(cfg: JudgeConfig, model, progress: bool, sh, merge: bool) -> dict:
    from tqdm import tqdm

    from medvid.utils.sharding import RowLog, clear_parts, parts_folder, read_parts

    vdir = Path(cfg.videos)
    if not vdir.exists():
        raise ValueError(f"--videos {vdir}: no such folder")
    videos = [v for v in find_videos(vdir) if v.suffix.lower() in JUDGED_SUFFIXES]
    if not videos:
        raise ValueError(f"--videos {vdir}: no videos ({', '.join(JUDGED_SUFFIXES)}) found")
    prompts = resolve_prompts(videos, cfg.prompts)
    template = load_template(cfg.prompt_template or default_template("judge"), SECTIONS, PLACEHOLDERS)
    name = cfg.model_name or (model.name if model is not None else Path(cfg.model).name)
    json_path, csv_path, summary_path = _out_paths(cfg.out or (vdir if vdir.is_dir() else vdir.parent))
    base = vdir if vdir.is_dir() else vdir.parent
    rel = {v: v.relative_to(base).as_posix() for v in videos}

    parts = parts_folder(json_path)

    def load_previous() -> dict[str, dict]:
        """Results of earlier runs: judge.json, then rows that ranks appended since (later wins)."""
        previous: dict[str, dict] = {}
        if json_path.is_file():
            try:
                previous = {e["video"]: e for e in json.loads(json_path.read_text(encoding="utf-8"))}
            except (json.JSONDecodeError, TypeError, KeyError):
                log.warning("%s: unreadable previous results; judging everything again", json_path)
        previous.update({e["video"]: e for e in read_parts(parts)})
        return {k: e for k, e in previous.items() if e.get("model") == name and e.get("status") != "error"}

    previous = load_previous()
    finished = [v for v in videos if rel[v] in previous and previous[rel[v]].get("prompt") == prompts[v]]
    mine = sh.take(videos) if not merge else []
    todo = [v for v in mine if v not in finished]
    results = {rel[v]: previous[rel[v]] for v in finished}
    rows = RowLog(parts, sh.rank) if sh.sharded else None
    if todo and model is None:
        from medvid.vlm.model import VisionLanguageModel

        model = VisionLanguageModel(cfg.model, cfg.trust_remote_code, str(sh.device(cfg.device)), cfg.dtype,
                                    cfg.image_size, name=name)
    fmt = dict(num_frames=cfg.num_frames, scale_min=cfg.scale_min, scale_max=cfg.scale_max)

    def save() -> None:
        entries = [results[rel[v]] for v in videos if rel[v] in results]
        write_json(json_path, entries)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["video", "prompt", *CRITERIA, "status", *[f"{c}_reason" for c in CRITERIA]])
        for e in entries:
            w.writerow([e["video"], e["prompt"] or "", *[e["scores"].get(c) for c in CRITERIA], e["status"],
                        *[e["reasons"].get(c, "") for c in CRITERIA]])
        tmp = csv_path.with_name(f".{csv_path.name}.tmp{os.getpid()}")
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        os.replace(tmp, csv_path)

    bar = tqdm(total=len(todo), desc="judge", unit="video", disable=not progress)
    for b in range(0, len(todo), cfg.batch_size):
        batch, requests = [], []
        for v in todo[b : b + cfg.batch_size]:
            p = prompts[v]
            try:
                frames = sample_frames(v, cfg.num_frames)
            except Exception as e:  # noqa: BLE001 - one unreadable video never stops the run
                results[rel[v]] = {"video": rel[v], "prompt": p, "scores": {}, "reasons": {}, "status": "error",
                                   "raw": f"{type(e).__name__}: {e}", "model": name}
                log.warning("%s: %s", v, e)
                bar.update()
                continue
            section = "with_prompt" if p else "without_prompt"
            requests.append((frames, template[section].format(prompt=p or "", **fmt)))
            batch.append(v)
        replies = model.generate(requests, max_new_tokens=cfg.max_new_tokens) if requests else []
        for v, raw in zip(batch, replies):
            p = prompts[v]
            criteria = CRITERIA if p else CRITERIA[1:]
            scores, reasons, status = parse_judgement(raw, criteria, (cfg.scale_min, cfg.scale_max))
            if not p:  # same keys for every video; no prompt, nothing to align with
                scores = {"text_alignment": None, **scores}
                reasons = {"text_alignment": "no prompt", **reasons}
            results[rel[v]] = {"video": rel[v], "prompt": p, "scores": scores, "reasons": reasons,
                               "status": status, "raw": raw, "model": name}
            bar.update()
        if rows is not None:  # a rank appends its results; rank 0 writes the files at the end
            rows.append([results[rel[v]] for v in todo[b : b + cfg.batch_size] if rel[v] in results])
        else:
            save()
    bar.close()
    mine_done = len(todo)

    def merged() -> dict:
        if sh.sharded or merge:  # this run's ranks' and earlier jobs' rows (errors included)
            everything: dict[str, dict] = {}
            if json_path.is_file():
                try:
                    everything = {e["video"]: e for e in json.loads(json_path.read_text(encoding="utf-8"))}
                except (json.JSONDecodeError, TypeError, KeyError):
                    pass
            everything.update({e["video"]: e for e in read_parts(parts)})
            results.clear()
            results.update({k: e for k, e in everything.items() if e.get("model") == name})
        save()
        clear_parts(parts)
        return _summary()

    def _summary() -> dict:
        entries = [results[rel[v]] for v in videos if rel[v] in results]
        summary = summarize([e for e in entries if e["status"] != "error"], (cfg.scale_min, cfg.scale_max))
        summary.update(model=name, errors=sum(e["status"] == "error" for e in entries),
                       files={"json": str(json_path), "csv": str(csv_path)})
        write_json(summary_path, summary)
        return summary

    return sh.finish(merged, {"rank": sh.rank, "judged": mine_done})


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", required=True, help="folder of generated videos")
    parser.add_argument("--prompts", default="sidecars",
                        help="prompts file (JSON list / {video, prompt} objects, JSONL, CSV video,prompt, TXT) "
                             "or 'sidecars' (the JSON next to each video; default)")
    add_model_arguments(parser, max_new_tokens=160)
    parser.add_argument("--out", help="output judge.json (judge.csv and judge_summary.json beside it); default "
                        "VIDEOS/judge.json, where the evaluation report looks for it")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--prompt-template", help="judge template file (default medvid/prompts/judge.txt)")
    parser.add_argument("--scale", default="1-5", help="score scale MIN-MAX (default 1-5)")
    add_shard_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from medvid.utils.logging import setup_logging

    setup_logging()
    try:
        lo, hi = (int(x) for x in args.scale.split("-"))
    except ValueError as e:
        raise ValueError(f"--scale {args.scale!r}: write it as MIN-MAX, e.g. 1-5") from e
    cfg = JudgeConfig(videos=args.videos, prompts=args.prompts, model=args.model, out=args.out,
                      batch_size=args.batch_size, prompt_template=args.prompt_template, scale_min=lo, scale_max=hi,
                      num_frames=args.num_frames, max_new_tokens=args.max_new_tokens,
                      trust_remote_code=args.trust_remote_code, device=args.device, dtype=args.dtype)
    summary = judge(cfg, shard=args.shard, merge=args.merge)
    if "criteria" not in summary:  # one --shard job: the files come with --merge
        print(f"shard {args.shard}: {summary['judged']} video(s) judged; when every shard is done, "
              "run the same command with --merge instead of --shard")
        return 0
    print(format_table(summary))
    print(f"{summary['unparsed']} unparsed replies, {summary['errors']} unreadable videos; "
          f"results in {summary['files']['json']}")
    return 0
