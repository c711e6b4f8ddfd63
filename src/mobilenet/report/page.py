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
import html
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..data.augment import choice_line
from ..errors import MobileNetError
from ..files import JSON_LIMIT, atomic_write_json, atomic_write_text, make_dir, read_regular
from ..formats import title_of
from ..limits import EVAL_BATCH_SIZE
from ..net.activation_maps import cam
from ..net.cost import cost_report
from ..progress import bar
from ..run.folder import load_checkpoint, load_model, upgrade_checkpoint
from ..run.info import ModelInfo
from .metrics import Metrics

WRONG, RIGHT = 16, 4  # confidently wrong test images shown, and confidently right ones for contrast
IMBALANCE = 5.0  # the largest training class over the smallest that earns a warning
TILE = 112  # pixels of each shown image and of its map
EXPORTS = "exports.json"  # what `export` checked, by file name (deploy/exporter.py writes it)
BENCH = "bench.json"  # `mobilenet bench --model DIR --json > DIR/bench.json`
SWEEP_PLAN, SWEEP_TABLE = "sweep_plan.json", "sweep.json"  # a sweep folder's (sweep/run.py writes them)
CSS = """body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:12px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:1.6em}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
td.n,th.n{text-align:right}.scroll{overflow-x:auto}.cm td{text-align:right;min-width:2.2em}
.grid{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:230px}figure img{width:100%;image-rendering:pixelated}
figcaption{font-size:13px}.warn{background:#fff3cd;border:1px solid #e0c060;padding:6px}
img.curve{width:min(100%,480px)}"""
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def report(model_dir, out=None, data: str | None = None, workers: int | None = None, source=None,
           log=print) -> dict:
    """A run folder's page (model_report), or a sweep folder's (sweep_report)."""
    if (Path(model_dir) / SWEEP_PLAN).is_file():
        return sweep_report(model_dir, out, log)
    return model_report(model_dir, out, data, workers, source, log)


def model_report(model_dir, out=None, data: str | None = None, workers: int | None = None, source=None,
                 log=print) -> dict:
    """Write the page to `out` (default model_dir/report.html); returns {"path", "metrics"
    (metrics.json's figures, from the same pass), "seconds"}. `source` is the opened data set
    (training passes its own), else `data` (default the model's) is opened as it was trained."""
    start = time.perf_counter()
    model_dir = Path(model_dir)
    model, info = load_model(model_dir)
    state = _state(model_dir)
    source = source or _open(info, state, data, workers)
    metrics, examples = scan(model, source, info, data or info.data_name)
    tiles = {name: _tiles(model, found, info) for name, found in examples.items()}
    page = _page(model_dir, info, state, source, metrics, tiles)
    path = _write(page, Path(out) if out else model_dir / "report.html", log)
    return {"path": str(path), "metrics": metrics, "seconds": time.perf_counter() - start}


def _write(page: str, path: Path, log) -> Path:
    make_dir(path.parent)
    atomic_write_text(path, page)
    log(f"wrote {path}")
    return path


def _state(model_dir: Path) -> dict:
    """The run's checkpoint (recipe, history, kept epoch, machine), or {} for a folder without one."""
    path = model_dir / "checkpoint.pt"
    try:
        return upgrade_checkpoint(load_checkpoint(path)) if path.is_file() else {}
    except MobileNetError:  # not ours, or damaged: the card says what it cannot know
        return {}


def _open(info: ModelInfo, state: dict, data: str | None, workers: int | None = None):
    """The data set split as it was trained: the same seed, test split, limit and validation split."""
    cfg = state.get("train_config", {})
    return info.open_data(data, workers, cfg.get("limit"), cfg.get("val_split"))


