"""predict --uncertainty and suggest-labels: the maps' formulas against independent numpy
computations, their geometry, predictions unchanged without (and with) the flag, and the
diversity ranking, on a tiny 2-fold model of a 2D phantom."""

from __future__ import annotations

import csv
import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import one_torch_thread, shrink_2d_plan, tiny_us_dataset

from autoseg.cli import main
from autoseg.errors import AutosegError
from autoseg.evaluation.report.suggestions import section_suggestions
from autoseg.inference import suggest as suggest_module
from autoseg.inference.sliding_window import WindowSpec, predict_sliding_window
from autoseg.inference.suggest import (
    neighbour_spread,
    score_table,
    select_diverse,
    select_typical,
    thumbnail,
    thumbnail_distance,
)
from autoseg.inference.uncertainty import (
    case_uncertainty,
    label_scores,
    map_extension,
    mutual_information,
    normalised_entropy,
)
from autoseg.io import Geometry, read_image, write_image


def _dirichlet(rng, k, shape):
    p = rng.gamma(0.5, size=(k, *shape)) + 1e-4
    return (p / p.sum(0)).astype(np.float32)


# ---------------------------------------------------------------- formulas
def test_entropy_matches_an_independent_numpy_computation():
    rng = np.random.default_rng(1)
    p = _dirichlet(rng, 3, (5, 6))
    p64 = p.astype(np.float64)
    expected = -(p64 * np.log(p64)).sum(0) / np.log(3)
    np.testing.assert_allclose(normalised_entropy(p), expected, atol=1e-6)
    known = np.array([[1.0, 1 / 3, 0.5], [0.0, 1 / 3, 0.5], [0.0, 1 / 3, 0.0]], np.float32)
    np.testing.assert_allclose(normalised_entropy(known), [0.0, 1.0, np.log(2) / np.log(3)], 1e-6)


def test_disagreement_is_zero_for_identical_members_and_the_mean_kl_otherwise():
    rng = np.random.default_rng(2)
    a = _dirichlet(rng, 2, (4, 7))
    assert mutual_information([a, a.copy(), a.copy()]).max() <= 1e-6
    members = [_dirichlet(rng, 2, (4, 7)) for _ in range(3)]
    m64 = [m.astype(np.float64) for m in members]
    mean = np.mean(m64, axis=0)
    mean_kl = np.mean([(m * np.log(m / mean)).sum(0) for m in m64], axis=0)
    got = mutual_information(members)
    np.testing.assert_allclose(got, mean_kl, atol=1e-5)
    assert got.min() >= 0 and got.max() > 0.01


def test_score_is_not_diluted_by_a_larger_background():
    """The same uncertain nerve in a 4x larger field of view scores the same."""

    def case(size):
        p = np.zeros((2, size, size), np.float32)
        p[0] = 1.0
        p[:, 5:9, 5:9] = np.array([0.4, 0.6], np.float32)[:, None, None]
        p[:, 6:8, 6:8] = np.array([0.05, 0.95], np.float32)[:, None, None]
        return case_uncertainty(p, np.zeros(p.shape[1:], np.float32), members=1, member_kind="x")

    small, large = case(20), case(80)
    assert small.summary()["score"] == pytest.approx(large.summary()["score"])
    assert small.summary()["region_voxels"] == 6 * 6  # the 4x4 candidate + a one-voxel rim
    assert small.entropy.mean() > 10 * large.entropy.mean()  # what a whole-image mean does
    empty = np.zeros((2, 10, 10), np.float32)
    empty[0] = 0.97
    empty[1] = 0.03
    unc = case_uncertainty(empty, np.zeros((10, 10), np.float32), members=1, member_kind="x")
    assert unc.summary()["region_voxels"] == 0
    assert unc.summary()["score"] == pytest.approx(
        float(normalised_entropy(empty).mean()), abs=1e-6
    )


