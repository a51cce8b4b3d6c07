"""``evaluate(real, fake, metrics, out_dir, ...)``: every metric of ``medvid evaluate`` in one call.

Each metric follows the protocol documented in its module (``fvd``, ``cdfvd``, ``fid_is``,
``consistency``, ``vbench``, ``reconstruction``, ``effnet``). A metric whose weights are missing is
reported under ``skipped`` with the file it needs; the others still run. Every distance carries a
bootstrap interval and the number of clips/frames it used; per-video scores carry a bootstrap
interval over videos and are given for the real set too, as a reference point.

Clips: one 16-frame clip per video, real from a seeded random start, generated from frame 0
(``inputs.select_clips``). FVD, CD-FVD, the EfficientNet-Lite0 distances and the per-video scores
(FC, VBench-style) all use these clips; FID/IS and imaging quality use every frame of the videos.

``real`` may be a ``medvid prepare`` folder: its ``real_split`` is cut into clips with the protocol
the samples were made with (``medvid.metrics.real_clips``), and the reference rows (training clips,
noisy training clips, the VAE round trip) are evaluated against the same held-out clips. Real and
generated clips of different sizes or frame spacing are refused (``allow_mismatch`` overrides), and
so is a Fréchet distance from fewer samples than its feature dimension (``allow_few`` computes it
with a warning in the record): its covariance is then rank-deficient and the number mostly
measures the sample count. The function computes such distances by default (benchmarks and the demo
compare equal counts) with a ``warning`` in their record; ``medvid evaluate`` refuses them unless
given ``--allow-few``.

``real`` may be None (MedGen's protocol scores generated videos alone): the distances are then
skipped with that reason and the per-video scores are given for the generated set only. An image
set (a folder of PNG/JPEG files and no video, e.g. ``medvid generate --frames 1``) is evaluated with
the frame metrics only (FID, IS, fd_effnet_frame over every image); the video metrics are skipped.
Per-video scores also list each generated video's own value (``per_video``), which the report shows
beside the video's prompt.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from medvid.metrics.features import FeatureCache, batched_features, cache_key, default_cache_dir, weights_id
from medvid.metrics.frechet import bootstrap_frechet, frechet_distance_from_features
from medvid.metrics.inputs import Clip, VideoSource, fingerprint, list_videos, select_clips
from medvid.utils.logging import get_logger
from medvid.utils.sharding import Sharding, current, release
from medvid.utils.weights import MissingWeightsError

__all__ = ["evaluate", "ALL_METRICS", "DEFAULT_METRICS", "OFFLINE_METRICS", "parse_metrics"]

log = get_logger("metrics")

ALL_METRICS = (
    "fvd", "cdfvd", "fid", "is", "fc", "subject_consistency", "background_consistency",
    "dynamic_degree", "motion_smoothness", "imaging_quality", "psnr", "ssim", "fd_effnet_frame", "fd_effnet_clip",
    "motion",
)
# MedGen's four VBench dimensions ("Med-VBench"); `--metrics medgen` selects them.
MEDGEN_METRICS = ("subject_consistency", "background_consistency", "motion_smoothness", "imaging_quality")
NEEDS_REAL = ("fvd", "cdfvd", "fid", "psnr", "ssim", "fd_effnet_frame", "fd_effnet_clip")
FRAME_METRICS = ("fid", "is", "fd_effnet_frame")  # what an image set can be scored with
# psnr/ssim compare paired reconstructions and are only computed when asked for.
DEFAULT_METRICS = tuple(m for m in ALL_METRICS if m not in ("psnr", "ssim"))
OFFLINE_METRICS = ("fd_effnet_frame", "fd_effnet_clip", "motion", "dynamic_degree", "motion_smoothness")
_IN_MEMORY_LIMIT = 512 << 20  # keep decoded clips in memory below this many bytes


def parse_metrics(metrics: str | Sequence[str]) -> list[str]:
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    if names == ["all"]:
        return list(ALL_METRICS)
    if names == ["offline"]:
        return list(OFFLINE_METRICS)
    if names == ["medgen"]:
        return list(MEDGEN_METRICS)
    bad = [m for m in names if m not in ALL_METRICS]
    if bad or not names:
        raise ValueError(f"--metrics: unknown {bad or 'empty list'}; choose from {', '.join(ALL_METRICS)} "
                         "(comma-separated), or 'all' / 'offline' / 'medgen'")
    return list(dict.fromkeys(names))


class _VideoSet:
    """One side of the comparison: its videos, the selected clips and lazily decoded arrays."""

    def __init__(self, root, flag: str, random_start: bool, num_clips: int, clip_length: int, seed: int):
        self.root, self.flag = Path(root), flag
        self.sources: list[VideoSource] = list_videos(root, flag)
        from medvid.metrics.inputs import is_image_set

        self.images = is_image_set(self.sources)
        if self.images:  # one-frame sources: no clips; frame metrics read every image
            self.clips, self.dropped = [], 0
        else:
            self.clips, self.dropped = select_clips(self.sources, num_clips, clip_length, random_start, seed)
        self.clip_length = clip_length
        self._fingerprint: str | None = None
        self._clip_arrays: list[np.ndarray] | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.sources)
        return self._fingerprint

    def require_clips(self, metric: str) -> None:
        if not self.clips:
            raise ValueError(
                f"{self.flag} {self.root}: no video has {self.clip_length} frames, so {metric} has no clips "
                f"({self.dropped} videos were too short); use longer videos or a shorter --clip-length"
            )

    def clip_key(self) -> list:
        return [self.fingerprint, [(c.source.name, c.start, c.length) for c in self.clips]]

    def iter_clips(self) -> Iterator[np.ndarray]:
        if self._clip_arrays is not None:
            yield from self._clip_arrays
            return
        kept, size = [], 0
        for c in self.clips:
            a = c.read()
            size += a.nbytes
            if kept is not None:
                kept.append(a)
                if size > _IN_MEMORY_LIMIT:
                    kept = None
            yield a
        if kept is not None:
            self._clip_arrays = kept

    def iter_frames(self, max_frames: int | None) -> Iterator[np.ndarray]:
        n = 0
        for src in self.sources:
            for f in src.read():
                if max_frames is not None and n >= max_frames:
                    return
                n += 1
                yield f

    def describe(self) -> dict:
        return {"path": str(self.root), "num_videos": len(self.sources), "num_clips": len(self.clips),
                "dropped_short": self.dropped, "clip_length": self.clip_length, "image_set": self.images}


def _mean_ci(values: Sequence[float], bootstrap: int, seed: int, level: float = 0.95) -> dict:
    v = np.asarray(values, np.float64)
    out = {"value": float(v.mean()), "num_videos": int(len(v))}
    if bootstrap > 0 and len(v) > 1:
        rng = np.random.default_rng(seed)
        means = v[rng.integers(0, len(v), (bootstrap, len(v)))].mean(1)
        a = (1 - level) / 2
        out["ci"] = [float(np.quantile(means, a)), float(np.quantile(means, 1 - a))]
    return out


class TooFewSamples(ValueError):
    """A Fréchet distance asked for from fewer samples than its feature dimension."""


class _Evaluator:
    def __init__(self, real: _VideoSet, fake: _VideoSet, cache: FeatureCache, batch_size: int, bootstrap: int, seed: int,
                 device: torch.device = torch.device("cpu"), allow_few: bool = False, sharding: Sharding | None = None):
        self.real, self.fake, self.cache, self.device, self.allow_few = real, fake, cache, device, allow_few
        self.batch_size, self.bootstrap, self.seed = batch_size, bootstrap, seed
        self.sh = sharding or Sharding()
        self._feats: dict[tuple, np.ndarray] = {}

    def on_device(self, fn: Callable) -> Callable:
        """``fn`` on batches moved to the evaluation device (the networks of the Frechet metrics live there)."""
        if self.device.type == "cpu":
            return fn
        return lambda x: fn(x.to(self.device, non_blocking=True))

    def _features(self, key: str, fn: Callable, items: Callable[[], Iterable[np.ndarray]], units: list,
                  read: Callable[[Any], np.ndarray], describe: dict) -> np.ndarray:
        """Features of ``items()`` (one process), from the cache or computed.

        Under torchrun the same arrays come from ``units`` (clips or sources, each ``read`` to a
        stack of items): rank r computes units r, r + N, ... and every rank gets all rows in order;
        only rank 0 reads and writes the cache, and broadcasts whether it had them."""
        if not self.sh.launched:
            return self.cache.get_or_compute(key, lambda: batched_features(items(), fn, self.batch_size), describe)
        cached = self.sh.broadcast(self.cache.load(key) if self.sh.is_main else None)
        if cached is not None:
            return cached
        mine: dict[int, np.ndarray] = {}
        for i in self.sh.take(range(len(units))):
            stack = read(units[i])  # (n, ...) items of this unit
            mine[i] = batched_features(iter(stack), fn, self.batch_size) if len(stack) else np.zeros((0, 0))
        rows = {i: a for part in self.sh.gather(mine) for i, a in part.items()}
        arr = np.concatenate([rows[i] for i in range(len(units)) if len(rows[i])])
        if self.sh.is_main:
            self.cache.store(key, arr, describe)
        return arr

    def clip_features(self, side: _VideoSet, net_id: str, fn: Callable, per_frame: bool = False) -> np.ndarray:
        """Features of every selected clip (``per_frame``: every frame of them, clip-major)."""
        mem = (id(side), net_id, per_frame)
        if mem not in self._feats:
            key = cache_key(kind="clips", net=net_id, per_frame=per_frame, clips=side.clip_key())
            if per_frame:
                items = lambda: (f for clip in side.iter_clips() for f in clip)  # noqa: E731
                read = lambda c: c.read()  # noqa: E731  (T, H, W, 3): one item per frame
            else:
                items = side.iter_clips
                read = lambda c: c.read()[None]  # noqa: E731  one item: the clip
            self._feats[mem] = self._features(
                key, self.on_device(fn), items, list(side.clips), read,
                {"set": str(side.root), "net": net_id, "per_frame": per_frame, "num_clips": len(side.clips)})
        return self._feats[mem]

    def frame_features(self, side: _VideoSet, net_id: str, fn: Callable, max_frames: int | None) -> np.ndarray:
        mem = (id(side), net_id, "frames", max_frames)
        if mem not in self._feats:
            key = cache_key(kind="frames", net=net_id, set=side.fingerprint, max_frames=max_frames)
            # torchrun: (source, frames it gives) in source order until max_frames, from the
            # containers' frame counts (one process stops on the frames actually decoded)
            units, left = [], max_frames
            for src in side.sources:
                n = src.num_frames if left is None else min(src.num_frames, left)
                if n <= 0:
                    break
                units.append((src, n))
                left = None if left is None else left - n
            self._feats[mem] = self._features(
                key, self.on_device(fn), lambda: side.iter_frames(max_frames), units, lambda u: u[0].read()[: u[1]],
                {"set": str(side.root), "net": net_id, "max_frames": max_frames})
        return self._feats[mem]

    def check_count(self, real_f: np.ndarray, fake_f: np.ndarray, unit: str) -> str | None:
        """Refuse (or, with allow_few, note) a Fréchet distance from fewer samples than feature dimensions."""
        n, d = min(len(real_f), len(fake_f)), int(real_f.shape[1])
        if n < 2:
            raise TooFewSamples(f"{n} {unit} on one side: a covariance needs at least 2; give more real/generated videos")
        if n >= d:
            return None
        msg = (f"only {len(real_f)} real / {len(fake_f)} generated {unit} for {d}-d features: the covariances are "
               f"rank-deficient and the distance mostly measures the sample count")
        if not self.allow_few:
            raise TooFewSamples(f"{msg}; give at least {d} {unit} per side (--num-clips, more videos), or pass "
                                "--allow-few to compute it anyway and compare it only with runs of the same counts")
        log.warning("%s (--allow-few)", msg)
        return msg

    def distance(self, value: float, real_f: np.ndarray, fake_f: np.ndarray, unit: str, protocol: str, ddof: int = 0) -> dict:
        rec = {"value": float(value), "num_real": int(len(real_f)), "num_fake": int(len(fake_f)), "unit": unit,
               "feature_dim": int(real_f.shape[1]), "covariance": "divided by N" if ddof == 0 else "divided by N-1",
               "protocol": protocol}
        few = self.check_count(real_f, fake_f, unit)
        if few:
            rec["warning"] = few
        ci = bootstrap_frechet(real_f, fake_f, ddof=ddof, num_samples=self.bootstrap, seed=self.seed)
        if ci["num_samples"]:
            rec["ci"] = [ci["low"], ci["high"]]
            rec["ci_level"] = ci["level"]
            rec["bootstrap_samples"] = ci["num_samples"]
        return rec

    def per_video(self, fn: Callable[[_VideoSet], list[float]], protocol: str, over_sources: bool = False) -> dict:
        """Mean and interval over videos; ``per_video`` maps each generated video's name to its score
        (``fn`` returns one value per selected clip, or per source with ``over_sources``)."""
        values = fn(self.fake)
        names = [s.name for s in self.fake.sources] if over_sources else [c.source.name for c in self.fake.clips]
        rec = {**_mean_ci(values, self.bootstrap, self.seed), "unit": "videos", "protocol": protocol,
               "per_video": {n: float(v) for n, v in zip(names, values)}}
        if self.real is not None:
            rec["real"] = _mean_ci(fn(self.real), self.bootstrap, self.seed)
        return rec


def evaluate(
    real: str | Path | None,
    fake: str | Path,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    out_dir: str | Path | None = None,
    *,
    i3d: str | Path | None = None,
    inception: str | Path | None = None,
    videomae: str | Path | None = None,
    clip: str | Path | None = None,
    dino: str | Path | None = None,
    raft: str | Path | None = None,
    interpolator: str | Path | None = None,
    musiq: str | Path | None = None,
    num_clips: int = 2048,
    clip_length: int | None = None,
    max_fid_frames: int = 50000,
    bootstrap: int = 100,
    seed: int = 0,
    cache_dir: str | Path | None = "default",
    batch_size: int = 16,
    effnet_resolution: int = 224,
    fps: float | None = None,
    report: bool = True,
    device: str = "auto",
    real_split: str = "val",
    frame_stride: int | None = None,
    resolution: int | None = None,
    allow_few: bool = True,
    allow_mismatch: bool = False,
    references: bool = True,
) -> dict:
    """Compare generated videos in ``fake`` with real ones in ``real``; returns the metrics dict.

    Writes ``metrics.json`` (and ``report.html`` if ``report``) into ``out_dir`` when given.
    ``cache_dir``: "default" (``OUT/feature_cache`` when ``out_dir`` is given, else
    ``$MEDVID_CACHE/features`` or ``~/.cache/medvid/features``), a folder, or None to disable
    feature caching. ``fps``: frame rate for dynamic degree (default: the samples' recorded rate,
    else the reader's, 8 for npz and frame folders). ``clip_length`` defaults to the frames the
    samples were trained with (``samples.json``), else 16. ``device``: where the feature networks
    of FVD, FID, IS and CD-FVD run (auto: CUDA when present); the per-video scores' networks stay on
    the CPU.

    Under ``torchrun --nproc-per-node N`` every rank runs this function: the feature extraction
    (the networks over clips and frames) is split across ranks, every rank gets all features, and
    rank 0 writes the cache, ``metrics.json`` and the report.
    """
    from medvid.training.distributed import resolve_device

    t0 = time.time()
    names = parse_metrics(metrics)
    dev = resolve_device(device)  # a missing GPU is named before any video is read
    sidecar = _sidecar(fake)
    proto = sidecar.get("protocol") or {}
    clip_length = clip_length or proto.get("num_frames") or 16
    fps = fps or proto.get("fps") or sidecar.get("fps")
    prepared_real = None
    if real is not None and _is_prepared(real):
        prepared_real = _prepared_real(real, real_split, fake, out_dir, num_clips, clip_length, frame_stride,
                                       resolution, proto, seed, fps)
        real = prepared_real["clips"]
    if num_clips < 2:
        raise ValueError(f"--num-clips must be at least 2 (a covariance needs two clips), got {num_clips}")
    if clip_length < 2:
        raise ValueError(f"--clip-length must be at least 2, got {clip_length}")
    real_set = _VideoSet(real, "--real", True, num_clips, clip_length, seed) if real is not None else None
    fake_set = _VideoSet(fake, "--fake", False, num_clips, clip_length, seed)
    if real_set is not None and not (real_set.images or fake_set.images) and not allow_mismatch:
        _check_same_protocol(real_set, fake_set, fps)
    if cache_dir == "default":
        cache_dir = Path(out_dir) / "feature_cache" if out_dir is not None else default_cache_dir()
    cache = FeatureCache(cache_dir)
    sh = current(None, "auto")
    ev = _Evaluator(real_set, fake_set, cache, batch_size, bootstrap, seed, dev, allow_few, sh)
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    timings: dict[str, float] = {}
    clip_nets: dict[str, object] = {}

    def clip_net():
        if "clip" not in clip_nets:
            from medvid.nets.vision import ClipImageNet

            clip_nets["clip"] = ClipImageNet(clip)
        return clip_nets["clip"]

    images = fake_set.images or (real_set is not None and real_set.images)
    for name in names:
        t = time.time()
        if real_set is None and name in NEEDS_REAL:
            skipped[name] = "compares with real videos: give --real DIR (MedGen's protocol uses the per-video scores)"
            continue
        if images and name not in FRAME_METRICS:
            side = "--fake" if fake_set.images else "--real"
            skipped[name] = (f"a video metric, and {side} is an image set (still images, e.g. generate --frames 1); "
                             f"image sets are scored with {', '.join(FRAME_METRICS)}")
            continue
        try:
            _run_metric(name, ev, results, locals_=dict(
                i3d=i3d, inception=inception, videomae=videomae, dino=dino, raft=raft, interpolator=interpolator,
                clip=clip, clip_net=clip_net, max_fid_frames=max_fid_frames, effnet_resolution=effnet_resolution,
                fps=fps, clip_length=clip_length, musiq=musiq, images=images))
        except (MissingWeightsError, TooFewSamples) as e:
            skipped[name] = str(e)
            log.warning("skipping %s: %s", name, e)
        timings[name] = round(time.time() - t, 3)

    out = {
        "real": None if real_set is None else {**real_set.describe(),
                                               "fingerprint": real_set.fingerprint if cache.root else None},
        "fake": fake_set.describe(),
        "metrics": results,
        "skipped": skipped,
        "settings": {"metrics": names, "num_clips": num_clips, "clip_length": clip_length, "seed": seed, "fps": fps,
                     "real_protocol": None if prepared_real is None else prepared_real["protocol"],
                     "bootstrap": bootstrap, "max_fid_frames": max_fid_frames, "effnet_resolution": effnet_resolution,
                     "weights": {"i3d": _s(i3d), "inception": _s(inception), "videomae": _s(videomae),
                                 "clip": _s(clip), "dino": _s(dino), "raft": _s(raft), "interpolator": _s(interpolator),
                                 "musiq": _s(musiq)}},
        "cache": {"dir": str(cache.root) if cache.root else None, "hits": cache.hits, "misses": cache.misses},
        "seconds": timings,
        "total_seconds": round(time.time() - t0, 3),
    }
    if prepared_real is not None and references:
        out["references"] = _reference_rows(prepared_real, sidecar, fake, names, out_dir, dict(
            num_clips=num_clips, clip_length=clip_length, bootstrap=bootstrap, seed=seed, cache_dir=cache_dir,
            batch_size=batch_size, effnet_resolution=effnet_resolution, fps=fps, allow_few=allow_few,
            i3d=i3d, inception=inception, videomae=videomae, clip=clip, dino=dino, raft=raft,
            interpolator=interpolator, musiq=musiq, max_fid_frames=max_fid_frames))
    release(sh)
    if out_dir is not None and sh.is_main:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(out, indent=1))
        if report:
            from medvid.report.report import write_report

            rows, round_trip = {}, None
            for label, ref in out.get("references", {}).items():
                rows[label] = {}
                for m, r in ref["metrics"].items():
                    rows[label][m] = r["value"]
                    if "ci" in r:
                        rows[label][m + "_ci"] = r["ci"]
                if label.startswith("VAE round trip"):
                    round_trip = ref["path"]
            write_report(out, out_dir / "report.html", real_dir=real, fake_dir=fake, references=rows or None,
                         round_trip_dir=round_trip)
    return out


def _s(p) -> str | None:
    return None if p is None else str(p)


def _run_metric(name: str, ev: _Evaluator, results: dict, locals_: dict) -> None:
    L = locals_
    real, fake = ev.real, ev.fake
    if name == "fvd":
        from medvid.metrics.fvd import fvd_from_features
        from medvid.nets.detectors import i3d_features, load_i3d

        det = load_i3d(L["i3d"], ev.device)
        real.require_clips(name), fake.require_clips(name)
        nid = "i3d:" + weights_id(L["i3d"])
        fr = ev.clip_features(real, nid, lambda x: i3d_features(det, x))
        ff = ev.clip_features(fake, nid, lambda x: i3d_features(det, x))
        results["fvd"] = ev.distance(fvd_from_features(fr, ff), fr, ff, "clips",
                                     f"StyleGAN-V fvd2048_16f: I3D logits, {L['clip_length']}-frame clips, cov/N")
    elif name == "cdfvd":
        from medvid.metrics.cdfvd import cdfvd_from_features
        from medvid.nets.vision import VideoMAENet

        net = VideoMAENet(L["videomae"]).to(ev.device)
        real.require_clips(name), fake.require_clips(name)
        nid = "videomae:" + weights_id(L["videomae"])
        fr, ff = ev.clip_features(real, nid, net), ev.clip_features(fake, nid, net)
        results["cdfvd"] = ev.distance(cdfvd_from_features(fr, ff), fr, ff, "clips",
                                       "cd-fvd: VideoMAE-v2 fc_norm(mean tokens), 224x224 bilinear, [0,1], cov/N")
    elif name in ("fid", "is"):
        from medvid.nets.detectors import inception_features, inception_probs, load_inception

        det = load_inception(L["inception"], ev.device)
        nid = "inception:" + weights_id(L["inception"])
        if name == "fid":
            from medvid.metrics.fid_is import fid_from_features

            fr = ev.frame_features(real, nid, lambda x: inception_features(det, x), None)
            ff = ev.frame_features(fake, nid, lambda x: inception_features(det, x), L["max_fid_frames"])
            results["fid"] = ev.distance(fid_from_features(fr, ff), fr, ff, "frames",
                                         "StyleGAN-V fid50k_full: Inception pool3 2048-d, all real frames, cov/N")
        else:
            from medvid.metrics.fid_is import inception_score

            probs = ev.frame_features(fake, nid + ":probs", lambda x: inception_probs(det, x), L["max_fid_frames"])
            if len(probs) < 10:
                raise ValueError(f"--fake: IS needs at least 10 generated frames (10 splits), got {len(probs)}")
            mean, std = inception_score(probs, 10)
            results["is"] = {"value": mean, "std": std, "num_fake": int(len(probs)), "unit": "frames",
                             "protocol": "StyleGAN-V is50k: 1008 probabilities without output bias, 10 splits; std over splits"}
    elif name == "fc":
        from medvid.metrics.consistency import fc_all_pairs, fc_consecutive

        net = L["clip_net"]()
        nid = "clip:" + weights_id(L["clip"])

        def per_video(side, f):
            side.require_clips(name)
            feats = ev.clip_features(side, nid, net, per_frame=True).reshape(len(side.clips), side.clip_length, -1)
            return [f(v) for v in feats]

        results["fc_consecutive"] = ev.per_video(lambda s: per_video(s, fc_consecutive),
                                                 "mean CLIP cosine of consecutive frames (x100 = MedSora's %)")
        results["fc_all_pairs"] = ev.per_video(lambda s: per_video(s, fc_all_pairs),
                                               "mean CLIP cosine over all frame pairs (LOVEU-TGVE)")
    elif name in ("subject_consistency", "background_consistency"):
        from medvid.metrics.vbench import vbench_consistency

        if name == "subject_consistency":
            from medvid.nets.vision import DinoNet

            net, nid = DinoNet(L["dino"]), "dino:" + weights_id(L["dino"])
        else:
            net, nid = L["clip_net"](), "clip:" + weights_id(L["clip"])

        def per_video(side):
            side.require_clips(name)
            feats = ev.clip_features(side, nid, net, per_frame=True).reshape(len(side.clips), side.clip_length, -1)
            return [s / c for s, c in map(vbench_consistency, feats)]

        results[name] = ev.per_video(per_video, "VBench: mean of [max(0,cos(f_i-1,f_i)) + max(0,cos(f_0,f_i))]/2 "
                                     f"with {'DINO' if name == 'subject_consistency' else 'CLIP'} features")
    elif name == "dynamic_degree":
        from medvid.flow.estimators import build_flow_estimator
        from medvid.metrics.vbench import dynamic_degree_video

        method = "raft" if L["raft"] else "dis"
        flow = build_flow_estimator(method, weights=L["raft"])

        def per_video(side):
            out = []
            for c, frames in zip(side.clips, side.iter_clips()):
                fps = L["fps"] or _source_fps(c)
                out.append(float(dynamic_degree_video(frames, fps, flow)))
            return out

        results[f"dynamic_degree_{method}"] = ev.per_video(
            per_video, f"VBench dynamic degree with {method.upper()} flow (VBench uses RAFT)")
    elif name == "motion":
        from medvid.metrics.vbench import frame_motion

        results["motion"] = ev.per_video(
            lambda side: [frame_motion(frames) for frames in side.iter_clips()],
            "mean |grey(f_i) - grey(f_i-1)| in grey levels (0-255): how much the video moves; compare with the "
            "real videos' value (a VAE or generator that blurs time lowers it, flicker raises it)")
    elif name == "motion_smoothness":
        from medvid.metrics.vbench import blend_interpolator, load_interpolator, motion_smoothness_video

        interp = load_interpolator(L["interpolator"]) if L["interpolator"] else blend_interpolator
        key = "motion_smoothness" if L["interpolator"] else "motion_smoothness_blend"

        def per_video(side):
            vals = []
            for frames in side.iter_clips():
                s, n = motion_smoothness_video(frames, interp)
                vals.append((255.0 - s / n) / 255.0)
            return vals

        results[key] = ev.per_video(per_video, "VBench motion smoothness with " + (
            f"the TorchScript interpolator {L['interpolator']}" if L["interpolator"]
            else "the mean of neighbouring frames (no AMT-S weights: not VBench's number)"))
    elif name == "imaging_quality":
        from medvid.metrics.vbench import imaging_quality_video, load_musiq

        scorer = load_musiq(L["musiq"])

        def per_video(side):
            return [s / n for s, n in (imaging_quality_video(src.read(), scorer) for src in side.sources)]

        results["imaging_quality"] = ev.per_video(
            per_video, "VBench imaging quality: MUSIQ (SPAQ) per frame / 100, longer side <= 512 px, mean over "
            "every frame of a video, mean over videos", over_sources=True)
    elif name in ("psnr", "ssim"):
        from medvid.metrics.reconstruction import psnr, ssim

        fn = psnr if name == "psnr" else ssim
        vals = []
        for a, b in _pairs(real, fake):
            x = torch.from_numpy(a).permute(0, 3, 1, 2).double() / 255
            y = torch.from_numpy(b).permute(0, 3, 1, 2).double() / 255
            v = fn(x, y)
            vals.append(float(v[torch.isfinite(v)].mean()) if torch.isfinite(v).any() else float("inf"))
        rec = _mean_ci(vals, ev.bootstrap, ev.seed)
        results[name] = {**rec, "unit": "video pairs", "protocol": f"per-frame {name.upper()} on [0,1] frames, "
                         "mean per video, mean over videos (real and fake paired by name)"}
    elif name in ("fd_effnet_frame", "fd_effnet_clip"):
        from medvid.metrics.effnet import CLIP_FEATURE, EffnetFrames, clip_features

        r = L["effnet_resolution"]
        net = EffnetFrames(r)
        nid = f"effnet-lite0:{weights_id(_effnet_path())}:{r}"
        if L["images"]:  # still images: every image (and every real frame) is one sample
            fr = ev.frame_features(real, nid, net, None)
            ff = ev.frame_features(fake, nid, net, L["max_fid_frames"])
            results[name] = ev.distance(frechet_distance_from_features(fr, ff), fr, ff, "frames",
                                        f"offline (not FID): EfficientNet-Lite0 pooled 1280-d per image at {r}px, "
                                        "every real frame vs every generated image, cov/N")
            return
        real.require_clips(name), fake.require_clips(name)
        fr = ev.clip_features(real, nid, net, per_frame=True)
        ff = ev.clip_features(fake, nid, net, per_frame=True)
        if name == "fd_effnet_clip":
            fr = clip_features(torch.from_numpy(fr), real.clip_length).numpy()
            ff = clip_features(torch.from_numpy(ff), fake.clip_length).numpy()
            unit, proto = "clips", f"offline (not FVD): {CLIP_FEATURE}, frames at {r}px, cov/N"
        else:
            unit, proto = "frames", f"offline (not FID): EfficientNet-Lite0 pooled 1280-d per frame at {r}px, cov/N"
        results[name] = ev.distance(frechet_distance_from_features(fr, ff), fr, ff, unit, proto)
    else:  # parse_metrics guarantees a known name
        raise AssertionError(name)


def _effnet_path():
    from medvid.nets.efficientnet_lite0 import default_weights_path

    return default_weights_path()


def _sidecar(fake) -> dict:
    from medvid.metrics.real_clips import samples_sidecar

    return samples_sidecar(fake)


def _is_prepared(real) -> bool:
    from medvid.metrics.real_clips import is_prepared

    return is_prepared(real)


def _prepared_real(prepared, split: str, fake, out_dir, num_clips: int, clip_length: int, frame_stride, resolution,
                   proto: dict, seed: int, fps) -> dict:
    """Cut ``split`` of a prepared folder at the samples' protocol into ``OUT/real_<split>``."""
    from medvid.utils.settings import pick

    where = f"the samples in {fake} (samples.json)"
    frame_stride = pick("--frame-stride", frame_stride, proto.get("frame_stride"), None, where)
    resolution = pick("--resolution", resolution, proto.get("resolution"), None, where)
    if frame_stride is None or resolution is None:
        raise ValueError(
            f"--real {prepared} is a prepared folder, but {fake} has no samples.json naming the stride and size its "
            "videos were trained at; pass --frame-stride and --resolution (those of the training clips)"
        )
    base = Path(out_dir) if out_dir is not None else Path(fake)
    from medvid.metrics.real_clips import cut_real_clips

    folder, count = cut_real_clips(prepared, split, base / f"real_{split}", num_clips=num_clips,
                                   num_frames=clip_length, frame_stride=frame_stride, resolution=resolution,
                                   seed=seed, fps=fps)
    protocol = {"prepared": str(prepared), "split": split, "num_frames": clip_length, "frame_stride": frame_stride,
                "resolution": resolution, "clips": count, "fps": fps}
    return {"clips": folder, "protocol": protocol, "prepared": prepared, "base": base}


def _frame_rate(side: "_VideoSet", fallback) -> float | None:
    """The frame rate the clips of one side are played at, when the files say it."""
    rates = []
    for c in side.clips[:8]:
        if c.source.kind == "npz":
            with np.load(c.source.path) as z:
                if "fps" in z:
                    rates.append(float(z["fps"]))
        elif c.source.kind == "video":
            from medvid.data.readers import open_video

            with open_video(c.source.path) as r:
                if r.metadata.get("fps_source") != "default":
                    rates.append(float(r.fps))
    return float(np.median(rates)) if rates else fallback


def _check_same_protocol(real: "_VideoSet", fake: "_VideoSet", fps) -> None:
    """Refuse real and generated clips of different frame size or frame spacing."""
    if not real.clips or not fake.clips:
        return
    r_shape = real.clips[0].read().shape[1:3]
    f_shape = fake.clips[0].read().shape[1:3]
    fix = ("pass the `medvid prepare` folder as --real (clips are then cut at the samples' stride and size), "
           "or --allow-mismatch to compare them anyway")
    if tuple(r_shape) != tuple(f_shape):
        raise ValueError(f"--real clips are {r_shape[1]}x{r_shape[0]} pixels but --fake clips are {f_shape[1]}x{f_shape[0]}; "
                         f"the distances would measure the resizing; {fix}")
    r_fps, f_fps = _frame_rate(real, None), _frame_rate(fake, fps)
    if r_fps and f_fps and abs(r_fps - f_fps) > 0.02 * max(r_fps, f_fps):
        raise ValueError(f"--real clips play at {r_fps:g} frames/s but --fake clips at {f_fps:g}: different frame "
                         f"spacing makes every motion statistic differ; {fix}")


def _reference_rows(prepared_real: dict, sidecar: dict, fake, names, out_dir, kw: dict) -> dict:
    """Reference rows against the same held-out clips: training clips, noisy training clips, VAE round trip."""
    from medvid.data.manifest import read_manifest
    from medvid.metrics.real_clips import NOISE_SIGMA, cut_real_clips, vae_round_trip

    p, base = prepared_real["protocol"], prepared_real["base"]
    real = prepared_real["clips"]
    rows: dict[str, str | Path] = {}
    other = "train" if p["split"] != "train" else "val"
    if any(e.get("split", "train") == other for e in read_manifest(prepared_real["prepared"])):
        cut = dict(num_clips=kw["num_clips"], num_frames=p["num_frames"], frame_stride=p["frame_stride"],
                   resolution=p["resolution"], seed=kw["seed"] + 1, fps=p["fps"])
        rows[f"{other} clips (a copy of the data: lower bound)"] = cut_real_clips(
            prepared_real["prepared"], other, base / f"ref_{other}", **cut)[0]
        rows[f"{other} clips + noise sigma {NOISE_SIGMA} (trivial baseline)"] = cut_real_clips(
            prepared_real["prepared"], other, base / f"ref_{other}_noisy", noise=NOISE_SIGMA, **cut)[0]
    if sidecar.get("vae"):
        try:
            rows["VAE round trip of the held-out clips (the latent space's ceiling)"] = vae_round_trip(
                real, sidecar["vae"], base / "ref_vae_round_trip", fps=p["fps"])
        except (ValueError, OSError) as e:
            log.warning("no VAE round-trip row: %s", e)
    table = {}
    for name, folder in rows.items():
        res = evaluate(real, folder, names, None, report=False, references=False, allow_mismatch=True, **kw)
        table[name] = {"path": str(folder), "metrics": {m: {k: r[k] for k in ("value", "ci", "warning") if k in r}
                                                         for m, r in res["metrics"].items()},
                       "skipped": res["skipped"]}
    return table


def _source_fps(c: Clip) -> float:
    if c.source.kind == "npz":
        with np.load(c.source.path) as z:
            return float(z["fps"]) if "fps" in z else 8.0
    from medvid.data.readers import open_video

    with open_video(c.source.path) as r:
        return float(r.fps) if r.metadata.get("fps_source") != "default" else 8.0


def _pairs(real: _VideoSet, fake: _VideoSet):
    rn = {s.name: s for s in real.sources}
    fn = {s.name: s for s in fake.sources}
    common = [n for n in fn if n in rn]
    if common:
        pairs = [(rn[n], fn[n]) for n in common]
    elif len(real.sources) == len(fake.sources):
        pairs = list(zip(real.sources, fake.sources))
    else:
        raise ValueError(
            f"psnr/ssim compare reconstructions with originals: --real and --fake must hold videos with the same "
            f"names (or the same number of videos), got {len(real.sources)} and {len(fake.sources)} with no common name"
        )
    for r, f in pairs:
        a, b = r.read(), f.read()
        t = min(len(a), len(b))
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"psnr/ssim: {r.path} is {a.shape[1:3]} but {f.path} is {b.shape[1:3]}; "
                             "reconstructions must have the original's size")
        yield a[:t], b[:t]
