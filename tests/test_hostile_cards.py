"""Issue 25: every hostile card, array file or stored verdict gets one line and exit 2, never a traceback, and a card
that passes the schema but makes no sense is refused, not used silently.

Every case runs from its entry point (the CLI in-process through core.cli.main, or in a fresh process without
TensorFlow, as on the clinic install) on COPIES of bundles in temporary folders: the shipped bundles in models/
(LiteRT backbones, numpy heads) and tiny ones built here. The clinic install is simulated as tests/test_layering.py
checks it: a process where `tensorflow` and `keras` cannot be imported (None in sys.modules).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.models.bundle import CARD_FILE, OOD_FILE, ModelCard, model_file, sha256_file
from core.cli import main
from tests.conftest import REPO
from tests.helpers import make_image_folder

SHIPPED = REPO / "models"
NO_TF = """
import sys
for name in ("tensorflow", "keras", "tf_keras"):
    sys.modules[name] = None  # the clinic install: import fails, find_spec says absent
from core.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras") and sys.modules[m] is not None)
print("heavy:", loaded, file=sys.stderr)
sys.exit(code)
"""


def _need_shipped(*names: str) -> None:
    for name in names:
        if not (SHIPPED / name / CARD_FILE).is_file():
            pytest.skip(f"no shipped bundle {name} in {SHIPPED}")


def clinic(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`mpox-triage ARGS` in a fresh process that cannot import TensorFlow or Keras."""
    full = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-c", NO_TF, *args], capture_output=True, text=True, timeout=600,
                          env=full, cwd=cwd or REPO)


def run(argv: list[str], capsys) -> tuple[int, list[str], str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.err.strip().splitlines(), cap.out


def the_error(code: int, err: list[str], command: str) -> str:
    """Exit 2, no traceback, warnings aside exactly one error line; returns it."""
    assert code == 2, err
    assert not any("Traceback" in line for line in err), err
    errors = [line for line in err if not line.startswith("warning: ") and not line.startswith("heavy:")]
    assert len(errors) == 1 and errors[0].startswith(f"mpox-triage {command}: error: "), err
    assert "\r" not in errors[0]
    return errors[0]


def copy_bundle(name: str, dest: Path) -> Path:
    _need_shipped(name)
    shutil.copytree(SHIPPED / name, dest)
    return dest


def reseal(folder: Path, edit) -> Path:
    """Edit a bundle's card as its owner could (as a local model: another version, so no release pin applies),
    re-hash its files and recompute its digest, without the schema's checks."""
    data = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    data["version"] = "9.9.9-local"
    edit(data)
    data["files"] = {f: sha256_file(folder / f) for f in data["files"]}
    data["model_sha256"] = data["files"][model_file(ModelCard.from_dict(dict(data)))]
    data["card_sha256"] = ModelCard.from_dict(dict(data)).content_digest()
    (folder / CARD_FILE).write_text(json.dumps(data), encoding="utf-8")
    return folder


def set_byte(path: Path, offset: int, value: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] = value
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("photos") / "p", n_per_class=2, size=(64, 48))


@pytest.fixture
def empty_models(tmp_path, monkeypatch) -> Path:
    """Shipped and user model folders that hold nothing, so only the bundle a test names is met."""
    shipped, user = tmp_path / "no-shipped", tmp_path / "no-user"
    shipped.mkdir()
    user.mkdir()
    monkeypatch.setenv("MPOX_TRIAGE_MODELS_DIR", str(shipped))
    monkeypatch.setenv("MPOX_TRIAGE_USER_MODELS_DIR", str(user))
    return user


# -- a card that is not a card: bytes, size, nesting ---------------------------------------------------------------