def _grow_by_shifts(mask):
    """One-voxel growth (8 neighbours) by shifting a padded copy: independent of scipy."""
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    h, w = mask.shape
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def test_label_scores_average_the_entropy_where_each_label_is_plausible():
    """Per label: the mean normalised entropy over p_label >= 0.1 grown by one pixel, against
    an independent computation; an unsure nerve beside a sure vessel scores high for the nerve
    and low for the vessel, where the pooled score mixes both."""
    p = np.zeros((3, 30, 30), np.float32)
    p[0] = 1.0
    p[:, 4:10, 4:10] = np.array([0.45, 0.5, 0.05], np.float32)[:, None, None]  # unsure nerve
    p[:, 18:26, 18:26] = np.array([0.02, 0.0, 0.98], np.float32)[:, None, None]  # sure vessel
    unc = case_uncertainty(
        p, np.zeros(p.shape[1:], np.float32), members=1, member_kind="x", label_names=["n", "v"]
    )
    h = -(np.where(p > 0, p, 1) * np.log(np.where(p > 0, p, 1))).sum(0) / np.log(3)
    for k, name in ((1, "n"), (2, "v")):
        region = _grow_by_shifts(p[k] >= 0.1)
        got = unc.summary()["labels"][name]
        assert got["region_voxels"] == int(region.sum())
        assert got["score"] == pytest.approx(float(h[region].mean()), abs=1e-5)
    labels = unc.summary()["labels"]
    assert labels["n"]["score"] > 0.3 > 0.1 > labels["v"]["score"]
    assert labels["v"]["score"] < unc.summary()["score"] < labels["n"]["score"]
    # a label plausible nowhere: the whole image's mean, as the case score does
    q = p.copy()
    q[2] = 0.0
    q[0] = 1.0 - q[1]
    absent = label_scores(normalised_entropy(q), q, ["n", "v"])["v"]
    assert absent["region_voxels"] == 0
    assert absent["score"] == pytest.approx(float(normalised_entropy(q).mean()), abs=1e-6)
    assert set(label_scores(normalised_entropy(q), q)) == {"1", "2"}  # unnamed: class numbers


def test_a_copy_of_a_labelled_scan_comes_last():
    rng = np.random.default_rng(6)
    feats = np.stack([thumbnail(rng.normal(size=(1, 32, 32))) for _ in range(4)])
    known = feats[[1]].copy()  # candidate 1 is already labelled elsewhere
    picks = select_diverse([0.5, 0.9, 0.4, 0.3], feats, 4, known)
    assert [p.index for p in picks] == [0, 2, 3, 1]
    assert picks[0].distance is not None and picks[0].nearest == 4  # the labelled scan
    assert picks[3].distance == pytest.approx(0.0, abs=1e-6) and picks[3].nearest == 4
    assert [p.index for p in select_diverse([0.5, 0.9, 0.4, 0.3], feats, 4)][0] == 1


def test_typical_picks_the_centre_of_the_largest_uncovered_group():
    """Three groups of scans; the labelled one covers group A. Two picks: the centre of the
    largest uncovered group (B, 6 scans), then of C (3 scans) - never A, however many."""
    rng = np.random.default_rng(7)
    centres = rng.normal(0, 5, size=(3, 16))

    def group(c, n, spread=0.3):
        return centres[c] + rng.normal(0, spread, size=(n, 16))

    b = group(1, 6)
    b[0] = centres[1]  # the typical one: at the centre
    feats = np.concatenate([group(0, 8), b, group(2, 3)]).astype(np.float32)
    known = group(0, 1).astype(np.float32)
    picks = select_typical(feats, 2, known)
    assert picks[0].index == 8 and picks[0].group == 6
    assert 14 <= picks[1].index < 17 and picks[1].group == 3
    assert picks[0].distance is None
    # without labelled scans: one pick per group, the largest group (A, 8 scans) first
    alone = select_typical(feats, 3)
    assert [p.group for p in alone] == [8, 6, 3] and alone[1].index == 8
    # identical scans (fewer distinct groups than asked): still k picks, and no warning
    same = np.zeros((6, 16), np.float32)
    same[3:] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dup = select_typical(same, 4, np.zeros((1, 16), np.float32))
    assert dup[0].index == 3 and sorted(p.index for p in dup) == [0, 1, 2, 3]
    assert select_typical(feats, 0) == []


