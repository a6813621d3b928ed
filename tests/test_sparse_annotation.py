"""Sparse annotation (issue 17, part 3): the ``ignore`` label through every stage.

dataset.json -> verify -> fingerprint -> plan -> preprocessing -> sampler -> loss -> pseudo
Dice / validation / evaluate, ``convert --sparse-every K``, and a tiny plan-and-train on a sparse
phantom.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoseg.errors import AutosegError
from autoseg.io import DatasetJson, Geometry, load_dataset_json, write_image
from autoseg.io.verify import verify_dataset

SHAPE = (8, 16, 16)  # (z, y, x)
SPACING = (3.0, 0.5, 0.5)
LABELS = {"background": 0, "nerve": 1, "ignore": 2}


def sparse_mask(every: int = 2, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A block nerve in every slice; slices other than every ``every``-th are 'ignore' (2)."""
    m = np.zeros(shape, np.uint8)
    m[:, 5:10, 4:8] = 1
    keep = np.zeros(shape[0], bool)
    keep[::every] = True
    m[~keep] = 2
    return m


def make_sparse_dataset(folder: Path, n_cases: int = 3, every: int = 2) -> Path:
    geom = Geometry.default(SHAPE, SPACING)
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        image = rng.normal(100, 10, SHAPE).astype(np.float32)
        mask = sparse_mask(every)
        image[mask == 1] += 80  # the nerve is brighter, also where it is not labelled
        write_image(folder / "imagesTr" / f"case{i}_0000.nii.gz", image, geom)
        write_image(folder / "labelsTr" / f"case{i}.nii.gz", mask, geom)
    DatasetJson(
        channel_names={"0": "T2"}, labels=dict(LABELS), num_training=n_cases, file_ending=".nii.gz"
    ).save(folder)
    return folder


# --------------------------------------------------------------------------------------------
# dataset.json and verify


def test_dataset_json_reads_the_ignore_label(tmp_path):
    make_sparse_dataset(tmp_path)
    ds = load_dataset_json(tmp_path)
    assert ds.ignore_label == 2
    assert ds.class_labels == {"background": 0, "nerve": 1}
    assert ds.foreground_labels == {"nerve": 1}
    assert DatasetJson.from_dict(ds.to_dict()).labels == LABELS  # round trip keeps it


@pytest.mark.parametrize(
    "labels, match",
    [
        ({"background": 0, "ignore": 1, "nerve": 2}, "must be the highest"),
        ({"ignore": 0, "nerve": 1, "background": 0}, "value 0"),
    ],
)
def test_dataset_json_refuses_a_misplaced_ignore_label(tmp_path, labels, match):
    make_sparse_dataset(tmp_path)
    d = json.loads((tmp_path / "dataset.json").read_text())
    d["labels"] = labels
    (tmp_path / "dataset.json").write_text(json.dumps(d))
    with pytest.raises(AutosegError, match=match) as exc:
        load_dataset_json(tmp_path)
    assert "\n" not in str(exc.value)


def test_verify_accepts_masks_holding_the_ignore_value(tmp_path):
    make_sparse_dataset(tmp_path)
    assert verify_dataset(tmp_path, num_workers=1, progress=False) == []
    # a mask that is all 'ignore' is legal but useless: a warning naming it
    write_image(
        tmp_path / "labelsTr" / "case1.nii.gz",
        np.full(SHAPE, 2, np.uint8),
        Geometry.default(SHAPE, SPACING),
    )
    (p,) = verify_dataset(tmp_path, num_workers=1, progress=False)
    assert p.severity == "warning" and "no labelled voxel" in p.what
    assert Path(p.path).name == "case1.nii.gz"


# --------------------------------------------------------------------------------------------
# fingerprint and plan


def _dense_copy(src: Path, dst: Path) -> Path:
    """The same dataset fully labelled (the ignore slices given their true labels)."""
    import shutil

    from autoseg.io import read_image

    shutil.copytree(src, dst)
    for f in (dst / "labelsTr").iterdir():
        m = read_image(f)
        dense = m.array.copy()
        dense[dense == 2] = sparse_mask(1)[dense == 2]
        write_image(f, dense, m.geometry)
    d = json.loads((dst / "dataset.json").read_text())
    d["labels"] = {"background": 0, "nerve": 1}
    (dst / "dataset.json").write_text(json.dumps(d))
    return dst