def test_a_card_byte_that_is_not_utf8_is_one_line_for_classify_evaluate_and_adapt(tmp_path, photos, empty_models,
                                                                                 capsys):
    bundle = copy_bundle("mobilenetv2", tmp_path / "m")
    set_byte(bundle / CARD_FILE, 40, 0xFF)
    for command, args in (("classify", [str(photos), "--model", str(bundle), "--quiet"]),
                          ("evaluate", [str(photos), "--model", str(bundle), "--bootstrap", "0", "--quiet"]),
                          ("adapt", ["--model", str(bundle), "--labelled", str(photos), "--out", str(tmp_path / "o"),
                                     "--quiet"])):
        line = the_error(*run([command, *args], capsys)[:2], command)
        assert "not UTF-8" in line and "0xFF" in line and str(bundle) in line
    assert not (tmp_path / "o").exists()


def test_a_damaged_component_card_is_one_line_for_the_combined_model(tmp_path, photos, monkeypatch, capsys):
    _need_shipped("combined", "mobilenetv2", "xception")
    models = tmp_path / "models"
    shutil.copytree(SHIPPED, models)
    set_byte(models / "mobilenetv2" / CARD_FILE, 40, 0xFF)
    monkeypatch.setenv("MPOX_TRIAGE_MODELS_DIR", str(models))
    code, err, _ = run(["classify", str(photos), "--model", "combined", "--quiet"], capsys)
    line = the_error(code, err, "classify")
    assert "mobilenetv2" in line and "component" in line
    assert any("not UTF-8" in w for w in err if w.startswith("warning: "))  # the damaged card itself, named


def test_a_card_nested_3000_deep_is_skipped_with_one_warning_and_other_models_still_work(tmp_path, photos,
                                                                                       empty_models, capsys):
    bundle = copy_bundle("mobilenetv2", empty_models / "mobilenetv2")
    deep = empty_models / "deep"
    deep.mkdir()
    (deep / CARD_FILE).write_text('{"extra":' + "[" * 3000)
    code, err, out = run(["models"], capsys)
    assert code == 0 and "mobilenetv2" in out and "Traceback" not in "".join(err)
    assert len(err) == 1 and "more than 32 deep" in err[0] and str(deep) in err[0]
    code, err, out = run(["classify", str(photos), "--model", str(bundle), "--quiet"], capsys)
    assert code == 0, err
    warned = [line for line in err if line.startswith("warning: ")]
    assert len(warned) == 1 and "more than 32 deep" in warned[0] and "Traceback" not in "".join(err)


def test_a_card_over_one_megabyte_is_refused_before_it_is_parsed(tmp_path, photos, empty_models, capsys):
    bundle = copy_bundle("mobilenetv2", tmp_path / "m")
    data = json.loads((bundle / CARD_FILE).read_text())
    data["padding"] = "x" * 1_100_000
    (bundle / CARD_FILE).write_text(json.dumps(data))
    line = the_error(*run(["classify", str(photos), "--model", str(bundle), "--quiet"], capsys)[:2], "classify")
    assert "at most 1,000,000 bytes" in line


# -- cards that pass the types but make no sense -------------------------------------------------------------------

def _ooc(d):
    d["extra"]["operating_points"]["out_of_collection"]["uncertain_band"][0] = d["uncertain_band"][0] + 0.05


def _ooc_threshold(d):
    d["extra"]["operating_points"]["out_of_collection"]["threshold"] = d["threshold"] + 0.1


def _metrics(d):
    d["metrics"]["test"]["accuracy"] = -5.0


def _auc(d):
    d["metrics"]["test"]["roc_auc"] = 1e308


