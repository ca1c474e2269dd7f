"""The wizard's "Adapt to this site's reviewed photos" path and "Review next" (Ctrl+J).

Adapting: core.learning.adapt's one-line refusal below MIN_PER_CLASS (Next disabled), Next enabled when there are
enough, a bundle without embeddings named as such, a saved adapted bundle in the user's model folder, an
existing folder refused. Review next: core.learning.adapt's default order (the median score first, then the widest gaps
in the score range), reviewed photos skipped, and "nothing left" said when all are reviewed.
Tiny generated data: the base bundle of tests/test_adapt.py (embeddings = mean colour features).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtGui import QKeySequence  # noqa: E402
from PySide6.QtWidgets import QWizard  # noqa: E402

TIMEOUT_MS = 180_000


def _items(root: Path) -> list[tuple[str, str]]:
    return [(str(p), "mpox" if p.parent.name == "mpox" else "not_mpox") for p in sorted(root.rglob("*.png"))]


def _wizard(qtbot, bundles, items, models_dir=None):
    from desktop_app.retrain.wizard import RetrainWizard

    w = RetrainWizard(None, models_dir=models_dir, current=[], session_items=items, bundles=bundles)
    w.n_bootstrap = 50
    qtbot.addWidget(w)
    w.show()
    return w


@pytest.fixture
def base(tmp_path):
    from core.models.bundle import read_card
    from tests.test_adapt import make_base_bundle

    path = make_base_bundle(tmp_path / "models" / "base")
    return path, read_card(path)


def test_too_few_reviewed_photos_are_refused_and_enough_enable_next(qtbot, tmp_path, base):
    from core.learning.adapt import count_problem
    from tests.test_adapt import site_folder

    few = _items(site_folder(tmp_path / "few", 6, 12))
    w = _wizard(qtbot, [base], few, tmp_path / "user")
    w.data_page.use_adapt()
    assert w.data_page.isComplete()
    w.next()
    assert w.currentPage() is w.adapt_page
    expected = count_problem([1] * 6 + [0] * 12)
    assert "4 more mpox" in expected
    assert not w.adapt_page.isComplete() and not w.button(QWizard.WizardButton.NextButton).isEnabled()
    assert expected in w.adapt_page.problem_label.text()
    w.host.shutdown()

    enough = _items(site_folder(tmp_path / "enough", 10, 12))
    w2 = _wizard(qtbot, [base], enough, tmp_path / "user")
    w2.data_page.use_adapt()
    w2.next()
    assert w2.adapt_page.isComplete() and w2.button(QWizard.WizardButton.NextButton).isEnabled()
    assert w2.adapt_page.problem_label.text() == ""
    assert "site figures are rough" in w2.adapt_page.warning_label.text()   # fewer than ROUGH_BELOW
    w2.host.shutdown()


def test_a_bundle_without_embeddings_is_named_and_cannot_be_adapted(qtbot, tmp_path, base, tiny_bundle):
    from core.models.bundle import read_card
    from tests.test_adapt import site_folder

    old = tiny_bundle("old")
    items = _items(site_folder(tmp_path / "site", 10, 10))
    w = _wizard(qtbot, [(old, read_card(old)), base], items, tmp_path / "user")
    w.data_page.use_adapt()
    w.next()
    assert w.adapt_page.chosen()[0] == base[0]           # the first bundle that can be adapted is preselected
    w.adapt_page.choose(old)
    assert not w.adapt_page.isComplete()
    assert "no training embeddings" in w.adapt_page.problem_label.text()
    assert "no embeddings.npz" in w.adapt_page.base_note.text()
    w.host.shutdown()


def test_adapt_path_compares_and_saves_into_the_user_models_folder(qtbot, tmp_path, base):
    from core.models.bundle import load_bundle, user_models_dir
    from tests.test_adapt import site_folder

    items = _items(site_folder(tmp_path / "site", 12, 12))
    w = _wizard(qtbot, [base], items)                  # no folder given: the user's model folder
    w.data_page.use_adapt()
    w.next()
    with qtbot.waitSignal(w.adapt_finished, timeout=TIMEOUT_MS) as done:
        w.next()
    assert done.args == ["adapted"], w.adapt_run_page.message.text()
    w.next()
    assert w.currentPage() is w.adapt_compare_page
    page = w.adapt_compare_page
    # Old and new on the same site photos, with intervals, and a paired verdict.
    assert page.result is not None, page.message.text()
    assert page.verdict is not None, page.verdict_label.text()
    assert page.verdict.n == 24
    assert page.verdict.word in ("better", "worse", "not measurably different")
    assert "24 site photos" in page.verdict_label.text()
    assert "(" in page.table.item(0, 0).text() and "(" in page.table.item(0, 1).text()
    rep = page.result.report
    assert page.table.item(0, 0).text().startswith(f"{rep['site_cv']['roc_auc']:.3f}")
    assert page.table.item(0, 1).text().startswith(f"{rep['site_parent']['roc_auc']:.3f}")
    # Forgetting on the base model's own validation photos is called out, not left in the small print.
    from desktop_app.retrain.adapt_pages import forgets

    assert page.forgets == forgets(rep["base_val_before"], rep["base_val_after"])
    assert ("worse on the original's own validation photos" in page.base_label.text()) == page.forgets
    assert forgets({"roc_auc": 0.95}, {"ci95": {"roc_auc": [0.05, 0.61]}})
    assert not forgets({"roc_auc": 0.95}, {"ci95": {"roc_auc": [0.80, 0.97]}})
    w.next()
    assert w.currentPage() is w.save_page
    target = w.target_dir()
    assert target.parent == user_models_dir()
    assert not w.save_page.save_button.isEnabled()     # Save only after Keep
    w.save_page.save_choice.setChecked(True)
    target.mkdir(parents=True)                          # an existing folder is never written over
    w.save_page.save()
    assert "already exists" in w.save_page.message.text() and not any(target.iterdir())
    target.rmdir()
    with qtbot.waitSignal(w.bundle_saved, timeout=TIMEOUT_MS) as saved:
        w.save_page.save()
    out = Path(saved.args[0])
    assert out == target.resolve() or out == target
    adapted = load_bundle(out)
    assert adapted.card.parent["name"] == "base" and "embeddings.npz" in adapted.card.files
    assert not w.has_unsaved_model()
    w.host.shutdown()


def test_review_next_puts_the_highest_scored_photo_not_called_mpox_first():
    from desktop_app.review.next import pick_next

    def rec(p):
        return SimpleNamespace(status="ok", p_mpox=p, threshold=0.5, prediction="mpox" if p >= 0.5 else "not_mpox")

    order = [f"p{i}" for i in range(9)]
    probs = [0.05, 0.49, 0.47, 0.9, 0.2, 0.1, 0.95, 0.15, 0.46]
    records = {p: rec(x) for p, x in zip(order, probs)}
    assert pick_next(order, records, set()).path == "p1"          # 0.49: the likeliest missed mpox
    assert pick_next(order, records, {"p1"}).path == "p2"         # then 0.47, 0.46 ... down the scores
    assert pick_next(order, records, {"p1", "p2", "p8"}).path == "p4"
    # Every photo not called mpox reviewed: then those called mpox, highest first.
    assert pick_next(order, records, {"p0", "p1", "p2", "p4", "p5", "p7", "p8"}).path == "p6"
    everything = pick_next(order, records, set(order))
    assert everything.path is None and everything.candidates == 0


def test_review_next_selects_the_unreviewed_photo_not_called_mpox_with_the_highest_score(qtbot, tmp_path):
    from desktop_app.review.shortcuts import shortcuts_html
    from tests.gui_fixtures import window_with_rows

    window, _folder, recs = window_with_rows(qtbot, tmp_path)
    card = SimpleNamespace(key=recs[0].model_key, threshold=0.5, display_name="m 1.0.0")
    window.selected_cards = lambda: [card]
    assert window.act_review_next.shortcut() == QKeySequence("Ctrl+J") and "Ctrl+J" in shortcuts_html()
    edit = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Edit")
    assert window.act_review_next in edit.actions()

    scored = [r for r in recs if r.status == "ok"]
    not_called = [r for r in scored if r.prediction != "mpox"]
    first = max(not_called or scored, key=lambda r: r.p_mpox)
    window.act_review_next.trigger()
    assert window.results.current_source_row() == window.model.row_of(first.path)
    assert "Review next" in window.message.text()

    window.review(window.model.row_of(first.path), "mpox")
    picked = window.review_next()
    assert picked is not None and picked != first.path and picked in {r.path for r in scored}
    # Label every remaining scored photo: nothing left, and it says so (the broken file was never scored).
    for r in scored:
        if r.path not in window.workspace.reviews:
            window.review(window.model.row_of(r.path), "not_mpox")
    assert window.review_next() is None
    assert "Nothing left to review" in window.message.text() and "not scored" in window.message.text()


def test_cancelling_an_adaptation_saves_nothing(qtbot, tmp_path, base):
    from tests.test_adapt import site_folder

    items = _items(site_folder(tmp_path / "site", 10, 10))
    user = tmp_path / "user"
    w = _wizard(qtbot, [base], items, user)
    w.data_page.use_adapt()
    w.next()
    with qtbot.waitSignal(w.adapt_finished, timeout=TIMEOUT_MS) as done:
        w.next()
        w.adapt_run_page.cancel()
    assert done.args == ["cancelled"]
    assert "nothing was saved" in w.adapt_run_page.message.text()
    assert not w.adapt_run_page.isComplete() and not w.has_unsaved_model()
    assert not user.exists() or not any(user.iterdir())
    w.host.shutdown()


def test_the_window_gives_the_wizard_its_reviews_without_unsure(qtbot, tmp_path):
    from tests.gui_fixtures import window_with_rows

    window, _folder, recs = window_with_rows(qtbot, tmp_path)
    scored = [r for r in recs if r.status == "ok"]
    for r, label in zip(scored, ["mpox", "not_mpox", "unsure"]):
        window.review(window.model.row_of(r.path), label)
    w = window.open_retrain_wizard()
    assert sorted(label for _p, label in w.session_items) == ["mpox", "not_mpox"]
    w.data_page.use_adapt()
    w.next()
    assert "1 mpox and 1 not mpox reviewed" in w.adapt_page.counts.text()
    assert not w.adapt_page.isComplete()     # no bundles here, and far too few photos
    w.host.shutdown()
    w.close()


def test_adapts_refusal_shows_on_the_run_page(qtbot, tmp_path, base):
    import shutil

    from tests.test_adapt import site_folder

    site = site_folder(tmp_path / "site", 12, 12)
    twin = sorted((site / "mpox").glob("*.png"))[0]
    shutil.copyfile(twin, site / "other" / "copy.png")          # one content under both labels
    w = _wizard(qtbot, [base], _items(site), tmp_path / "user")
    w.data_page.use_adapt()
    w.next()
    with qtbot.waitSignal(w.adapt_finished, timeout=TIMEOUT_MS) as done:
        w.next()
    assert done.args == ["failed"]
    page = w.adapt_run_page
    text = page.message.text()
    assert "Adapting stopped" in text and "the same photo" in text and "copy.png" in text
    # Issue 24: no live control after a failure: Cancel off, the bar not busy.
    assert not page.cancel_button.isEnabled() and page.progress.maximum() > 0
    w.host.shutdown()


def test_label_next_walks_the_folders_labelling_sample_and_passes_over_unsure():
    from core.triage.labelling import folder_seed, labelling_sample
    from desktop_app.review.next import pick_for_labelling

    order = [f"/f/p{i}.jpg" for i in range(30)]
    records = {p: SimpleNamespace(status="ok", p_mpox=0.5, file_sha256=f"{i:064x}") for i, p in enumerate(order)}
    sample = labelling_sample([records[p].file_sha256 for p in order], 12, folder_seed("/f"))
    first = pick_for_labelling(order, records, {}, "/f", 12)
    assert first.path == order[sample.order[0]] and first.position == 1 and first.size == 12 and first.left == 12
    reviews = {first.path: {"label": "unsure"}}
    second = pick_for_labelling(order, records, reviews, "/f", 12)
    assert second.path not in (None, first.path)
    # Labelled as it asks, one class short: the sample grows and says why.
    reviews = {}
    while (pick := pick_for_labelling(order, records, reviews, "/f", 12)).path is not None:
        reviews[pick.path] = {"label": "not_mpox" if len(reviews) % 6 else "mpox"}
    assert pick.size > 12 and "mpox" in pick.reason


def test_label_next_selects_a_photo_of_the_labelling_sample(qtbot, tmp_path):
    from tests.gui_fixtures import window_with_rows

    window, _folder, recs = window_with_rows(qtbot, tmp_path)
    for i, r in enumerate(recs):
        r.file_sha256 = None if r.status != "ok" else f"{i:064x}"
    card = SimpleNamespace(key=recs[0].model_key, threshold=0.5, display_name="m 1.0.0", training_data={})
    window.selected_cards = lambda: [card]
    edit = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Edit")
    assert window.act_label_next in edit.actions()
    path = window.label_next()
    assert path in {r.path for r in recs if r.status == "ok"}
    assert window.results.current_source_row() == window.model.row_of(path)
    assert "labelling sample" in window.message.text()
