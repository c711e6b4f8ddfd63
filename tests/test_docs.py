"""The docs cannot rot: every relative link and image in README.md and docs/ resolves (and
its #anchor names a heading there), every `mobilenet` command line in their code blocks
parses with the real argument parser (a parse only: nothing runs), and every `make` target
they name is in the Makefile."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mobilenet import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)((?:(?!\1)(?!\n\s*\n).)+?)\1", re.S)  # may wrap, within a paragraph
COMMAND = re.compile(r"^\s*(?:\$\s+)?(?:\w+=\S*\s+)*\S*\b(?:mobilenet|python[\d.]*|torchrun)\s")
SHELL_BLOCKS = {"", "sh", "bash", "shell", "console"}


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _split(page: Path) -> tuple[str, list[tuple[int, str, str]]]:
    """The page's prose, with code blocks blanked (so offsets keep their line numbers), and
    its code lines with their line numbers and their block's language."""
    prose, code, lang = [], [], None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if fence:
            lang = fence.group(2).lower() if lang is None else None
            prose.append("")
            continue
        if lang is None:
            prose.append(line)
        else:
            prose.append("")
            code.append((number, line, lang))
    return "\n".join(prose), code


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation but - and _
    dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    slugs, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", _split(page)[0], re.M):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        slugs.add(slug if n == 0 else f"{slug}-{n}")
    return slugs


def _links(page: Path):
    """(line number, target) of each link and image outside code."""
    prose = _split(page)[0]
    bare = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)  # same offsets
    for m in LINK.finditer(bare):
        yield _line(bare, m.start()), m.group(1)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves(page):
    broken = []
    for number, target in _links(page):
        if re.match(r"^(https?:|mailto:)", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{_rel(page)}:{number}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{_rel(page)}:{number}: {target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def _commands(page: Path):
    """(line number, argv after `mobilenet`) for each command line in the page's shell code
    blocks: `mobilenet …`, `.venv/bin/mobilenet …`, `python -m mobilenet …` or `torchrun …
    -m mobilenet …`, joined over `\\` continuations, without a trailing comment. Other lines
    (program output) are left alone."""
    lines = [(n, text) for n, text, lang in _split(page)[1] if lang in SHELL_BLOCKS]
    i = 0
    while i < len(lines):
        number, text = lines[i]
        i += 1
        if not COMMAND.match(text):
            continue
        while text.rstrip().endswith("\\") and i < len(lines):
            text = text.rstrip()[:-1] + " " + lines[i][1].strip()
            i += 1
        words = shlex.split(re.sub(r"^\s*\$\s+", "", text), comments=True)
        while words and re.match(r"^\w+=", words[0]):  # VAR=value before the command
            words.pop(0)
        head = Path(words[0]).name
        if head == "mobilenet":
            yield number, words[1:]
        elif "-m" in words and words[words.index("-m") + 1:words.index("-m") + 2] == ["mobilenet"]:
            yield number, words[words.index("-m") + 2:]


def test_every_command_line_parses(monkeypatch, capsys):
    """Each documented command goes through the real parser: a misspelled subcommand or
    option, a wrong choice or an out-of-range number fails here. The one check left out is
    that --data's folder exists: the docs name the reader's folders (path/to/photos)."""

    def any_folder(text):
        return text

    any_folder.__name__ = "data"
    from mobilenet.cli import options, use

    for module in (options, use):  # the two that build a --data option
        monkeypatch.setattr(module, "data_folder", any_folder)
    parser = cli.build_parser()
    for p in [parser, *next(a for a in parser._actions if a.dest == "command").choices.values()]:
        p.allow_abbrev = False  # the docs spell options out: --epoch for --epochs is a typo here
    found, bad = 0, []
    for page in PAGES:
        for number, argv in _commands(page):
            found += 1
            try:
                parser.parse_args(argv)
            except SystemExit as e:
                message = capsys.readouterr().err.strip()
                bad.append(f"{_rel(page)}:{number}: mobilenet {shlex.join(argv)}\n    {message or f'exit {e.code}'}")
    assert not bad, "\n".join(bad)
    assert found >= 10, f"only {found} command lines found in the docs: is the reader broken?"


def _make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.%/-][^:=#]*?)\s*::?(?!=)", line)
        if rule and not line.startswith("\t"):
            targets |= {t for t in rule.group(1).split() if not t.startswith(".") and "$" not in t}
    return targets


def test_every_make_target_exists():
    targets = _make_targets()
    assert {"demo", "test", "install"} <= targets, f"the Makefile reader found only {sorted(targets)}"
    missing = []
    for page in PAGES:
        prose, code = _split(page)
        spans = [(_line(prose, m.start()), m.group(2)) for m in CODE_SPAN.finditer(prose)]
        for number, text in spans + [(n, t) for n, t, _ in code]:
            for target in re.findall(r"(?:^|[\s;&|(])make\s+([A-Za-z0-9_.-]+)", text):
                if target not in targets:
                    missing.append(f"{_rel(page)}:{number}: make {target}: no such target in the Makefile")
    assert not missing, "\n".join(missing)


def _holds_code(path) -> bool:
    """A package's __init__.py that holds more than its docstring (the top one's lazy names aside)."""
    import ast

    body = ast.parse(path.read_text()).body
    return path.parent.name != "mobilenet" and any(not isinstance(n, ast.Expr) for n in body)


def test_the_architecture_page_lists_every_module_in_its_area():
    """docs/architecture.md's tree of src/mobilenet/ names each module once, in its folder
    (a package's __init__.py too where it holds code)."""
    listed, folder = [], ""
    tree = (ROOT / "docs" / "architecture.md").read_text()
    for indent, name in re.findall(r"^( {2,4})([\w/]+(?:\.py)?)\s", tree, re.M):
        if name.endswith("/") and len(indent) == 2:
            folder = name
        elif name.endswith(".py"):
            listed.append((folder if len(indent) == 4 else "") + name)
    package = ROOT / "src" / "mobilenet"
    found = [str(p.relative_to(package)) for p in package.rglob("*.py")
             if p.stem != "__main__" and (p.stem != "__init__" or _holds_code(p))]
    assert sorted(listed) == sorted(found) and len(listed) == len(set(listed))


def test_the_reference_names_every_option_of_every_command():
    """docs/reference.md's row for each subcommand names each of its long options; the
    sweep's row may stand for train's with "[train options]"."""
    text = (ROOT / "docs" / "reference.md").read_text()
    commands = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    rows = {name: next((line for line in text.splitlines() if line.startswith(f"| `mobilenet {name}")), "")
            for name in commands}

    def options(name):
        return {s for a in commands[name]._actions for s in a.option_strings if s.startswith("--")} - {"--help"}

    missing = {name: sorted(o for o in options(name) - (options("train") if "[train options]" in row else set())
                            if not re.search(re.escape(o) + r"\b", row))
               for name, row in rows.items()}
    assert not any(missing.values()), missing
