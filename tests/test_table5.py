"""Table 5: the hand-crafted runner recovers a planted class difference; the writers' formats."""
import csv
import io

import numpy as np
import pytest

from mtl_flax.baselines import table5


def _oriented_gratings(num, seed, size=32):
  """Noisy RGB faces-to-be whose class is the orientation of a grating (random phase)."""
  rng = np.random.default_rng(seed)
  labels = np.arange(num) % 3
  yy, xx = np.mgrid[0:size, 0:size]
  images = []
  for label in labels:
    direction = [(1, 0), (0, 1), (1, 1)][label]
    phase = rng.uniform(0, 2 * np.pi)
    pattern = np.sin(2 * np.pi * (direction[0] * xx + direction[1] * yy) / 7 + phase)
    image = 128 + 35 * pattern + rng.normal(0, 30, (size, size))
    images.append(np.clip(np.rint(image), 0, 255).astype(np.uint8))
  return np.repeat(np.stack(images)[..., None], 3, axis=-1), labels


def test_handcrafted_baselines_recover_a_planted_class_difference():
  train_images, train_labels = _oriented_gratings(60, seed=0)
  test_images, test_labels = _oriented_gratings(30, seed=1)
  rows = table5.run_handcrafted_baselines(train_images, train_labels, test_images, test_labels,
                                          image_size=32, grid=(4, 4))
  assert [r.method for r in rows] == [table5.METHOD_NAMES[m] for m in table5.METHODS]
  assert [r.feature_dim for r in rows] == [16 * 59, 16 * 256, 16 * 8]
  for row in rows:
    assert row.accuracy > 0.8 and row.mf1 > 0.8, row  # chance is 1/3
  # Shuffled training labels carry no class signal.
  shuffled = np.random.default_rng(2).permutation(train_labels)
  [eoh] = table5.run_handcrafted_baselines(train_images, shuffled, test_images, test_labels,
                                           image_size=32, grid=(4, 4), methods=("eoh",))
  assert eoh.accuracy < 0.6


def test_runner_resizes_to_image_size_and_checks_its_arguments():
  images, labels = _oriented_gratings(12, seed=3, size=40)
  [row] = table5.run_handcrafted_baselines(images, labels, images[:6], labels[:6], image_size=20,
                                           grid=(2, 2), methods=("eoh",),
                                           options={"eoh": {"bins": 4}})
  assert row.feature_dim == 2 * 2 * 4 and "4 orientation bins" in row.settings
  with pytest.raises(ValueError, match="methods"):
    table5.run_handcrafted_baselines(images, labels, images, labels, image_size=40,
                                     methods=("hog",))
  with pytest.raises(ValueError, match="test_images"):
    table5.run_handcrafted_baselines(images, labels, images[:, :, :30], labels, image_size=40)


ROWS = [
    table5.Table5Row("LBP + linear SVM", 0.41234, 0.305, 2891, "7x7 cells"),
    {"method": "MTL_trace & 100% (ours)", "accuracy": 0.5},
]


def test_markdown_table():
  text = table5.format_table5(ROWS, "markdown")
  lines = text.splitlines()
  assert lines[0] == "| method | accuracy (%) | M-F1 (%) | seeds | features | settings |"
  assert lines[2] == "| LBP + linear SVM | 41.23 | 30.50 | - | 2891 | 7x7 cells |"
  assert lines[3] == "| MTL_trace & 100% (ours) | 50.00 | - | - | - | - |"
  assert len(lines) == 4


def test_rows_over_seeds_are_mean_and_sample_std_with_a_title():
  seed0 = [table5.Table5Row("LBP", 0.5, 0.4, 10, "s"), table5.Table5Row("CNN", 0.7)]
  seed1 = [table5.Table5Row("LBP", 0.6, 0.2, 10, "s"), table5.Table5Row("CNN", 0.9)]
  seed2 = [table5.Table5Row("LBP", 0.7, 0.3, 10, "s")]
  lbp, cnn = table5.aggregate_over_seeds([seed0, seed1, seed2])
  assert lbp.num_seeds == 3 and cnn.num_seeds == 2
  np.testing.assert_allclose([lbp.accuracy, lbp.accuracy_std], [0.6, np.std([.5, .6, .7], ddof=1)])
  np.testing.assert_allclose([lbp.mf1, lbp.mf1_std], [0.3, 0.1])
  np.testing.assert_allclose([cnn.accuracy, cnn.accuracy_std], [0.8, np.sqrt(0.02)])
  assert cnn.mf1 is None and cnn.mf1_std is None
  title = ["Table 5: a test.", "Data: made up."]
  md = table5.format_table5([lbp, cnn], "markdown", title).splitlines()
  assert md[:4] == ["**Table 5: a test.**", "", "Data: made up.", ""]
  assert md[6] == "| LBP | 60.00 ± 10.00 | 30.00 ± 10.00 | 3 | 10 | s |"
  text = table5.format_table5([lbp, cnn], "csv", title)
  assert text.startswith("# Table 5: a test.\n# Data: made up.\n")
  parsed = list(csv.DictReader(io.StringIO("".join(text.splitlines(True)[2:]))))
  assert float(parsed[1]["accuracy_std"]) == cnn.accuracy_std and parsed[1]["num_seeds"] == "2"
  tex = table5.format_table5([lbp, cnn], "latex", title)
  assert tex.startswith("% Table 5: a test.\n% Data: made up.\n\\begin{tabular}")
  assert r"LBP & 60.00 $\pm$ 10.00 & 30.00 $\pm$ 10.00 & 3 & 10 & s \\" in tex


def test_csv_table_round_trips_full_precision():
  parsed = list(csv.DictReader(io.StringIO(table5.format_table5(ROWS, "csv"))))
  assert parsed[0] == {"method": "LBP + linear SVM", "accuracy": "0.41234", "mf1": "0.305",
                       "feature_dim": "2891", "settings": "7x7 cells", "accuracy_std": "",
                       "mf1_std": "", "num_seeds": ""}
  assert parsed[1]["method"] == "MTL_trace & 100% (ours)" and parsed[1]["mf1"] == ""
  assert float(parsed[1]["accuracy"]) == 0.5


def test_latex_table_escapes_special_characters():
  text = table5.format_table5(ROWS, "latex")
  assert text.startswith(r"\begin{tabular}{lrrrrl}") and text.rstrip().endswith(r"\end{tabular}")
  assert r"LBP + linear SVM & 41.23 & 30.50 & - & 2891 & 7x7 cells \\" in text
  assert r"MTL\_trace \& 100\% (ours) & 50.00 & - & - & - & - \\" in text


def test_write_table5_writes_every_format(tmp_path):
  paths = table5.write_table5(ROWS, tmp_path / "out")
  assert sorted(p.name for p in paths) == ["table5.csv", "table5.md", "table5.tex"]
  for path, fmt in zip(paths, table5.FORMATS):
    assert path.read_text() == table5.format_table5(ROWS, fmt)
  with pytest.raises(ValueError, match="rows"):
    table5.write_table5([{"method": "x"}], tmp_path / "bad")
  assert not (tmp_path / "bad").exists()