NONSENSE = {
    "out_of_collection_review_floor_stricter": (_ooc, "out_of_collection review floor"),
    "out_of_collection_threshold_stricter": (_ooc_threshold, "out_of_collection threshold"),
    "threshold_1_band_1_1": (lambda d: d.update(threshold=1.0, uncertain_band=[1.0, 1.0]), "one class"),
    "band_touching_0": (lambda d: d.update(uncertain_band=[0.0, 0.7]), "strictly between 0 and 1"),
    "effect_floor_1e308": (lambda d: d["extra"]["shift_alarm"]["effect_floor"].update(effect=[1e308] * 5),
                           "extra.shift_alarm.effect_floor.effect"),
    "effect_floor_n_10_400": (lambda d: d["extra"]["shift_alarm"]["effect_floor"].update(n=[10**400], effect=[0.01]),
                              "extra.shift_alarm.effect_floor.n"),
    "effect_floor_n_unsorted": (lambda d: d["extra"]["shift_alarm"]["effect_floor"].update(n=[60, 30, 120, 250, 400]),
                                "must increase"),
    "temperature_5e-324": (lambda d: d.update(temperature=5e-324), "'temperature'"),
    "temperature_50": (lambda d: d.update(temperature=50.0), "'temperature'"),
    "accuracy_-5": (_metrics, "'metrics.test.accuracy'"),
    "auc_1e308": (_auc, "'metrics.test.roc_auc'"),
}


@pytest.mark.parametrize("case", sorted(NONSENSE))
def test_a_card_that_makes_no_sense_is_refused_by_classify_and_skipped_by_models(tmp_path, photos, empty_models,
                                                                                case, capsys):
    edit, words = NONSENSE[case]
    # A stricter out-of-collection floor needs a card whose band edge, not its threshold, is the review floor:
    # xception's (mobilenetv2 1.4.0's floor is its threshold, so only a stricter threshold could raise it).
    name = "xception" if case == "out_of_collection_review_floor_stricter" else "mobilenetv2"
    bundle = reseal(copy_bundle(name, empty_models / "mine"), edit)
    line = the_error(*run(["classify", str(photos), "--model", str(bundle), "--quiet",
                           "--csv", str(tmp_path / "o.csv")], capsys)[:2], "classify")
    assert words in line, line
    assert not (tmp_path / "o.csv").exists()
    code, err, out = run(["models"], capsys)
    assert code == 2 and name not in out and "acc -5" not in out and "1e+308" not in out
    assert any(words in w and w.startswith("warning: skipped") for w in err), err


def test_the_shipped_cards_pass_every_cross_field_rule_and_draw_no_warning():
    from core.models.card_schema import check_card, load_card_json, unusual_values

    for folder in sorted(p for p in SHIPPED.iterdir() if (p / CARD_FILE).is_file()):
        data = load_card_json(folder / CARD_FILE)
        check_card(data, str(folder))
        assert unusual_values(data) == [], folder


def test_an_unusual_but_legal_card_is_warned_about_once(tmp_path, empty_models, capsys):
    reseal(copy_bundle("mobilenetv2", empty_models / "mine"), lambda d: d.update(temperature=10.0))
    code, err, out = run(["models"], capsys)
    assert code == 0 and "mobilenetv2" in out
    assert len([w for w in err if "temperature 10 is unusual" in w]) == 1, err
    code, err, out = run(["models"], capsys)   # the same process: said once
    assert code == 0 and not any("unusual" in w for w in err)


# -- ood.npz ---------------------------------------------------------------------------------------------------

def _with_ood(folder: Path, **arrays) -> Path:
    with np.load(folder / OOD_FILE) as data:
        current = {k: data[k] for k in data.files}
    current.update(arrays)
    np.savez(folder / OOD_FILE, **current)
    return reseal(folder, lambda d: None)


@pytest.mark.parametrize("case, words", [("nan_mean", "not finite"), ("inf_scale", "not finite"),
                                         ("zero_residual_scale", "zero"), ("zero_scale", "zero")])
def test_ood_statistics_that_could_never_flag_a_photo_are_refused_in_one_line(tmp_path, photos, empty_models, case,
                                                                              words):
    folder = copy_bundle("mobilenetv2", empty_models / "mine")
    with np.load(folder / OOD_FILE) as data:
        mean, scales = data["mean"].copy(), data["scales"].copy()
    if case == "nan_mean":
        mean[3] = np.nan
        _with_ood(folder, mean=mean)
    elif case == "inf_scale":
        scales[0] = np.inf
        _with_ood(folder, scales=scales)
    elif case == "zero_scale":
        scales[-1] = 0.0
        _with_ood(folder, scales=scales)
    else:
        _with_ood(folder, residual_scale=np.float64(0.0))
    proc = clinic("classify", str(photos), "--model", str(folder), "--quiet", "--csv", str(tmp_path / "o.csv"))
    line = the_error(proc.returncode, proc.stderr.strip().splitlines(), "classify")
    assert words in line and OOD_FILE in line
    assert "Warning" not in proc.stderr


