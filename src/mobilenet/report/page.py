"""`mobilenet report`: one self-contained HTML page about a trained model folder. Its card
(cost, data, recipe, how the kept model was chosen, time and machine), the seed's two
curves, the confusion matrix and per-class scores, the test images it gets most confidently
wrong with class activation maps, class balance, and the exported files beside it.

Every text from the folder is escaped (html.escape) and every picture embedded (data: URIs);
the page's Content-Security-Policy allows no script and no request, so it opens from
file:// anywhere, a phone included.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data.augment import choice_line
from ..errors import MobileNetError, printable
from ..files import read_regular
from ..formats import title_of
from ..limits import IMBALANCE, finite_number
from ..net.activation_maps import cam
from ..net.cost import cost_report, state_bytes
from ..run.folder import load_model, read_exports
from ..run.latency import ROW, read_latency
from ..run.info import ModelInfo
from ..run.names import REPORT, SELECT_BY
from ..run.ownership import refuse_foreign
from .html import as_float, escape, html_page, number, png_uri, table, write_page
from .scan import checkpoint_state, open_data, scan

TILE = 112  # pixels of each shown image and of its map
EXPORT_ROOM = 16 << 20  # beyond twice the weights: a program's code and metadata


def report(model_dir, out=None, data: str | None = None, workers: int | None = None, source=None,
           log=print, force: bool = False) -> dict:
    """Write the page to `out` (default model_dir/report.html), replacing a file there that
    mobilenet did not write only with `force`; returns {"path", "metrics" (metrics.json's
    figures, from the same pass), "seconds"}. `source` is the opened data set (training
    passes its own), else `data` (default the model's) is opened as it was trained."""
    start = time.perf_counter()
    model_dir = Path(model_dir)
    path = Path(out) if out else model_dir / REPORT
    refuse_foreign([path], "--out", force)
    model, info = load_model(model_dir)
    state = checkpoint_state(model_dir)
    source = source or open_data(info, state, data, workers)
    metrics, examples = scan(model, source, info, data or info.data_name)
    tiles = {name: _tiles(model, found, info) for name, found in examples.items()}
    page = _page(model_dir, info, state, source, metrics, tiles)
    path = write_page(page, path, log)
    return {"path": str(path), "metrics": metrics, "seconds": time.perf_counter() - start}


def _page(model_dir, info, state, source, metrics, tiles) -> str:
    title = f"MobileNet V1 α={info.model.width_mult} ρ={info.model.resolution}: {model_dir.name}"
    if info.multi_label:
        note = _cam_note(info, "the label in question")
        return html_page(title, [
            ("card", "Model card", _card(info, state, source, metrics)),
            ("curves", "Training curves", _curves(state.get("history", []))),
            ("classes", "Per class (test split), at the thresholds chosen on validation",
             _label_classes(metrics, info)),
            ("false-positives", "Most confident false positives: labels given that the image does not hold",
             note + _gallery(tiles["false positives"], "none")),
            ("false-negatives", "Most confident false negatives: labels the image holds that were not given",
             note + _gallery(tiles["false negatives"], "none")),
            ("balance", "Class balance (images holding each label)",
             _balance(source.class_counts(), info.classes, state.get("train_config", {}))),
            ("exports", "Exported files", _exports(model_dir, info.model)),
        ])
    return html_page(title, [
        ("card", "Model card", _card(info, state, source, metrics)),
        ("curves", "Training curves", _curves(state.get("history", []))),
        ("confusion", "Confusion matrix (test split)", _confusion(metrics, info.classes)),
        ("classes", "Per class (test split)", _classes(metrics, info.classes)),
        ("wrong", "Most confidently wrong test images", _cam_note(info) + _gallery(tiles["wrong"],
                                                                                 "none: every test image is right")),
        ("right", "Confidently right, for contrast", _gallery(tiles["right"], "none: no test image is right")),
        ("balance", "Class balance", _balance(source.class_counts(), info.classes, state.get("train_config", {}))),
        ("exports", "Exported files", _exports(model_dir, info.model)),
    ])


def _card(info: ModelInfo, state: dict, source, metrics: dict) -> str:
    m, cost, cfg = info.model, cost_report(info.model), state.get("train_config")
    history = state.get("history", [])
    rows = [["network", f"MobileNet V1, α = {m.width_mult}, ρ = {m.resolution}, {m.in_channels} input channel"
                        f"{'s' if m.in_channels > 1 else ''}, {m.num_classes} classes"],
            ["cost", f"{cost['params']:,} parameters, {cost['mult_adds'] / 1e6:,.1f} M mult-adds, "
                     f"{cost['peak_activation_bytes'] / 1e6:,.2f} MB peak activation memory (batch 1, float32)"],
            ["data", _data_line(source)],
            ["test split", _test_line(metrics)],
            ["recipe", _recipe(cfg, info.augment, history) if cfg else "not recorded (no checkpoint.pt)"],
            ["kept model", _kept(state, cfg) if cfg else "not recorded"],
            ["time", f"{len(history)} epochs, {_duration(sum(h['seconds'] for h in history))} of training"
                     if history else "not recorded"],
            ["machine", _machine(state.get("machine"))]]
    return table(None, rows)


def _test_line(metrics: dict) -> str:
    if metrics.get("task") == "multi-label":
        return (f"mAP {100 * metrics['mAP']:.2f}%, loss {metrics['loss']:.4f} on {metrics['images']:,} images; at the "
                f"thresholds: label accuracy {100 * metrics['label_accuracy']:.2f}%, micro F1 "
                f"{100 * metrics['micro_f1']:.2f}%, macro F1 {100 * metrics['macro_f1']:.2f}%")
    return (f"top-1 {100 * metrics['top1']:.2f}%, top-5 {100 * metrics['top5']:.2f}%, loss {metrics['loss']:.4f} on "
            f"{metrics['images']:,} images; balanced accuracy {100 * metrics['balanced_accuracy']:.2f}%, macro F1 "
            f"{100 * metrics['macro_f1']:.2f}%")


def _data_line(source) -> str:
    counts = source.class_counts()  # of labels: an image with several counts for each
    images = {"train": source.num_train, "validation": source.num_val, "test": source.num_test}
    splits = [f"{name} {images[name]:,} images in {sum(1 for v in c if v)} classes" for name, c in counts.items()
              if sum(c)]
    return f"{source.name}: " + ", ".join(splits)


def _recipe(cfg: dict, augment: dict | None, history: list[dict]) -> str:
    peak = max((h["lr"] for h in history), default=cfg.get("lr")) or "the optimizer's default"
    ema = cfg.get("ema")
    chosen = f" ({_choice(augment)})" if augment and len(augment) > 1 else ""
    return (f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, {cfg['optimizer']} with peak learning rate "
            f"{peak if isinstance(peak, str) else format(peak, 'g')}, weight decay {cfg['weight_decay']:g}, "
            f"label smoothing {cfg.get('label_smoothing', 0):g}, "
            f"class weights {printable(str(cfg.get('class_weights', 'none')))}, "
            f"random erasing {cfg.get('random_erasing', 0):g}, dropout {cfg.get('dropout', 0):g}, "
            f"EMA {'of decay ' + format(ema, 'g') if ema else 'off'}; augmentation "
            f"{(augment or {}).get('preset', cfg.get('augment'))}{chosen}")


def _choice(augment: dict) -> str:
    """--augment auto's line, as the run logged it; any other record as it is."""
    try:
        return choice_line(augment)
    except (KeyError, TypeError, ValueError, AttributeError):  # not a trial's record
        return json.dumps(augment)


def _kept(state: dict, cfg: dict) -> str:
    history, epoch = state["history"], state["kept_epoch"]
    if not cfg.get("val_split"):
        return f"the last epoch ({epoch} of {len(history)}): no validation split, so nothing was chosen"
    row = history[epoch - 1] if epoch else {}
    name, column = SELECT_BY.get(cfg.get("select_by"), SELECT_BY["top1"])
    if row.get(column) is None:
        return f"epoch {epoch} of {len(history)}, chosen on the validation images (their {name} not recorded)"
    stopped = f"; stopped early, {cfg['patience']} epochs without a better one" if (
        cfg.get("patience") and state.get("since_best", 0) >= cfg["patience"]) else ""
    return (f"epoch {epoch} of {len(history)}, the best validation {name} ({100 * float(row[column]):.2f}%) on "
            f"{100 * cfg['val_split']:g}% of the training images held out{stopped}; the test split chose nothing")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {rest} s"


def _machine(machine) -> str:
    if not isinstance(machine, dict):
        return "not recorded (a run from before the report)"
    return "; ".join(f"{k} {v}" for k, v in machine.items() if v not in (None, ""))


def _curves(history: list[dict]) -> str:
    if not history:
        return "<p>No training history here (a converted or imported model).</p>"
    from .plots import curve_pngs

    return "<div class=grid>" + "".join(
        f'<img class=curve src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{Path(name).stem}">'
        for name, data in curve_pngs(history).items()) + "</div>"


def _confusion(metrics: dict, classes: list[str]) -> str:
    confusion = np.asarray(metrics["confusion_matrix"])
    top = max(int(confusion.max()), 1)
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{escape(c)}</th>" for c in classes) + "</tr>"
    rows = "".join(f"<tr><th>{escape(c)}</th>" + "".join(
        f'<td style="background:rgba(40,100,200,{0.85 * v / top:.2f}){";color:#fff" if v > top / 2 else ""}">'
        f"{int(v)}</td>" for v in confusion[i])
        + "</tr>" for i, c in enumerate(classes))
    return f'<div class=scroll><table class=cm>{head}{rows}</table></div>'


def _classes(metrics: dict, classes: list[str]) -> str:
    scores = metrics["per_class_scores"]
    rows = [[c, f"{scores[c]['precision']:.3f}", f"{scores[c]['recall']:.3f}", f"{scores[c]['f1']:.3f}",
             scores[c]["support"]] for c in classes]
    return table(["class", "precision", "recall", "F1", "support"], rows, numeric={1, 2, 3, 4})


def _label_classes(metrics: dict, info: ModelInfo) -> str:
    """A multi-label model's classes: AP, the threshold, and precision, recall and F1 at it."""
    ap, scores = metrics["per_class_ap"], metrics["per_class_scores"]
    rows = [[c, "-" if ap[c] is None else f"{ap[c]:.3f}", f"{scores[c]['threshold']:.3f}",
             *(f"{scores[c][k]:.3f}" for k in ("precision", "recall", "f1")), scores[c]["support"]]
            for c in info.classes]
    return table(["class", "AP", "threshold", "precision", "recall", "F1", "support"], rows,
                 numeric=set(range(1, 7)))


def _tiles(model, found: list[dict], info: ModelInfo) -> list[dict]:
    """Each image beside its class activation map for the predicted class, as a data: URI."""
    if not found:
        return []
    import matplotlib

    device = next(model.parameters()).device
    images = torch.stack([e["image"] for e in found]).to(device)
    maps = cam(model, images, class_index=[e["predicted"] for e in found]).cpu().numpy()
    mean = np.asarray(info.input["mean"], np.float32)[:, None, None]
    std = np.asarray(info.input["std"], np.float32)[:, None, None]
    heat = matplotlib.colormaps["inferno"]
    tiles = []
    for e, x, m in zip(found, images.cpu().numpy(), maps):
        picture = np.broadcast_to((x * std + mean).transpose(1, 2, 0), (*x.shape[1:], 3))
        spread = float(m.max() - m.min())
        m = (m - m.min()) / spread if spread > 1e-6 * max(float(abs(m).max()), 1e-12) else np.zeros_like(m)
        both = np.concatenate([picture, 0.5 * picture + 0.5 * heat(m)[..., :3]], axis=1)
        scale = max(1, TILE // x.shape[1])
        tiles.append({**{k: v for k, v in e.items() if k != "image"},
                      "uri": png_uri(both.repeat(scale, 0).repeat(scale, 1)), "classes": info.classes})
    return tiles


def _cam_note(info: ModelInfo, what: str = "the predicted class") -> str:
    """What the maps beside the images are, and how coarse: the input over the body's stride of 32."""
    side = -(-info.model.resolution // 32)
    detail = (f"from its {side}×{side} last feature map" if side > 1 else "though at this resolution the last "
              "feature map is 1×1, so each map is one value: train at 64 pixels or more to see where it looked")
    return (f"<p>Each image beside its class activation map for {what} (bright: where the network "
            f"looked), {detail}.</p>")


def _gallery(tiles: list[dict], empty: str) -> str:
    if not tiles:
        return f"<p>{escape(empty)}</p>"
    figures = []
    for t in tiles:
        true, said = t["classes"][t["label"]], t["classes"][t["predicted"]]
        caption = _label_caption(t) if "threshold" in t else f"true {true}, predicted {said} ({100 * t['p']:.1f}%)" + (
            f"; {100 * t['p_true']:.1f}% for {true}" if t["label"] != t["predicted"] else "")
        figures.append(f'<figure><img src="{t["uri"]}" alt="{escape(caption)}"><figcaption>{escape(caption)}'
                       "</figcaption></figure>")
    return f'<div class=grid>{"".join(figures)}</div>'


def _label_caption(t: dict) -> str:
    """A multi-label mistake: the label, its score and threshold, and what the image holds."""
    held = ", ".join(t["classes"][i] for i in t["labels"])
    return (f"{t['classes'][t['label']]} {100 * t['p']:.1f}% (threshold {100 * t['threshold']:.1f}%); "
            f"the image holds {held or 'none of the labels'}")


def _balance(counts: dict, classes: list[str], cfg: dict) -> str:
    train = np.asarray(counts["train"])
    ratio = train.max() / train.min() if train.min() else float("inf")
    big, small = classes[int(train.argmax())], classes[int(train.argmin())]
    if ratio > IMBALANCE:
        gap = (f"the largest training class ({escape(big)}, {train.max():,} images) has {ratio:.1f}× the images of the "
               f"smallest ({escape(small)}, {train.min():,})" if train.min() else
               f"the training class {escape(small)} has no images, against {train.max():,} for {escape(big)}")
        said = (f"<p class=warn>Warning: {gap}. Accuracy hides the small classes: read their recall above, and "
                "add images to them if you can.</p>")
    else:
        said = f"<p>The largest training class has {ratio:.2f}× the images of the smallest.</p>"
    if cfg.get("sampler") == "balanced":
        said += "<p>Training drew every class equally often (<code>--sampler balanced</code>).</p>"
    if cfg.get("class_weights") not in (None, "none"):
        said += (f"<p>The training loss weighed each class (<code>--class-weights "
                 f"{escape(cfg['class_weights'])}</code>).</p>")
    splits = [name for name, c in counts.items() if sum(c)]
    rows = [[c, *(counts[s][i] for s in splits)] for i, c in enumerate(classes)]
    return said + table(["class", *splits], rows, numeric=set(range(1, len(splits) + 1)))


def _exports(model_dir: Path, config) -> str:
    """The exported files beside the model (regular files, not links), each with what
    exports.json says `export` checked of it, if it is still that file."""
    files = sorted(p for p in model_dir.iterdir() if title_of(p) and not p.is_symlink() and p.is_file())
    records = read_exports(model_dir)
    limit = 2 * state_bytes(config) + EXPORT_ROOM
    rows = [[p.name, title_of(p),
             f"{p.stat().st_size / 1e6:.2f} MB", _check_line(records.get(p.name), p, limit)] for p in files]
    found = table(["file", "format", "size", "check"], rows) if rows else "<p>None yet: `mobilenet export`.</p>"
    return found + latency_table(read_latency(model_dir))


def _whole(text: str) -> float | None:
    return int(text) if text.isdigit() else None


def _check_line(record, path: Path, limit: int) -> str:
    """What export checked of `path`, when its record's SHA-256 is the file's. The file is
    hashed only within `limit`, the most an export of this network takes."""
    import hashlib

    unknown = "no record of its check here (exported elsewhere, or changed since)"
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return unknown
    if path.stat().st_size > limit:
        return "larger than any export of this network: not read"
    try:
        if hashlib.sha256(read_regular(path, limit, "--model")).hexdigest() != record["sha256"]:
            return unknown
    except (OSError, MobileNetError):
        return unknown
    diff = (record.get("real") if isinstance(record.get("real"), dict) else {}).get("max_abs_diff")
    line = (f"float32 checked against PyTorch: largest difference {diff:.1e} on real test images, same top-1"
            if finite_number(diff) else "checked against PyTorch on random inputs")
    fp32, int8, shrink = (record.get(k) for k in ("accuracy_fp32", "accuracy_int8", "shrink"))
    if all(map(finite_number, (fp32, int8, shrink))):
        score = "mAP" if record.get("score") == "mAP" else "accuracy"
        line += f"; int8 test {score} {100 * fp32:.2f}% → {100 * int8:.2f}%, {shrink:.1f}× smaller"
    return line


def latency_table(devices: dict[str, dict]) -> str:
    """latency.json as one table: a row per file, runtime, batch size and threads, a column
    of median milliseconds per device."""
    if not devices:
        return ""
    names = list(devices)
    cells: dict[tuple, dict] = {}
    for name, entry in devices.items():
        for r in entry["rows"]:
            key = tuple(printable(str(r.get(k) if r.get(k) is not None else "-")) for k in ROW)
            cells.setdefault(key, {})[name] = r.get("median_ms")
    def order(item):  # file and runtime as text, batch size and threads as numbers
        (file, runtime, batch, threads), _ = item
        return file, runtime, as_float(_whole(batch)), as_float(_whole(threads))
    rows = [[*key, *(number(as_float(by.get(n))) if by.get(n) is not None else "-" for n in names)]
            for key, by in sorted(cells.items(), key=order)]
    return ("<p>Latency (latency.json: `mobilenet bench --model`, and `--on DEST` for a device), median ms per "
            "batch:</p>" + table(["file", "runtime", "batch", "threads", *map(printable, names)], rows,
                                  numeric=set(range(2, 4 + len(names)))))


