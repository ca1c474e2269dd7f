"""Model cards in words: one page per model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.platypus import KeepInFrame, PageBreak, Paragraph, Spacer, Table

from core.records import LABEL_MPOX
from core.reports.context import ReportContext
from core.names import readable_key, readable_value
from core.reports.layout import FRAME_W, PAGE_FRAME_H, _cell, _ci_words, _grid_style, _num, _pct1, _styles
from core.reports.rows import _origin_text


def model_card_section(ctx: ReportContext) -> list[Any]:
    """Each model card on one page, in words; the full card is File > Export model card in the app or
    `mpox-triage models --card NAME` (JSON), so no field is printed raw here."""
    st = _styles()
    if not ctx.cards:
        return [PageBreak(), Paragraph("Model cards", st["h1"]),
                Paragraph("No model card was supplied with these results.", st["body"])]
    out: list[Any] = []
    for c in ctx.cards:
        page: list[Any] = [Paragraph(f"Model card: {escape(c.name)} {escape(c.version)}", st["h1"])]
        rows = [[Paragraph(f"<b>{escape(a)}</b>", st["cell"]), Paragraph(b, st["cell"])]
                for a, b in card_summary(c, ctx.origin_of(c), ctx.scope_limit)]
        t = Table(rows, colWidths=[92, FRAME_W - 92], hAlign="LEFT")
        t.setStyle(_grid_style([("BACKGROUND", (0, 0), (-1, 0), colors.white),
                                ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#dddddd")),
                                ("VALIGN", (0, 0), (-1, -1), "TOP")]))
        page.append(t)
        headline = _headline_metrics(c.metrics)
        if headline:
            page.append(Paragraph("Figures from the model card", st["h2"]))
            first = FRAME_W - 6 * 56
            mt = Table([list(_HEADLINE_HEADER)] + [[_cell(r[0])] + r[1:] for r in headline], hAlign="LEFT",
                       colWidths=[first] + [56] * 6, repeatRows=1)
            mt.setStyle(_grid_style([("ALIGN", (1, 0), (-1, -1), "RIGHT"), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
            page.append(mt)
            if any(r[0].startswith("Transfer") for r in headline):
                page.append(Paragraph(
                    "Transfer rows: a head trained on one collection only, its threshold set on that collection, "
                    "scored on another collection's photos: what to expect on photos from elsewhere.",
                    st["small"]))
        page += [Spacer(1, 4), Paragraph(escape(FIGURES_NOTE), st["small"]),
                 Paragraph(escape(FULL_CARD_NOTE.format(name=c.name)), st["small"])]
        # One page per card whatever its length: a long card is shrunk to fit rather than spill over.
        out += [PageBreak(), KeepInFrame(FRAME_W, PAGE_FRAME_H, page, mode="shrink")]
    return out


FULL_CARD_NOTE = ("The full model card (every field, as JSON) is in the app under File > Export model card, or "
                  "from the command line: mpox-triage models --card {name}.")


_ARCH_NAMES = {"combined": "Combined (MobileNetV2 and Xception features)", "mobilenetv2": "MobileNetV2",
               "xception": "Xception", "efficientnetb0": "EfficientNet-B0",
               "resnet50": "ResNet-50", "densenet121": "DenseNet-121"}


_SET_NAMES = {"val": "Validation", "test": "Test", "train": "Training"}

_HEADLINE_HEADER = ("Photos", "n", "accuracy", "sensitivity", "specificity", "ROC-AUC", "ECE")
_HEADLINE_KEYS = ("n", "accuracy", "sensitivity", "specificity", "roc_auc", "ece")
# An adapted card's evaluated sets (core.learning.adapt writes them), by what they are.
_ADAPT_SET_NAMES = {"site_cv": "Site photos, cross-validated", "site_parent": "Site photos, original model",
                    "base_val_before": "Original's validation photos, before",
                    "base_val_after": "Original's validation photos, after",
                    "parent_metrics": "Original model, its own validation"}


@dataclass
class Adaptation:
    """What an adapted model's card records about the site photos it was adapted on (core.learning.adapt)."""

    photos: int
    mpox: int
    not_mpox: int
    source: str                  # where the labels came from, in words (no machine path)
    date: str                    # YYYY-MM-DD the model was adapted
    parent: str                  # "name version" of the model it was adapted from
    site_cv: dict                # cross-validated figures on those photos (each scored by a head that never saw it)
    base_train: int | None = None
    base_val: int | None = None

    def in_words(self) -> str:
        return (f"{self.photos:,} reviewed photos of one site ({self.mpox:,} mpox, {self.not_mpox:,} not mpox; "
                f"{self.source}), adapted {self.date} from {self.parent}")


