"""The report as one self-contained HTML file (figures inline as PNG, no network needed) and as
Markdown with the figures as image files beside it."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from qnnlab.report.sections import Item, Section
from qnnlab.storage import atomic_write

STYLE = """body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#111;line-height:1.45}
figure{margin:1rem 0}img{max-width:100%}figcaption,.command{font-size:.85rem;color:#444}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #999;padding:.2rem .5rem}
.missing{color:#555;font-style:italic}code{background:#eee;padding:0 .2rem}"""


def png(figure: Any) -> bytes:
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def _columns(table: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for row in table for k in row))


def write(sections: list[Section], out: Path, title: str) -> dict[str, Any]:
    """Write ``out`` (HTML) and ``out`` with .md (Markdown, images in ``<stem>_files/``)."""
    images: dict[int, bytes] = {}
    for section in sections:
        for item in section.items:
            if item.figure is not None:
                images[id(item)] = png(item.figure)
    page = _html(sections, title, images)
    atomic_write(out, lambda p: p.write_text(page))
    folder = out.parent / f"{out.stem}_files"
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[int, str] = {}
    for number, (key, data) in enumerate(images.items(), 1):
        names[key] = f"{folder.name}/figure{number}.png"
        atomic_write(out.parent / names[key], lambda p, data=data: p.write_bytes(data))
    markdown = _markdown(sections, title, names)
    atomic_write(out.with_suffix(".md"), lambda p: p.write_text(markdown))
    return {"html": str(out), "markdown": str(out.with_suffix(".md")), "figures": len(images)}


def _html(sections: list[Section], title: str, images: dict[int, bytes]) -> str:
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    parts.append("<nav>" + " | ".join(f"<a href='#{s.id}'>{html.escape(s.title)}</a>" for s in sections) + "</nav>")
    for section in sections:
        parts.append(f"<section id='{section.id}'><h2>{html.escape(section.title)}</h2>")
        parts += [_html_item(item, images) for item in section.items]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_item(item: Item, images: dict[int, bytes]) -> str:
    command = f"<div class=command>Reproduce: <code>{html.escape(item.command)}</code></div>"
    if item.figure is not None:
        data = base64.b64encode(images[id(item)]).decode()
        return (
            f"<figure><img alt='{html.escape(item.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(item.title)}</figcaption>{command}</figure>"
        )
    if item.table is not None:
        columns = _columns(item.table)
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c, '')))}</td>" for c in columns) + "</tr>"
            for r in item.table
        )
        return f"<h3>{html.escape(item.title)}</h3><table><tr>{head}</tr>{body}</table>{command}"
    css = " class=missing" if item.missing else ""
    return f"<h3>{html.escape(item.title)}</h3><p{css}>{html.escape(item.text)}</p>{command}"


def _markdown(sections: list[Section], title: str, names: dict[int, str]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for item in section.items:
            if item.figure is not None:
                lines += [f"![{item.title}]({names[id(item)]})", "", f"*{item.title}* (`{item.command}`)", ""]
            elif item.table is not None:
                columns = _columns(item.table)
                lines += [f"### {item.title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in item.table]
                lines += ["", f"(`{item.command}`)", ""]
            else:
                lines += [f"### {item.title}", "", item.text, ""]
    return "\n".join(lines)