def test_fingerprint_counts_labelled_voxels_only(tmp_path):
    from autoseg.fingerprint.extract import extract_fingerprint
    from autoseg.fingerprint.schema import Fingerprint

    sparse = make_sparse_dataset(tmp_path / "001_Sparse", every=4)
    dense = _dense_copy(sparse, tmp_path / "002_Dense")
    fs = extract_fingerprint(sparse, num_workers=1, progress=False)
    fd = extract_fingerprint(dense, num_workers=1, progress=False)
    assert fs["labels"] == {"background": 0, "nerve": 1} and fs["ignore_label"] == 2
    assert "ignore_label" not in fd
    # by hand: the nerve's share of the labelled voxels (slices 0 and 4 of 8)
    m = sparse_mask(4)
    expected = np.count_nonzero(m == 1) / np.count_nonzero(m != 2)
    case = fs["cases"][0]
    assert case["class_voxel_fraction"]["1"] == pytest.approx(expected)
    assert case["labelled_fraction"] == pytest.approx(2 / 8)
    # every slice holds the same nerve, so sparse and dense agree on the imbalance
    agg_s, agg_d = fs["aggregate"], fd["aggregate"]
    assert agg_s["class_voxel_fraction_median"] == pytest.approx(
        agg_d["class_voxel_fraction_median"]
    )
    # foreground intensities come from labelled nerve voxels only (brighter than 'ignore' ones)
    assert agg_s["intensity"]["0"]["p00_5"] > 150
    assert Fingerprint.from_dict(fs).to_dict() == fs


def test_plan_excludes_the_ignore_label_from_the_classes(tmp_path):
    from autoseg.fingerprint.extract import extract_fingerprint
    from autoseg.planning import plan_dataset
    from autoseg.planning.plan import Plan

    fp = extract_fingerprint(make_sparse_dataset(tmp_path / "001_S"), num_workers=1, progress=False)
    plan = plan_dataset(fp, gpu_memory_gb=8.0, configs="3d_fullres", device="cpu")
    assert plan.labels == {"background": 0, "nerve": 1} and plan.num_classes == 2
    assert plan.ignore_label == 2
    for cfg in plan.configurations.values():
        assert cfg.architecture["num_classes"] == 2
    d = plan.to_dict()
    assert d["ignore_label"] == 2
    assert Plan.from_dict(json.loads(json.dumps(d))).ignore_label == 2
    del d["ignore_label"]  # plans of fully labelled datasets do not carry the key
    assert Plan.from_dict(d).ignore_label is None
    assert "ignore_label" not in Plan.from_dict(d).to_dict()


# --------------------------------------------------------------------------------------------
# preprocessing


@pytest.mark.parametrize(
    "target",
    [(3.0, 1.0, 1.0), (1.5, 0.5, 0.5), (1.0, 0.7, 0.7)],
    ids=["in-plane-coarser", "z-finer", "both"],
)
def test_resampled_labels_keep_unlabelled_slices_unlabelled(target):
    from autoseg.preprocessing.normalization import ChannelNormalization
    from autoseg.preprocessing.preprocess import PreprocessingParams, preprocess_case

    mask = sparse_mask(2)
    image = np.random.default_rng(1).normal(100, 10, (1, *SHAPE)).astype(np.float32) + 1
    geom = Geometry.default(SHAPE, SPACING)
    params = PreprocessingParams("x", target, (ChannelNormalization("zscore"),))
    res = preprocess_case(image, geom, params, seg=mask, labels=[1], ignore_label=2)
    seg = res.seg
    assert set(np.unique(seg)) <= {0, 1, 2}
    # along z (the thick axis, nearest neighbour) each output slice comes from one input slice:
    # it is all 'ignore' or has no 'ignore' at all
    per_slice = [(s == 2).mean() for s in seg]
    assert all(f in (0.0, 1.0) for f in per_slice), per_slice
    assert 0.3 < np.mean(per_slice) < 0.7  # half the slices, as in the input
    labelled = seg[np.array(per_slice) == 0]
    assert (labelled == 1).any()
    # the sampler's foreground locations never point at 'ignore' voxels
    assert "2" not in res.locations and len(res.locations["1"])
    z, y, x = res.locations["1"].T
    assert (seg[z, y, x] == 1).all()