def adaptation_of(card: Any) -> Adaptation | None:
    """The site photos an adapted model learned from (its card's training_data.site and metrics.site_cv), or None
    for a model that was not adapted."""
    td = card.training_data if isinstance(getattr(card, "training_data", None), dict) else {}
    metrics = card.metrics if isinstance(getattr(card, "metrics", None), dict) else {}
    site, cv = td.get("site"), metrics.get("site_cv")
    if not isinstance(site, dict) or not isinstance(cv, dict) or not _num(site.get("photos")):
        return None
    raw = str(site.get("from") or "")
    if not raw or raw.startswith("session"):
        source = "labels from a review session"
    else:   # a labelled folder: its name only, never the machine's path
        source = f"labels from the folder {os.path.basename(os.path.normpath(raw)) or raw}"
    parent = card.parent if isinstance(getattr(card, "parent", None), dict) else {}
    base = td.get("base") if isinstance(td.get("base"), dict) else {}
    n = int(site["photos"])
    mpox = int(site["mpox"]) if _num(site.get("mpox")) else int(cv.get("n_mpox") or 0)
    return Adaptation(photos=n, mpox=mpox, not_mpox=int(site["not_mpox"]) if _num(site.get("not_mpox")) else n - mpox,
                      source=source, date=str(getattr(card, "created", "") or "")[:10] or "on an unrecorded date",
                      parent=f"{parent.get('name', '?')} {parent.get('version', '')}".strip(), site_cv=cv,
                      base_train=int(base["train"]) if _num(base.get("train")) else None,
                      base_val=int(base["val"]) if _num(base.get("val")) else None)


def metrics_in_words(m: dict, kind: str = "") -> str:
    """One evaluated set of a card as a sentence: what was found, missed and falsely alarmed, with intervals."""
    ci = m.get("ci95") if isinstance(m.get("ci95"), dict) else {}
    conf = m.get("confusion") if isinstance(m.get("confusion"), dict) else {}
    bits = []
    if _num(m.get("sensitivity")):
        s = f"sensitivity {_pct1(m['sensitivity'])}{_ci_words(ci.get('sensitivity'))}"
        if all(_num(conf.get(k)) for k in ("tp", "fn")):
            s = f"found {conf['tp']:,} of {conf['tp'] + conf['fn']:,} mpox photos ({s})"
        bits.append(s)
    if _num(m.get("specificity")):
        s = f"specificity {_pct1(m['specificity'])}{_ci_words(ci.get('specificity'))}"
        if all(_num(conf.get(k)) for k in ("fp", "tn")):
            s = f"{conf['fp']:,} false alarms among {conf['fp'] + conf['tn']:,} other photos ({s})"
        bits.append(s)
    if _num(m.get("roc_auc")):
        bits.append(f"ROC-AUC {m['roc_auc']:.3f}{_ci_words(ci.get('roc_auc'), percent=False)}")
    bits += triage_in_words(m.get("triage"))
    head = ""
    if _num(m.get("n")):
        head = f"{int(m['n']):,} {kind + ' ' if kind else ''}photos"
        if _num(m.get("n_mpox")):
            head += f" ({int(m['n_mpox']):,} mpox)"
        head += ": "
    return head + ("; ".join(bits) if bits else "no figures recorded") + "."


def triage_in_words(t: Any) -> list[str]:
    """Triage sensitivity and specificity (core.models.operating_point) as phrases; none when not recorded."""
    from core.models.operating_point import TRIAGE_MEANING

    if not isinstance(t, dict):
        return []
    out = []
    for key, words in TRIAGE_MEANING.items():
        if _num(t.get(key)):
            out.append(f"{key.replace('_', ' ')} {_pct1(t[key])}{_ci_words(t.get(key + '_ci95'))} ({words})")
    return out


