"""The building blocks of a self-contained page: escaped tables, images as data: URIs, one
style sheet and a policy that lets nothing load or run. The model's page and the sweep's
use them."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from ..errors import MobileNetError
from ..files import atomic_write_text, make_dir, read_regular
from ..run.ownership import PAGE_MARK

CSS = """body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:12px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:1.6em}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
td.n,th.n{text-align:right}.scroll{overflow-x:auto}.cm td{text-align:right;min-width:2.2em}
.grid{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:230px}figure img{width:100%;image-rendering:pixelated}
figcaption{font-size:13px}.warn{background:#fff3cd;border:1px solid #e0c060;padding:6px}
img.curve{width:min(100%,480px)}"""
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
PICTURE_LIMIT = 16 << 20  # a picture of ours takes about 100 kB


def escape(value) -> str:
    return html.escape(str(value), quote=True)


def table(headers: list[str] | None, rows: list[list], numeric: set[int] = frozenset(), cls: str = "") -> str:
    head = "".join(f'<th{" class=n" if i in numeric else ""}>{escape(h)}</th>' for i, h in enumerate(headers or []))
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{escape(v)}</td>' for i, v in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<div class=scroll><table class="{cls}">{f"<tr>{head}</tr>" if head else ""}{body}</table></div>'


def png_uri(array: np.ndarray) -> str:
    """An (H, W, 3) float image in [0, 1] as a data: URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def png_file_uri(path: Path) -> str | None:
    """The PNG at `path` as a data: URI, if it is a regular file (not a link), within
    PICTURE_LIMIT, that decodes as a PNG; None otherwise: a page embeds nothing else."""
    from PIL import Image

    if path.is_symlink():
        return None
    try:
        data = read_regular(path, PICTURE_LIMIT, "--model")
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                return None
            image.verify()
    except (OSError, ValueError, SyntaxError, MobileNetError):  # PIL's decoders raise all three
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode()


def html_page(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The page: `sections` are (id, heading, escaped content)."""
    body = "".join(f'<section id="{key}"><h2>{escape(name)}</h2>{content}</section>' for key, name, content in sections)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">{PAGE_MARK}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n")


def write_page(page: str, path: Path, log) -> Path:
    make_dir(path.parent)
    atomic_write_text(path, page)
    log(f"wrote {path}")
    return path


def number(v) -> str:
    return f"{v:,.2f}" if isinstance(v, float) else "-" if v is None else str(v)


def as_float(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def percent(v) -> str:
    return f"{100 * as_float(v):.2f}%"
