"""A sweep folder's page: its plan, the pick, the trade-off pictures and the table of
points, each linked to its own report."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MobileNetError, printable
from ..files import read_json_object
from ..report.html import as_float, escape, html_page, number, percent, png_file_uri, table, write_page
from ..run.names import REPORT
from ..run.ownership import refuse_foreign
from .records import BEST, DEVICE_MS, PLAN

TABLE = "sweep.json"  # what `sweep --collect` writes


def is_sweep(folder) -> bool:
    """Whether `folder` is a sweep's (it has the plan every point shares)."""
    return (Path(folder) / PLAN).is_file()


def sweep_report(folder, out=None, log=print, force: bool = False) -> dict:
    """A sweep folder's page: its plan, the pick (`best`), the trade-off pictures, and the
    table of points, each linked to its own report. Needs `sweep --collect`'s sweep.json.
    A file at `out` that mobilenet did not write is replaced only with `force`."""
    folder = Path(folder)
    path = Path(out) if out else folder / REPORT
    refuse_foreign([path], "--out", force)
    found = read_json_object(folder / TABLE)
    if not isinstance(found.get("points"), list) or not isinstance(found.get("plan"), dict):
        raise MobileNetError(f"{folder}: no readable {TABLE}; run `mobilenet sweep --collect {folder}` first")
    plan, points = found["plan"], [p for p in found["points"] if isinstance(p, dict)]
    best = os.readlink(folder / BEST) if (folder / BEST).is_symlink() else None
    found = {p.stem: png_file_uri(p) for p in sorted(folder.glob("tradeoff_*.png"))}
    pictures = "".join(f'<img class=curve src="{uri}" alt="{escape(stem)}">' for stem, uri in found.items() if uri)
    page = html_page(f"MobileNet V1 sweep: {folder.name}", [
        ("plan", "The grid", _sweep_plan(plan, best)),
        ("tradeoff", "Accuracy against cost", f"<div class=grid>{pictures}</div>" if pictures else "<p>None.</p>"),
        ("points", "Every point", _sweep_table(folder, plan, points, best)),
    ])
    return {"path": str(write_page(page, path, log))}


def _sweep_plan(plan: dict, best: str | None) -> str:
    train = plan.get("train") if isinstance(plan.get("train"), dict) else {}
    rows = [["widths α", ", ".join(_listed(plan, "widths"))],
            ["resolutions ρ", ", ".join(_listed(plan, "resolutions"))],
            ["each point", f"{train.get('epochs')} epochs on {train.get('data')}, batch {train.get('batch_size')}, "
                           f"validation split {train.get('val_split')}"],
            ["timed with", ", ".join(_listed(plan, "runtimes"))],
            ["the pick", f"{best}, linked as best: the most accurate on the validation images (within the budget, "
                         "if the last collect gave one)" if best else "none: nothing fitted the last collect's budget"]]
    return table(None, rows)


def _listed(plan: dict, key: str) -> list[str]:
    """plan[key] as text, item by item: sweep.json is read as it is, edited or not."""
    return [str(v) for v in plan[key]] if isinstance(plan.get(key), list) else []


def _times(point: dict, device: str) -> dict:
    times = point[DEVICE_MS].get(device) if isinstance(point.get(DEVICE_MS), dict) else None
    return times if isinstance(times, dict) else {}


def _sweep_table(folder: Path, plan: dict, points: list[dict], best: str | None) -> str:
    runtimes = _listed(plan, "runtimes")
    devices = sorted({str(d) for p in points if isinstance(p.get(DEVICE_MS), dict) for d in p[DEVICE_MS]})
    head = ["point", "α", "ρ", "mult-adds (M)", "parameters", "validation", "test", *(f"{r} ms" for r in runtimes),
            *(f"{r} ms on {printable(d)}" for d in devices for r in runtimes)]
    rows = []
    for p in sorted(points, key=lambda p: (-as_float(p.get("alpha")), -as_float(p.get("rho")))):
        run = str(p.get("run"))
        inside = run not in ("", ".", "..") and "/" not in run  # a link to a point's own page, never out
        name = (f'<a href="./{escape(run)}/report.html">{escape(run)}</a>'
                if inside and (folder / run / REPORT).is_file() else escape(run)) + (" (the pick)" if run == best else "")
        latency = p.get("latency_ms") if isinstance(p.get("latency_ms"), dict) else {}
        cells = [p.get("alpha"), p.get("rho"), f"{as_float(p.get('mult_adds')) / 1e6:.2f}", p.get("params"),
                 percent(p.get("val_acc")), percent(p.get("test_acc")),
                 *(number(as_float(latency.get(r))) for r in runtimes),
                 *(number(as_float(_times(p, d).get(r))) for d in devices for r in runtimes)]
        rows.append(f"<tr><td>{name}</td>" + "".join(f"<td class=n>{escape(c)}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return (f"<div class=scroll><table><tr>{header}</tr>{''.join(rows)}</table></div>"
            "<p>Each point's own report, linked, has its card, curves and mistakes.</p>")