# --------------------------------------------------------------------------------------------
# sampler


def _loader_batches(folder, cfg, n_batches: int, seed: int = 0) -> np.ndarray:
    from autoseg.data import build_loader

    with build_loader(folder, None, cfg, seed=seed, augment=False) as loader:
        return np.concatenate([next(loader)["target"] for _ in range(n_batches)])


def test_foreground_oversampling_centres_on_real_foreground(tmp_path):
    from autoseg.data import LoaderConfig
    from autoseg.data.dataset import write_case_arrays

    seg = np.full((6, 64, 64), 2, np.uint8)  # mostly unlabelled
    seg[0] = 0
    seg[0, 30:33, 30:33] = 1  # a small nerve in the one labelled slice
    write_case_arrays(tmp_path, "c0", np.zeros((1, *seg.shape), np.float32), seg)
    cfg = LoaderConfig.from_plan(
        {"dim": 2, "patch_size": [16, 16], "batch_size": 8, "oversample_foreground": 1.0},
        plan={"ignore_label": 2},
    )
    assert cfg.ignore_label == 2
    targets = _loader_batches(tmp_path, cfg, 5)
    # every patch is centred on a nerve voxel, none on an 'ignore' one (the locations file
    # lists both labels; 'ignore' is no foreground)
    assert all((t == 1).any() for t in targets)


