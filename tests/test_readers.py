"""Database readers on small trees written here; the CASME II sheet parser on the real sheets."""
import collections
import pathlib

import cv2
import numpy as np
import openpyxl
import pytest

from tgsr_jax import readers
from tgsr_jax.readers import BadClipError, load_clip


def _frame(path, value, shape=(6, 5), colour=False):
  path.parent.mkdir(parents=True, exist_ok=True)
  image = np.full(shape, value, np.uint8)
  if colour:
    image = np.stack([image, image // 2, image // 3], axis=-1)
  assert cv2.imwrite(str(path), image)


def _sheet(path, rows, revision_2019=False):
  wb = openpyxl.Workbook()
  ws = wb.active
  header = ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
            "Action Units", "Estimated Emotion"]
  ws.append(header + (["Objective Classes"] if revision_2019 else []))
  for row in rows:
    ws.append(list(row))
  wb.save(path)


def test_casme2_tree(tmp_path):
  root = tmp_path / "CASME2"
  for n in range(9, 13):  # img9..img12: numeric order matters (img10 after img9)
    _frame(root / "CASME2_RAW_selected" / "sub01" / "EP02_01f" / f"img{n}.jpg", 10 * n,
           colour=True)
  for n in range(1, 4):
    _frame(root / "CASME2_RAW_selected" / "sub12" / "EP05_02" / f"img{n}.jpg", n)
  _sheet(root / "CASME2-coding-20140508.xlsx", [
      ("01", "EP02_01f", None, 9, 10, 12, None, "12", "happiness"),
      (12, "EP05_02", None, 1, "/", 3, None, "4+9", "Repression"),
      ("02", "EP01_01", None, 5, 6, 8, None, "", "others"),  # dropped class
      ("02", "EP03_03", None, 5, 6, 8, None, "", "surprise"),  # folder missing
  ])
  records = readers.read_casme2(root)
  assert [(r.subject, r.clip, r.label, r.emotion) for r in records] == [
      ("01", "EP02_01f", 2, "happiness"), ("12", "EP05_02", 1, "repression"),
      ("02", "EP03_03", 3, "surprise")]
  first = records[0]
  assert [p.rsplit("/", 1)[1] for p in first.frame_paths] == ["img9.jpg", "img10.jpg",
                                                              "img11.jpg", "img12.jpg"]
  assert (first.onset, first.apex, first.offset) == (9, 10, 12)
  assert records[1].apex is None  # '/' in the sheet
  clip = load_clip(first)
  assert clip.shape == (4, 6, 5) and clip.dtype == np.uint8
  # Colour frames are converted with BT.601 weights (B = v, G = v // 2, R = v // 3 here).
  v = np.array([90, 100, 110, 120])
  expected = np.round(0.114 * v + 0.587 * (v // 2) + 0.299 * (v // 3))
  np.testing.assert_allclose(clip[:, 0, 0], expected, atol=1)
  assert load_clip(first, grayscale=False).shape == (4, 6, 5, 3)
  with pytest.raises(BadClipError, match="img5.jpg"):
    load_clip(records[2])  # missing frames are named


def test_casme2_sheet_errors(tmp_path):
  (tmp_path / "CASME2_RAW_selected").mkdir()
  _sheet(tmp_path / "bad.xlsx", [("01", "EP02_01f", None, "/", 10, 12, None, "12", "happiness")])
  with pytest.raises(ValueError, match="OnsetFrame"):
    readers.read_casme2(tmp_path, sheet=tmp_path / "bad.xlsx")
  wb = openpyxl.Workbook()
  wb.active.append(["Subject", "Filename", "Emotion"])
  wb.save(tmp_path / "odd.xlsx")
  with pytest.raises(ValueError, match="no column 'onsetframe'"):
    readers.parse_casme2_sheet(tmp_path / "odd.xlsx")
  with pytest.raises(FileNotFoundError, match="CASME2_RAW_selected"):
    readers.read_casme2(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["CASME2-coding-20140508.xlsx", "CASME2-coding-20190701.xlsx"])
def test_real_casme2_sheets(shared, name):
  rows = readers.parse_casme2_sheet(shared("labels", name))
  assert len(rows) == 255
  assert len({r.subject for r in rows}) == 26
  assert rows[0] == readers.Casme2SheetRow("01", "EP02_01f", 46, 59, 86, "12", "happiness")
  counts = collections.Counter(r.emotion for r in rows)
  # Measured from the sheets (the 2019 revision relabels 3 sadness and fear samples).
  expected = {"others": 99, "disgust": 63, "happiness": 32, "repression": 27, "surprise": 25,
              "sadness": 7, "fear": 2}
  if "2019" in name:
    expected.update(surprise=28, sadness=4)
  assert counts == expected
  assert sum(r.apex is None for r in rows) == 1  # one apex coded as '/'
  three = collections.Counter(readers.CDMER3[r.emotion] for r in rows
                              if r.emotion in readers.CDMER3)
  assert three == {1: 90, 2: 32, 3: expected["surprise"]}


def test_smic_tree(tmp_path):
  base = tmp_path / "SMIC" / "NIR"
  for n in (1, 2, 10):
    _frame(base / "s3" / "micro" / "surprise" / "s3_sur_01" / f"image{n:06d}.bmp", n)
    _frame(base / "s11" / "micro" / "negative" / "s11_ne_02" / f"image{n}.png", n)
    _frame(base / "s3" / "micro" / "negative" / "s3_ne_01" / f"image{n:06d}.bmp", n)
  (base / "s3" / "micro" / "positive").mkdir()
  records = readers.read_smic(tmp_path, "nir")
  assert [(r.database, r.subject, r.clip, r.label) for r in records] == [
      ("SMIC_NIR", "3", "s3_ne_01", 1), ("SMIC_NIR", "3", "s3_sur_01", 3),
      ("SMIC_NIR", "11", "s11_ne_02", 1)]
  clip = load_clip(records[2])
  np.testing.assert_array_equal(clip[:, 0, 0], [1, 2, 10])  # image10 after image2
  assert readers.read_smic(tmp_path / "SMIC", "SMIC_NIR") == records
  with pytest.raises(FileNotFoundError, match="SMIC/HS"):
    readers.read_smic(tmp_path, "HS")
  with pytest.raises(ValueError, match="variant"):
    readers.read_smic(tmp_path, "IR")


def test_generic_csv(tmp_path):
  for n in (1, 2):
    _frame(tmp_path / "clips" / "a" / f"f{n}.jpg", n)
    _frame(tmp_path / "abs" / f"f{n}.png", n, shape=(4, 4))
  (tmp_path / "list.csv").write_text(
      "clip_dir,label,subject,database\n"
      f"clips/a,2,s1,MYDB\n{tmp_path / 'abs'},surprise,s2,MYDB\n")
  records = readers.read_clip_csv(tmp_path / "list.csv")
  assert [(r.clip, r.label, r.subject, r.database, len(r.frame_paths)) for r in records] == [
      ("a", 2, "s1", "MYDB", 2), ("abs", 3, "s2", "MYDB", 2)]
  (tmp_path / "bad.csv").write_text("clip_dir,label,subject,database\nclips/a,7,s1,X\n")
  with pytest.raises(ValueError, match="bad.csv:2"):
    readers.read_clip_csv(tmp_path / "bad.csv")
  (tmp_path / "cols.csv").write_text("folder,label\n")
  with pytest.raises(ValueError, match="clip_dir"):
    readers.read_clip_csv(tmp_path / "cols.csv")


def test_list_frames_skips_hidden_files(tmp_path):
  for name in ("img1.jpg", "img2.jpg", "img10.jpg"):
    _frame(tmp_path / name, 1)
  (tmp_path / "._img1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS companion
  (tmp_path / ".img3.jpg.x1y2.jpg").write_bytes(b"")  # a killed atomic write
  assert [pathlib.Path(p).name for p in readers.list_frames(tmp_path)] == [
      "img1.jpg", "img2.jpg", "img10.jpg"]


def test_load_clip_errors(tmp_path):
  _frame(tmp_path / "a1.jpg", 1)
  _frame(tmp_path / "a2.jpg", 1, shape=(7, 5))
  (tmp_path / "broken.jpg").write_bytes(b"not an image")
  with pytest.raises(BadClipError, match="broken.jpg"):
    load_clip([tmp_path / "a1.jpg", tmp_path / "broken.jpg"])
  with pytest.raises(BadClipError, match="at least 2"):
    load_clip([tmp_path / "a1.jpg"])
  with pytest.raises(BadClipError, match="a2.jpg"):
    load_clip([tmp_path / "a1.jpg", tmp_path / "a2.jpg"])
  assert readers.natural_key("img2.jpg") < readers.natural_key("img10.jpg")


def test_smic_emotion_folders_in_any_case(tmp_path):
  base = tmp_path / "SMIC" / "HS"
  for i, emotion in enumerate(("Negative", "NEGATIVE", "positive", "Surprise")):
    subject = "s1" if i != 1 else "s2"
    for n in (1, 2):
      _frame(base / subject / "micro" / emotion / f"{subject}_{emotion}_{i}" / f"image{n}.bmp", n)
  (base / "s1" / "micro" / ".DS_Store").write_bytes(b"\0")  # hidden files are not folders
  (base / "s1" / "micro" / ".hidden_folder").mkdir()
  records = readers.read_smic(tmp_path, "HS")
  assert [(r.subject, r.label, r.emotion) for r in records] == [
      ("1", 1, "negative"), ("1", 2, "positive"), ("1", 3, "surprise"), ("2", 1, "negative")]
  (base / "s2" / "micro" / "happy").mkdir()
  with pytest.raises(ValueError, match=r"s2/micro/happy: not an emotion folder; expected one of "
                                       r"\['negative', 'positive', 'surprise'\]"):
    readers.read_smic(tmp_path, "HS")
  (base / "s2" / "micro" / "happy").rmdir()
  (base / "s2" / "micro" / "negative").mkdir()
  with pytest.raises(ValueError, match=r"holds both NEGATIVE/ and negative/"):
    readers.read_smic(tmp_path, "HS")


def test_casme2_sheet_that_is_not_xlsx_or_keeps_no_clip(tmp_path):
  (tmp_path / "CASME2_RAW_selected").mkdir()
  (tmp_path / "sheet.xlsx").write_text("Subject,Filename\n01,EP02_01f\n")  # a CSV renamed
  with pytest.raises(ValueError, match=r"coding sheet .*sheet.xlsx cannot be read as an .xlsx "
                                       r"workbook \(BadZipFile"):
    readers.read_casme2(tmp_path, sheet=tmp_path / "sheet.xlsx")
  _sheet(tmp_path / "others.xlsx", [("01", "EP02_01f", None, 1, 2, 3, None, "12", "others"),
                                    ("02", "EP03_02", None, 1, 2, 3, None, "4", "fear")])
  with pytest.raises(ValueError, match=r"others.xlsx: none of its 2 rows has an emotion the class "
                                       r"mapping keeps; its Estimated Emotion values are "
                                       r"\['fear', 'others'\]"):
    readers.read_casme2(tmp_path, sheet=tmp_path / "others.xlsx")


def test_csv_clip_dir_that_does_not_exist_is_named(tmp_path):
  for n in (1, 2):
    _frame(tmp_path / "clips" / "a" / f"f{n}.jpg", n)
  (tmp_path / "clips" / "empty").mkdir()
  (tmp_path / "list.csv").write_text("clip_dir,label,subject,database\n"
                                     "clips/a,1,s1,DB\nclips/typo,2,s1,DB\nclips/empty,3,s1,DB\n")
  good, missing, empty = readers.read_clip_csv(tmp_path / "list.csv")
  assert load_clip(good).shape == (2, 6, 5)
  with pytest.raises(BadClipError, match=r"clip DB/s1/typo: its folder .*clips/typo does not exist"):
    load_clip(missing)
  with pytest.raises(BadClipError, match=r"clip DB/s1/empty has 0 frame\(s\) in .*clips/empty"):
    load_clip(empty)
