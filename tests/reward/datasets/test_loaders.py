import csv
import os
import re
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import scipy.io
import torch
from PIL import Image

from mst_clipiqa.reward.datasets import (
    QualityDataset,
    QualitySample,
    collate,
    load_agiqa1k,
    load_agiqa3k,
    load_aigciqa2023,
    load_aigiqa20k,
    load_csv,
    load_dataset,
)

AGIQA3K_HEADER = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality",
                  "mos_align", "std_align"]
# AGIQA-1K's own annotation file is not redistributed here; point this variable at a copy to test it
AGIQA1K_FILE = Path(os.environ.get("MST_CLIPIQA_AGIQA1K_XLSX", "AIGC_MOS_Zscore.xlsx"))


def png(path: Path, size=(8, 6), colour=(255, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_csv(path: Path, header, rows) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_xlsx(path: Path, rows) -> Path:
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    workbook.save(path)
    return path


def agiqa3k_rows(n=3):
    return [[f"SD_normal_{i:03d}.jpg", f"prompt {i}", "", "", "", 1.5 + i, 0.1, 2.5 + i, 0.2]
            for i in range(n)]


def make_agiqa3k(root: Path, rows=None) -> Path:
    rows = agiqa3k_rows() if rows is None else rows
    for row in rows:
        png(root / "images" / row[0])
    return write_csv(root / "data.csv", AGIQA3K_HEADER, rows)


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def mini(sample_dir):
    return load_agiqa3k(sample_dir)


def test_agiqa3k_mini_reads_real_sample(mini, sample_dir):
    assert len(mini) == 48
    assert mini.outputs == ("quality", "correspondence")
    first = mini.samples[0]
    assert first.image == sample_dir / "images" / "AttnGAN_normal_007.jpg"
    assert first.prompt == "a cat doing karaoke"
    assert first.scores == {"quality": pytest.approx(0.80654015),
                            "correspondence": pytest.approx(0.397771485)}
    groups = mini.groups()
    assert sorted(set(groups)) == ["007", "037", "127", "157", "187", "217", "247", "277"]
    assert groups.count("007") == 6
    quoted = mini.samples[2]
    assert quoted.prompt == "robots building robots in a factory, hyper detail"
    assert mini.score_array("quality").shape == (48,)
    assert mini.label_ranges == {"quality": (0.0, 5.0), "correspondence": (0.0, 5.0)}
    assert mini.split_by == "prompt" and mini.keys()[0] == "AttnGAN_normal_007.jpg"


def test_agiqa1k_reads_the_real_file_and_merges_its_duplicate(tmp_path):
    """The release's own xlsx: 1,080 rows, one image listed twice (0.44 and 2.08), kept once with the mean."""
    if not AGIQA1K_FILE.exists():
        pytest.skip(f"AGIQA-1K annotation file not found at {AGIQA1K_FILE} (set MST_CLIPIQA_AGIQA1K_XLSX)")
    names = [row[0] for row in openpyxl.load_workbook(AGIQA1K_FILE, read_only=True).worksheets[0]
             .iter_rows(min_row=2, values_only=True)]
    for name in set(names):
        (tmp_path / name).touch()  # the images are not distributed; their names are what is checked
    with pytest.warns(UserWarning, match=r"1 image\(s\) are annotated more than once.*dreamStudio_8_9_1_1\.jpg: "
                                         r"quality 0\.4414, 2\.084 -> 1\.263"):
        ds = load_agiqa1k(AGIQA1K_FILE, image_root=tmp_path, verify_images=False)
    assert len(names) == 1080 and len(ds) == 1079 == len(set(ds.keys()))
    merged = ds.keys().index("dreamStudio_8_9_1_1.jpg")
    assert ds.samples[merged].scores["quality"] == pytest.approx((0.4414155439958131 + 2.084115711537598) / 2)
    assert ds.samples[0].prompt == "bird, driving aircraft, city, anime style"
    labels = ds.score_array("quality")
    assert ds.label_ranges == {"quality": (0.0, 5.0)} and ds.split_by == "image"
    assert labels.min() >= 0.0 and labels.max() <= 5.0 and 0.04 < np.mean((labels < 1) | (labels > 5)) < 0.07


def test_agiqa3k_mini_items_and_collate(mini):
    item = mini[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape[0] == 3
    assert 0.0 <= item["image"].min() <= item["image"].max() <= 1.0
    assert item["index"] == 0 and item["prompt"] == "a cat doing karaoke"
    assert item["scores"]["quality"].item() == pytest.approx(0.80654015)
    batch = collate([mini[0], mini[5]])
    assert isinstance(batch["images"], list) and len(batch["images"]) == 2
    assert batch["scores"]["correspondence"].shape == (2,)
    assert batch["indices"].tolist() == [0, 5]
    assert collate([mini[1]])["prompts"] == [mini.samples[1].prompt]


# --------------------------------------------------------------------------- dataset object


def test_dataset_collate_keeps_sizes_and_subset(tmp_path):
    samples = [QualitySample(png(tmp_path / f"{i}.png", size=(4 + i, 3)), f"p{i % 2}",
                             {"quality": float(i)}) for i in range(4)]
    ds = QualityDataset(samples, "toy", ("quality",))
    batch = collate([ds[i] for i in range(3)])
    assert [tuple(im.shape) for im in batch["images"]] == [(3, 3, 4), (3, 3, 5), (3, 3, 6)]
    assert torch.allclose(ds[0]["image"][0], torch.ones(3, 4))  # red channel of pure red
    assert batch["scores"]["quality"].tolist() == [0.0, 1.0, 2.0]
    sub = ds.subset([3, 1])
    assert [s.scores["quality"] for s in sub.samples] == [3.0, 1.0]
    assert sub.groups() == ["p1", "p1"]
    with pytest.raises(IndexError, match="out of range"):
        ds.subset([4])
    with pytest.raises(ValueError, match="no score 'correspondence'"):
        ds.score_array("correspondence")


def test_dataset_rejects_samples_without_output_scores(tmp_path):
    sample = QualitySample(tmp_path / "a.png", "p", {"quality": 1.0})
    with pytest.raises(ValueError, match=r"lacks score\(s\) \['correspondence'\]"):
        QualityDataset([sample], "toy", ("quality", "correspondence"))


def test_unreadable_image_at_getitem_names_file(tmp_path):
    root = tmp_path / "d"
    make_agiqa3k(root)
    ds = load_agiqa3k(root)
    (root / "images" / "SD_normal_001.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"sample 1: cannot read image .*SD_normal_001\.jpg"):
        ds[1]


# --------------------------------------------------------------------------- AGIQA-3K


def test_agiqa3k_synthetic_file(tmp_path):
    make_agiqa3k(tmp_path)
    ds = load_agiqa3k(tmp_path / "data.csv")  # the file itself is accepted too
    assert [s.scores for s in ds.samples] == [
        {"quality": 1.5 + i, "correspondence": 2.5 + i} for i in range(3)]
    assert ds.groups() == ["000", "001", "002"]


def test_agiqa3k_missing_column(tmp_path):
    header = [h for h in AGIQA3K_HEADER if h != "mos_align"]
    write_csv(tmp_path / "data.csv", header, [])
    with pytest.raises(ValueError, match=r"data\.csv: missing column\(s\) \['mos_align'\]; "
                                         r"expected columns .*found \['name', 'prompt'"):
        load_agiqa3k(tmp_path)


@pytest.mark.parametrize("bad", ["abc", "", "nan", "inf"])
def test_agiqa3k_bad_score_names_line(tmp_path, bad):
    rows = agiqa3k_rows()
    rows[1][5] = bad
    make_agiqa3k(tmp_path, rows)
    with pytest.raises(ValueError, match=r"data\.csv, line 3: column 'mos_quality' is .*; "
                                         "expected a finite number"):
        load_agiqa3k(tmp_path)


def test_agiqa3k_missing_image_and_bad_name(tmp_path):
    make_agiqa3k(tmp_path)
    (tmp_path / "images" / "SD_normal_002.jpg").unlink()
    with pytest.raises(ValueError, match=r"line 4: image 'SD_normal_002\.jpg' not found; "
                                         r"looked in .*images"):
        load_agiqa3k(tmp_path)
    rows = agiqa3k_rows()
    rows[0][0] = "noid.jpg"
    make_agiqa3k(tmp_path, rows)
    with pytest.raises(ValueError, match=r"line 2: name 'noid\.jpg' has no prompt id; "
                                         "expected a name ending in _NNN"):
        load_agiqa3k(tmp_path)


def test_agiqa3k_unreadable_image_checked_at_load(tmp_path):
    make_agiqa3k(tmp_path)
    (tmp_path / "images" / "SD_normal_000.jpg").write_text("not an image")
    with pytest.raises(ValueError, match=r"line 2: image .* cannot be read as an image"):
        load_agiqa3k(tmp_path)
    assert len(load_agiqa3k(tmp_path, verify_images=False)) == 3


def test_agiqa3k_skip_reports(tmp_path):
    rows = agiqa3k_rows(4)
    rows[1][7] = "n/a"
    make_agiqa3k(tmp_path, rows)
    (tmp_path / "images" / "SD_normal_003.jpg").unlink()
    with pytest.warns(UserWarning, match=r"agiqa3k: skipped 2 of 4 rows"):
        ds = load_agiqa3k(tmp_path, on_error="skip")
    assert [s.image.name for s in ds.samples] == ["SD_normal_000.jpg", "SD_normal_002.jpg"]
    assert len(ds.skipped) == 2
    assert "line 3: column 'mos_align' is 'n/a'" in ds.skipped[0]
    assert "line 5: image 'SD_normal_003.jpg' not found" in ds.skipped[1]


def test_field_count_mismatch_and_on_error_value(tmp_path):
    make_agiqa3k(tmp_path)
    with (tmp_path / "data.csv").open("a") as f:
        f.write("SD_normal_009.jpg,short row\n")
    with pytest.raises(ValueError, match=r"line 5: found 2 fields; expected 9"):
        load_agiqa3k(tmp_path)
    with pytest.raises(ValueError, match=r"on_error must be one of"):
        load_agiqa3k(tmp_path, on_error="ignore")


def test_all_rows_bad_raises_even_when_skipping(tmp_path):
    rows = agiqa3k_rows(2)
    for row in rows:
        row[5] = "x"
    make_agiqa3k(tmp_path, rows)
    with pytest.raises(ValueError, match="all 2 data rows are invalid"):
        load_agiqa3k(tmp_path, on_error="skip")


# --------------------------------------------------------------------------- AGIQA-1K


def make_agiqa1k(root: Path, rows) -> Path:
    for row in rows:
        if isinstance(row[0], str) and row[0].endswith(".png"):
            png(root / "file" / row[0])
    return write_xlsx(root / "AIGC_MOS_Zscore.xlsx", [["Image", "Prompt", "MOS"], *rows])


def test_agiqa1k_reads_xlsx(tmp_path):
    for name in ("a_1.png", "a_2.png", "b_3.jpg"):
        png(tmp_path / "file" / name)
    write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx",
               [["Image ", "prompt", "MOS"], ["a_1.png", "a cat", 3.25], ["a_2.png", "a dog", "2.5"],
                [None, None, None], ["b_3", "a bird", 1]])
    ds = load_agiqa1k(tmp_path)
    assert ds.outputs == ("quality",)
    assert [s.image for s in ds.samples] == [tmp_path / "file" / "a_1.png",
                                             tmp_path / "file" / "a_2.png",
                                             tmp_path / "file" / "b_3.jpg"]
    assert [s.scores["quality"] for s in ds.samples] == [3.25, 2.5, 1.0]
    assert ds.groups() == ["a cat", "a dog", "a bird"]


def test_agiqa1k_errors_name_sheet_row(tmp_path):
    make_agiqa1k(tmp_path, [["a_1.png", "a cat", 3.0], ["a_2.png", "a dog", None]])
    with pytest.raises(ValueError, match=r"AIGC_MOS_Zscore\.xlsx, row 3: column 'MOS' is empty; "
                                         "expected a finite number"):
        load_agiqa1k(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        assert len(load_agiqa1k(tmp_path, on_error="skip")) == 1
    write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [["Image", "Text", "MOS"]])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Prompt'\].*found \['Image', "
                                         r"'Text', 'MOS'\]"):
        load_agiqa1k(tmp_path)
    (tmp_path / "AIGC_MOS_Zscore.xlsx").write_text("not a workbook")
    with pytest.raises(ValueError, match=r"cannot read as an \.xlsx workbook"):
        load_agiqa1k(tmp_path)


def test_agiqa1k_empty_prompt_and_ambiguous_extension(tmp_path):
    make_agiqa1k(tmp_path, [["a_1.png", "  ", 3.0]])
    with pytest.raises(ValueError, match=r"row 2: column 'Prompt' is empty; expected the prompt"):
        load_agiqa1k(tmp_path)
    png(tmp_path / "file" / "c.jpg")
    png(tmp_path / "file" / "c.png")
    make_agiqa1k(tmp_path, [["c", "p", 3.0]])
    with pytest.raises(ValueError, match="matches several files"):
        load_agiqa1k(tmp_path)


# --------------------------------------------------------------------------- AIGCIQA2023


GENERATORS = ["Glide", "SD"]
N_PROMPTS = 3


def make_aigciqa2023(root: Path, prompts_header=False, mos_len=None):
    n = len(GENERATORS) * N_PROMPTS * 4
    index_rows = []
    for i in range(n):
        generator = GENERATORS[i // (N_PROMPTS * 4)]
        name = f"{i % (N_PROMPTS * 4)}.png"
        index_rows.append([generator, name])
        if generator == "Glide":
            png(root / "Image" / generator / name)
        else:  # only the flat copy: exercises the Image/allimg/<i>.png fallback
            png(root / "Image" / "allimg" / f"{i}.png")
    write_xlsx(root / "pic-index.xlsx", index_rows)
    prompt_rows = [[f"scene{p}", "challenge", f"prompt number {p}", "obj", "type", "feeling"]
                   for p in range(N_PROMPTS)]
    if prompts_header:
        prompt_rows.insert(0, ["scene", "challenge", "Prompt", "obj", "type", "feeling"])
    (root / "DATA").mkdir(parents=True, exist_ok=True)
    write_xlsx((root / "DATA" if prompts_header else root) / "AIGCIQA2023_Prompts.xlsx", prompt_rows)
    mos_dir = root / "DATA" / "MOS"
    mos_dir.mkdir(parents=True, exist_ok=True)
    for k in (1, 2, 3):
        values = 10.0 * k + np.arange(mos_len or n, dtype=np.float64)
        scipy.io.savemat(mos_dir / f"mosz{k}.mat", {"MOSz": values.reshape(-1, 1)})
    return n


@pytest.mark.parametrize("prompts_header", [False, True])
def test_aigciqa2023_mat_layout(tmp_path, prompts_header):
    n = make_aigciqa2023(tmp_path, prompts_header=prompts_header)
    ds = load_aigciqa2023(tmp_path)
    assert len(ds) == n == 24
    assert set(ds.outputs) == {"quality", "authenticity", "correspondence"}
    for i, sample in enumerate(ds.samples):
        assert sample.scores == {"quality": 10.0 + i, "authenticity": 20.0 + i,
                                 "correspondence": 30.0 + i}
        assert sample.prompt == f"prompt number {(i % 12) // 4}"
    assert ds.samples[5].image == tmp_path / "Image" / "Glide" / "5.png"
    assert ds.samples[13].image == tmp_path / "Image" / "allimg" / "13.png"
    assert len(set(ds.groups())) == N_PROMPTS
    assert ds.keys()[13] == "SD/1.png"  # what split files list, even for the allimg copy
    assert ds.label_ranges == dict.fromkeys(ds.outputs, (0.0, 100.0)) and ds.split_by == "image"


def test_aigciqa2023_mat_errors(tmp_path):
    make_aigciqa2023(tmp_path, mos_len=23)
    with pytest.raises(ValueError, match=r"mosz1\.mat: 'MOSz' holds 23 values; expected 24"):
        load_aigciqa2023(tmp_path)
    make_aigciqa2023(tmp_path)
    scipy.io.savemat(tmp_path / "DATA" / "MOS" / "mosz2.mat", {"mos": np.zeros((24, 1))})
    with pytest.raises(ValueError, match=r"mosz2\.mat: variable 'MOSz' not found; found "
                                         r"variables \['mos'\]"):
        load_aigciqa2023(tmp_path)
    values = np.arange(24, dtype=np.float64)
    values[7] = np.nan
    scipy.io.savemat(tmp_path / "DATA" / "MOS" / "mosz2.mat", {"MOSz": values.reshape(-1, 1)})
    with pytest.raises(ValueError, match=r"pic-index\.xlsx, row 8 \(image index 7\): mosz2\.mat "
                                         r"MOSz entry 8 is nan; expected a finite number"):
        load_aigciqa2023(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 of 24"):
        ds = load_aigciqa2023(tmp_path, on_error="skip")
    assert len(ds) == 23 and "image index 7" in ds.skipped[0]


def test_aigciqa2023_layout_assumption_checked(tmp_path):
    make_aigciqa2023(tmp_path)
    workbook = openpyxl.load_workbook(tmp_path / "pic-index.xlsx")
    workbook.active["A3"] = "SD"
    workbook.save(tmp_path / "pic-index.xlsx")
    with pytest.raises(ValueError, match=r"pic-index\.xlsx, row 3: generator 'SD' differs from "
                                         r"'Glide' \(row 1\); expected 12 consecutive rows"):
        load_aigciqa2023(tmp_path)


def test_aigciqa2023_flat_csv(tmp_path):
    rows = []
    for i, model in enumerate(["Glide", "Glide", "SD"]):
        png(tmp_path / "Image" / model / f"{i}.png")
        rows.append([model, f"{i}.png", 1.0 + i, 2.0 + i, 3.0 + i, f"prompt {i // 2}"])
    rows[2][-1] = '"a corgi"'  # IPCE's all_set.csv: the field is """a corgi""" in the file
    write_csv(tmp_path / "AIGCIQA2023.csv",
              ["model", "image_name", "mosz1", "mosz2", "mosz3", "prompt"], rows)
    assert '"""a corgi"""' in (tmp_path / "AIGCIQA2023.csv").read_text()
    ds = load_aigciqa2023(tmp_path)
    assert len(ds) == 3
    assert ds.samples[2].image == tmp_path / "Image" / "SD" / "2.png"
    assert ds.samples[1].scores == {"quality": 2.0, "authenticity": 3.0, "correspondence": 4.0}
    assert ds.groups() == ["prompt 0", "prompt 0", "a corgi"] and ds.samples[2].prompt == "a corgi"
    assert ds.keys() == ["Glide/0.png", "Glide/1.png", "SD/2.png"]
    assert ds.label_ranges == dict.fromkeys(ds.outputs, (0.0, 5.0))
    assert len(load_dataset("aigciqa2023", tmp_path / "AIGCIQA2023.csv")) == 3
    write_csv(tmp_path / "AIGCIQA2023.csv", ["model", "image_name", "mosz1", "prompt"], rows)
    with pytest.raises(ValueError, match="exactly one CSV with columns"):
        load_aigciqa2023(tmp_path)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['mosz2', 'mosz3'\]"):
        load_aigciqa2023(tmp_path / "AIGCIQA2023.csv")


# --------------------------------------------------------------------------- AIGIQA-20K, CSV


AIGIQA20K_ROWS = [["DALLE2_0000.png", "A cyberpunk gopnik, sci-fi, fantasy", "3.6638868235"],
                  ["SD_0001.png", "a boat", "1.25"]]


def test_aigiqa20k(tmp_path):
    png(tmp_path / "train" / "DALLE2_0000.png")
    png(tmp_path / "train" / "SD_0001.png")
    write_csv(tmp_path / "info_train.csv", ["name", "prompt", "mos"], AIGIQA20K_ROWS)
    ds = load_dataset("AIGIQA-20K", tmp_path)
    assert ds.name == "aigiqa20k" and ds.outputs == ("quality",)
    assert ds.score_array("quality").tolist() == [3.6638868235, 1.25]
    assert ds.samples[1].image == tmp_path / "train" / "SD_0001.png"
    assert ds.label_ranges == {"quality": (0.0, 5.0)}
    (tmp_path / "info_train.csv").unlink()
    with pytest.raises(ValueError, match=r"annotation file not found: .*info_train\.csv"):
        load_aigiqa20k(tmp_path)


def test_aigiqa20k_circulated_csv_has_no_header_and_xlsx_has_one(tmp_path):
    png(tmp_path / "DALLE2_0000.png")
    png(tmp_path / "SD_0001.png")
    with (tmp_path / "info_train.csv").open("w", newline="") as f:
        csv.writer(f).writerows(AIGIQA20K_ROWS)  # as in IPCE's repository: data from line 1
    with pytest.warns(UserWarning, match="has no header row: reading its columns by position as name, prompt, mos"):
        headerless = load_aigiqa20k(tmp_path)
    assert headerless.keys() == ["DALLE2_0000.png", "SD_0001.png"]
    assert headerless.samples[0].prompt == "A cyberpunk gopnik, sci-fi, fantasy"
    assert headerless.score_array("quality").tolist() == [3.6638868235, 1.25]
    (tmp_path / "info_train.csv").unlink()
    write_xlsx(tmp_path / "info_train.xlsx", [["name", "prompt", "mos"],
                                              *[[n, p, float(m)] for n, p, m in AIGIQA20K_ROWS]])
    from_xlsx = load_aigiqa20k(tmp_path)  # found in the folder when there is no CSV
    assert [s.scores for s in from_xlsx.samples] == [s.scores for s in headerless.samples]
    with (tmp_path / "info_val.csv").open("w", newline="") as f:
        csv.writer(f).writerows([row[:2] for row in AIGIQA20K_ROWS])
    with pytest.raises(ValueError, match="neither a header .* info_val files carry no MOS"):
        load_aigiqa20k(tmp_path / "info_val.csv")


def test_load_csv_mapping_and_groups(tmp_path):
    png(tmp_path / "imgs" / "x.png")
    png(tmp_path / "imgs" / "y.png")
    path = write_csv(tmp_path / "ann.csv", ["file", "text", "q", "c", "scene"],
                     [["x.png", "p1", 1, 2, "s1"], ["y.png", "p2", 3, 4, "s1"]])
    ds = load_csv(path, image_col="file", prompt_col="text",
                  score_cols={"quality": "q", "correspondence": "c"},
                  image_root=tmp_path / "imgs", group_col="scene")
    assert ds.name == "ann" and ds.outputs == ("quality", "correspondence")
    assert ds.score_array("correspondence").tolist() == [2.0, 4.0]
    assert ds.groups() == ["s1", "s1"]
    no_prompt = load_csv(path, image_col="file", prompt_col=None, score_cols={"quality": "q"},
                         image_root=tmp_path / "imgs")
    assert [s.prompt for s in no_prompt.samples] == ["", ""]
    with pytest.raises(ValueError, match=r"score_cols keys \['qualty'\] are not outputs"):
        load_csv(path, score_cols={"qualty": "q"})
    with pytest.raises(ValueError, match="unknown dataset kind 'koniq'"):
        load_dataset("koniq", path)


def test_duplicate_images_are_merged_with_their_mean_label(tmp_path):
    png(tmp_path / "x.png")
    png(tmp_path / "y.png")
    path = write_csv(tmp_path / "ann.csv", ["image", "prompt", "mos"],
                     [["x.png", "p", 1], ["y.png", "q", 4], ["x.png", "p", 2]])
    with pytest.warns(UserWarning, match=re.escape("1 image(s) are annotated more than once; each is kept once "
                                                   "with the mean of its labels: x.png: quality 1, 2 -> 1.5")):
        ds = load_csv(path)
    assert [s.image.name for s in ds.samples] == ["x.png", "y.png"]
    assert ds.score_array("quality").tolist() == [1.5, 4.0]