def test_random_patches_without_labelled_voxels_are_redrawn(tmp_path):
    from dataclasses import replace

    from autoseg.data import LoaderConfig
    from autoseg.data.dataset import write_case_arrays
    from autoseg.data.sampler import MAX_UNLABELLED_REDRAWS, unlabelled_after_redraws

    seg = np.full((8, 32, 32), 2, np.uint8)
    seg[0] = 0  # every 8th slice labelled (background only: no foreground to centre on)
    write_case_arrays(tmp_path, "c0", np.zeros((1, *seg.shape), np.float32), seg)
    cfg = LoaderConfig(dim=2, patch_size=(16, 16), batch_size=8, oversample_foreground=0.0)

    def labelled_share(c) -> float:
        targets = _loader_batches(tmp_path, c, 25)
        return float(np.mean([(t != 2).any() for t in targets]))

    n = 200
    without = labelled_share(cfg)  # the loader does not know about 'ignore': 1 in 8
    with_ignore = labelled_share(replace(cfg, ignore_label=2))
    expected = 1 - unlabelled_after_redraws(8)  # 1 - (7/8)^11 = 0.77
    assert MAX_UNLABELLED_REDRAWS == 10
    assert abs(without - 1 / 8) < 4 * np.sqrt(1 / 8 * 7 / 8 / n)
    assert abs(with_ignore - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


# --------------------------------------------------------------------------------------------
# losses: masked, checked against the same loss computed by hand over the labelled voxels


def _logits_and_sparse_target(seed: int = 0, shape=(2, 3, 4, 6, 6), ignore: int = 3):
    import torch

    g = torch.Generator().manual_seed(seed)
    b, c, *spatial = shape
    logits = torch.randn(shape, generator=g, requires_grad=True)
    target = torch.randint(0, c, (b, 1, *spatial), generator=g)
    unlabelled = torch.rand((b, 1, *spatial), generator=g) < 0.6
    target[unlabelled] = ignore
    return logits, target


def _labelled_voxels(logits, target, ignore):
    """(N, C) logits and (N,) labels of the labelled voxels, per batch item."""
    c = logits.shape[1]
    out = []
    for i in range(logits.shape[0]):
        lg = logits[i].reshape(c, -1).T
        t = target[i, 0].reshape(-1)
        keep = t != ignore
        out.append((lg[keep], t[keep]))
    return out


def _ce_by_hand(pairs) -> float:
    """-log softmax of the true class, averaged over all labelled voxels (numpy)."""
    terms = []
    for lg, t in pairs:
        x = lg.detach().double().numpy()
        x = x - x.max(1, keepdims=True)
        log_p = x - np.log(np.exp(x).sum(1, keepdims=True))
        terms.extend(-log_p[np.arange(len(t)), t.numpy()])
    return float(np.mean(terms))


def _dice_by_hand(pairs, n_classes: int, batch_dice: bool, smooth: float = 1e-5) -> float:
    def soft(lg):
        x = lg.detach().double().numpy()
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    groups = [pairs] if batch_dice else [[p] for p in pairs]
    scores = []
    for group in groups:
        for k in range(1, n_classes):
            inter = sum(float((soft(lg)[:, k] * (t.numpy() == k)).sum()) for lg, t in group)
            size = sum(float(soft(lg)[:, k].sum() + (t.numpy() == k).sum()) for lg, t in group)
            scores.append((2 * inter + smooth) / (size + smooth))
    return 1.0 - float(np.mean(scores))


@pytest.mark.parametrize("batch_dice", [True, False])
def test_dice_ce_ignores_unlabelled_voxels(batch_dice):
    from autoseg.training.losses import build_loss

    logits, target = _logits_and_sparse_target()
    loss_fn = build_loss({"name": "dice_ce", "batch_dice": batch_dice, "ignore_label": 3}, 3)
    loss = loss_fn(logits, target)
    pairs = _labelled_voxels(logits, target, 3)
    expected = _ce_by_hand(pairs) + _dice_by_hand(pairs, 3, batch_dice)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()  # an unlabelled voxel gets exactly no gradient
    unlabelled = (target == 3).expand_as(logits)
    assert float(logits.grad[unlabelled].abs().max()) == 0.0
    assert float(logits.grad[~unlabelled].abs().max()) > 0.0


@pytest.mark.parametrize("name", ["ce", "focal", "weighted_ce", "soft_dice"])
def test_every_built_in_loss_ignores_unlabelled_voxels(name):
    """Changing the logits or the (hidden) true label at unlabelled voxels changes nothing,
    and the ce/soft Dice values match the by-hand computation."""
    import torch

    from autoseg.training.losses import build_loss

    logits, target = _logits_and_sparse_target(seed=1)
    loss_fn = build_loss({"name": name, "ignore_label": 3}, 3)
    base = float(loss_fn(logits.detach(), target))
    noisy = logits.detach().clone()
    unlabelled = (target == 3).expand_as(noisy)
    noisy[unlabelled] = 50.0 * torch.randn(int(unlabelled.sum()))
    assert float(loss_fn(noisy, target)) == pytest.approx(base, rel=1e-5)
    pairs = _labelled_voxels(logits, target, 3)
    if name == "ce":
        assert base == pytest.approx(_ce_by_hand(pairs), rel=1e-5)
    if name == "soft_dice":
        assert base == pytest.approx(_dice_by_hand(pairs, 3, True), rel=1e-5)
    if name == "weighted_ce":  # weights from the labelled voxels' class counts
        t = torch.cat([t for _, t in pairs])
        lg = torch.cat([lg for lg, _ in pairs])
        counts = torch.bincount(t, minlength=3).float()
        w = counts.sum() / (3 * counts)
        expected = torch.nn.functional.cross_entropy(lg.detach(), t, weight=w)
        assert base == pytest.approx(float(expected), rel=1e-5)
    # nothing labelled: 0 (or a finite value), never NaN
    assert np.isfinite(float(loss_fn(logits.detach(), torch.full_like(target, 3))))


def test_deep_supervision_targets_carry_the_ignore_mask():
    import torch

    from autoseg.training.losses import DeepSupervisionLoss, build_loss, downsample_target

    logits, target = _logits_and_sparse_target(seed=2, shape=(2, 3, 4, 8, 8))
    low = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    low_target = downsample_target(target, (4, 4, 4))
    # nearest neighbour: each coarse voxel is one fine voxel, ignore included
    assert torch.equal(low_target, target[:, :, :, ::2, ::2])
    base = build_loss({"name": "dice_ce", "ignore_label": 3}, 3)
    ds = DeepSupervisionLoss(base, 3)  # weights 2/3, 1/3, 0
    third = torch.randn(2, 3, 4, 2, 2)
    total = ds([logits, low, third], [target, low_target, downsample_target(target, (4, 2, 2))])
    by_hand = 0.0
    for w, lg, t in ((2 / 3, logits, target), (1 / 3, low, low_target)):
        pairs = _labelled_voxels(lg, t, 3)
        by_hand += w * (_ce_by_hand(pairs) + _dice_by_hand(pairs, 3, True))
    assert float(total.detach()) == pytest.approx(by_hand, rel=1e-5)


def test_pseudo_dice_counts_come_from_labelled_voxels_only():
    import torch

    from autoseg.training.losses.core import drop_ignored

    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 3, (2, 5, 7), generator=g)
    target[torch.rand(2, 5, 7, generator=g) < 0.5] = 3
    pred = torch.randint(0, 3, (2, 5, 7), generator=g)
    p, t = drop_ignored(pred, target, 3)
    keep = (target != 3).numpy()
    for c in (1, 2):  # the trainer's tp/fp/fn per class, vs numpy over labelled voxels
        pc, tc = (pred.numpy() == c)[keep], (target.numpy() == c)[keep]
        assert int(((p == c) & (t == c)).sum()) == int((pc & tc).sum())
        assert int(((p == c) & (t != c)).sum()) == int((pc & ~tc).sum())
        assert int(((p != c) & (t == c)).sum()) == int((~pc & tc).sum())


