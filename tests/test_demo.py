"""``make demo`` on a tiny phantom: it ends with the path of the dataset's report.html."""

from __future__ import annotations

import pytest
from conftest import one_torch_thread, shrink_2d_plan

import autoseg.demo as demo
from autoseg.cli import main
from autoseg.phantoms import Us2dConfig

# One frame per subject: 5 subjects fill the 5 folds the demo trains.
TINY = demo.DemoDataset(
    "us2d",
    "TinyWrist",
    903,
    5,
    2,
    "US",
    "3m",
    Us2dConfig(shape=(48, 64), frames_per_subject=(1, 1)),
)


@pytest.mark.slow
def test_demo_writes_the_report_and_prints_its_path_last(tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    monkeypatch.setattr(demo, "DATASETS", (demo.DATASETS[0], TINY))
    # The demo's own budget needs minutes; plan first and shrink the plan as a user may, and
    # the demo goes on from there (every step skips what is done).
    folder = demo.training_dataset(TINY, progress=False)
    assert main(["plan", folder, "--configs", "2d", "--brief"]) == 0
    plan_path = root / "preprocessed" / folder / "plans.json"
    shrink_2d_plan(plan_path, epochs=1)
    capsys.readouterr()

    with one_torch_thread():
        assert demo.main(["--only", "us2d", "--no-progress"]) == 0
    out = capsys.readouterr().out
    report = (root / "results" / folder / "report.html").resolve()
    assert report.is_file()
    page = report.read_text(encoding="utf-8")
    assert folder in page and "</html>" in page
    lines = out.rstrip().splitlines()
    assert lines[-1] == f"  {report}"  # the last line: the page to open first
    assert "report.html" in lines[-2] and "open first" in lines[-2]
    assert out.index("autoseg demo: summary") < out.index(str(report))