def scan(model, source, info: ModelInfo, name: str) -> tuple[dict, dict]:
    """One pass over the test split: metrics.json's figures, and the most confidently wrong
    and right images (prepared tensors) with their labels, predictions and probabilities."""
    found, kept = Metrics(len(info.classes)), {"wrong": [], "right": []}
    bad = []
    with torch.inference_mode(), bar(total=source.num_test, desc="evaluate", unit="img") as shown:
        for batch in source.test_batches(EVAL_BATCH_SIZE):
            images, labels, bad_files = batch
            bad += bad_files
            shown.update(len(labels) + len(bad_files))
            if not len(labels):
                continue
            model = model.to(images.device)
            z = model(images.contiguous(memory_format=torch.channels_last)).float()
            y = torch.as_tensor(labels, device=z.device)
            found.add(z.cpu().numpy(), y.cpu().numpy())
            _keep(kept, images, y, torch.softmax(z, 1))
    metrics = found.report(info.classes, str(name), bad, getattr(source, "skipped", 0))
    return metrics, kept


def _keep(kept: dict, images, labels, probs) -> None:
    """Merge this batch's most confident wrong and right answers into `kept`."""
    confidence, predicted = probs.max(1)
    for name, mask, count in (("wrong", predicted != labels, WRONG), ("right", predicted == labels, RIGHT)):
        index = mask.nonzero()[:, 0]
        index = index[confidence[index].argsort(descending=True)[:count]]
        kept[name] += [{"image": images[i].cpu(), "label": int(labels[i]), "predicted": int(predicted[i]),
                        "p": float(confidence[i]), "p_true": float(probs[i, labels[i]])} for i in index]
        kept[name] = sorted(kept[name], key=lambda e: -e["p"])[:count]


# --- the page -------------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: list[str] | None, rows: list[list], numeric: set[int] = frozenset(), cls: str = "") -> str:
    head = "".join(f'<th{" class=n" if i in numeric else ""}>{_e(h)}</th>' for i, h in enumerate(headers or []))
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{_e(v)}</td>' for i, v in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<div class=scroll><table class="{cls}">{f"<tr>{head}</tr>" if head else ""}{body}</table></div>'


def _png(array: np.ndarray) -> str:
    """An (H, W, 3) float image in [0, 1] as a data: URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _page(model_dir, info, state, source, metrics, tiles) -> str:
    title = f"MobileNet V1 α={info.model.width_mult} ρ={info.model.resolution}: {model_dir.name}"
    return _html(title, [
        ("card", "Model card", _card(info, state, source, metrics)),
        ("curves", "Training curves", _curves(state.get("history", []))),
        ("confusion", "Confusion matrix (test split)", _confusion(metrics, info.classes)),
        ("classes", "Per class (test split)", _classes(metrics, info.classes)),
        ("wrong", "Most confidently wrong test images", _cam_note(info) + _gallery(tiles["wrong"],
                                                                                 "none: every test image is right")),
        ("right", "Confidently right, for contrast", _gallery(tiles["right"], "none: no test image is right")),
        ("balance", "Class balance", _balance(source.class_counts(), info.classes)),
        ("exports", "Exported files", _exports(model_dir)),
    ])


def _html(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The page: `sections` are (id, heading, escaped content)."""
    body = "".join(f'<section id="{key}"><h2>{_e(name)}</h2>{content}</section>' for key, name, content in sections)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>\n")


def _card(info: ModelInfo, state: dict, source, metrics: dict) -> str:
    m, cost, cfg = info.model, cost_report(info.model), state.get("train_config")
    history = state.get("history", [])
    rows = [["network", f"MobileNet V1, α = {m.width_mult}, ρ = {m.resolution}, {m.in_channels} input channel"
                        f"{'s' if m.in_channels > 1 else ''}, {m.num_classes} classes"],
            ["cost", f"{cost['params']:,} parameters, {cost['mult_adds'] / 1e6:,.1f} M mult-adds, "
                     f"{cost['peak_activation_bytes'] / 1e6:,.2f} MB peak activation memory (batch 1, float32)"],
            ["data", _data_line(source)],
            ["test split", f"top-1 {100 * metrics['top1']:.2f}%, top-5 {100 * metrics['top5']:.2f}%, loss "
                           f"{metrics['loss']:.4f} on {metrics['images']:,} images"],
            ["recipe", _recipe(cfg, info.augment, history) if cfg else "not recorded (no checkpoint.pt)"],
            ["kept model", _kept(state, cfg) if cfg else "not recorded"],
            ["time", f"{len(history)} epochs, {_duration(sum(h['seconds'] for h in history))} of training"
                     if history else "not recorded"],
            ["machine", _machine(state.get("machine"))]]
    return _table(None, rows)