@pytest.mark.parametrize("n, q", [(30, 20), (6, 20), (2, 20), (1, 20)])
def test_neighbour_spread_matches_a_full_distance_matrix(n, q):
    """scikit-learn's neighbour search against sorting every pairwise distance in numpy."""
    rng = np.random.default_rng(n)
    pts = rng.normal(size=(n, 12))
    full = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    k = min(q, n - 1)
    expected = np.sort(full, axis=1)[:, 1 : k + 1].mean(1) if k else np.zeros(n)
    np.testing.assert_allclose(neighbour_spread(pts, q), expected, atol=1e-9)


def test_labels_take_turns_and_a_label_ranks_alone():
    """Two labels: the nerve's most uncertain scans (0, 1) would fill a pooled list; taking
    turns gives the vessel's most uncertain (3) the second place."""
    rng = np.random.default_rng(5)
    feats = np.stack([thumbnail(rng.normal(size=(1, 32, 32))) for _ in range(5)])
    summaries = [
        {"score": sc, "labels": {"nerve": {"score": n}, "vessel": {"score": v}}}
        for sc, n, v in [
            (0.60, 0.90, 0.10),
            (0.55, 0.85, 0.12),
            (0.30, 0.30, 0.20),
            (0.35, 0.20, 0.70),
            (0.20, 0.10, 0.60),
        ]
    ]
    table, columns = score_table(summaries)
    assert columns == ["nerve", "vessel"] and table.shape == (5, 2)
    picks = select_diverse(table, feats, 4)
    assert [p.index for p in picks] == [0, 3, 1, 4]
    assert [p.turn for p in picks] == [0, 1, 0, 1]
    any_table, any_cols = score_table(summaries, "any")
    assert any_cols == ["any"]
    assert [p.index for p in select_diverse(any_table, feats, 4)] == [0, 1, 3, 2]
    vessel, _ = score_table(summaries, "vessel")
    assert [p.index for p in select_diverse(vessel, feats, 2)] == [3, 4]
    # one column behaves as the plain score list did
    flat = [s["score"] for s in summaries]
    assert [p.index for p in select_diverse(flat, feats, 5)] == [
        p.index for p in select_diverse(any_table, feats, 5)
    ]
    with pytest.raises(AutosegError, match="not a label of this model"):
        score_table(summaries, "artery")
    # summaries without per-label scores (an older file): the pooled score
    assert score_table([{"score": 0.4}, {"score": 0.2}])[1] == ["any"]


def test_map_extension_keeps_float_formats_and_replaces_png():
    assert map_extension(".nrrd") == ".nrrd" and map_extension(".nii.gz") == ".nii.gz"
    assert map_extension(".png") == ".nii.gz"


class _Conv(torch.nn.Module):
    def __init__(self, symmetric: bool):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        if symmetric:  # mirror-equivariant along x: the kernel is its own left-right flip
            with torch.no_grad():
                w = self.conv.weight
                w.copy_((w + torch.flip(w, (3,))) / 2)

    def forward(self, x):
        return self.conv(x)


def test_mirror_disagreement_in_the_sliding_window(one_thread):
    image = torch.randn(1, 2, 12, 12)
    spec = WindowSpec((8, 8), 2, mirror_axes=(1,))  # left-right mirrors: two views
    net = _Conv(symmetric=False).eval()
    plain = predict_sliding_window(net, image, spec, amp=False)
    probs, dis = predict_sliding_window(net, image, spec, amp=False, disagreement=True)
    assert torch.equal(plain, probs)  # the probabilities do not change
    assert dis.shape == (2, 12, 12) and dis.min() >= 0 and dis.max() > 1e-3
    _, same = predict_sliding_window(_Conv(True).eval(), image, spec, amp=False, disagreement=True)
    assert same.max() < 1e-6  # a network that mirrors exactly: its views agree
    off = WindowSpec((8, 8), 2, mirror=False)
    _, one_view = predict_sliding_window(net, image, off, amp=False, disagreement=True)
    assert one_view.abs().max() == 0


