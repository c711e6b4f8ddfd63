"""`mobilenet report`: one self-contained page with every section, written by train and
rewritten by evaluate; a hostile folder's names are text, not markup; and the page, opened
in a real browser (Debian's Chromium, headless), logs no error and decodes every image."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import cli, make_image_folder, optional, unavailable

SECTIONS = ["card", "curves", "confusion", "classes", "wrong", "right", "balance", "exports"]
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def small_report(small_run, tmp_path_factory):
    """small_run's folder copied (train wrote its report), with an export and bench's kept timings beside it."""
    folder = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(small_run[0], folder)
    assert cli("export", "--model", str(folder)).returncode == 0
    r = cli("bench", "--model", str(folder), "--batch-size", "1", "--runtime", "torch,onnxruntime", "--seconds",
            "0.05", "--json")
    assert r.returncode == 0 and (folder / "latency.json").is_file(), r.stderr
    r = cli("report", "--model", str(folder))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return folder


def test_train_writes_the_report(small_run):
    page = (small_run[0] / "report.html").read_text()
    assert all(f'<section id="{s}">' in page for s in SECTIONS)


def test_the_page_has_every_section_and_embeds_everything(small_report):
    page = (small_report / "report.html").read_text()
    assert all(f'<section id="{s}">' in page for s in SECTIONS)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "<p>Latency (latency.json" in page  # bench's kept timings, a column per device
    assert page.count('src="data:image/png;base64,') >= 2 + 4  # two curves, and at least the right answers
    for needle in ("parameters", "mult-adds", "peak activation memory", "fashion", "train ", "test ", "sgd",
                   "the last epoch", "epochs,", "precision", "model.onnx", "ONNX",
                   "float32 checked against PyTorch", "onnxruntime", "The largest training class"):
        assert needle in page, needle


def test_the_gallery_shows_the_most_confident_mistakes_first(small_run):
    from mobilenet.report.scan import WRONG, checkpoint_state, open_data, scan
    from mobilenet.run.folder import load_model

    model, info = load_model(small_run[0])
    metrics, examples = scan(model, open_data(info, checkpoint_state(small_run[0]), None), info, "fashion-mnist")
    wrong = metrics["images"] - round(metrics["top1"] * metrics["images"])
    assert len(examples["wrong"]) == min(WRONG, wrong)
    assert [e["p"] for e in examples["wrong"]] == sorted((e["p"] for e in examples["wrong"]), reverse=True)
    assert all(e["label"] != e["predicted"] for e in examples["wrong"])
    assert all(e["label"] == e["predicted"] for e in examples["right"])
    saved = json.loads((small_run[0] / "metrics.json").read_text()) if (small_run[0] / "metrics.json").exists() \
        else None
    if saved:  # the report's pass is evaluate's
        assert saved["confusion_matrix"] == metrics["confusion_matrix"]


def test_the_gallery_keeps_the_most_confident_mistakes_across_batches():
    import torch

    from mobilenet.report.scan import RIGHT, WRONG, _keep

    torch.manual_seed(0)
    kept, wrong, right = {"wrong": [], "right": []}, [], []
    for _ in range(3):  # batches of a poor model: many mistakes, at every confidence
        probs = torch.softmax(3 * torch.randn(40, 5), 1)
        labels = torch.randint(0, 5, (40,))
        _keep(kept, torch.randn(40, 1, 4, 4), labels, probs)
        confidence, predicted = probs.max(1)
        wrong += confidence[predicted != labels].tolist()
        right += confidence[predicted == labels].tolist()
    assert [e["p"] for e in kept["wrong"]] == sorted(wrong, reverse=True)[:WRONG]
    assert [e["p"] for e in kept["right"]] == sorted(right, reverse=True)[:RIGHT]


def test_evaluate_rewrites_the_report(small_report):
    path = small_report / "report.html"
    path.write_text("old")
    assert cli("evaluate", "--model", str(small_report)).returncode == 0
    assert '<section id="wrong">' in path.read_text()


def test_a_large_class_imbalance_is_a_warning():
    from mobilenet.report.page import _balance

    page = _balance({"train": [60, 11, 10], "test": [5, 5, 5]}, ["a", "b", "c"], {"sampler": "balanced"})
    assert "Warning" in page and "6.0×" in page and "drew every class equally often" in page
    plain = _balance({"train": [50, 11, 10], "test": [5, 5, 5]}, ["a", "b", "c"], {})  # a run from before both
    assert "Warning" not in plain and "equally often" not in plain and "weighed" not in plain
    assert "--class-weights effective" in _balance({"train": [60, 10], "test": [5, 5]}, ["a", "b"],
                                                   {"sampler": "shuffle", "class_weights": "effective"})


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    """A run on a folder whose third class is named like markup."""
    root = tmp_path_factory.mktemp("hostile")
    images = make_image_folder(root / "images", per_class=8, corrupt=False)
    (images / "fox").rename(images / HOSTILE)
    r = cli("train", "--data", str(images), "--epochs", "1", "--resolution", "32", "--width", "0.25", "--batch-size",
            "4", "--workers", "0", "--out", str(root / "run"))
    assert r.returncode == 0, r.stderr
    return root / "run" / "report.html"


def test_a_class_named_like_markup_is_escaped(hostile_report):
    page = hostile_report.read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and HOSTILE not in page
    assert "(--augment auto: " in page  # the trial's line, as the run logged it


# --- in a real browser ------------------------------------------------------------------------

def _browser():
    """Debian's Chromium, or a skip (a failure in CI: conftest.unavailable)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        unavailable("no Chromium here: apt-get install chromium (.ci/run installs it)")
    optional("playwright.sync_api", "no playwright: make install installs the test extra")
    return chromium


