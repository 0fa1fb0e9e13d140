"""Clips per second of the 85-region LBP-TOP, and of the whole extraction pipeline per clip.

  python benchmarks/lbp_top.py [--clips 256] [--pipeline_clips 16]

Prints, measured in this one run on the same machine:
1. the project's extractor (JAX codes + bincount histograms, batched) on random 16 x 112 x 112
   uint8 clips, rounded and bilinear neighbours;
2. a per-pixel loop port of the classic LBP-TOP (tgsr_jax.lbp_top.lbp_top_loop, the same
   algorithm as the classic MATLAB code's triple loop) timed on a fraction of one clip's centres
   and extrapolated to a whole clip (said so in the output), and the ratio;
3. the whole pipeline per clip (read frames, detect, crop, resize, TIM, LBP-TOP) on a generated
   database, with the time split by stage.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tgsr_jax import extraction  # noqa: E402
from tgsr_jax import face  # noqa: E402
from tgsr_jax import lbp_top  # noqa: E402
from tgsr_jax.readers import load_clip  # noqa: E402


def _time(fn, repeats=3):
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def bench_extractor(num_clips: int) -> dict[str, float]:
  clips = np.random.default_rng(0).integers(0, 256, (num_clips, 16, 112, 112), dtype=np.uint8)
  rates = {}
  for interpolation in (False, True):
    lbp_top.lbp_top_features_batch(clips[:32], interpolation=interpolation)  # compile
    seconds = _time(lambda: lbp_top.lbp_top_features_batch(clips, interpolation=interpolation))
    rates[interpolation] = num_clips / seconds
  return rates


def classic_loop(volume: np.ndarray, radius: int = 3, points: int = 8) -> np.ndarray:
  """A lean per-pixel port of the classic LBP-TOP triple loop, histograms on the 8x8 blocks.

  Rounded neighbours, the same conventions as tgsr_jax.lbp_top; returns counts (3, 64, 59).
  """
  v = volume.tolist()  # Python lists index faster than NumPy scalars
  t_len, h, w = volume.shape
  mapping = lbp_top.uniform_mapping(points).tolist()
  offsets = [lbp_top.neighbour_offsets(radius, radius, points).astype(int).tolist()] * 3
  rows = np.searchsorted(np.arange(9) * h // 8, np.arange(h), side="right") - 1
  cols = np.searchsorted(np.arange(9) * w // 8, np.arange(w), side="right") - 1
  hist = [[[0] * 59 for _ in range(64)] for _ in range(3)]
  for t in range(radius, t_len - radius):
    for y in range(radius, h - radius):
      for x in range(radius, w - radius):
        c = v[t][y][x]
        block = int(rows[y]) * 8 + int(cols[x])
        code = 0
        for p, (dr, dc) in enumerate(offsets[0]):
          if v[t][y + dr][x + dc] >= c:
            code += 1 << p
        hist[0][block][mapping[code]] += 1
        code = 0
        for p, (dr, dc) in enumerate(offsets[1]):
          if v[t + dr][y][x + dc] >= c:
            code += 1 << p
        hist[1][block][mapping[code]] += 1
        code = 0
        for p, (dr, dc) in enumerate(offsets[2]):
          if v[t + dr][y + dc][x] >= c:
            code += 1 << p
        hist[2][block][mapping[code]] += 1
  return np.asarray(hist)


def bench_loop(fraction_t: int = 1) -> float:
  """Seconds per whole clip of the per-pixel loop, extrapolated from ``fraction_t`` frames."""
  clip = np.random.default_rng(1).integers(0, 256, (16, 112, 112), dtype=np.uint8)
  # The loop covers t in [3, 13); time only the first `fraction_t` centre frames.
  sub = clip[:fraction_t + 6]
  # Check the port against the extractor on the same frames before timing it.
  counts = classic_loop(sub).sum(1)
  codes = np.asarray(lbp_top.lbp_top_codes(sub))
  expected = np.stack([np.bincount(lbp_top.uniform_mapping()[c.ravel()], minlength=59)
                       for c in codes])
  assert np.array_equal(counts, expected), "loop port disagrees with the extractor"
  seconds = _time(lambda: classic_loop(sub), repeats=1)
  return seconds * (16 - 6) / fraction_t


def bench_pipeline(num_clips: int) -> None:
  try:
    from tgsr_jax.synthetic import microexpressions
  except ImportError:
    print("pipeline: tgsr_jax.synthetic.microexpressions is not available; skipped")
    return
  settings = extraction.ExtractionSettings()
  with tempfile.TemporaryDirectory() as tmp:
    microexpressions.write_database(tmp, "SMIC_HS", seed=0, num_clips=num_clips)
    records = extraction.read_generated_database(tmp, "SMIC_HS")[:num_clips]
    stages = {"read": 0.0, "detect + crop": 0.0, "resize + TIM": 0.0, "LBP-TOP": 0.0}
    frames_total = 0
    lbp_top.lbp_top_features_batch(np.zeros((1, 16, 112, 112), np.uint8))  # compile
    for record in records:
      t0 = time.perf_counter()
      frames = load_clip(record)
      t1 = time.perf_counter()
      cropped, _ = face.detect_and_crop(frames, margin=settings.margin, name=record.name)
      t2 = time.perf_counter()
      clip = extraction.resize_and_tim(cropped, size=settings.size,
                                       tim_length=settings.tim_length)
      t3 = time.perf_counter()
      lbp_top.lbp_top_features(clip)
      t4 = time.perf_counter()
      for name, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
        stages[name] += seconds
      frames_total += frames.shape[0]
    total = sum(stages.values())
    shape = frames.shape
    print(f"pipeline on {len(records)} generated SMIC_HS clips ({frames_total / len(records):.0f} "
          f"frames of {shape[1]}x{shape[2]} on average), one clip at a time: "
          f"{1e3 * total / len(records):.1f} ms/clip = {len(records) / total:.1f} clips/s")
    for name, seconds in stages.items():
      print(f"  {name:24s} {1e3 * seconds / len(records):8.2f} ms/clip "
            f"({100 * seconds / total:4.1f} %)")
    def run():
      extraction.extract_database(records, pathlib.Path(tmp) / "out.mat", settings=settings,
                                  cache_dir=None, progress=False)
    run()  # compiles LBP-TOP for this batch size
    seconds = _time(run, repeats=1)
    print(f"extract_database (threaded reading, batched LBP-TOP, no cache, after warm-up): "
          f"{1e3 * seconds / len(records):.1f} ms/clip = {len(records) / seconds:.1f} clips/s")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clips", type=int, default=256)
  parser.add_argument("--pipeline_clips", type=int, default=16)
  parser.add_argument("--loop_frames", type=int, default=1,
                      help="centre frames (of 10) the per-pixel loop is timed on")
  args = parser.parse_args()
  rates = bench_extractor(args.clips)
  loop_seconds = bench_loop(args.loop_frames)
  print(f"85-region LBP-TOP (R=3, P=8), 16 x 112 x 112 uint8 clips, batch of {args.clips}:")
  print(f"  project extractor, rounded neighbours:  {rates[False]:9.1f} clips/s")
  print(f"  project extractor, bilinear neighbours: {rates[True]:9.1f} clips/s")
  print(f"  per-pixel loop (classic port; timed on {args.loop_frames} of 10 centre frames, "
        f"extrapolated): {1 / loop_seconds:9.4f} clips/s ({loop_seconds:.1f} s/clip)")
  print(f"  ratio extractor / loop (rounded): {rates[False] * loop_seconds:,.0f}x")
  bench_pipeline(args.pipeline_clips)


if __name__ == "__main__":
  main()
