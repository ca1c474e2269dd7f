"""The PDF report of a workspace (core.store.workspace): its results for the models picked, with the folder's
stored verdicts and operating points, written to a temporary file and published atomically, with the one audit
entry of an export. With a core.store.cases.CaseView the report has a case summary and lists each photo under its
case."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from core.progress import CancelToken, ProgressFn


def export_pdf(ws: Any, out: str | os.PathLike, keys: Sequence[str] | None = None, cards: Sequence[Any] = (),
               gradcam: dict | None = None, progress: ProgressFn | None = None,
               cancel: CancelToken | None = None, cases: Any = None) -> Path:
    """Write the PDF report (core.reports.write_pdf_report) of workspace `ws` for `keys` (default: every model
    with results); atomic; one audit entry."""
    import core.reports
    from core.models.card_schema import card_problem
    from core.models.releases import bundle_origin
    from core.store.outputs import publish
    from core.store.workspace import card_key, write_error

    keys = ws.ordered(keys) if keys is not None else ws.model_keys()
    out = Path(out)
    records = ws.records(keys)
    by_key = {card_key(c): c for c in cards}
    by_key.update({k: c for k, c in ws.cards.items() if k not in by_key})
    # Only cards that match the one card schema reach the report: a malformed extra never crashes it.
    use_cards = [by_key[k] for k in keys if k in by_key and not card_problem(by_key[k])]
    reviews = ws.reviews if ws.session is not None else None
    ws.check_output(out, "report")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial.pdf", dir=out.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error("report", out, exc) from None
    try:
        origins = {card_key(c): bundle_origin(c) for c in use_cards}
        core.reports.write_pdf_report(records, tmp, folder=str(ws.folder), cards=use_cards, reviews=reviews,
                                      gradcam=gradcam or None, progress=progress, cancel=cancel, origins=origins,
                                      shift=ws.deciding_verdict(keys), points=ws.points(keys), cases=cases,
                                      shifts={k: ws.verdict_for(k) for k in keys})
        publish(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error("report", out, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    ws.log_export("pdf", out, keys)
    return out


def export_case_pdf(ws: Any, out: str | os.PathLike, view: Any, cards: Sequence[Any] = (),
                    gradcam: dict | None = None, progress: Any = None, cancel: Any = None) -> Path:
    """export_pdf of the view's models with the case summary and the photos under their cases."""
    return export_pdf(ws, out, view.keys, cards=cards, gradcam=gradcam, progress=progress, cancel=cancel, cases=view)