# --------------------------------------------------------------------------------------------
# evaluation: only labelled voxels count


def test_metrics_and_evaluate_count_labelled_voxels_only(tmp_path):
    from autoseg.evaluation import compute_metrics, evaluate_folders

    ref = sparse_mask(4)
    pred = np.zeros(SHAPE, np.uint8)
    pred[:, 5:10, 4:8] = 1  # right in every slice ...
    pred[1:4, 0:3, 0:3] = 1  # ... plus false positives, all in unlabelled slices
    m = compute_metrics(pred, ref, SPACING, [1], ignore_label=2)
    assert m[1]["dice"] == 1.0 and m[1]["precision"] == 1.0
    assert compute_metrics(pred, ref, SPACING, [1])[1]["dice"] < 1.0  # unmasked: penalised
    # by hand on the labelled slices only, with an error there too
    pred[0, 5, 4] = 0
    keep = ref != 2
    p, r = pred[keep] == 1, ref[keep] == 1
    by_hand = 2 * np.count_nonzero(p & r) / (np.count_nonzero(p) + np.count_nonzero(r))
    assert compute_metrics(pred, ref, SPACING, [1], ignore_label=2)[1]["dice"] == pytest.approx(
        by_hand
    )
    # autoseg evaluate finds the ignore label in the dataset.json next to the references
    make_sparse_dataset(tmp_path / "ds", n_cases=1, every=4)
    geom = Geometry.default(SHAPE, SPACING)
    write_image(tmp_path / "ds" / "labelsTr" / "case0.nii.gz", ref, geom)
    write_image(tmp_path / "pred" / "case0.nii.gz", pred, geom)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ds" / "labelsTr", progress=False)
    assert result.labels == [1]  # 'ignore' is no label to score
    assert result.mean("dice") == pytest.approx(by_hand)


# --------------------------------------------------------------------------------------------
# convert --sparse-every K


def test_sparsify_keeps_every_kth_slice_along_the_thickest_axis():
    from autoseg.io.sparse import slice_axis, sparsify

    assert slice_axis((3.0, 0.5, 0.5)) == 0
    assert slice_axis((0.5, 0.5, 2.0)) == 2
    assert slice_axis((1.0, 1.0, 1.0)) == 0  # isotropic: z
    seg = np.ones((4, 5, 9), np.uint8)
    out = sparsify(seg, 2, 4, 7)
    assert (out[:, :, [0, 4, 8]] == 1).all()
    assert (out[:, :, [1, 2, 3, 5, 6, 7]] == 7).all()
    assert (sparsify(seg, 0, 1, 7) == seg).all()  # K = 1 keeps everything


