"""Render a dossier: self-contained HTML (inline CSS, inline SVG charts, embedded font) and PDF.

The PDF is WeasyPrint's rendering of the same HTML, with the evidence bundle (the cited
audit entries as a signed export, the facts, the gate evidence) attached as
``dossier-evidence.json``; the HTML carries the same bundle in
``<script type="application/json" id="audit-evidence">``. WeasyPrint is imported inside
`to_pdf` only (it is heavy and its API moves at majors: this is the one place that calls it).
Every cited fact is written as ``<span class="fact" data-fact="F12">text</span>`` and
every gate metric cell as ``data-metric="suite|index|field"``, which is what
`governance.dossier.verify` reads back.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from governance.audit.canonical import format_ts
from governance.dossier.facts import DeploymentDossier, Fact, Series, VersionDossier, display
from governance.dossier.verify import EVIDENCE_ID, EVIDENCE_NAME
from governance.gates.report import format_number

TEMPLATES = Path(__file__).parent / "templates"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = (("DossierSans", "DejaVuSans.ttf", "normal"), ("DossierSans", "DejaVuSans-Bold.ttf", "bold"),
         ("DossierMono", "DejaVuSansMono.ttf", "normal"))

# Which parts of the dossier are evidence for which obligation (item 5 of issue 23).
OBLIGATIONS: list[tuple[str, str, str]] = [
    ("EU AI Act", "Art. 9 risk management", "the gate's suites, thresholds and verdict; drift detectors and "
     "automatic rollback with their guards"),
    ("EU AI Act", "Art. 10 data governance", "training method and training-data digest; base model and "
     "tokenizer digests; the gate's case sets"),
    ("EU AI Act", "Art. 12 record-keeping", "the cited audit entries: a hash-chained, signed export embedded "
     "in this document"),
    ("EU AI Act", "Art. 13 transparency", "identity, lineage and the gate's metrics with their uncertainty, "
     "including the bounds not enforced"),
    ("EU AI Act", "Art. 14 human oversight", "four-eyes reviews bound to digests; manual rollbacks, freezes, "
     "alert acknowledgements"),
    ("EU AI Act", "Art. 15 accuracy and robustness", "reasoning accuracy drop, bias and compliance metrics "
     "against the base and active versions; failing cases"),
    ("EU AI Act", "Art. 72 post-market monitoring", "detector charts, drift checks, outputs recorded and "
     "sampled over the period"),
    ("EU AI Act", "Art. 73 serious incidents", "alerts with their acknowledgements, and the automatic "
     "rollbacks with the evidence that triggered them"),
    ("NIST AI RMF 1.0", "Govern", "the roles that approved and promoted, the policy sha256, the signed audit "
     "trail"),
    ("NIST AI RMF 1.0", "Map", "identity, base model, training data digest, lineage and target deployment"),
    ("NIST AI RMF 1.0", "Measure", "gate metrics (statistic, threshold, p-value or interval, minimum "
     "detectable effect) and drift detector statistics"),
    ("NIST AI RMF 1.0", "Manage", "promotions, rollbacks, freezes, alerts and their guards"),
]


@cache
def _font_faces() -> str:
    """@font-face rules with the DejaVu fonts inline (no network; WeasyPrint embeds the glyphs it uses)."""
    rules = []
    for family, file, weight in FONTS:
        path = FONT_DIR / file
        if path.exists():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            rules.append(f"@font-face{{font-family:{family};font-weight:{weight};"
                         f"src:url(data:font/ttf;base64,{data}) format('truetype')}}")
    return "\n".join(rules)


def fact(f: Fact | Any) -> Markup:
    if isinstance(f, Fact):
        return Markup('<span class="fact" data-fact="{}">{}</span>').format(f.id, f.text)
    return escape(display(f) if not isinstance(f, str) else f)


def metric_cell(suite: str, index: int, name: str, value: Any) -> Markup:
    return Markup('<td data-metric="{}|{}|{}">{}</td>').format(suite, index, name, format_number(value))


def _ts(value: datetime | None) -> str:
    return "—" if value is None else format_ts(value)[:19].replace("T", " ") + " UTC"


def chart_svg(series: Series, *, since: datetime, until: datetime, marks: list[tuple[datetime, str, str]]) -> Markup:
    """The detector's statistic (line) against its threshold (dashed) over the period; drift windows red,
    ``marks`` (time, colour, label) as vertical lines: alerts, acknowledgements, rollbacks."""
    w, h, pad_l, pad_r, pad_t, pad_b = 680, 170, 48, 10, 10, 22
    span = max((until - since).total_seconds(), 1.0)
    pts = [(t, s, th, v) for _, t, s, th, v in series.points]
    ys = [y for _, s, th, _ in pts for y in (s, th) if isinstance(y, int | float)]
    top = max(ys) * 1.1 if ys and max(ys) > 0 else 1.0
    bottom = min(0.0, min(ys)) if ys else 0.0
    rng = (top - bottom) or 1.0

    def x(t: datetime) -> float:
        return pad_l + (w - pad_l - pad_r) * min(max((t - since).total_seconds() / span, 0.0), 1.0)

    def y(v: float) -> float:
        return pad_t + (h - pad_t - pad_b) * (1 - (v - bottom) / rng)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
           f'role="img" aria-label="{escape(series.detector)} statistic against threshold">',
           f'<rect x="{pad_l}" y="{pad_t}" width="{w - pad_l - pad_r}" height="{h - pad_t - pad_b}" fill="#fafafa" '
           'stroke="#999" stroke-width="0.5"/>']
    for t, colour, label in marks:
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{pad_t}" y2="{h - pad_b}" stroke="{colour}" '
                   f'stroke-width="1"><title>{escape(label)}</title></line>')
    stat = " ".join(f"{x(t):.1f},{y(s):.1f}" for t, s, _, _ in pts if isinstance(s, int | float))
    thr = " ".join(f"{x(t):.1f},{y(th):.1f}" for t, _, th, _ in pts if isinstance(th, int | float))
    if thr:
        out.append(f'<polyline points="{thr}" fill="none" stroke="#c62828" stroke-dasharray="4 3" stroke-width="1"/>')
    if stat:
        out.append(f'<polyline points="{stat}" fill="none" stroke="#1565c0" stroke-width="1.2"/>')
    for t, s, _, v in pts:
        if v == "drift" and isinstance(s, int | float):
            out.append(f'<circle cx="{x(t):.1f}" cy="{y(s):.1f}" r="2.5" fill="#c62828"/>')
    out.append(f'<text x="{pad_l - 4}" y="{y(top) + 8:.1f}" text-anchor="end" font-size="9">{format_number(top)}'
               f'</text><text x="{pad_l - 4}" y="{y(bottom):.1f}" text-anchor="end" font-size="9">'
               f'{format_number(bottom)}</text>')
    out.append(f'<text x="{pad_l}" y="{h - 6}" font-size="9">{_ts(since)}</text>'
               f'<text x="{w - pad_r}" y="{h - 6}" font-size="9" text-anchor="end">{_ts(until)}</text></svg>')
    return Markup("".join(out))


def _marks(d: DeploymentDossier) -> list[tuple[datetime, str, str]]:
    marks = []
    for a in d.alerts:
        if isinstance(a["raised"], Fact):
            marks.append((datetime.fromisoformat(a["raised"].value), "#ef6c00", f"alert {a['id']} raised"))
        if isinstance(a["ack"], Fact):
            marks.append((datetime.fromisoformat(d.citations.entries[a["ack"].seq]["ts"]), "#2e7d32",
                          f"alert {a['id']} acknowledged"))
    for ch in d.changes:
        if "rollback" in ch.kind:
            marks.append((datetime.fromisoformat(ch.at.value), "#6a1b9a", f"{ch.kind} (generation "
                          f"{ch.generation.text if ch.generation else '?'})"))
    return marks


@cache
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(fact=fact, metric_cell=metric_cell, ts=_ts, num=format_number, obligations=OBLIGATIONS)
    env.filters["num"] = format_number
    env.filters["nums"] = _numbers
    return env


def _numbers(value: Any) -> str:
    """A mapping of numbers as a person reads it ("pii 8.5e-05, format 1"); anything else as `format_number`."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_numbers(v)}" for k, v in sorted(value.items()))
    return format_number(value)


