"""``distillab report RUNS_DIR --html FILE``: one self-contained page (images inlined) for a study
or a whole runs folder — each study's table as its recipe wrote it (the papers' layouts, with
intervals), the plots it saved, learning curves and accuracy vs mult-adds drawn from its runs,
and the command and config that made it."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from distillab.engine.run_folder import SUMMARY_FILE, read_metrics
from distillab.errors import UserError
from distillab.results.stats import mean_std

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.3em .6em}
th{background:#f3f3f3;text-align:left}td{font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.fig{display:inline-block;width:49%;vertical-align:top}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}.note{color:#444;max-width:60em}
"""


def _inline(text: str) -> str:
    """Escape ``text`` and render the inline Markdown the recipes write: **bold** and `code`."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _table(lines: list[str]) -> str:
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines if not set(ln) <= set("|-: ")]
    if not rows:
        return ""
    head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown(text: str) -> str:
    """The subset of Markdown the recipes write: ### titles, pipe tables, paragraphs."""
    out, table = [], []
    for ln in text.splitlines() + [""]:
        if ln.startswith("|"):
            table.append(ln)
            continue
        if table:
            out.append(_table(table))
            table = []
        if ln.startswith("#"):
            out.append(f"<h3>{_inline(ln.lstrip('#').strip())}</h3>")
        elif ln.strip():
            out.append(f"<p class='note'>{_inline(ln)}</p>")
    return "\n".join(out)


def _img(data: bytes, alt: str) -> str:
    return (f"<div class='fig'><img alt='{html.escape(alt)}' "
            f"src='data:image/png;base64,{base64.b64encode(data).decode()}'></div>")


def _runs_by_role(study: Path) -> dict[str, list[Path]]:
    roles: dict[str, list[Path]] = {}
    for summary in sorted(study.glob(f"*/seed*/{SUMMARY_FILE}")):
        roles.setdefault(summary.parent.parent.name, []).append(summary.parent)
    return roles


def _learning_curves(roles: dict[str, list[Path]]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = 0
    for role, runs in roles.items():
        per_epoch: dict[int, list[float]] = {}
        for run in runs:
            for rec in read_metrics(run):
                try:
                    per_epoch.setdefault(int(rec["epoch"]), []).append(100 * float(rec["val_acc"]))
                except (ValueError, KeyError, TypeError, OverflowError):
                    continue  # a line without validation, or an epoch of Infinity
        if per_epoch:
            xs = sorted(per_epoch)
            ax.plot(xs, [mean_std(per_epoch[x])[0] for x in xs], marker=".", label=role)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    from matplotlib.ticker import MaxNLocator

    ax.set(xlabel="epoch", ylabel="validation accuracy (%, mean over seeds)", title="Learning curves")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))  # whole epochs, never 2.5
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def _accuracy_vs_cost(roles: dict[str, list[Path]]) -> bytes | None:
    import matplotlib.pyplot as plt

    points = []
    for role, runs in roles.items():
        try:
            summaries = [json.loads((r / SUMMARY_FILE).read_text()) for r in runs]
        except (ValueError, UnicodeDecodeError):
            continue
        summaries = [x for x in summaries if isinstance(x, dict)]
        accs = [s.get("test_acc") for s in summaries if isinstance(s.get("test_acc"), (int, float))
                and not s.get("warning")]  # a collapsed run is left out, as in the study's table
        macs = summaries[0].get("macs") if summaries else None
        if accs and isinstance(macs, (int, float)) and macs > 0:
            m, s = mean_std([100 * a for a in accs])
            points.append((role, macs, m, s))
    if len(points) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for role, macs, m, s in points:
        ax.errorbar([macs], [m], yerr=[s], fmt="o", capsize=3)
        ax.annotate(role, (macs, m), textcoords="offset points", xytext=(4, 3), fontsize=7, annotation_clip=False)
    ax.set(xscale="log", xlabel="mult-adds per image", ylabel="test accuracy (%, mean ± std)",
           title="Accuracy vs cost")
    ax.margins(x=0.2, y=0.12)  # room for the labels of the outermost points (the teacher's was clipped)
    from matplotlib.ticker import LogLocator

    ax.xaxis.set_major_locator(LogLocator(numticks=6))  # a few decades, not a crowded row of minor labels
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.grid(alpha=0.3)
    return _png(fig)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def study_section(study: Path, root: Path) -> str:
    name = root.name if study == root else str(study.relative_to(root))
    parts = [f"<h2 id='{html.escape(name)}'>{html.escape(name)}</h2>"]
    for md in sorted(study.glob("*.md")):
        parts.append(_markdown(md.read_text(encoding="utf-8", errors="replace")))
    meta = study / "study.json"
    if meta.is_file():
        try:
            info = json.loads(meta.read_text())
            parts.append(f"<p>Command: <code>{html.escape(str(info.get('command', '')))}</code></p>"
                         f"<details><summary>config</summary><pre>{html.escape(str(info.get('config_yaml', '')))}"
                         f"</pre></details>")
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass
    figs = [_img(p.read_bytes(), p.stem) for p in sorted(study.glob("*.png"))]
    roles = _runs_by_role(study)
    for make, alt in ((_learning_curves, "learning curves"), (_accuracy_vs_cost, "accuracy vs mult-adds")):
        data = make(roles)
        if data:
            figs.append(_img(data, alt))
    parts.append("".join(figs))
    return "\n".join(parts)


def build_html(root: Path, command: str | None = None) -> str:
    """The whole page for ``root`` (a study folder, or a folder of studies); ``command``: the
    command line that made the page, shown with the date and distillab's version."""
    if not root.is_dir():
        raise UserError(f"runs directory not found: {root}")
    studies = sorted({p.parent for p in root.rglob("results.md")})
    if not studies:
        raise UserError(f"no study results (results.md) under {root}; run a study first")
    from distillab.results.report import report_rows
    from distillab.results.stats import markdown_table

    header, rows = report_rows(root)
    names = [root.name if s == root else str(s.relative_to(root)) for s in studies]
    toc = "".join(f"<li><a href='#{html.escape(n)}'>{html.escape(n)}</a></li>" for n in names)
    body = "\n".join(study_section(s, root) for s in studies)
    every = _markdown("### Every finished run\n\n" + markdown_table(header, rows))
    import datetime

    from distillab import __version__

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    made = (f"<p class='note'>Made {when} by distillab {html.escape(__version__)}"
            + (f" with <code>{html.escape(command)}</code>" if command else "") + ".</p>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>distillab report: {html.escape(root.name)}"
            f"</title><style>{STYLE}</style></head><body><h1>distillab report: {html.escape(str(root))}</h1>"
            f"{made}<ul>{toc}</ul>{body}<h2>All runs</h2>{every}</body></html>")


def check_html_target(target: Path) -> None:
    """``report --html FILE``: a file in an existing folder, and only a report distillab wrote is
    replaced (never the user's own page; a FIFO or device is never opened: it could block)."""
    from distillab.errors import UserError

    if target.is_dir() or not target.parent.is_dir():
        raise UserError(f"--html {target}: give a file in an existing folder")
    if not (target.exists() or target.is_symlink()):
        return
    head = b""
    if target.is_file():
        try:
            with target.open("rb") as f:
                head = f.read(200)
        except OSError:
            pass
    if not head.startswith(b"<!doctype html><html><head><meta charset='utf-8'><title>distillab report"):
        raise UserError(f"--html {target} exists and is not a distillab report; remove it or choose another name")