def test_no_numpy_warning_reaches_the_user_when_a_legal_ood_file_overflows(tmp_path, photos, empty_models):
    folder = copy_bundle("mobilenetv2", empty_models / "mine")
    with np.load(folder / OOD_FILE) as data:
        mean = data["mean"].astype(np.float64)
    _with_ood(folder, mean=np.full_like(mean, 1e300))  # finite, but every distance overflows: out of scope
    proc = clinic("classify", str(photos), "--model", str(folder), "--csv", str(tmp_path / "o.csv"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "overflow" not in proc.stderr
    assert "out_of_scope" in (tmp_path / "o.csv").read_text()


# -- models shows what classify would do ---------------------------------------------------------------------------

def test_models_lists_a_combined_model_with_a_tampered_component_as_refused(tmp_path, photos, capsys):
    _need_shipped("combined", "mobilenetv2", "xception")
    models = tmp_path / "models"
    shutil.copytree(SHIPPED, models)
    code, _err, out = run(["models", "--models-dir", str(models)], capsys)
    assert code == 0 and out.count("shipped release") == 3 and "REFUSED" not in out
    backbone = next((models / "mobilenetv2").glob("backbone-*.tflite"))
    set_byte(backbone, 100_000, 0)
    code, _err, out = run(["models", "--models-dir", str(models)], capsys)
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert code == 0
    version = json.loads((SHIPPED / "mobilenetv2" / CARD_FILE).read_text())["version"]
    assert f"REFUSED: its component mobilenetv2 {version} is refused" in rows["combined"]
    assert "REFUSED" in rows["mobilenetv2"] and backbone.name in rows["mobilenetv2"]
    assert "shipped release" in rows["xception"] and "shipped release" not in rows["combined"]
    code, err, _ = run(["classify", str(photos), "--model", str(models / "combined"), "--quiet"], capsys)
    assert backbone.name in the_error(code, err, "classify")   # what models said classify would do


def test_a_replaced_bundle_is_listed_as_a_dated_backup(tmp_path, empty_models, capsys):
    from core.models.bundle import load_bundle, save_bundle

    src = copy_bundle("mobilenetv2", tmp_path / "src")
    bundle = load_bundle(src)
    card = ModelCard.from_dict(bundle.card.to_dict())
    card.version = "9.9.9-local"
    extra = {f: src / f for f in card.files if f != OOD_FILE}   # model.keras and the runtime, copied as they are
    out = empty_models / "mine"
    save_bundle(None, card, out, ood=bundle.ood, extra_files=extra)
    save_bundle(None, ModelCard.from_dict(card.to_dict()), out, ood=bundle.ood, extra_files=extra, replace=True)
    code, err, text = run(["models"], capsys)
    rows = [line for line in text.splitlines() if line.startswith("mobilenetv2")]
    assert code == 0 and len(rows) == 2, text
    backups = [r for r in rows if "backup kept when replaced on" in r]
    assert len(backups) == 1 and "UTC" in backups[0] and "mine.replaced-" in backups[0]


def test_adapted_models_get_a_version_to_the_second(tmp_path):
    import re

    from core.learning.adapt import adapt_bundle
    from core.models.bundle import load_bundle
    from tests.test_adapt import folder_items, make_base_bundle, site_folder

    bundle = load_bundle(make_base_bundle(tmp_path / "base"))
    paths, labels = folder_items(site_folder(tmp_path / "site", 12, 12))
    result = adapt_bundle(bundle, paths, labels, n_bootstrap=20)
    assert re.fullmatch(r".+\+site\.\d{8}T\d{6}", result.card.version), result.card.version


# -- messages ------------------------------------------------------------------------------------------------------

def test_adapt_escapes_a_carriage_return_in_a_file_name(tmp_path, capsys):
    from tests.test_adapt import make_base_bundle, site_folder

    base = make_base_bundle(tmp_path / "base")
    site = site_folder(tmp_path / "site", 12, 12)
    first = sorted((site / "mpox").iterdir())[0]
    shutil.copyfile(first, site / "other" / "bad\rname.png")   # one photo under both labels: refused, named
    code, err, _ = run(["adapt", "--model", str(base), "--labelled", str(site), "--out", str(tmp_path / "o"),
                        "--quiet"], capsys)
    line = the_error(code, err, "adapt")
    assert "bad\\rname.png" in line and "labelled" in line
    assert not (tmp_path / "o").exists()


def test_keras_forced_on_the_clinic_install_names_the_setting(tmp_path, photos):
    folder = copy_bundle("mobilenetv2", tmp_path / "m")
    proc = clinic("classify", str(photos), "--model", str(folder), "--quiet", env={"MPOX_TRIAGE_RUNTIME": "keras"})
    line = the_error(proc.returncode, proc.stderr.strip().splitlines(), "classify")
    assert "MPOX_TRIAGE_RUNTIME=keras is set" in line and "Unset MPOX_TRIAGE_RUNTIME" in line
    assert "no verified LiteRT export" not in line


# -- a stored shift verdict read back ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [{"p_value": "abc"}, {"p_value": 7.0}, {"n": 10**400}, {"statistic": float("nan")},
                                 {"detected": "yes"}, {"p_value": None}, {"operating_point": ["x"]}])
