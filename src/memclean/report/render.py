"""Rendering the view model with the Jinja2 templates in ``templates/``, and :func:`build_report`."""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from functools import cache
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from memclean.report.build import build_view
from memclean.report.facts import compute_facts, metrics, prepare_manifest
from memclean.report.inputs import (
    GATE_FAILED_TEXT,
    INFLUENCE_ENABLE,
    INFLUENCE_OFF_TEXT,
    SECTION_IDS,
    Report,
    ReportInputs,
    ReportOptions,
)
from memclean.report.model import ReportView

log = logging.getLogger(__name__)

#: The fixed sentences both templates show.
_TEXTS = {
    "gate_failed_text": GATE_FAILED_TEXT,
    "influence_off_text": INFLUENCE_OFF_TEXT,
    "influence_enable": INFLUENCE_ENABLE,
}

#: Link text of each section in the page's navigation bar (same order as ``SECTION_IDS``).
NAV_TITLES: tuple[str, ...] = (
    "Summary",
    "Classes",
    "Validation",
    "Scores",
    "Top suspects",
    "Noise matrix",
    "Duplicates",
    "Influence",
    "Quarantine",
    "Run",
    "Params",
)


def breakable(text: str) -> Markup:
    """Escape ``text`` for HTML and allow a line break after each underscore (``<wbr>``).

    Parameters
    ----------
    text
        Plain text, e.g. a reason code.

    Returns
    -------
    markupsafe.Markup
    """
    return Markup("_<wbr>").join(escape(text).split("_"))


def markdown_text(text: str) -> str:
    """Escape ``text`` for Markdown: HTML-escaped (no quotes), pipes escaped, on one line.

    Parameters
    ----------
    text
        Plain text.

    Returns
    -------
    str
    """
    return " ".join(html.escape(str(text), quote=False).replace("|", "\\|").split())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown (pipe) table of plain-text cells, each escaped with :func:`markdown_text`.

    Parameters
    ----------
    header
        Column titles (escaped too; they may repeat).
    rows
        Cells, row by row.

    Returns
    -------
    str
        The table without a trailing newline; cells are not padded or re-parsed as numbers.
    """
    titles = [markdown_text(c) for c in header]
    frame = pd.DataFrame([[markdown_text(c) for c in row] for row in rows], columns=range(len(titles)), dtype=object)
    return frame.to_markdown(index=False, headers=titles, stralign=None, numalign=None, disable_numparse=True)


def _loader() -> jinja2.BaseLoader:
    return jinja2.PackageLoader("memclean.report", "templates")


def _environment(autoescape: bool, **options: Any) -> jinja2.Environment:
    """A Jinja2 environment over the package's templates, strict about undefined names."""
    return jinja2.Environment(
        loader=_loader(),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        **options,
    )


@cache
def html_environment() -> jinja2.Environment:
    """The Jinja2 environment of the HTML page (autoescaped, strict about undefined names).

    Returns
    -------
    jinja2.Environment
    """
    env = _environment(autoescape=True)
    env.filters["breakable"] = breakable
    return env


@cache
def markdown_environment() -> jinja2.Environment:
    """The Jinja2 environment of the Markdown summary (no autoescape: ``md`` and ``table`` escape).

    Returns
    -------
    jinja2.Environment
    """
    env = _environment(autoescape=False, extensions=["jinja2.ext.do"])
    env.filters["md"] = markdown_text
    env.globals["table"] = markdown_table
    return env


def render_html(view: ReportView) -> str:
    """Render the self-contained HTML page.

    Parameters
    ----------
    view
        The view model.

    Returns
    -------
    str
    """
    template = html_environment().get_template("audit.html.j2")
    nav = list(zip(SECTION_IDS, NAV_TITLES, strict=True))
    return template.render(view=view, nav=nav, **_TEXTS)


def render_markdown(view: ReportView) -> str:
    """Render the Markdown summary.

    Parameters
    ----------
    view
        The view model.

    Returns
    -------
    str
    """
    return markdown_environment().get_template("audit.md.j2").render(view=view, **_TEXTS)


def build_report(inputs: ReportInputs, options: ReportOptions | None = None) -> Report:
    """Render the audit report.

    Parameters
    ----------
    inputs
        The manifest, pixels, duplicates and the earlier stages' reports.
    options
        How many suspects, groups and quarantined rows to show.

    Returns
    -------
    Report
        The HTML page, the Markdown summary and the headline metrics.

    Raises
    ------
    MemcleanError
        When the manifest lacks required columns or indexes outside ``pixels``.
    """
    opts = options or ReportOptions()
    manifest = prepare_manifest(inputs.manifest, inputs.pixels)
    facts = compute_facts(inputs, manifest)
    view = build_view(inputs, opts, manifest, facts)
    page = render_html(view)
    markdown = render_markdown(view)
    log.info(
        "report: %d rows, %d kept, %d dropped; HTML %.1f kB", facts.rows, facts.kept, facts.dropped, len(page) / 1024
    )
    return Report(html=page, markdown=markdown, metrics=metrics(facts, inputs))