def _points_in_words(card: Any) -> str:
    """The card's operating points (release 1.3.0 on) and what they gave out of collection, in words."""
    extra = card.extra if isinstance(card.extra, dict) else {}
    ops = extra.get("operating_points")
    if not isinstance(ops, dict):
        return ""
    parts = []
    default = ops.get("default") if isinstance(ops.get("default"), dict) else {}
    loco = (default.get("triage") or {}).get("loco") if isinstance(default.get("triage"), dict) else None
    if isinstance(loco, dict):
        parts.append("On photos from a collection the model did not learn from (leave-one-collection-out): "
                     + "; ".join(triage_in_words(loco)) + ".")
    ooc = ops.get("out_of_collection") if isinstance(ops.get("out_of_collection"), dict) else {}
    band = ooc.get("uncertain_band")
    if isinstance(band, list) and len(band) == 2 and _num(band[0]):
        text = (f"When a folder's shift alarm fires, photos with p(mpox) of at least {float(band[0]):.2f} go to review")
        if _num(ooc.get("review_share")):
            text += f", and so does the top {_pct1(ooc['review_share'])} of that folder by score"
        parts.append(text + ".")
    return " ".join(parts)


def _adapted_training_in_words(a: Adaptation) -> str:
    base = ""
    if a.base_train is not None:
        base = (f" On top of {a.parent}'s own {a.base_train:,} training embeddings"
                + (f" ({a.base_val:,} of its validation photos kept apart to check it forgot nothing)"
                   if a.base_val is not None else "") + ".")
    return f"Adapted on {a.in_words()}.{base}"


def _training_in_words(td: Any, card: Any = None) -> str:
    adapted = adaptation_of(card) if card is not None else None
    if adapted is not None:
        return _adapted_training_in_words(adapted)
    if not isinstance(td, dict) or not td:
        return "Not recorded in the model card."
    parts = []
    if _num(td.get("n_images")):
        text = f"{int(td['n_images']):,} photos"
        if _num(td.get("n_groups")):
            text += f" in {int(td['n_groups']):,} independent groups (a group's photos stay in one split)"
        parts.append(text)
    sources = td.get("sources")
    if isinstance(sources, dict):
        names = sorted({str(k).split("/")[0] for split in sources.values() if isinstance(split, dict) for k in split})
        if names:
            parts.append("from the " + ", ".join(names) + " collection" + ("s" if len(names) > 1 else ""))
    counts = td.get("counts")
    if isinstance(counts, dict):
        splits = []
        for key in ("train", "val", "test"):
            c = counts.get(key)
            if isinstance(c, dict) and all(_num(v) for v in c.values()):
                total = int(sum(c.values()))
                splits.append(f"{_SET_NAMES[key].lower()} {total:,} ({int(c.get(LABEL_MPOX, 0)):,} mpox)")
        if splits:
            parts.append("split into " + ", ".join(splits))
    fine = td.get("fine_labels")
    if isinstance(fine, dict):
        names = sorted({str(k) for split in fine.values() if isinstance(split, dict) for k in split})
        if names:
            parts.append("conditions: " + ", ".join(n.replace("_", " ") for n in names))
    text = "; ".join(parts)
    if td.get("test_used_in_training") is False:
        text += ". The test photos were not used to train the model or to choose any of its settings"
    if not text:  # a card with other fields: say them in words rather than print nothing
        text = "; ".join(f"{readable_key(k)}: {readable_value(v, k)}" for k, v in td.items()
                         if not isinstance(v, dict))
    return (text + ".") if text else "Not recorded in the model card."


