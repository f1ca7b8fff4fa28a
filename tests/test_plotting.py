"""Figures are saved with their caption, and identically when nothing changed; the charts draw
their data."""

from __future__ import annotations

import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from tldr_utils import plotting  # noqa: E402


def test_save_figure_writes_png_pdf_and_caption_and_repeats_byte_for_byte(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    first = plotting.save_figure(fig, tmp_path / "a" / "fig", "A caption.\n\n")
    time.sleep(1.1)  # a PDF creation date, if written, would now differ
    again = plotting.save_figure(fig, tmp_path / "b" / "fig", "A caption.")
    plt.close(fig)
    assert [p.suffix for p in first] == [".png", ".pdf", ".txt"]
    assert first[2].read_text() == "A caption.\n"
    for one, other in zip(first, again):
        assert one.read_bytes() == other.read_bytes(), one.name


def test_accuracy_by_class_draws_one_bar_per_class_at_its_height():
    result = {
        "classes": ["a", "b", "c"],
        "evaluator_accuracy_by_class": {"samples": [0.2, 0.9, 0.5], "real": [0.8, 1.0, 0.6]},
    }
    fig = plotting.accuracy_by_class({"toy": result, "toy2": result})
    bars, (dots,) = fig.axes[0].patches, fig.axes[0].lines
    assert len(fig.axes) == 2 and [b.get_height() for b in bars] == [0.2, 0.9, 0.5]
    assert list(dots.get_ydata()) == [0.8, 1.0, 0.6]


def test_evaluator_confusion_shows_where_each_class_goes():
    result = {
        "classes": ["a", "b"],
        "labels": torch.tensor([0, 0, 0, 0, 1, 1]),
        "evaluator_predictions": torch.tensor([0, 0, 0, 1, 1, 1]),
    }
    fig = plotting.evaluator_confusion({"toy": result})
    mesh = fig.axes[0].collections[0]
    assert mesh.get_array().reshape(2, 2).tolist() == [[0.75, 0.25], [0.0, 1.0]]
    assert sorted(t.get_text() for t in fig.axes[0].texts if t.get_text()) == [
        "100%",
        "25%",
        "75%",
    ]  # 0% left blank
