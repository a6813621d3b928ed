"""Round trips through every writable format keep pixels and geometry."""

from __future__ import annotations

import locale

import numpy as np
import pytest
import SimpleITK as sitk

from autoseg.errors import AutosegError
from autoseg.io import Geometry, collapse_grey_rgb, read_image, split_extension, write_image
from autoseg.io.atomic import TMP_MARK, atomic_path, remove_partials, write_json_atomic


def _geometry_3d(shape_zyx=(5, 6, 7)) -> Geometry:
    d = sitk.VersorTransform((0.2, 0.1, 0.05), 0.3).GetMatrix()  # a rotated direction
    return Geometry(
        spacing=(0.52, 0.6, 4.4),
        origin=(-12.5, 30.0, 7.25),
        direction=tuple(d),
        size=tuple(reversed(shape_zyx)),
    )


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_3d_round_trip_keeps_geometry(tmp_path, ext):
    rng = np.random.default_rng(0)
    arr = rng.integers(-100, 3000, size=(5, 6, 7)).astype(np.int16)
    geo = _geometry_3d()
    path = write_image(tmp_path / f"case{ext}", arr, geo)
    back = read_image(path)
    np.testing.assert_array_equal(back.array, arr)
    assert back.geometry.mismatch(geo) is None
    np.testing.assert_allclose(back.geometry.spacing, geo.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.geometry.direction, geo.direction, atol=1e-6)
    assert back.geometry.spacing_zyx == tuple(reversed(back.geometry.spacing))
    assert not list(tmp_path.glob(f"{TMP_MARK}*")), "no temporary file may remain"


@pytest.mark.parametrize("ext", [".mhd", ".nhdr"])
def test_header_and_data_file_formats_are_written_under_final_names(tmp_path, ext):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_image(tmp_path / f"x{ext}", arr, Geometry.default(arr.shape))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == f"x{ext}" and names[1].startswith("x.") and len(names) == 2
    assert names[1] in (tmp_path / f"x{ext}").read_text(encoding="latin-1")
    np.testing.assert_array_equal(read_image(tmp_path / f"x{ext}").array, arr)


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp"])
def test_2d_round_trip(tmp_path, ext):
    arr = (np.arange(12 * 9).reshape(12, 9) % 256).astype(np.uint8)
    path = write_image(tmp_path / f"f{ext}", arr, Geometry.default(arr.shape))
    back = read_image(path)
    np.testing.assert_array_equal(back.array, arr)
    assert back.geometry.ndim == 2
    assert back.has_spacing is False


def test_palette_png_keeps_indices(tmp_path):
    from PIL import Image

    idx = np.zeros((8, 8), np.uint8)
    idx[2:4, 2:4] = 1
    idx[5:7, 5:7] = 2
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "mask.png")
    back = read_image(tmp_path / "mask.png")
    np.testing.assert_array_equal(back.array, idx)


def test_2d_nifti_keeps_spacing(tmp_path):
    arr = np.ones((4, 5), np.float32)
    geo = Geometry.default(arr.shape, spacing_zyx=(0.1, 0.2))
    back = read_image(write_image(tmp_path / "a.nii.gz", arr, geo))
    assert back.geometry.spacing_zyx == pytest.approx((0.1, 0.2))
    assert back.array.shape == (4, 5)