def _data_line(source) -> str:
    counts = source.class_counts()
    splits = [f"{name} {sum(c):,} images in {sum(1 for v in c if v)} classes" for name, c in counts.items() if sum(c)]
    return f"{source.name}: " + ", ".join(splits)


def _recipe(cfg: dict, augment: dict | None, history: list[dict]) -> str:
    peak = max((h["lr"] for h in history), default=cfg.get("lr")) or "the optimizer's default"
    ema = cfg.get("ema")
    chosen = f" ({_choice(augment)})" if augment and len(augment) > 1 else ""
    return (f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, {cfg['optimizer']} with peak learning rate "
            f"{peak if isinstance(peak, str) else format(peak, 'g')}, weight decay {cfg['weight_decay']:g}, "
            f"label smoothing {cfg.get('label_smoothing', 0):g}, "
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
    row = history[epoch - 1]
    stopped = f"; stopped early, {cfg['patience']} epochs without a better one" if (
        cfg.get("patience") and state.get("since_best", 0) >= cfg["patience"]) else ""
    return (f"epoch {epoch} of {len(history)}, the best validation accuracy ({100 * float(row['val_acc']):.2f}%) on "
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
    from .plots import plot_curves

    with tempfile.TemporaryDirectory() as tmp:
        plot_curves(history, Path(tmp))
        uris = ["data:image/png;base64," + base64.b64encode((Path(tmp) / f"{n}.png").read_bytes()).decode()
                for n in ("total_acc", "total_test_loss")]
    return "<div class=grid>" + "".join(f'<img class=curve src="{u}" alt="{n}">' for u, n in zip(
        uris, ("total_acc", "total_test_loss"))) + "</div>"


def _confusion(metrics: dict, classes: list[str]) -> str:
    confusion = np.asarray(metrics["confusion_matrix"])
    top = max(int(confusion.max()), 1)
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{_e(c)}</th>" for c in classes) + "</tr>"
    rows = "".join(f"<tr><th>{_e(c)}</th>" + "".join(
        f'<td style="background:rgba(40,100,200,{0.85 * v / top:.2f}){";color:#fff" if v > top / 2 else ""}">'
        f"{int(v)}</td>" for v in confusion[i])
        + "</tr>" for i, c in enumerate(classes))
    return f'<div class=scroll><table class=cm>{head}{rows}</table></div>'


def _classes(metrics: dict, classes: list[str]) -> str:
    scores = metrics["per_class_scores"]
    rows = [[c, f"{scores[c]['precision']:.3f}", f"{scores[c]['recall']:.3f}", f"{scores[c]['f1']:.3f}",
             scores[c]["support"]] for c in classes]
    return _table(["class", "precision", "recall", "F1", "support"], rows, numeric={1, 2, 3, 4})


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
        tiles.append({**{k: e[k] for k in ("label", "predicted", "p", "p_true")},
                      "uri": _png(both.repeat(scale, 0).repeat(scale, 1)), "classes": info.classes})
    return tiles


def _cam_note(info: ModelInfo) -> str:
    """What the maps beside the images are, and how coarse: the input over the body's stride of 32."""
    side = -(-info.model.resolution // 32)
    detail = (f"from its {side}×{side} last feature map" if side > 1 else "though at this resolution the last "
              "feature map is 1×1, so each map is one value: train at 64 pixels or more to see where it looked")
    return (f"<p>Each image beside its class activation map for the predicted class (bright: where the network "
            f"looked), {detail}.</p>")


def _gallery(tiles: list[dict], empty: str) -> str:
    if not tiles:
        return f"<p>{_e(empty)}</p>"
    figures = []
    for t in tiles:
        true, said = t["classes"][t["label"]], t["classes"][t["predicted"]]
        caption = f"true {true}, predicted {said} ({100 * t['p']:.1f}%)" + (
            f"; {100 * t['p_true']:.1f}% for {true}" if t["label"] != t["predicted"] else "")
        figures.append(f'<figure><img src="{t["uri"]}" alt="{_e(caption)}"><figcaption>{_e(caption)}'
                       "</figcaption></figure>")
    return f'<div class=grid>{"".join(figures)}</div>'


def _balance(counts: dict, classes: list[str]) -> str:
    train = np.asarray(counts["train"])
    ratio = train.max() / train.min() if train.min() else float("inf")
    big, small = classes[int(train.argmax())], classes[int(train.argmin())]
    if ratio > IMBALANCE:
        gap = (f"the largest training class ({_e(big)}, {train.max():,} images) has {ratio:.1f}× the images of the "
               f"smallest ({_e(small)}, {train.min():,})" if train.min() else
               f"the training class {_e(small)} has no images, against {train.max():,} for {_e(big)}")
        said = (f"<p class=warn>Warning: {gap}. Accuracy hides the small classes: read their recall above, and "
                "add images to them if you can.</p>")
    else:
        said = f"<p>The largest training class has {ratio:.2f}× the images of the smallest.</p>"
    splits = [name for name, c in counts.items() if sum(c)]
    rows = [[c, *(counts[s][i] for s in splits)] for i, c in enumerate(classes)]
    return said + _table(["class", *splits], rows, numeric=set(range(1, len(splits) + 1)))


def _exports(model_dir: Path) -> str:
    files = sorted(p for p in model_dir.iterdir() if title_of(p) and p.is_file())
    records = _read_json(model_dir / EXPORTS)
    rows = [[p.name, title_of(p),
             f"{p.stat().st_size / 1e6:.2f} MB", _check_line(records.get(p.name), p)] for p in files]
    found = _table(["file", "format", "size", "check"], rows) if rows else "<p>None yet: `mobilenet export`.</p>"
    return found + _bench(_read_json(model_dir / BENCH))


def _check_line(record, path: Path) -> str:
    import hashlib

    if not isinstance(record, dict) or record.get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
        return "no record of its check here (exported elsewhere, or changed since)"
    real = record.get("real") or {}
    diff = real.get("max_abs_diff")
    line = (f"float32 checked against PyTorch: largest difference {diff:.1e} on real test images, same top-1"
            if isinstance(diff, float) else "checked against PyTorch on random inputs")
    if "accuracy_int8" in record:
        line += (f"; int8 test accuracy {100 * record['accuracy_fp32']:.2f}% → {100 * record['accuracy_int8']:.2f}%, "
                 f"{record['shrink']:.1f}× smaller")
    return line


def _bench(result) -> str:
    rows = result.get("rows") if isinstance(result, dict) else None
    if not isinstance(rows, list):
        return ""
    keys = ("runtime", "batch_size", "median_ms", "images_per_s", "file_mb", "speedup_vs_timm")
    table = [[_number(r.get(k)) for k in keys] for r in rows if isinstance(r, dict)]
    machine = result.get("machine") if isinstance(result.get("machine"), dict) else {}
    return (f"<p>Speed ({_e(BENCH)}: `mobilenet bench`, {_e(machine.get('cpu', 'machine not given'))}):</p>"
            + _table(["runtime", "batch", "ms per batch", "images/s", "file MB", "× timm"], table,
                     numeric={1, 2, 3, 4, 5}))


def _number(v) -> str:
    return f"{v:,.2f}" if isinstance(v, float) else "-" if v is None else str(v)


def record_export(model_dir, name: str, found: dict) -> None:
    """Note in model_dir/exports.json what `export` checked of the file `name` beside the model."""
    path = Path(model_dir) / EXPORTS
    atomic_write_json(path, {**_read_json(path), name: found})


def _read_json(path: Path):
    try:
        found = json.loads(read_regular(path, JSON_LIMIT, "--model"))
    except (OSError, ValueError, MobileNetError, RecursionError):
        return {}
    return found if isinstance(found, dict) else {}


# --- a sweep folder -----------------------------------------------------------------------------

def sweep_report(folder, out=None, log=print) -> dict:
    """A sweep folder's page: its plan, the pick (`best`), the trade-off pictures, and the
    table of points, each linked to its own report. Needs `sweep --collect`'s sweep.json."""
    folder = Path(folder)
    found = _read_json(folder / SWEEP_TABLE)
    if not isinstance(found.get("points"), list) or not isinstance(found.get("plan"), dict):
        raise MobileNetError(f"{folder}: no readable {SWEEP_TABLE}; run `mobilenet sweep --collect {folder}` first")
    plan, points = found["plan"], [p for p in found["points"] if isinstance(p, dict)]
    best = (folder / "best").resolve().name if (folder / "best").is_symlink() else None
    pictures = "".join(f'<img class=curve src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
                       f'alt="{_e(p.stem)}">' for p in sorted(folder.glob("tradeoff_*.png")))
    page = _html(f"MobileNet V1 sweep: {folder.name}", [
        ("plan", "The grid", _sweep_plan(plan, best)),
        ("tradeoff", "Accuracy against cost", f"<div class=grid>{pictures}</div>" if pictures else "<p>None.</p>"),
        ("points", "Every point", _sweep_table(folder, plan, points, best)),
    ])
    return {"path": str(_write(page, Path(out) if out else folder / "report.html", log))}


def _sweep_plan(plan: dict, best: str | None) -> str:
    train = plan.get("train") if isinstance(plan.get("train"), dict) else {}
    rows = [["widths α", ", ".join(map(str, plan.get("widths", [])))],
            ["resolutions ρ", ", ".join(map(str, plan.get("resolutions", [])))],
            ["each point", f"{train.get('epochs')} epochs on {train.get('data')}, batch {train.get('batch_size')}, "
                           f"validation split {train.get('val_split')}"],
            ["timed with", ", ".join(map(str, plan.get("runtimes", [])))],
            ["the pick", f"{best}, linked as best: the most accurate on the validation images (within the budget, "
                         "if the last collect gave one)" if best else "none: nothing fitted the last collect's budget"]]
    return _table(None, rows)


def _sweep_table(folder: Path, plan: dict, points: list[dict], best: str | None) -> str:
    runtimes = [str(r) for r in plan.get("runtimes", [])]
    head = ["point", "α", "ρ", "mult-adds (M)", "parameters", "validation", "test", *(f"{r} ms" for r in runtimes)]
    rows = []
    for p in sorted(points, key=lambda p: (-_float(p.get("alpha")), -_float(p.get("rho")))):
        run = str(p.get("run"))
        page = folder / run / "report.html"
        name = (f'<a href="./{_e(run)}/report.html">{_e(run)}</a>' if page.is_file() else _e(run)) + (
            " (the pick)" if run == best else "")
        cells = [p.get("alpha"), p.get("rho"), f"{_float(p.get('mult_adds')) / 1e6:.2f}", p.get("params"),
                 _percent(p.get("val_acc")), _percent(p.get("test_acc")),
                 *(_number(_float((p.get("latency_ms") or {}).get(r))) for r in runtimes)]
        rows.append(f"<tr><td>{name}</td>" + "".join(f"<td class=n>{_e(c)}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (f"<div class=scroll><table><tr>{header}</tr>{''.join(rows)}</table></div>"
            "<p>Each point's own report, linked, has its card, curves and mistakes.</p>")


def _float(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def _percent(v) -> str:
    return f"{100 * _float(v):.2f}%"