def _dense_dataset(folder: Path, n_cases: int = 2, spacing=SPACING) -> Path:
    geom = Geometry.default(SHAPE, spacing)
    rng = np.random.default_rng(5)
    for i in range(n_cases):
        write_image(
            folder / "imagesTr" / f"case{i}_0000.nii.gz",
            rng.normal(100, 10, SHAPE).astype(np.float32),
            geom,
        )
        write_image(folder / "labelsTr" / f"case{i}.nii.gz", sparse_mask(1), geom)
    DatasetJson(
        channel_names={"0": "T2"},
        labels={"background": 0, "nerve": 1},
        num_training=n_cases,
        file_ending=".nii.gz",
        cases={"case0": {"subject": "s0"}},
    ).save(folder)
    return folder


def test_convert_sparse_every_builds_a_sparse_dataset(tmp_path, monkeypatch, capsys):
    from autoseg.cli import main
    from autoseg.io import read_image

    root = tmp_path / "root"
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    _dense_dataset(root / "raw" / "001_Dense", spacing=(0.5, 0.5, 2.0))  # x is the slice axis
    assert main(["convert", "1", "--name", "Sparse3", "--sparse-every", "3"]) == 0
    out = capsys.readouterr().out
    assert "kept one slice in 3 of" in out and ": OK" in out
    target = root / "raw" / "002_Sparse3"
    ds = load_dataset_json(target)
    assert ds.labels == {"background": 0, "nerve": 1, "ignore": 2}
    assert ds.cases == {"case0": {"subject": "s0"}} and ds.extra["sparse_annotation"]["every"] == 3
    for i in range(2):
        dense = read_image(root / "raw" / "001_Dense" / "labelsTr" / f"case{i}.nii.gz")
        sparse = read_image(target / "labelsTr" / f"case{i}.nii.gz")
        assert sparse.geometry == dense.geometry
        kept = np.arange(SHAPE[2]) % 3 == 0
        assert np.array_equal(sparse.array[:, :, kept], dense.array[:, :, kept])
        assert (sparse.array[:, :, ~kept] == 2).all()
        image = target / "imagesTr" / f"case{i}_0000.nii.gz"
        src_image = root / "raw" / "001_Dense" / "imagesTr" / image.name
        assert image.read_bytes() == src_image.read_bytes()
    # a second run is refused without --overwrite, in one line
    assert main(["convert", "1", "--name", "Sparse3", "--sparse-every", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and len(err.splitlines()) == 1


def test_convert_sparse_every_refuses_2d_data(tmp_path, monkeypatch, capsys):
    from conftest import tiny_us_dataset

    from autoseg.cli import main

    root = tmp_path / "root"
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    tiny_us_dataset(root, 1, 2)
    assert main(["convert", "1", "--name", "SparseUS", "--sparse-every", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs 3D volumes" in err and len(err.splitlines()) == 1
    assert main(["convert", "1", "--name", "SparseUS", "--sparse-every", "0"]) == 2
    assert ">= 1" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# end to end: a sparse thigh phantom, planned and trained (tiny network, a few iterations)


@pytest.mark.slow
def test_plan_and_train_on_a_sparse_phantom(tmp_path, monkeypatch, one_thread):
    from autoseg.cli import main
    from autoseg.layout import ResultsLayout
    from autoseg.networks.checkpoint import load_checkpoint
    from autoseg.phantoms import Mri3dConfig, generate_phantom

    root = tmp_path / "root"
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    src = tmp_path / "src"
    generate_phantom("mri3d", src, 4, seed=2, config=Mri3dConfig(shape=(8, 48, 48)), progress=False)
    assert (
        main(["convert", str(src), "--name", "Thigh", "--id", "1", "--label-names", "nerve"]) == 0
    )
    assert main(["convert", "1", "--name", "ThighSparse4", "--id", "2", "--sparse-every", "4"]) == 0
    assert main(["plan", "2", "--configs", "2d", "--brief"]) == 0
    base = root / "preprocessed" / "002_ThighSparse4"
    assert json.loads((base / "fingerprint.json").read_text())["ignore_label"] == 2
    plan_path = base / "plans.json"
    plan = json.loads(plan_path.read_text())
    assert plan["ignore_label"] == 2 and sorted(plan["labels"].values()) == [0, 1]
    plan["configurations"] = {"2d": plan["configurations"]["2d"]}
    plan["configurations"]["2d"]["architecture"].update(
        features_per_stage=[4, 8],
        kernel_sizes=[[3, 3], [3, 3]],
        strides=[[1, 1], [2, 2]],
        n_blocks_per_stage=[1, 1],
        n_conv_per_stage_decoder=[1],
    )
    plan["configurations"]["2d"].update(patch_size=[32, 32], batch_size=2)
    plan["schedule"].update(epochs=2, iterations_per_epoch=3)
    plan_path.write_text(json.dumps(plan))
    args = ["plan-and-train", "2", "--n-folds", "2", "--workers", "0", "--no-progress"]
    assert main(args) == 0

    results = root / "results" / "002_ThighSparse4"
    assert (results / "inference.json").is_file()  # find-best ran on the sparse references
    layout = ResultsLayout(results)
    for fold in (0, 1):
        state = load_checkpoint(layout.checkpoint("2d", fold), map_location="cpu")
        heads = [v for k, v in state["model"].items() if k.endswith("weight") and v.ndim == 4]
        assert heads[-1].shape[0] == 2  # background + nerve: no 'ignore' output
        metrics = json.loads(layout.validation_metrics("2d", fold).read_text())
        assert set(metrics["mean_dice"]) == {"1"}
        assert all(0.0 <= v <= 1.0 for v in metrics["mean_dice"].values())
    assert main(["report", "2"]) == 0  # per-case scores against the sparse references


def test_sct_cord_slabs_cover_the_volume_and_hold_back_two(tmp_path, monkeypatch):
    """benchmarks.sparse_annotation --source sct: the T1 cord volume cut into 7 slabs of
    contiguous axial slices, 5 converted for training and 2 held back, with every mask voxel
    in exactly one slab and each slab's geometry where its slices were."""
    sitk = pytest.importorskip("SimpleITK")
    from benchmarks import sparse_annotation as bench

    assert bench.slab_bounds(77, 7) == [(i * 11, i * 11 + 11) for i in range(7)]
    bounds = bench.slab_bounds(10, 3)
    assert bounds[0][0] == 0 and bounds[-1][1] == 10
    assert all(a < b for a, b in bounds) and all(
        b == c for (_, b), (c, _) in zip(bounds, bounds[1:])
    )
    if not (bench.SCT / bench.SCT_MASK).is_file():
        pytest.skip("../shared/data/sct_testing absent")
    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path / "root"))
    images, masks = bench.prepare_sct(tmp_path)
    held = sorted(p.name for p in masks.iterdir())
    assert held == [f"cord_{i}.nii.gz" for i in bench.SCT_HELD]
    whole = sitk.ReadImage(str(bench.SCT / bench.SCT_MASK))
    total = int((sitk.GetArrayFromImage(whole) > 0).sum())
    parts = [*masks.glob("*.nii.gz"), *(tmp_path / "source").glob("*_mask.nii.gz")]
    assert len(parts) == bench.SCT_SLABS
    assert sum(int(sitk.GetArrayFromImage(sitk.ReadImage(str(p))).sum()) for p in parts) == total
    slab = sitk.ReadImage(str(images / "cord_2.nii.gz"))
    start = whole.TransformIndexToPhysicalPoint((0, 0, 22))
    assert np.allclose(slab.GetOrigin(), start) and slab.GetSize()[2] == 11
    ds = load_dataset_json(next((tmp_path / "root" / "raw").glob("001_*")))
    assert ds.num_training == bench.SCT_SLABS - len(bench.SCT_HELD)
