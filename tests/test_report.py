"""``autoseg report``: the HTML page on tiny trained phantoms (3D MRI with an ensemble of two
configurations, 2D ultrasound with one), partly trained and untrained datasets, and the
pieces that decide what the page shows."""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import one_torch_thread
from PIL import Image

from autoseg.cli import main
from autoseg.errors import AutosegError
from autoseg.evaluation.metrics import dice
from autoseg.evaluation.report import SECTIONS, build_report, overlay_panels
from autoseg.io import read_image

TINY = {
    2: {
        "features_per_stage": [4, 8],
        "kernel_sizes": [[3, 3], [3, 3]],
        "strides": [[1, 1], [2, 2]],
        "n_blocks_per_stage": [1, 1],
        "n_conv_per_stage_decoder": [1],
    },
    3: {
        "features_per_stage": [4, 8],
        "kernel_sizes": [[1, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2]],
        "n_blocks_per_stage": [1, 1],
        "n_conv_per_stage_decoder": [1],
    },
}
VOID = {"img", "meta", "br", "hr", "input", "link", "col", "wbr"}


def _shrink_plan(plan_path: Path, configs: list[str]) -> None:
    """What a user may do by hand: tiny networks, 2 epochs of 3 iterations."""
    plan = json.loads(plan_path.read_text())
    plan["configurations"] = {k: v for k, v in plan["configurations"].items() if k in configs}
    for cfg in plan["configurations"].values():
        cfg["architecture"].update(TINY[cfg["dim"]])
        cfg["patch_size"] = [32, 32] if cfg["dim"] == 2 else [8, 32, 32]
        cfg["batch_size"] = 2
    plan["schedule"].update(epochs=2, iterations_per_epoch=3)
    plan_path.write_text(json.dumps(plan, indent=2))


def _train_tiny(base: Path, kind: str) -> Path:
    """phantom -> convert -> plan (shrunk) -> plan-and-train with 2 folds; returns the root."""

    from autoseg.phantoms import Mri3dConfig, Us2dConfig, generate_phantom

    root = base / "root"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSEG_ROOT", str(root))
        src = base / "src"
        if kind == "mri3d":
            cfg = Mri3dConfig(shape=(8, 40, 40), spacing=(3.0, 1.5, 1.5))
            generate_phantom("mri3d", src, 6, seed=5, config=cfg, progress=False)
            args = ["--name", "Thigh", "--id", "3", "--channel-names", "T2"]
            ds_id, name, configs = "3", "003_Thigh", ["2d", "3d_fullres"]
        else:
            generate_phantom("us2d", src, 6, seed=3, config=Us2dConfig(shape=(48, 64)))
            args = ["--name", "Wrist", "--id", "7", "--channel-names", "US"]
            args += ["--spacing", "0.1,0.1"]
            ds_id, name, configs = "7", "007_Wrist", ["2d"]
        assert main(["convert", str(src), *args, "--label-names", "nerve"]) == 0
        assert main(["plan", ds_id, "--brief"]) == 0
        _shrink_plan(root / "preprocessed" / name / "plans.json", configs)
        with one_torch_thread():
            code = main(
                ["plan-and-train", ds_id, "--n-folds", "2", "--workers", "0", "--no-progress"]
            )
        assert code == 0
    return root


@pytest.fixture(scope="module")
def mri(tmp_path_factory) -> Path:
    return _train_tiny(tmp_path_factory.mktemp("mri"), "mri3d")


@pytest.fixture(scope="module")
def mri_report(mri) -> Path:
    return build_report("3", mri, num_workers=0, progress=False)