def _open_in_chromium(path: Path, screenshot: Path | None = None, width: int = 1100) -> dict:
    """The page as Chromium saw it at `width` CSS pixels: console errors, dialogs, requests,
    images, sections, text, and how wide the page itself grew."""
    from playwright.sync_api import sync_playwright

    seen = {"errors": [], "dialogs": [], "requests": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_browser(), args=["--no-sandbox"])  # CI runs as root
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
        page.on("request", lambda r: seen["requests"].append(r.url))
        page.goto(path.as_uri(), wait_until="load")
        seen.update(page.evaluate("""() => ({
            images: [...document.images].map(i => ({src: i.getAttribute('src').slice(0, 22), width: i.naturalWidth})),
            sections: [...document.querySelectorAll('section')].map(s => s.id),
            text: document.body.innerText, scroll_width: document.documentElement.scrollWidth})"""))
        if screenshot:
            page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    seen["requests"] = [u for u in seen["requests"] if not u.startswith(("data:", path.as_uri()))]
    return seen


def test_the_report_in_a_real_browser(small_report, tmp_path):
    seen = _open_in_chromium(small_report / "report.html", tmp_path / "report.png")
    assert seen["errors"] == [] and seen["dialogs"] == [] and seen["requests"] == []
    assert seen["sections"] == SECTIONS
    assert len(seen["images"]) >= 6 and all(i["width"] > 0 for i in seen["images"]), seen["images"]
    assert all(i["src"].startswith("data:image/png") for i in seen["images"])
    assert (tmp_path / "report.png").stat().st_size > 10_000
    phone = _open_in_chromium(small_report / "report.html", width=390)  # wide tables scroll in their own box
    assert phone["errors"] == [] and phone["scroll_width"] <= 390


def test_a_hostile_class_name_cannot_script_the_page(hostile_report):
    seen = _open_in_chromium(hostile_report)
    assert seen["dialogs"] == [] and seen["errors"] == [] and seen["requests"] == []
    assert HOSTILE in seen["text"]  # shown as text
    assert all(i["src"].startswith("data:") for i in seen["images"])  # no <img src=x> made of the name


@pytest.mark.fault
def test_exported_files_are_hashed_only_when_regular_and_within_the_networks_size(small_run, tmp_path):
    """exports.json's records of the wrong shape, a 3 GB sparse model.onnx, and an .onnx that
    is a link to a file outside: the page says what it can, reads none of them, and keeps
    memory far below the sparse file's size."""
    import resource

    from mobilenet.report.page import report

    folder = shutil.copytree(small_run[0], tmp_path / "run", symlinks=True)
    with open(folder / "model.onnx", "wb") as f:
        f.truncate(3 << 30)  # sparse: no disk taken, 3 GB if read
    (tmp_path / "outside.onnx").write_bytes(b"the user's")
    (folder / "theirs.onnx").symlink_to(tmp_path / "outside.onnx")
    (folder / "m.int8.onnx").write_bytes(b"small")
    (folder / "exports.json").write_text(json.dumps({
        "model.onnx": {"sha256": "0" * 64}, "theirs.onnx": {"sha256": "0" * 64},
        "m.int8.onnx": {"sha256": __import__("hashlib").sha256(b"small").hexdigest(), "real": [1],
                        "accuracy_fp32": "high", "accuracy_int8": None, "shrink": {}}}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report(folder, log=lambda _: None)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB
    page = (folder / "report.html").read_text()
    assert "larger than any export of this network: not read" in page and "theirs.onnx" not in page
    assert "checked against PyTorch on random inputs" in page  # the int8 record's other fields, of the wrong kind, left out
    assert grown < (1 << 20), grown  # under 1 GiB: the sparse file was never read


def _edit_checkpoint(folder, change) -> None:
    import torch

    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    change(state)
    torch.save(state, folder / "checkpoint.pt")


@pytest.mark.fault
@pytest.mark.parametrize("change", [
    lambda s: s["history"][0].pop("seconds"),
    lambda s: s["history"][0].update(seconds=float("inf")),
    lambda s: s.update(kept_epoch=10**9),
    lambda s: s["train_config"].update(limit="abc"),
    lambda s: s.update(history=[{**s["history"][0], "test_acc": "high"}]),
], ids=["row-without-seconds", "seconds-inf", "kept-epoch-1e9", "limit-a-string", "accuracy-a-string"])
def test_an_edited_checkpoint_is_one_line_on_resume_and_left_out_of_the_page(small_run, tmp_path, change):
    from mobilenet.errors import MobileNetError
    from mobilenet.report.page import report
    from mobilenet.run.folder import load_checkpoint

    folder = shutil.copytree(small_run[0], tmp_path / "run", symlinks=True)
    _edit_checkpoint(folder, change)
    with pytest.raises(MobileNetError, match="checkpoint.pt: .* must be"):
        load_checkpoint(folder / "checkpoint.pt")
    report(folder, log=lambda _: None)  # the page is made without what the checkpoint cannot tell
    assert "not recorded (no checkpoint.pt)" in (folder / "report.html").read_text()


@pytest.mark.fault
@pytest.mark.parametrize("augment", [3, ["crop"], {"chosen_by": "trial"}])
def test_an_augment_record_of_the_wrong_kind_is_one_line(small_run, tmp_path, augment):
    folder = shutil.copytree(small_run[0], tmp_path / "run", symlinks=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "augment": augment}))
    r = cli("report", "--model", folder)
    assert r.returncode == 1 and "'augment' must be an object naming its preset" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
