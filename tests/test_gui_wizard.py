"""Retrain wizard, offscreen: tiny dataset -> split -> live curves -> new vs current -> saved bundle."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("core.learning.training", reason="core.learning.training (the training engine) is not built yet")

from desktop_app.retrain.chart import LineChart  # noqa: E402
from desktop_app.retrain.wizard import RetrainWizard, next_version  # noqa: E402

TIMEOUT_MS = 240_000


@pytest.fixture
def wizard(qtbot, tmp_path, tiny_bundle):
    from core.models.bundle import read_card

    current_dir = tiny_bundle("tiny")
    w = RetrainWizard(None, models_dir=tmp_path / "models", current=[(current_dir, read_card(current_dir))],
                      session_items=[])
    w.config_overrides = dict(base_model="tiny:32", epochs=3, batch_size=8, views=["identity"],
                              cache_dir=str(tmp_path / "cache"))
    w.n_bootstrap = 20
    # These tests check the flow on a tiny folder; the photo-count guardrails have their own tests
    # (tests/test_gui_wizard_guardrails.py).
    w.min_per_class, w.min_per_class_split = 1, 1
    qtbot.addWidget(w)
    w.show()
    yield w
    w.host.shutdown()


def test_wizard_trains_compares_and_saves_a_new_bundle_version(qtbot, wizard, image_folder, tmp_path):
    from types import SimpleNamespace

    from core.models.bundle import load_bundle, read_card
    from core.store.session import SessionStore

    folder = image_folder(n_per_class=12)
    worker = wizard.host.worker
    with qtbot.waitSignal(wizard.data_ready, timeout=TIMEOUT_MS):
        wizard.data_page.use_folder(str(folder))
    assert wizard.data_page.isComplete()
    counts = wizard.data_page.dataset.counts()
    assert sum(sum(c.values()) for c in counts.values()) == 24
    assert wizard.data_page.counts.rowCount() == len(counts)

    wizard.next()
    assert wizard.currentPage() is wizard.model_page
    assert wizard.model_page.name.text() == "tiny"
    assert wizard.model_page.version.text() == "0.0.2"  # a new version of the current model

    epochs = []
    worker.epoch.connect(epochs.append)
    with qtbot.waitSignal(wizard.training_finished, timeout=TIMEOUT_MS,
                          check_params_cb=lambda outcome: outcome == "trained"):
        wizard.next()
    assert wizard.train_page.isComplete()
    assert epochs, "live curves need at least one epoch log"
    assert len(wizard.train_page.loss.series["train"]) == len([e for e in epochs if e.phase == epochs[0].phase])

    with qtbot.waitSignal(wizard.comparison_ready, timeout=TIMEOUT_MS) as blocker:
        wizard.next()
    new, current = blocker.args
    assert new["n_scored"] == current["n_scored"]  # the same validation photos for both (with a call or not)
    assert new["model"]["version"] == "0.0.2" and current["model"]["version"] == "0.0.1"
    assert wizard.compare_page.table.item(0, 0).text() != "—"
    assert wizard.compare_page.table.item(0, 1).text() != "—"
    verdict = wizard.compare_page.verdict   # a plain paired verdict on the same validation photos
    assert verdict.word in ("better", "worse", "not measurably different") and verdict.n == new["n_scored"]
    assert verdict.word in wizard.compare_page.verdict_label.text()

    wizard.next()
    assert wizard.currentPage() is wizard.save_page and not wizard.save_page.isComplete()
    store = SessionStore.open(tmp_path / "session")
    wizard.main_window = SimpleNamespace(session=store)  # the app's open session
    assert not wizard.save_page.save_button.isEnabled()   # Save only after Keep is chosen
    wizard.save_page.save_choice.setChecked(True)
    assert wizard.save_page.save_button.isEnabled()
    with qtbot.waitSignal(wizard.bundle_saved, timeout=TIMEOUT_MS) as saved:
        wizard.save_page.save()
    path = saved.args[0]
    card = read_card(path)
    assert card.name == "tiny" and card.version == "0.0.2"
    assert card.parent["name"] == "tiny" and card.parent["version"] == "0.0.1"
    assert load_bundle(path).card.model_sha256 == card.model_sha256
    assert wizard.save_page.isComplete()
    retrains = [e for e in store.audit() if e["action"] == "retrain"]
    assert len(retrains) == 1
    details = retrains[0]["details"]
    assert details["model_sha256"] == card.model_sha256 and details["parent"]["version"] == "0.0.1"
    assert len(details["manifest_sha256"]) == 64 and details["manifest_sha256"] == card.training_data["manifest_sha256"]
    store.close()


def test_wizard_training_can_be_cancelled_and_saves_nothing(qtbot, wizard, image_folder, tmp_path):
    folder = image_folder(n_per_class=12)
    worker = wizard.host.worker
    with qtbot.waitSignal(wizard.data_ready, timeout=TIMEOUT_MS):
        wizard.data_page.use_folder(str(folder))
    wizard.next()
    # Cancel from the first progress report onwards: deterministic, whatever the machine's speed.
    worker.progress.connect(lambda *_: wizard.train_page.cancel())
    with qtbot.waitSignal(wizard.training_finished, timeout=TIMEOUT_MS) as outcome:
        wizard.next()
    assert outcome.args == ["cancelled"]
    assert not wizard.train_page.isComplete()
    assert "cancelled" in wizard.train_page.message.text().lower()
    assert not (tmp_path / "models" / "tiny-0.0.2").exists()


def test_data_page_refuses_a_split_without_both_classes(qtbot, wizard, image_folder):
    folder = image_folder(n_per_class=3, classes=("mpox",))
    with qtbot.waitSignal(wizard.data_ready, timeout=TIMEOUT_MS):
        wizard.data_page.use_folder(str(folder))
    assert not wizard.data_page.isComplete()
    assert "Failed (data)" in wizard.data_page.status.text() and "mpox" in wizard.data_page.status.text()


def test_line_chart_keeps_epochs_aligned(qtbot):
    chart = LineChart("Loss")
    qtbot.addWidget(chart)
    chart.add_point("train", 1.0)
    chart.add_point("validation", None)
    chart.add_point("train", 0.5)
    chart.add_point("validation", 0.7)
    assert chart.series["validation"][0] != chart.series["validation"][0]  # NaN gap
    assert chart.grab().width() > 0


def test_next_version_bumps_the_last_number():
    assert next_version("1.2.0") == "1.2.1"
    assert next_version("2026.11.25-1710") == "2026.11.25-1711"
    assert next_version("beta") == "beta.1"


def test_wizard_uses_the_sessions_reviewed_labels(qtbot, tmp_path, image_folder):
    folder = image_folder(n_per_class=10)
    items = [(str(p), "mpox" if p.parent.name == "mpox" else "not_mpox") for p in sorted(folder.rglob("*.jpg"))]
    w = RetrainWizard(None, models_dir=tmp_path / "models", current=[], session_items=items)
    qtbot.addWidget(w)
    w.show()
    assert w.data_page.from_session.isEnabled() and "20 photos" in w.data_page.from_session.text()
    with qtbot.waitSignal(w.data_ready, timeout=TIMEOUT_MS) as ready:
        w.data_page.use_session()
    ds = ready.args[0]
    assert len(ds) == 20 and {s.label for s in ds.samples} == {"mpox", "not_mpox"}
    assert {s.split for s in ds.samples} <= {"train", "val", "test"}
    assert w.model_page.parent_label.text().startswith("no model of this architecture")
    w.host.shutdown()


def test_main_window_opens_the_wizard_with_reviewed_photos(qtbot, tmp_path, tiny_bundle, image_folder):
    from PySide6.QtCore import QSettings

    from desktop_app.mainwindow import MainWindow
    from desktop_app.settings.store import AppSettings

    tiny_bundle("tiny")
    settings = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    settings.reviewer = "tester"
    window = MainWindow(settings, models_dir=tmp_path / "models", sessions_dir=tmp_path / "sessions")
    qtbot.addWidget(window)
    window.open_folder(image_folder(n_per_class=2))
    with qtbot.waitSignal(window.run_finished, timeout=TIMEOUT_MS):
        window.run()
    window.review(0, "mpox")
    window.review(1, "unsure")  # unsure photos are not training labels
    wizard = window.open_retrain_wizard()
    assert wizard.session_items == [(window.model.row_at(0).path, "mpox")]
    assert wizard.current[0][1].name == "tiny"
    assert wizard.models_dir == tmp_path / "models"
    wizard.reject()
    wizard.host.shutdown()
    window.close()