class Page(HTMLParser):
    """Section ids, tables (header and cell texts and attributes), images, scripts, and
    whether every non-void tag is closed in order."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[dict[str, str]] = []
        self.tables: dict[str, dict] = {}
        self.scripts: list[str] = []
        self.problems: list[str] = []
        self._stack: list[str] = []
        self._table: dict | None = None
        self._row: list | None = None
        self._cell: dict | None = None
        self._in_script = False
        self.feed(text)
        self.close()
        if self._stack:
            self.problems.append(f"unclosed: {self._stack}")

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag not in VOID:
            self._stack.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.images.append(a)
        elif tag == "table":
            key = a.get("id") or f"table{len(self.tables)}"
            self._table = {"class": a.get("class", ""), "headers": [], "rows": []}
            self.tables[key] = self._table
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"tag": tag, "text": "", **a}
            self._row.append(self._cell)
        elif tag == "script":
            self._in_script = True

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self._stack or self._stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self._stack[-1:]}")
        else:
            self._stack.pop()
        if tag == "tr" and self._table is not None and self._row is not None:
            if all(c["tag"] == "th" for c in self._row):
                self._table["headers"] = [c["text"].strip() for c in self._row]
            else:
                self._table["rows"].append(self._row)
            self._row = None
        elif tag in ("td", "th"):
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._in_script:
            self.scripts.append(data)

    def column(self, table: str, header: str) -> list[dict]:
        t = self.tables[table]
        i = t["headers"].index(header)
        return [row[i] for row in t["rows"]]


def _png_pixels(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32)


def _embedded_pngs(page: Page) -> list[bytes]:
    out = []
    for img in page.images:
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]  # nothing external
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


def _expected_dice(root: Path, name: str, labels: tuple[int, ...] = (1,)) -> dict[str, float]:
    """Per-case Dice (mean over labels) of the chosen model, recomputed here from the raw
    validation files with the inference package's own post-processing."""
    from autoseg.postprocessing.rules import apply_postprocessing

    res, raw = root / "results" / name, root / "raw" / name
    info = json.loads((res / "inference.json").read_text())
    splits = json.loads((res / "splits.json").read_text())
    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    out = {}
    for fold in info["folds"]:
        for case in splits[fold]["val"]:
            val = [res / c / f"fold_{fold}" / "validation" for c in info["configurations"]]
            if len(val) == 1:
                seg = read_image(val[0] / f"{case}{ending}").array
            else:
                probs = sum(
                    np.load(v / f"{case}.npz")["probabilities"].astype(np.float32) for v in val
                )
                seg = np.argmax(probs, axis=0).astype(np.uint8)
            ref = read_image(raw / "labelsTr" / f"{case}{ending}")
            seg = apply_postprocessing(seg, info["postprocessing"], ref.geometry.spacing_zyx)
            out[case] = float(np.mean([dice(seg, ref.array, lab) for lab in labels]))
    return out


# --------------------------------------------------------------------------------------------
# The full report


def test_report_sections_tables_and_worst_case_first(mri, mri_report):
    assert mri_report == mri / "results" / "003_Thigh" / "report.html"
    text = mri_report.read_text(encoding="utf-8")
    page = Page(text)
    assert page.problems == []
    assert {sid for sid, _ in SECTIONS} <= page.ids
    assert "could not be built" not in text
    assert "<link" not in text and "http://" not in text and "https://" not in text

    info = json.loads((mri / "results" / "003_Thigh" / "inference.json").read_text())
    expected = _expected_dice(mri, "003_Thigh")
    cases = [c["text"] for c in page.column("case-table", "case")]
    assert sorted(cases) == sorted(expected) and len(cases) == 6  # one row per case
    shown = [float(c["data-v"]) for c in page.column("case-table", "Dice")]
    for case, value in zip(cases, shown):
        assert value == pytest.approx(expected[case], abs=1e-9)
    assert cases[0] == min(expected, key=expected.get)  # worst first
    assert shown == sorted(shown)
    cohorts = {c["text"] for c in page.column("case-table", "cohort")}
    assert cohorts <= {"patient", "volunteer"} and cohorts
    fails = [r for r in page.tables["case-table"]["rows"] if "yes" in r[-1]["text"]]
    assert len(fails) == sum(v < 0.5 for v in expected.values())
    assert text.count('<tr class="fail">') == len(fails)

    # cross-validation: every candidate of inference.json, the chosen one marked
    cv = page.tables["cv-table"]
    assert len(cv["rows"]) == len(info["candidates"])
    starred = [r[1]["text"] for r in cv["rows"] if r[0]["text"] == "★"]
    assert starred == [info["chosen"]]
    # the worst cases, worst first, at most 5
    overlays = [i["alt"] for i in page.images if i["alt"].startswith("overlay ")]
    assert overlays == [f"overlay {c}" for c in cases[:5]]
    # the plan's sentences and its reasons
    plan = json.loads((mri / "preprocessed" / "003_Thigh" / "plans.json").read_text())
    cfg = plan["configurations"]["3d_fullres"]
    mm = "x".join(f"{p * s:g}" for p, s in zip(cfg["patch_size"], cfg["spacing"]))
    assert f"patch 8x32x32 voxels ({mm} mm)" in text
    assert text.count("<details>") >= len(plan["configurations"]) + 1
    # reproduce commands and versions
    assert "autoseg plan-and-train 3 --n-folds 2" in text
    assert "autoseg predict -d 3" in text
    for name in ("torch", "numpy", "SimpleITK"):
        assert name in text
    # measurements: one row per case and label; cohorts: all + 2 cohorts
    assert len(page.tables["measure-table"]["rows"]) == 6
    assert "Dice median [IQR]" in text
    assert {"patient", "volunteer"} <= {r[0]["text"] for r in page.tables["cohort-table"]["rows"]}