def card_summary(card: Any, origin: str | None = None, scope_limit: float | None = None) -> list[tuple[str, str]]:
    """(topic, text) pairs saying in words what the model is, what it learned from, how it decides and how
    well it did; texts are escaped for ReportLab paragraphs."""
    arch = _ARCH_NAMES.get(str(card.architecture).lower(), str(card.architecture))
    what = (f"{arch} image classifier ({card.input_size}×{card.input_size} pixel input) that gives each photo a "
            f"probability of mpox, p(mpox). Version {card.version}, created {str(card.created)[:10]}.")
    adapted = adaptation_of(card)
    if adapted is not None:
        what += f" Adapted from {adapted.parent} on {adapted.photos:,} reviewed photos of one site."
    if origin:
        what += f" Origin: {_origin_text(origin, card)}."
    elif card.parent and adapted is None:
        what += f" Fine-tuned from {card.parent.get('name', '?')} {card.parent.get('version', '')}.".replace(" .", ".")
    rows = [("What it is", escape(what)), ("Intended use", escape(card.intended_use)),
            ("Trained on", escape(_training_in_words(card.training_data, card)))]
    decide = f"Called mpox when p(mpox) is at least {float(card.threshold):.3f}."
    if card.threshold_reason:
        decide += f" Why: {card.threshold_reason}."
    rows.append(("Threshold and why", escape(decide)))
    flags = []
    if card.uncertain_band:
        lo, hi = card.uncertain_band
        flags.append(f"Uncertain when p(mpox) is between {lo:.2f} and {hi:.2f}.")
    limit = scope_limit if scope_limit is not None else card.ood_threshold
    if limit is not None:
        flags.append(f"Out of scope when the photo's out-of-scope score is above {float(limit):.3g}: the photo is "
                     "unlike the training photos, so its score should not be trusted.")
    points = _points_in_words(card)
    if points:
        flags.append(points)
    rows.append(("Flags for review", escape(" ".join(flags) if flags else "No flags set in this card.")))
    metrics = card.metrics if isinstance(card.metrics, dict) else {}
    if isinstance(metrics.get("val"), dict):
        rows.append(("Validation", escape(metrics_in_words(metrics["val"], "validation")
                                          + " The threshold and flags were chosen on these photos, so these "
                                            "figures flatter the model a little.")))
    if isinstance(metrics.get("out_of_fold"), dict):
        rows.append(("Out of fold", escape(metrics_in_words(metrics["out_of_fold"], "out-of-fold")
                                           + " Train and validation photos, each scored by heads that never saw "
                                             "it; the threshold and flags were chosen on these predictions.")))
    if isinstance(metrics.get("test"), dict):
        note = (" None of these photos was used to train the model or choose its settings."
                if (card.training_data or {}).get("test_used_in_training") is False else "")
        rows.append(("Test", escape(metrics_in_words(metrics["test"], "held-out test") + note)))
    transfer = metrics.get("transfer")
    if isinstance(transfer, dict):
        lines = []
        for direction, m in transfer.items():
            if not isinstance(m, dict):
                continue
            src, _, dst = str(direction).partition(" -> ")
            where = f"Trained on {src} only, tried on {dst}" if dst else str(direction)
            lines.append(escape(f"{where}: " + metrics_in_words(m)))
        if lines:
            rows.append(("Photos from elsewhere", "<br/>".join(lines) + escape(
                " Expect figures nearer these than the test figures on photos from a new site or camera.")))
    adapted = adaptation_of(card)
    if adapted is not None:
        rows.append(("On its site photos", escape(
            metrics_in_words(adapted.site_cv, "site") + " Cross-validated: each photo scored by a head that never "
            "saw it. The threshold was chosen on these same predictions, so its sensitivity here is optimistic. "
            "Its calls on the photos it was adapted on, scored by the final model, agree by construction and are "
            "no measure of it.")))
        if isinstance(metrics.get("site_parent"), dict):
            rows.append(("Original on them", escape(f"{adapted.parent}, unchanged: "
                                                    + metrics_in_words(metrics["site_parent"], "site"))))
        after = metrics.get("base_val_after")
        if isinstance(after, dict) and after:
            rows.append(("Forgetting check", escape(
                metrics_in_words(after, "validation") + f" These are {adapted.parent}'s own validation photos, "
                "not used in adapting.")))
    elif not any(k in metrics for k in ("val", "out_of_fold", "test")):
        rows.append(("Measured", escape("No validation or test figures in the model card.")))
    limits = [str(x) for x in card.limitations] or [
        "No limitations recorded in the model card; treat this as unknown, not as absent."]
    rows.append(("Limits", "<br/>".join("• " + escape(x) for x in limits)))
    return rows


FIGURES_NOTE = ("Sensitivity: the share of mpox photos the model calls mpox. Specificity: the share of other photos "
                "it calls not mpox. Triage sensitivity: the share of mpox photos called mpox or flagged for review; "
                "triage specificity: the share of other photos cleared: called not mpox with no flag. ROC-AUC: how "
                "well its scores rank mpox photos above others (1 is perfect, 0.5 is chance). Intervals are 95% "
                "bootstrap intervals over photos; photos of one patient are not independent, so the true "
                "uncertainty can be wider.")


def _headline_metrics(metrics: Any) -> list[list[str]]:
    """One row per evaluated set of a card (validation, test, each transfer direction) with its headline figures."""
    if not isinstance(metrics, dict):
        return []
    sets = [(_SET_NAMES.get(name) or _ADAPT_SET_NAMES.get(name) or readable_key(name), m)
            for name, m in metrics.items() if name != "transfer"]
    transfer = metrics.get("transfer")
    if isinstance(transfer, dict):
        sets += [(f"Transfer {k}", v) for k, v in transfer.items()]
    rows = []
    for name, m in sets:
        if isinstance(m, dict) and "roc_auc" in m:
            rows.append([name] + [readable_value(m[k], k) if k in m else "—" for k in _HEADLINE_KEYS])
    return rows