def test_truncated_file_gives_clear_error(tmp_path):
    path = write_image(
        tmp_path / "t.nii.gz", np.ones((8, 8, 8), np.float32), _geometry_3d((8, 8, 8))
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(AutosegError) as exc:
        read_image(path)
    assert "t.nii.gz" in str(exc.value) and "Fix:" in str(exc.value)


def _tiffs(folder) -> dict[str, np.ndarray]:
    """TIFFs as SimpleITK (directories after the data) and Pillow (before) write them: 2D,
    a 20-slice 3D stack, compressed and multi-page."""
    from PIL import Image

    rng = np.random.default_rng(0)
    flat = rng.integers(1, 255, (32, 40), dtype=np.uint8)
    stack = rng.integers(1, 60000, (20, 32, 40), dtype=np.uint16)
    sitk.WriteImage(sitk.GetImageFromArray(flat), str(folder / "sitk_2d.tif"))
    sitk.WriteImage(sitk.GetImageFromArray(stack), str(folder / "sitk_3d.tif"))
    sitk.WriteImage(sitk.GetImageFromArray(stack), str(folder / "sitk_3d_zip.tiff"), True)
    Image.fromarray(flat).save(folder / "pil_lzw.tif", compression="tiff_lzw")
    Image.fromarray(stack[0]).save(folder / "pil_big.tif", big_tiff=True)
    pages = [Image.fromarray(x) for x in stack]
    pages[0].save(folder / "pil_pages.tif", save_all=True, append_images=pages[1:])
    return {
        "sitk_2d.tif": flat,
        "sitk_3d.tif": stack,
        "sitk_3d_zip.tiff": stack,
        "pil_lzw.tif": flat,
        "pil_big.tif": stack[0],
        "pil_pages.tif": stack,
    }


def test_truncated_tiff_is_detected_at_every_cut(tmp_path):
    from autoseg.io.tiff import tiff_truncation

    for name, array in _tiffs(tmp_path).items():
        path = tmp_path / name
        assert tiff_truncation(path) is None, name
        np.testing.assert_array_equal(read_image(path).array, array)
        data = path.read_bytes()
        cut_path = tmp_path / f"cut_{name}"
        for cut in range(8, len(data), max(1, len(data) // 60)):
            cut_path.write_bytes(data[:cut])
            with pytest.raises(AutosegError, match="file is truncated") as exc:
                read_image(cut_path)
            assert "Fix:" in str(exc.value), (name, cut)


def test_truncated_tiff_stack_no_longer_reads_as_fewer_slices(tmp_path):
    stack = _tiffs(tmp_path)["sitk_3d.tif"]
    data = (tmp_path / "sitk_3d.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: int(len(data) * 0.35)])
    fewer = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cut.tif")))
    assert fewer.shape[0] < stack.shape[0]  # what SimpleITK does without a word
    with pytest.raises(AutosegError, match=r"truncated: the [a-z ]+ of page \d+ reaches byte"):
        read_image(tmp_path / "cut.tif")


@pytest.mark.parametrize("name", ["a.mha", "b.mha", "c.mhd", "d.mhd", "e.nrrd", "f.nrrd",
                                  "g.nhdr", "h.nhdr"])  # fmt: skip
def test_truncated_or_incomplete_metaimage_and_nrrd_are_named(tmp_path, name):
    """Compressed (a, c, e, g) and raw (b, d, f, h); data inside the header file or beside it.
    Written by SimpleITK directly (a .nhdr's data file is named when it is written)."""
    array = np.random.default_rng(0).integers(-500, 3000, (6, 7, 9)).astype(np.int16)
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), name[0] in "aceg")
    from autoseg.io.completeness import file_truncation

    assert file_truncation(path) is None
    np.testing.assert_array_equal(read_image(path).array, array)
    data_files = [p for p in tmp_path.iterdir() if p != path]
    target = data_files[0] if data_files else path
    data = target.read_bytes()
    start = 0  # where the pixel data starts
    if not data_files:
        end_of_header = b"ElementDataFile = LOCAL\n" if name.endswith(".mha") else b"\n\n"
        start = data.index(end_of_header) + len(end_of_header)
    for cut in range(start, len(data), max(1, (len(data) - start) // 40)):
        target.write_bytes(data[:cut])
        with pytest.raises(AutosegError, match="file is truncated") as exc:
            read_image(path)
        assert name in str(exc.value) and "Fix:" in str(exc.value)
    if data_files:
        target.unlink()
        with pytest.raises(AutosegError, match=f"data file {target.name} is missing"):
            read_image(path)


def test_unknown_and_missing_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AutosegError, match="unsupported file type"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(AutosegError, match="not found"):
        read_image(tmp_path / "nope.nii.gz")


def test_dicom_series_folder(tmp_path):
    arr = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(arr.shape[0]):
        sl = sitk.GetImageFromArray(arr[z])
        sl.SetSpacing((0.5, 0.5))
        for tag, value in {
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1",  # series instance UID
            "0020|0032": f"0\\0\\{z * 2.5}",  # image position (patient)
            "0020|0037": "1\\0\\0\\0\\1\\0",  # orientation
            "0020|0013": str(z + 1),
            "0028|0030": "0.5\\0.5",
            "0008|0060": "MR",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{z:03d}.dcm"))
        before = locale.setlocale(locale.LC_ALL, None)  # GDCM's writer sets it to "C"
        try:
            writer.Execute(sl)
        finally:
            locale.setlocale(locale.LC_ALL, before)
    img = read_image(folder)
    np.testing.assert_array_equal(img.array, arr)
    assert img.geometry.spacing == pytest.approx((0.5, 0.5, 2.5))


def test_empty_folder_is_not_a_dicom_series(tmp_path):
    with pytest.raises(AutosegError, match="no DICOM series"):
        read_image(tmp_path)


def test_collapse_grey_rgb():
    grey = np.random.default_rng(1).integers(0, 255, (6, 6), dtype=np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    np.testing.assert_array_equal(collapse_grey_rgb(rgb), grey)
    overlay = rgb.copy()
    overlay[0, 0] = (255, 0, 0)  # one coloured UI pixel of 36
    out = collapse_grey_rgb(overlay)
    assert out.shape == (6, 6) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1:], grey[1:])
    colour = rgb.copy()
    colour[..., 0] = 255 - colour[..., 1]
    with pytest.raises(AutosegError, match="colour"):
        collapse_grey_rgb(colour)


def test_split_extension():
    assert split_extension("a_0000.nii.gz") == ("a_0000", ".nii.gz")
    assert split_extension("b.NRRD") == ("b", ".NRRD")
    assert split_extension("c.txt") == ("c.txt", "")


def test_atomic_path_removes_temp_on_error(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    write_json_atomic(tmp_path / "y.json", {"a": 1})
    assert (tmp_path / "y.json").read_text() == '{\n  "a": 1\n}\n'


def test_remove_partials(tmp_path):
    (tmp_path / f"{TMP_MARK}abcd.case.nii.gz").write_text("x")
    (tmp_path / "keep.nii.gz").write_text("x")
    assert remove_partials(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nii.gz"]


def test_slightly_tinted_grey_frame_collapses():
    rng = np.random.default_rng(2)
    grey = rng.integers(40, 200, (20, 20), dtype=np.uint8)
    tinted = np.stack([grey, grey + 12, grey + 25], axis=-1).astype(np.uint8)  # spread 25 < 32
    out = collapse_grey_rgb(tinted)
    assert out.shape == (20, 20)
    assert np.abs(out.astype(int) - grey.astype(int) - 10).max() <= 1  # 0.587*12 + 0.114*25