def test_a_malformed_stored_verdict_is_ignored_by_the_pdf_cover_with_a_warning(tmp_path, bad):
    pypdf = pytest.importorskip("pypdf")
    from core.records import ResultRecord
    from core.reports.writer import write_pdf_report

    photo = make_image_folder(tmp_path / "p", n_per_class=1) / "mpox" / "mpox_00.jpg"
    record = ResultRecord(path=str(photo), status="ok", p_mpox=0.8, prediction="mpox", flag="", model="m",
                          model_version="1", model_sha256="a" * 64, threshold=0.5)
    verdict = {"detected": True, "p_value": 0.001, "statistic": 0.2, "n": 40, "method": "mmd", "model": "m",
               "operating_point": "out_of_collection", **bad}
    out = tmp_path / "r.pdf"
    write_pdf_report([record], out, folder=str(photo.parent), cards=[], shift=verdict)
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(out).pages)
    assert "stored shift check result is malformed and was ignored" in " ".join(text.split())
    assert "Shift alarm" not in text


def test_clean_verdict_keeps_a_well_formed_verdict_and_types_its_fields():
    from core.triage.shift import ShiftResult, clean_verdict, verdict_entry

    card = ModelCard(name="m", version="1", architecture="mobilenetv2", input_size=32)
    entry = verdict_entry(ShiftResult(True, 0.01, 0.05, 40, extra={"min_effect": 0.01}), card)
    clean = clean_verdict(json.loads(json.dumps(entry)))
    assert clean == {k: v for k, v in entry.items() if v is not None or k in ("p_value", "statistic", "min_effect")}
    assert clean_verdict({**entry, "n": 40.0}) is None and clean_verdict({**entry, "detected": 1}) is None


# -- evaluate --protocol on the clinic install -------------------------------------------------------------------

def _protocol_manifest(root: Path) -> Path:
    """20 generated photos, two collections, ten groups per class, train and val splits."""
    folder = make_image_folder(root / "photos", n_per_class=10, size=(64, 48))
    lines = ["path,label_binary,dataset,group,split"]
    for cls in ("mpox", "other"):
        for i, path in enumerate(sorted((folder / cls).iterdir())):
            lines.append(f"{path},{cls},{'A' if i % 2 else 'B'},{cls}{i},{'val' if i % 5 == 0 else 'train'}")
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    return root / "m.csv"