def test_embedded_images_are_nonblank_pngs_and_tables_sortable(mri_report):
    page = Page(mri_report.read_text(encoding="utf-8"))
    pngs = _embedded_pngs(page)
    # 2 configs x 2 folds curves + 5 overlays + agreement + CSA profiles + cohort plot
    assert len(pngs) == 4 + 5 + 3
    for data in pngs:
        px = _png_pixels(data)
        assert px.var() > 0
        assert (px < 250).any(axis=-1).mean() > 0.005  # something is drawn, not all white
    js = "".join(page.scripts)
    assert "addEventListener" in js and "table.sortable" in js
    for key in ("case-table", "cv-table", "measure-table"):
        assert "sortable" in page.tables[key]["class"]
    # every numeric cell of the case table carries its raw value for sorting
    assert all("data-v" in c for c in page.column("case-table", "HD95 (mm)"))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(html_path: Path, out: Path) -> np.ndarray:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={out.parent / 'chromium-profile'}",
        f"--screenshot={out}",
        "--window-size=1280,2000",
        html_path.resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert out.is_file(), "Chromium wrote no screenshot"
    return _png_pixels(out.read_bytes())


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")
def test_page_renders_in_a_browser_and_its_tables_sort(mri_report, tmp_path):
    px = _screenshot(mri_report, tmp_path / "shot.png")
    assert px.shape[:2] == (2000, 1280)
    assert px.var() > 0
    dark = (px < 200).any(axis=-1)
    assert dark.mean() > 0.01  # text, tables and figures, not a blank page
    # the header rule (accent blue) is drawn near the top: the style sheet was applied
    top = px[:300]
    blue = (top[..., 2] > 180) & (top[..., 0] < 80)
    assert blue.any()

    # Click headers the way a reader does, then read the table back from the browser's DOM.
    clicks = """<script>
    var ths = document.querySelectorAll('#case-table thead th');
    function th(name) { return Array.prototype.find.call(ths, function (h) {
        return h.textContent === name; }); }
    th('reference (mm³)').click();
    </script></body>"""
    page_copy = tmp_path / "clicked.html"
    text = mri_report.read_text(encoding="utf-8").replace("</body>", clicks)
    page_copy.write_text(text, encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    cmd += [f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", page_copy.as_uri()]
    dom = subprocess.run(
        cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120
    ).stdout
    sorted_page = Page(dom)
    volumes = [float(c["data-v"]) for c in sorted_page.column("case-table", "reference (mm³)")]
    assert len(volumes) == 6 and 'aria-sort="ascending"' in dom  # the click was handled
    assert volumes == sorted(volumes)  # numerically (as text, "756" would follow "2092")


# --------------------------------------------------------------------------------------------
# Partly trained and untrained datasets


def _copy_root(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report.html"))
    return dst


def test_report_without_inference_json_and_with_missing_pieces(mri, tmp_path):
    root = _copy_root(mri, tmp_path / "root")
    res = root / "results" / "003_Thigh"
    (res / "inference.json").unlink()
    shutil.rmtree(res / "3d_fullres" / "fold_1" / "validation")
    (res / "3d_fullres" / "fold_1" / "checkpoint_final.pt").unlink()
    (res / "2d" / "fold_0" / "training_curves.png").unlink()

    path = build_report("003_Thigh", root, num_workers=0, progress=False, max_worst=2)
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert page.problems == []
    assert "could not be built" not in text
    assert "No inference.json yet" in text
    assert "re-plotted from training_log.json" in text
    assert "running or interrupted" in text  # fold 1 of 3d_fullres has no final checkpoint

    # the per-case sections follow the configuration with the best fold-validation Dice
    scores = {}
    for config in ("2d", "3d_fullres"):
        values = []
        for fold in (0, 1):
            m = res / config / f"fold_{fold}" / "validation" / "metrics.json"
            if m.is_file():
                cases = json.loads(m.read_text())["cases"]
                values += [(c, v["1"]["dice"]) for c, v in cases.items()]
        scores[config] = values
    best = max(scores, key=lambda c: np.mean([v for _, v in scores[c]]))
    cases = [c["text"] for c in page.column("case-table", "case")]
    assert sorted(cases) == sorted(c for c, _ in scores[best])
    shown = [float(c["data-v"]) for c in page.column("case-table", "Dice")]
    assert shown == pytest.approx(sorted(v for _, v in scores[best]), abs=1e-9)
    assert len(page.tables["cv-table"]["rows"]) == 2
    for data in _embedded_pngs(page):
        assert _png_pixels(data).var() > 0
    assert sum(i["alt"].startswith("overlay ") for i in page.images) == 2


def test_report_of_an_untrained_dataset_names_what_is_missing(mri, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(mri / "raw", root / "raw")
    path = build_report("3", root, num_workers=0, progress=False)
    assert path == root / "results" / "003_Thigh" / "report.html"
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert page.problems == [] and {sid for sid, _ in SECTIONS} <= page.ids
    assert "could not be built" not in text
    assert "No plan" in text and "No configuration has been trained yet" in text
    assert "No out-of-fold predictions" in text
    assert page.images == []


def test_report_rejects_a_negative_max_worst(mri):
    with pytest.raises(AutosegError, match="max_worst"):
        build_report("3", mri, max_worst=-1, progress=False)


# --------------------------------------------------------------------------------------------
# 2D ultrasound, one configuration, through the command line


def _report_parser() -> argparse.ArgumentParser:
    from autoseg.cli import report as report_cli

    parser = argparse.ArgumentParser(prog="autoseg")
    report_cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_report_of_a_2d_dataset(tmp_path, monkeypatch):
    root = _train_tiny(tmp_path, "us2d")
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    out = tmp_path / "page" / "wrist.html"
    args = _report_parser().parse_args(
        ["report", "7", "--out", str(out), "--max-worst", "3", "--workers", "2", "--no-progress"]
    )
    assert args.func(args) == 0
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert page.problems == [] and "could not be built" not in text
    expected = _expected_dice(root, "007_Wrist")
    cases = [c["text"] for c in page.column("case-table", "case")]
    assert sorted(cases) == sorted(expected)
    assert cases[0] == min(expected, key=expected.get)
    overlays = [i for i in page.images if i["alt"].startswith("overlay ")]
    assert [i["alt"] for i in overlays] == [f"overlay {c}" for c in cases[:3]]
    for data in _embedded_pngs(page):
        assert _png_pixels(data).var() > 0
    assert "area (mm²)" in text  # 2D: areas instead of volumes

    bad = _report_parser().parse_args(["report", "no_such_dataset", "--no-progress"])
    with pytest.raises(AutosegError, match="no dataset"):
        bad.func(bad)
    from autoseg.cli import COMMAND_MODULES

    if "autoseg.cli.report" in COMMAND_MODULES:  # once the command is registered
        assert main(["report", "no_such_dataset", "--no-progress"]) == 2


# --------------------------------------------------------------------------------------------
# Two labels, an ensemble and post-processing, on a hand-made results tree (no training)

TOY_SHAPE = (6, 24, 24)
TOY_SPACING = (3.0, 0.5, 0.5)


def _toy_reference(i: int) -> np.ndarray:
    ref = np.zeros(TOY_SHAPE, np.uint8)
    ref[1:5, 6:11, 6:11] = 1  # nerve
    ref[1:5, 14:18, 13 + i % 3 : 17 + i % 3] = 2  # vessel
    return ref


def _toy_probabilities(ref: np.ndarray, shift: int, blob: bool) -> np.ndarray:
    """Class probabilities of a prediction: the nerve moved by ``shift`` voxels along x and,
    with ``blob``, a stray nerve island that post-processing can remove."""
    pred = ref.copy()
    pred[ref == 1] = 0
    pred[np.roll(ref == 1, shift, axis=2)] = 1
    if blob:
        pred[4:6, 20:23, 1:4] = 1  # nerve island
        pred[0, 0, 22:24] = 2  # vessel island of 2 voxels
    onehot = np.stack([pred == k for k in range(3)]).astype(np.float32)
    return (0.1 + 0.7 * onehot).astype(np.float16)


def test_report_with_two_labels_an_ensemble_and_no_cohorts(tmp_path):
    from autoseg.evaluation.find_best import find_best
    from autoseg.io import DatasetJson, Geometry, write_image

    name, root = "011_Toy", tmp_path / "root"
    raw, res = root / "raw" / name, root / "results" / name
    cases = [f"t{i}" for i in range(6)]
    DatasetJson(
        channel_names={"0": "T2"},
        labels={"background": 0, "nerve": 1, "vessel": 2},
        num_training=len(cases),
        file_ending=".nii.gz",
    ).save(raw)
    geometry = Geometry.default(TOY_SHAPE, TOY_SPACING)
    rng = np.random.default_rng(0)
    refs = {}
    for i, case in enumerate(cases):
        refs[case] = _toy_reference(i)
        write_image(raw / "labelsTr" / f"{case}.nii.gz", refs[case], geometry)
        image = rng.normal(100, 10, TOY_SHAPE) + 50 * (refs[case] > 0)
        write_image(raw / "imagesTr" / f"{case}_0000.nii.gz", image.astype(np.float32), geometry)
    splits = [{"train": cases[3:], "val": cases[:3]}, {"train": cases[:3], "val": cases[3:]}]
    res.mkdir(parents=True)
    (res / "splits.json").write_text(json.dumps(splits))
    for config, shifts in (("2d", (0, 1, 2, 3, 1, 0)), ("3d_fullres", (1, 0, 2, 0, 3, 1))):
        for fold, split in enumerate(splits):
            val = res / config / f"fold_{fold}" / "validation"
            val.mkdir(parents=True)
            for case in split["val"]:
                probs = _toy_probabilities(refs[case], shifts[cases.index(case)], blob=True)
                np.savez_compressed(val / f"{case}.npz", probabilities=probs)
                seg = np.argmax(probs, axis=0).astype(np.uint8)
                write_image(val / f"{case}.nii.gz", seg, geometry)
    find_best(name, root, progress=False, num_workers=0)
    # The choice, set by hand, so that the page must show an ensemble with both kinds of rule.
    info = json.loads((res / "inference.json").read_text())
    info.update(
        configurations=["2d", "3d_fullres"],
        chosen="2d+3d_fullres",
        ensemble=True,
        postprocessing={
            "1": {"rule": "largest"},
            "2": {"rule": "min_size", "min_voxels": 7, "min_volume_mm3": 5.0},
        },
    )
    (res / "inference.json").write_text(json.dumps(info))

    path = build_report(name, root, num_workers=0, progress=False, max_worst=3)
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert page.problems == [] and "could not be built" not in text
    headers = page.tables["case-table"]["headers"]
    assert {"mean Dice", "nerve Dice", "vessel Dice", "vessel HD95 (mm)"} <= set(headers)
    assert "cohort" not in headers
    expected = _expected_dice(root, name, labels=(1, 2))
    shown = {
        c["text"]: float(v["data-v"])
        for c, v in zip(page.column("case-table", "case"), page.column("case-table", "mean Dice"))
    }
    assert shown == pytest.approx(expected, abs=1e-9)
    assert page.column("case-table", "case")[0]["text"] == min(expected, key=expected.get)
    assert len(page.tables["measure-table"]["rows"]) == 2 * len(cases)  # case x label
    assert "names no cohorts" in text and "No plan" in text
    assert "validation outputs only" in text  # folds without checkpoints or logs
    assert len(page.tables["cv-table"]["rows"]) == len(info["candidates"]) == 3
    assert "keep the largest component" in text and "remove components &lt; 5 mm³" in text
    assert sum(i["alt"].startswith("overlay ") for i in page.images) == 3
    for data in _embedded_pngs(page):
        assert _png_pixels(data).var() > 0


# --------------------------------------------------------------------------------------------
# Pieces


def test_overlay_slices_spread_over_the_reference_nerve():
    ref = np.zeros((16, 20, 20), np.uint8)
    ref[2:14, 8:12, 8:12] = 1
    seg = np.zeros_like(ref)
    panels = overlay_panels(None, ref, seg, "c")
    assert len(panels) == 3
    slices = [int(p.title.split("= ")[1].split()[0]) for p in panels]
    assert slices == sorted(set(slices)) and all(2 <= s < 14 for s in slices)
    assert slices[-1] - slices[0] >= 6  # proximal, middle and distal, not three neighbours
    assert all(p.reference.any() for p in panels)

    # reference in one slice only: that slice, then the slices with the most prediction
    ref2 = np.zeros_like(ref)
    ref2[5, 8:12, 8:12] = 1
    seg2 = np.zeros_like(ref)
    seg2[11, 2:9, 2:9] = 1
    seg2[12, 2:4, 2:4] = 1
    slices2 = [
        int(p.title.split("= ")[1].split()[0]) for p in overlay_panels(None, ref2, seg2, "c")
    ]
    assert slices2 == [5, 11, 12]

    flat = overlay_panels(np.ones((30, 40)), ref[5, :20, :20], seg[5], "c2d")
    assert len(flat) == 1 and flat[0].reference.shape == (20, 20)