def evidence_json(bundle: dict[str, Any]) -> str:
    return json.dumps(bundle, ensure_ascii=False, separators=(",", ":"))


def _script_safe(text: str) -> Markup:
    # inside <script>, "</" could close the element and "<!--" open a comment: JSON allows "\/"
    return Markup(text.replace("</", "<\\/").replace("<!--", "<\\u0021--"))


def to_html(dossier: VersionDossier | DeploymentDossier, bundle: dict[str, Any], *, for_pdf: bool = False) -> str:
    """The dossier as one HTML document; ``for_pdf`` leaves the evidence block out (it is attached instead)."""
    lines = bundle["audit_export"].split("\n")
    ctx: dict[str, Any] = {"d": dossier, "bundle": bundle, "m": json.loads(lines[0]),
                           "cp": json.loads(next(ln for ln in reversed(lines) if ln)), "fonts": Markup(_font_faces()),
                           "evidence": None if for_pdf else _script_safe(evidence_json(bundle)),
                           "evidence_id": EVIDENCE_ID, "evidence_name": EVIDENCE_NAME}
    if isinstance(dossier, DeploymentDossier):
        marks = _marks(dossier)
        ctx["charts"] = [(s, chart_svg(s, since=dossier.since, until=dossier.until, marks=marks))
                         for s in dossier.series]
    return _env().get_template(f"{dossier.kind}.html").render(**ctx)


def to_pdf(html: str, bundle: dict[str, Any]) -> bytes:
    """WeasyPrint's PDF of ``html`` with the evidence bundle attached (fonts embedded, no network)."""
    from weasyprint import HTML, Attachment, URLFetcher

    no_network = URLFetcher(allowed_protocols={"data"})  # the fonts are data: URLs; nothing else loads
    attachment = Attachment(string=evidence_json(bundle), name=EVIDENCE_NAME, base_url=None,
                            description="Cited audit entries (signed export), the facts read from them, "
                                        "the gate evidence")
    pdf = HTML(string=html, base_url=None, url_fetcher=no_network).write_pdf(attachments=[attachment])
    assert pdf is not None
    return bytes(pdf)
