"""The audit report: one self-contained HTML page, a Markdown summary and headline metrics.

Everything here takes explicit inputs (the cleaned manifest, the pixel array,
the duplicate table and the JSON reports of the earlier stages, already
loaded) and returns strings and dicts; the ``report`` stage writes them.

How it is made: :mod:`~memclean.report.facts` counts, :mod:`~memclean.report.build`
turns the counts into the view model of :mod:`~memclean.report.model` (plain,
formatted text; images from :mod:`~memclean.report.figures`), and
:mod:`~memclean.report.render` lays the view out with the Jinja2 templates in
``templates/``.

The HTML page has no external reference of any kind: CSS is inline and every
image (matplotlib figures, sample thumbnails) is a ``data:image/png;base64``
URI. Autoescape escapes every string that comes from the data (sample ids,
file names, class names, reason details, scorer names, the dataset source and
root, the commit, the parameter values and the noise matrix's class names). Sample ids are never shortened: long
ones wrap. Nothing on the page depends on the time it was made, so the same
inputs give the same bytes.
"""

from memclean.report.figures import image_data_uri
from memclean.report.inputs import (
    GATE_FAILED_TEXT,
    INFLUENCE_ENABLE,
    INFLUENCE_OFF_TEXT,
    REASON_TEXT,
    REQUIRED_COLUMNS,
    SECTION_IDS,
    Report,
    ReportInputs,
    ReportOptions,
)
from memclean.report.model import ReportView
from memclean.report.render import build_report, render_html, render_markdown

__all__ = [
    "GATE_FAILED_TEXT",
    "INFLUENCE_ENABLE",
    "INFLUENCE_OFF_TEXT",
    "REASON_TEXT",
    "REQUIRED_COLUMNS",
    "SECTION_IDS",
    "Report",
    "ReportInputs",
    "ReportOptions",
    "ReportView",
    "build_report",
    "image_data_uri",
    "render_html",
    "render_markdown",
]
