"""A table row of a PDF dossier never splits across pages.

The PDF verifier finds each fact in the page text with the whitespace taken out. A row
that a page break cuts in two interleaves its cells' halves with the other cells' (and
with the page's footer) in the extracted text, so a true fact "does not show". The demo
hit it once: the rollback's actor and reason in the promotions table, cut by a page break.
Rendered here with the dossier's own stylesheet: many tall rows, so that without the rule
some row is certain to meet a page boundary.
"""

from __future__ import annotations

import io
import re

import weasyprint
from pypdf import PdfReader

from governance.dossier.render import _env


def _stylesheet() -> str:
    source = _env().loader.get_source(_env(), "_base.html")[0]  # type: ignore[union-attr]
    style = re.search(r"<style>(.*?)</style>", source, re.S)
    assert style is not None
    return style.group(1).replace("{{ fonts }}", "").replace("{{ d.subject }}", "test")


def test_no_fact_is_cut_by_a_page_break() -> None:
    # the promotions table of a version dossier: seven columns, a narrow "by", a long reason
    reasons = [f"automatic rollback on drift: policy_violations statistic {i}.83 vs threshold 35.26 (n=8), "
               f"{i % 3 + 1} drifting window(s) in a row" for i in range(60)]
    actors = [f"system:monitor/policy_violations/{i:02d}" for i in range(60)]
    rows = "".join(
        f"<tr><td>auto_rollback</td><td>support-bot</td><td><span class='fact'>2026-12-08T00:00:{i:02d}.5446Z</span>"
        f"</td><td><span class='fact'>{actors[i]}</span></td><td>5</td><td>1 / 2</td>"
        f"<td><span class='fact'>{reasons[i]}</span></td></tr>" for i in range(60))
    html = (f"<html><head><style>{_stylesheet()}</style></head><body><table><tr><th>what</th><th>deployment</th>"
            f"<th>when</th><th>by</th><th>generation</th><th>to / from version</th><th>reason</th></tr>{rows}"
            "</table></body></html>")
    facts = actors + reasons
    pdf = weasyprint.HTML(string=html).write_pdf()
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 3  # the table crosses page boundaries
    flat = re.sub(r"\s+", "", "".join(p.extract_text() or "" for p in reader.pages))
    missing = [f for f in facts if re.sub(r"\s+", "", f) not in flat]
    assert not missing, f"{len(missing)} of {len(facts)} facts cut by a page break, e.g. {missing[0]!r}"