# ---------------------------------------------------------------- diversity
def test_thumbnail_ignores_gain_and_sees_different_images():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(1, 64, 48)).astype(np.float32)
    img[0, 20:40, 10:30] += 3
    brighter = img * 2.5 + 40
    other = rng.normal(size=(1, 64, 48)).astype(np.float32)
    a, b, c = thumbnail(img), thumbnail(brighter), thumbnail(other)
    assert a.shape == (256,)
    assert thumbnail_distance(a, b) < 1e-4
    assert thumbnail_distance(a, c) > 0.8
    assert thumbnail(rng.normal(size=(1, 6, 40, 40))).shape == (8 * 16 * 16,)


def test_diversity_never_picks_a_copy_before_a_different_scan():
    rng = np.random.default_rng(4)
    imgs = [rng.normal(size=(1, 32, 32)).astype(np.float32) for _ in range(3)]
    feats = np.stack([thumbnail(imgs[0]), thumbnail(imgs[0].copy()), *map(thumbnail, imgs[1:])])
    scores = [0.9, 0.89, 0.5, 0.3]  # the copy is the second most uncertain
    picks = select_diverse(scores, feats, 4)
    assert [p.index for p in picks] == [0, 2, 3, 1]
    assert picks[0].distance is None and picks[1].nearest == 0
    assert picks[1].passed_over == 1  # it went before the more uncertain copy
    assert picks[3].distance == pytest.approx(0.0, abs=1e-6)
    # without any copy the order is the uncertainty order
    assert [p.index for p in select_diverse([0.9, 0.5, 0.3], feats[[0, 2, 3]], 3)] == [0, 1, 2]
    assert len(select_diverse(scores, feats, 10)) == 4


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-fold tiny 2D model of a noise-and-nerve phantom (a few seconds to train), and a
    folder of new scans: a NIfTI and an NRRD on grids unlike the training one, and a PNG."""
    tmp = tmp_path_factory.mktemp("unc")
    root = tmp / "root"
    old = os.environ.get("AUTOSEG_ROOT")
    os.environ["AUTOSEG_ROOT"] = str(root)
    try:
        raw = tiny_us_dataset(root, 42, 6)
        assert main(["plan", "42", "--configs", "2d", "--brief"]) == 0
        shrink_2d_plan(root / "preprocessed" / "042_TinyUS" / "plans.json", epochs=1)
        with one_torch_thread():
            for fold in ("0", "1"):
                args = ["train", "42", "2d", fold, "--n-folds", "2", "--workers", "0"]
                assert main([*args, "--device", "cpu", "--no-progress"]) == 0
        held = tmp / "held"
        rng = np.random.default_rng(9)
        image = rng.normal(100, 20, (40, 70)).astype(np.float32)
        image[18:24, 30:38] += 40
        write_image(
            held / "oblique.nii.gz",
            image,
            Geometry((0.13, 0.08), (4.0, -2.5), (0.0, -1.0, 1.0, 0.0), (70, 40)),
        )
        write_image(
            held / "coarse.nrrd",
            image[::2, ::2].copy(),
            Geometry((0.2, 0.2), (1.0, 2.0), (1.0, 0.0, 0.0, 1.0), (35, 20)),
        )
        frame = np.clip(image, 0, 255).astype(np.uint8)
        write_image(held / "frame.png", frame, Geometry.default((40, 70)))
        yield root, raw, held
    finally:
        if old is None:
            os.environ.pop("AUTOSEG_ROOT", None)
        else:
            os.environ["AUTOSEG_ROOT"] = old


def _predict(held, out, *extra):
    argv = ["predict", "-i", str(held), "-o", str(out), "-d", "42", "--config", "2d"]
    with one_torch_thread():
        assert main([*argv, "--no-progress", "--save-probabilities", *extra]) == 0


def test_predict_uncertainty_maps_on_the_input_grid_and_predictions_unchanged(trained, tmp_path):
    _, _, held = trained
    plain, unc = tmp_path / "plain", tmp_path / "unc"
    _predict(held, plain, "--folds", "0,1")
    _predict(held, unc, "--folds", "0,1", "--uncertainty")
    assert not list(plain.glob("*_uncertainty*")) and not (plain / "uncertainty.json").exists()
    assert not list(plain.glob("*_disagreement*")) and not (plain / "uncertainty.csv").exists()
    assert (plain / "predictions.json").read_bytes() == (unc / "predictions.json").read_bytes()
    outputs = {"oblique": ".nii.gz", "coarse": ".nrrd", "frame": ".png"}
    scores = json.loads((unc / "uncertainty.json").read_text())["cases"]
    assert set(scores) == set(outputs)
    for case, ext in outputs.items():
        a, b = read_image(plain / f"{case}{ext}"), read_image(unc / f"{case}{ext}")
        np.testing.assert_array_equal(a.array, b.array)  # bit-identical segmentations
        pa = np.load(plain / f"{case}_probabilities.npz")["probabilities"]
        pb = np.load(unc / f"{case}_probabilities.npz")["probabilities"]
        np.testing.assert_array_equal(pa, pb)
        source = read_image(held / f"{case}{ext}")
        for kind in ("uncertainty", "disagreement"):
            m = read_image(unc / f"{case}_{kind}{map_extension(ext)}")
            assert m.array.shape == source.array.shape
            assert m.array.dtype == np.float32
            assert m.array.min() >= 0.0 and m.array.max() <= 1.0
            if ext != ".png":  # PNG has no geometry to keep; its map is a NIfTI of its grid
                assert m.geometry.mismatch(source.geometry) is None
            assert scores[case][f"{kind}_map"] == f"{case}_{kind}{map_extension(ext)}"
        entropy = read_image(unc / f"{case}_uncertainty{map_extension(ext)}").array
        np.testing.assert_allclose(entropy, normalised_entropy(pb.astype(np.float32)), atol=2e-3)
        assert scores[case]["members"] == 2 and scores[case]["member_kind"] == "models"
    rows = list(csv.DictReader((unc / "uncertainty.csv").open()))
    assert [float(r["score"]) for r in rows] == sorted(s["score"] for s in scores.values())[::-1]
    for r in rows:  # the per-label score, named by the plan's label
        assert float(r["score_nerve"]) == scores[r["case"]]["labels"]["nerve"]["score"]


def test_disagreement_is_zero_for_the_same_model_twice_and_not_for_two_folds(trained, tmp_path):
    _, _, held = trained
    _predict(held, tmp_path / "same", "--folds", "0,0", "--uncertainty")
    _predict(held, tmp_path / "two", "--folds", "0,1", "--uncertainty")
    _predict(held, tmp_path / "one", "--folds", "0", "--uncertainty")
    _predict(held, tmp_path / "notta", "--folds", "0", "--uncertainty", "--no-tta")
    for case in ("oblique", "coarse"):  # both resampled: interpolation is not disagreement
        ext = ".nii.gz" if case == "oblique" else ".nrrd"
        same = read_image(tmp_path / "same" / f"{case}_disagreement{ext}").array
        two = read_image(tmp_path / "two" / f"{case}_disagreement{ext}").array
        mirrors = read_image(tmp_path / "one" / f"{case}_disagreement{ext}").array
        single = read_image(tmp_path / "notta" / f"{case}_disagreement{ext}").array
        assert same.max() <= 1e-5
        assert two.max() > 1e-3
        assert mirrors.max() > 0  # one model: its two left-right views
        assert single.max() == 0  # one model, one view: nothing to compare
    kinds = {
        d: json.loads((tmp_path / d / "uncertainty.json").read_text())["cases"]["frame"]
        for d in ("same", "one", "notta")
    }
    assert (kinds["one"]["member_kind"], kinds["one"]["members"]) == ("mirrors", 2)
    assert (kinds["notta"]["member_kind"], kinds["notta"]["members"]) == ("single", 1)


def test_suggest_labels_end_to_end(trained, tmp_path, capsys, monkeypatch):
    root, raw, _ = trained
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for path in sorted((raw / "imagesTr").glob("*.nii.gz")):  # new scans: mirrored ones
        scan = read_image(path)
        write_image(
            unlabelled / path.name, np.ascontiguousarray(scan.array[:, ::-1]), scan.geometry
        )
    for name in ("copyA_0000.nii.gz", "copyB_0000.nii.gz"):
        shutil.copy(unlabelled / "case2_0000.nii.gz", unlabelled / name)
    out = tmp_path / "sugg"
    base = ["suggest-labels", "-i", str(unlabelled), "-d", "42", "--config", "2d"]
    argv = [*base, "--strategy", "uncertain"]
    with one_torch_thread():
        assert main([*argv, "-n", "4", "-o", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((out / "suggestions.csv").open()))
    data = json.loads((out / "suggestions.json").read_text())
    assert [r["case"] for r in rows] == [r["case"] for r in data["suggestions"]]
    assert len(rows) == 4 and data["n_candidates"] == 8 and len(data["ranking"]) == 8
    chosen = [r["case"] for r in rows]
    assert len(set(chosen) & {"case2", "copyA", "copyB"}) <= 1  # never two identical scans
    # the first is the most uncertain; its distance is to the labelled training scans
    assert rows[0]["uncertainty_rank"] == "1" and "for nerve" in rows[0]["reason"]
    assert "nearest labelled scan case" in rows[0]["reason"] and data["labelled"] == 6
    assert {r["label"] for r in rows} == {"nerve"} and data["columns"] == ["nerve"]
    assert all("rank" in r["reason"] for r in rows)
    assert all(f"distance {float(r['distance']):.2f}" in r["reason"] for r in rows)
    for r in rows:
        assert r["case"] in printed and r["reason"] in printed
    assert (out / "predictions" / f"{chosen[0]}_uncertainty.nii.gz").is_file()
    # the default output folder is the dataset's results folder
    with one_torch_thread():
        assert main([*argv, "-n", "1", "--folds", "0", "--no-progress", "--no-tta"]) == 0
    assert (root / "results" / "042_TinyUS" / "suggestions" / "suggestions.json").is_file()
    # ... where the report's section finds them
    html = section_suggestions(root / "results" / "042_TinyUS")
    listed = json.loads((root / "results/042_TinyUS/suggestions/suggestions.json").read_text())
    first = listed["suggestions"][0]
    assert first["case"] in html and "uncertainty for nerve" in html
    assert "No suggestions yet" in section_suggestions(tmp_path)
    # typical scans of groups that nothing labelled covers
    typical = tmp_path / "typical"
    with one_torch_thread():
        args = [*base, "-n", "2", "-o", str(typical), "--no-tta"]  # the default strategy
        assert main([*args, "--no-progress"]) == 0
    rows = list(csv.DictReader((typical / "suggestions.csv").open()))
    assert len(rows) == 2 and all(r["label"] == "typical" for r in rows)
    typical_reasons = ("the most typical of", "a scan unlike any labelled or chosen one")
    assert all(r["reason"].startswith(typical_reasons) for r in rows)
    res = tmp_path / "res"
    (res / "suggestions").mkdir(parents=True)
    shutil.copy(typical / "suggestions.json", res / "suggestions" / "suggestions.json")
    html = section_suggestions(res)
    assert "the most typical scan of each group" in html and rows[0]["case"] in html

    # nothing half-written when it fails after predicting
    def broken(image):
        raise RuntimeError("boom")

    monkeypatch.setattr(suggest_module, "thumbnail", broken)
    crashed = tmp_path / "crashed"
    with one_torch_thread():
        assert main([*argv, "-n", "2", "-o", str(crashed), "--no-progress", "--no-tta"]) == 1
    assert not (crashed / "suggestions.csv").exists()
    assert not (crashed / "suggestions.json").exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["-i", "MISSING", "-d", "42", "--config", "2d", "-n", "2"], "input not found"),
        (["-i", "HELD", "-d", "42", "-n", "2"], "no inference.json"),
        (["-i", "HELD", "-d", "77", "-n", "2"], "no dataset '77'"),
        (["-i", "HELD", "-d", "42", "--config", "2d", "-n", "0"], "at least one scan"),
        (["-i", "HELD", "-d", "42", "--config", "2d", "-n", "1", "--label", "vein"], "vein"),
    ],
)
def test_suggest_labels_errors_are_one_line(trained, tmp_path, capsys, extra, expected):
    _, _, held = trained
    argv = [str(held) if a == "HELD" else str(tmp_path / a) if a == "MISSING" else a for a in extra]
    assert main(["suggest-labels", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err
