"""Progress bars: live tqdm bars on a terminal, one plain line per finished bar in a log."""

from __future__ import annotations

import io

import pytest

from autoseg.progress import LineProgress, format_seconds, is_terminal, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_log_gets_one_line_per_finished_bar_and_no_carriage_returns():
    log = io.StringIO()
    assert sum(progress_bar(range(500), desc="verify", unit="case", file=log)) == 124750
    with progress_bar(total=3, desc="convert", unit="case", file=log) as bar:
        for _ in range(3):
            bar.update()
    bar = progress_bar(desc="timing iterations", unit="config", file=log)
    for name in ("2d", "3d_fullres"):
        bar.set_postfix_str(name)
        bar.update(1)
    bar.close()
    bar.close()  # closing twice prints once
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("verify: 500/500 case, ") and lines[0].endswith("s")
    assert lines[1].startswith("convert: 3/3 case, ")
    assert lines[2].startswith("timing iterations: 2 config, ")
    assert lines[2].endswith("(3d_fullres)")


def test_a_terminal_still_gets_tqdm_redraws():
    term = Terminal()
    bar = progress_bar(range(50), desc="verify", unit="case", file=term, mininterval=0)
    assert not isinstance(bar, LineProgress)
    for _ in bar:
        pass
    out = term.getvalue()
    assert out.count("\r") > 10 and "verify: 100%" in out and "50/50" in out


def test_transient_disabled_and_failed_bars_print_no_line():
    log = io.StringIO()
    bar = progress_bar(range(4), desc="2d fold 0 epoch 1/3", file=log, leave=False)
    for _ in bar:
        bar.set_postfix(loss="0.512")
    for _ in progress_bar(range(4), desc="off", file=log, disable=True):
        pass
    with pytest.raises(ValueError), progress_bar(total=4, desc="evaluate", file=log) as b:
        b.update()
        raise ValueError("case 2")
    bar = progress_bar(total=4, desc="preprocess", file=log)
    try:
        try:
            raise OSError("disk")
        finally:
            bar.close()  # a `finally` while the error propagates
    except OSError:
        pass
    assert log.getvalue() == ""


def test_a_long_bar_also_prints_at_a_coarse_interval():
    log, clock = io.StringIO(), Clock()
    bar = LineProgress(total=10, desc="fingerprint", unit="case", file=log, clock=clock)
    for _ in range(10):
        clock.t += 100.0  # 1000 s in all: a line at 300, 600 and 900 s, then the last one
        bar.update()
    bar.close()
    lines = log.getvalue().splitlines()
    assert lines == [
        "fingerprint: 3/10 case, 5m00s",
        "fingerprint: 6/10 case, 10m00s",
        "fingerprint: 9/10 case, 15m00s",
        "fingerprint: 10/10 case, 16m40s",
    ]


def test_format_seconds_and_is_terminal():
    assert [format_seconds(s) for s in (4.24, 59.94, 185, 3725)] == [
        "4.2s",
        "59.9s",
        "3m05s",
        "1h02m",
    ]
    assert is_terminal(Terminal()) and not is_terminal(io.StringIO()) and not is_terminal(None)
    closed = io.StringIO()
    closed.close()
    assert not is_terminal(closed)


def test_training_logs_one_line_per_epoch_and_no_bar(tmp_path, capsys):
    """Where stderr is a file: the epoch bar is silent and each epoch is one line (epoch,
    train loss, pseudo Dice, seconds); a resumed fold reports only the epochs it trains."""
    from conftest import one_torch_thread
    from test_trainer import _options, _setup, synthetic_loader

    from autoseg.training.run import EpochLines
    from autoseg.training.trainer import Trainer

    out = tmp_path / "fold_0"

    def trainer(epochs: int) -> Trainer:
        opts = _options(epochs=epochs, iterations_per_epoch=2, progress=True)
        return Trainer(_setup(tmp_path), opts, ["a"], ["b"], out, loader_factory=synthetic_loader)

    first = trainer(4)
    assert EpochLines.attach(first, Terminal()) is None  # a terminal keeps the live bar
    log = io.StringIO()
    lines = EpochLines.attach(first, log)

    def stop_in_epoch_3(epoch: int, iteration: int) -> None:
        lines(epoch, iteration)
        if epoch == 2:
            raise KeyboardInterrupt

    first.on_iteration = stop_in_epoch_3
    with one_torch_thread(), pytest.raises(KeyboardInterrupt):
        first.fit()
    assert capsys.readouterr().err == ""  # stderr is not a terminal: no redraws
    again = trainer(4)
    lines = EpochLines.attach(again, log)
    with one_torch_thread():
        again.fit(resume=True)
    lines.flush()
    text = log.getvalue().splitlines()
    assert [t.split(":")[0] for t in text] == [
        f"2d fold 0 epoch {e}" for e in ("1/4", "2/4", "3/4", "4/4")
    ]
    for line, entry in zip(text, again.log):
        assert (
            f"train loss {entry['train_loss']:.4f}, pseudo Dice {entry['pseudo_dice']:.4f}, "
            in line
        )
        assert line.endswith("s")
