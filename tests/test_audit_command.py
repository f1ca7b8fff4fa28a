"""The audit as a command over a user's files, its report opened in a real browser, and its
refusals of bad input before any work."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from tldr_utils import __main__ as cli
from tldr_utils import attacks, audit_command, data, training

MODEL = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes)
        )

    def forward(self, x):
        return self.body(x)
"""


def _tree(root, images, labels):
    for i, (img, k) in enumerate(zip(images, labels.tolist())):
        folder = root / f"digit{k}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0] * 255).round().byte().numpy()).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model file, its trained weights, and ImageFolder trees of 8 x 8 PNGs (four classes)."""
    root = tmp_path_factory.mktemp("user")
    (root / "my_model.py").write_text(MODEL)
    train, test = data.load_dataset("digits", "train"), data.load_dataset("digits", "test")
    keep_train, keep_test = train.labels < 4, test.labels < 4
    x, y = train.float()[keep_train][:120], train.labels[keep_train][:120]
    xh, yh = test.float()[keep_test], test.labels[keep_test]
    sys.path.insert(0, str(root))
    from my_model import Net

    sys.path.remove(str(root))
    net = Net(num_classes=4)
    training.train_classifier(net, x, y, 150, 32, 0.01, seed=0)
    save_file(net.state_dict(), root / "model.safetensors")
    return {
        "root": root,
        "model": f"{root / 'my_model.py'}:Net",
        "weights": root / "model.safetensors",
        "train": _tree(root / "train", x, y),
        "heldout": _tree(root / "heldout", xh, yh),
    }


def _run(files, out, *extra, **changed):
    args = {k: str(v) for k, v in files.items() if k != "root"} | changed
    argv = [
        "audit",
        "--model",
        args["model"],
        "--weights",
        args["weights"],
        "--train",
        args["train"],
        "--heldout",
        args["heldout"],
        "--out",
        str(out),
        *extra,
    ]
    return cli.main(argv)


@pytest.fixture(scope="module")
def reported(files, tmp_path_factory):
    """The command run once at the smoke profile, and its exit status."""
    before = os.environ.get("TLDR_RUNS")
    os.environ["TLDR_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    try:
        out = files["root"] / "report"
        yield out, _run(files, out, "--fail-on-leak", "--recipe", "steps=30,batch_size=16,lr=0.01")
    finally:
        os.environ.pop("TLDR_RUNS") if before is None else os.environ.update(TLDR_RUNS=before)


def test_the_command_writes_a_report_a_verdict_and_an_exit_status(files, reported):
    out, status = reported
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "verdict.json", "verdict.txt", "audit.csv"} <= names
    verdict = json.loads((out / "verdict.json").read_text())
    assert set(verdict["membership"]) == {"loss", "lira"}
    assert verdict["provenance"]["classes"] == ["digit0", "digit1", "digit2", "digit3"]
    assert status == (2 if verdict["leaks"] or verdict["membership_fires"] else 0)
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == len(attacks.for_classes(4))
    assert "Membership reference" in page and "Provenance" in page
    # the owner's recipe reaches LiRA's shadows, and the report says it was used
    lira = verdict["membership"]["lira"]
    assert (lira["steps"], lira["batch_size"], lira["lr"]) == (30, 16, 0.01)
    assert "the owner's recipe (steps 30, batch_size 16, lr 0.01)" in page
    assert not list(out.parent.glob(".report-*"))  # no half-written folder left behind


@pytest.mark.skipif(shutil.which("chromium") is None, reason="apt-get install -y chromium")
def test_the_report_opens_in_a_real_browser(reported, tmp_path):
    page = reported[0] / "index.html"
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "No attack recovered" in dom or "Leakage found" in dom
    shot = audit_command.screenshot(page, tmp_path / "shot.png", height=1400)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # not blank: text and images drawn
    # every embedded image decodes: the browser reports natural sizes for each
    script = page.read_text().replace(
        "</body>",
        "<script>document.title = [...document.images].every(i => i.naturalWidth > 0) "
        "? 'all-loaded' : 'broken'</script></body>",
    )
    probe = tmp_path / "probe.html"
    probe.write_text(script)
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "<title>all-loaded</title>" in dom


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model": "nowhere.py:Net"}, "the model file nowhere.py does not exist"),
        (
            {"model": "MODEL:Missing"},
            "has no torch.nn.Module class 'Missing'; its modules: \\['Net'\\]",
        ),
        ({"weights": "WRONG"}, "do not fit Net"),
        ({"heldout": "OTHER_CLASSES"}, "--train has classes .* --heldout"),
        (
            {"heldout": "OTHER_SIZE"},
            "--train images are \\(1, 8, 8\\), --heldout images \\(1, 6, 6\\)",
        ),
        ({"heldout": "EMPTY"}, "has no class subfolders"),
    ],
)
def test_bad_input_is_refused_before_any_work(
    files, tmp_path, capsys, monkeypatch, change, message
):
    monkeypatch.setattr(audit_command.auditing, "audit", lambda *a, **k: pytest.fail("audited"))
    root = files["root"]
    (root / "empty").mkdir(exist_ok=True)
    if not (root / "wrong.safetensors").exists():
        save_file({"body.1.weight": torch.zeros(3, 3)}, root / "wrong.safetensors")
        _tree(root / "others", torch.rand(8, 1, 8, 8), torch.tensor([7, 8] * 4))
        _tree(root / "small", torch.rand(8, 1, 6, 6), torch.arange(4).repeat(2))
    value = {
        "nowhere.py:Net": "nowhere.py:Net",
        "MODEL:Missing": f"{root / 'my_model.py'}:Missing",
        "WRONG": root / "wrong.safetensors",
        "OTHER_CLASSES": root / "others",
        "OTHER_SIZE": root / "small",
        "EMPTY": root / "empty",
    }[next(iter(change.values()))]
    out = tmp_path / "report"
    assert _run(files, out, **{next(iter(change)): str(value)}) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize(
    "recipe, message",
    [
        ("epochs=3", "--recipe part 'epochs=3' is not KEY=VALUE with KEY one of steps, batch_size"),
        ("steps", "--recipe part 'steps' is not KEY=VALUE"),
        ("steps=3.5", "--recipe steps='3.5' is not an integer"),
        ("lr=fast", "--recipe lr='fast' is not a number"),
        ("batch_size=0", "--recipe batch_size=0 must be positive"),
    ],
)
def test_a_bad_recipe_is_refused_before_any_work(files, tmp_path, capsys, recipe, message):
    out = tmp_path / "report"
    assert _run(files, out, "--recipe", recipe) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()
