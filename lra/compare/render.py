"""Tables as HTML and as Markdown (every cell escaped: error messages can hold anything)."""

from __future__ import annotations

from html import escape

from lra.compare.tables import Table


def _cell(tag: str, kind: str, content: str) -> str:
    """A cell whose alignment comes from its column's kind (CSS ``.text`` / ``.long``). A number with
    a remark (``35.00 ± 7.07 (n=3, 1 failed)``) may wrap before the remark, never inside the number:
    a table of many such columns still fits a narrow window."""
    classes = [] if kind == "number" else [kind]
    if tag == "th" and " " not in content:
        classes.append("nw")  # a one-word header ("Path-X") breaks at no hyphen
    attr = f' class="{" ".join(classes)}"' if classes else ""
    value, sep, remark = content.partition(" (")
    if kind == "number" and sep and tag == "td":
        body = f'<span class="v">{escape(value)}</span> <span class="r">({escape(remark)}</span>'
    else:
        body = escape(content)
    return f"<{tag}{attr}>{body}</{tag}>"


def table_html(table: Table) -> str:
    kinds = [c.kind for c in table.columns]
    head = "".join(_cell("th", kind, h) for kind, h in zip(kinds, table.header, strict=True))
    body = []
    for cells, kind in zip(table.rows, table.kinds, strict=True):
        if kind == "section":
            body.append(f'<tr class="section"><td colspan="{len(table.header)}">{escape(cells[0])}</td></tr>')
            continue
        tds = "".join(_cell("td", kind, c) for kind, c in zip(kinds, cells, strict=True))
        body.append(f'<tr class="{kind}">{tds}</tr>')
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in table.notes)
    return (
        f'<div class="table-wrap"><table id="{escape(table.key)}">'
        f"<caption>{escape(table.title)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>{notes}"
    )


# Characters Markdown (or the HTML it may carry) reads as markup: a backslash escape, or an entity
# where a backslash would not stop an HTML renderer. "[" stops links and images (no remote fetch
# from a run's label); mapping each character once means a run's own backslash cannot undo an escape.
MD_ESCAPES = {"\\": "\\\\", "|": "\\|", "`": "\\`", "[": "\\[", "&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_text(text: str) -> str:
    """``text`` as one line of literal Markdown text (a table cell, a list item)."""
    return " ".join("".join(MD_ESCAPES.get(c, c) for c in str(text)).splitlines())


# Rows without a result, marked by state (the HTML colours them instead).
MD_MARKS = {"failed": " ⚠", "crashed": " ⚠", "interrupted": " ⏸"}


def table_markdown(table: Table) -> str:
    lines = [f"### {md_text(table.title)}", "", "| " + " | ".join(map(md_text, table.header)) + " |"]
    lines.append("|" + "---|" * len(table.header))
    for cells, kind in zip(table.rows, table.kinds, strict=True):
        cells = [md_text(c) for c in cells]
        if kind == "section":
            cells = [f"**{cells[0]}**", *[""] * (len(table.header) - 1)]
        elif kind in MD_MARKS:
            cells = [cells[0] + MD_MARKS[kind], *cells[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    if table.notes:
        lines.append("")
        lines += [f"- {md_text(n)}" for n in table.notes]
    return "\n".join(lines) + "\n"