@pytest.mark.parametrize("protocol", ["cv5", "loco"])
def test_evaluate_protocol_runs_on_the_clinic_install_through_litert(tmp_path, protocol):
    _need_shipped("mobilenetv2")
    manifest = _protocol_manifest(tmp_path)
    proc = clinic("evaluate", str(manifest), "--protocol", protocol, "--arch", "mobilenetv2", "--views", "identity",
                  "--quiet", "--json", str(tmp_path / "r.json"), env={"MPOX_TRIAGE_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "heavy: []" in proc.stderr and "Traceback" not in proc.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["recipe"]["embeddings"].startswith("litert") and res["recipe"]["photos"] == 20
    assert res["folds"] and all(0.0 <= f["roc_auc"] <= 1.0 for f in res["folds"])


def test_evaluate_protocol_with_a_dense_head_says_it_needs_the_train_extra(tmp_path):
    proc = clinic("evaluate", str(tmp_path), "--protocol", "cv5", "--head", "dense", "--quiet")
    line = the_error(proc.returncode, proc.stderr.strip().splitlines(), "evaluate")
    assert "--head dense" in line and "mpox-triage[train]" in line


# -- numbers on the command line -----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, option", [
    (["classify", "PHOTOS", "--batch-size", str(10**30)], "--batch-size"),
    (["evaluate", "PHOTOS", "--bootstrap", str(10**23)], "--bootstrap"),
    (["evaluate", "PHOTOS", "--protocol", "cv5", "--C", "nan"], "--C"),
    (["adapt", "--labelled", "PHOTOS", "--min-sensitivity", "nan", "--out", "OUT"], "--min-sensitivity"),
    (["adapt", "--suggest", str(10**23), "--pool", "PHOTOS"], "--suggest"),
    (["classify", "PHOTOS", "--actors", "-1"], "--actors"),
])
def test_a_number_out_of_range_on_the_command_line_is_one_line_before_any_work(argv, option, photos, tmp_path,
                                                                               capsys):
    argv = [str(photos) if a == "PHOTOS" else str(tmp_path / "o") if a == "OUT" else a for a in argv]
    line = the_error(*run(argv + ["--quiet"], capsys)[:2], argv[0])
    assert line.split(": error: ")[1].startswith(f"{option} must be"), line
    assert not (tmp_path / "o").exists()


def test_a_ctrl_c_after_the_command_has_finished_prints_no_traceback():
    """The defect: Ctrl+C arriving while a finished classify tore down its LiteRT interpreters printed
    "Exception ignored in Interpreter.__del__ ... KeyboardInterrupt" after every output was written."""
    import subprocess
    import sys

    code = ("import signal, sys; import core.cli as c; sys.argv = ['mpox-triage', 'models']; rc = c.entry(); "
            "print('ignored' if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else 'live', rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert out.stdout.strip().splitlines()[-1] == "ignored 0", out.stderr[-500:]


def test_a_ctrl_c_inside_a_destructor_during_the_command_prints_no_traceback():
    """A Ctrl+C that lands in a model runtime's destructor (freed as the last run ends, before main returns)
    cannot interrupt anything; it printed "Exception ignored in ... __del__ ... KeyboardInterrupt". Other
    unraisable errors are still reported."""
    import subprocess
    import sys

    code = ("import gc, sys; import core.cli as c\n"
            "class Runtime:\n"
            "    def __init__(self, exc): self.exc = exc\n"
            "    def __del__(self): raise self.exc\n"
            "def main(argv=None):\n"
            "    Runtime(KeyboardInterrupt()); gc.collect(); Runtime(ValueError('a real problem')); gc.collect()\n"
            "    return 0\n"
            "c.main = main\n"
            "sys.exit(c.entry())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert out.returncode == 0
    assert "KeyboardInterrupt" not in out.stderr and "ValueError: a real problem" in out.stderr, out.stderr
