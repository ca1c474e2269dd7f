"""A FHIR R4 Bundle of a classified folder, for a health record (docs/interop.md gives the mapping field by field).

One Bundle (type `collection`): per case (core.store.cases) a DiagnosticReport (status `preliminary`) whose results are
the Observations of its scored photos; per photo an Observation carrying p(mpox) as a valueQuantity, its call and
flags as `interpretation` codes of the project's own code system (INTERPRETATION_SYSTEM), its SHA-256 and relative
path as identifiers; a Device per model (name, version, weights and card SHA-256); a Provenance naming the app
version and the run. No image bytes unless asked (`images=True`: one Media per photo). No patient: the case id
is the user's own label, carried as an identifier and never resolved to a person.

Every resource is built and validated by `fhir.resources` (its R4B models, the FHIR R4 JSON format), imported only
here and only when an export is asked for.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from core.store.cases import CaseView, PhotoFacts
from core.records import FLAG_UNCERTAIN, LABEL_MPOX, LABEL_NOT_MPOX, PREDICTION_OUT_OF_SCOPE, ResultRecord, utc_now

FHIR_DISCLAIMER = "research and triage support only; not a diagnosis"
# The project's own namespace: a URL-like id that names no real host (.invalid never resolves, RFC 2606).
NAMESPACE = "https://mpox-triage.invalid/fhir"
INTERPRETATION_SYSTEM = f"{NAMESPACE}/CodeSystem/triage-interpretation"
OBSERVATION_CODE_SYSTEM = f"{NAMESPACE}/CodeSystem/observation"
ACTIVITY_SYSTEM = f"{NAMESPACE}/CodeSystem/activity"
CASE_ID_SYSTEM = f"{NAMESPACE}/sid/case-id"
PHOTO_PATH_SYSTEM = f"{NAMESPACE}/sid/photo-path"
FILE_SHA256_SYSTEM = f"{NAMESPACE}/sid/file-sha256"
WEIGHTS_SHA256_SYSTEM = f"{NAMESPACE}/sid/model-weights-sha256"
CARD_SHA256_SYSTEM = f"{NAMESPACE}/sid/model-card-sha256"
MODEL_KEY_SYSTEM = f"{NAMESPACE}/sid/model-key"
EXPORT_SYSTEM = f"{NAMESPACE}/sid/export"
RUN_EXTENSION = f"{NAMESPACE}/StructureDefinition/run-id"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PROVENANCE_AGENT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

# The interpretation code system (docs/interop.md): the call of a photo or a case, and why it needs a look.
INTERPRETATION_CODES = {
    "mpox": "Called mpox by the triage model",
    "not-mpox": "Called not mpox by the triage model",
    "disagree": "The models disagree (no model decides)",
    "out-of-scope": "Out of scope: not a skin photo or unlike the training photos; no call",
    "no-call": "No call: no photo of the case is in scope",
    "uncertain": "Uncertain: p(mpox) inside the model's review band",
    "needs-review": "Needs a person's review (see the note for why)",
}
_CALL_CODE = {LABEL_MPOX: "mpox", LABEL_NOT_MPOX: "not-mpox", "disagree": "disagree",
              PREDICTION_OUT_OF_SCOPE: "out-of-scope", "": "no-call"}


class FhirExportError(ValueError):
    """The bundle could not be built or written; the message is one line for the user."""


def _coding(code: str) -> dict:
    return {"system": INTERPRETATION_SYSTEM, "code": code, "display": INTERPRETATION_CODES[code]}


def _concept(code: str) -> dict:
    return {"coding": [_coding(code)], "text": INTERPRETATION_CODES[code]}


def _probability(p: float) -> dict:
    return {"value": round(float(p), 6), "unit": "probability", "system": UCUM, "code": "1"}


def _ref(full_url: str, display: str | None = None) -> dict:
    return {"reference": full_url, **({"display": display} if display else {})}


def _new_url() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _model_name(card: Any, rec: ResultRecord | None, key: str) -> tuple[str, str]:
    if card is not None:
        return str(card.name), str(card.version)
    if rec is not None:
        return rec.model, rec.model_version
    return key, ""


def device_resource(key: str, card: Any, rec: ResultRecord | None, origin: str = "") -> dict:
    """A Device for one model: name, version, weights and card SHA-256, its threshold and origin."""
    name, version = _model_name(card, rec, key)
    weights = (getattr(card, "model_sha256", "") if card is not None else "") or (rec.model_sha256 if rec else "")
    ids = [{"system": MODEL_KEY_SYSTEM, "value": key}]
    if weights:
        ids.append({"system": WEIGHTS_SHA256_SYSTEM, "value": weights})
    card_sha = getattr(card, "card_sha256", "") if card is not None else ""
    if card_sha:
        ids.append({"system": CARD_SHA256_SYSTEM, "value": card_sha})
    out: dict[str, Any] = {
        "resourceType": "Device", "status": "active", "identifier": ids,
        "deviceName": [{"name": f"{name} {version}".strip(), "type": "model-name"}],
        "modelNumber": name,
        "type": {"text": "Machine-learning mpox photo triage model (research; not a medical device)"},
        "version": [{"value": version}] if version else None,
    }
    threshold = getattr(card, "threshold", None) if card is not None else (rec.threshold if rec else None)
    if threshold is not None:
        out["property"] = [{"type": {"text": "decision threshold on p(mpox)"},
                            "valueQuantity": [_probability(threshold)]}]
    if origin:
        out["note"] = [{"text": origin}]
    return {k: v for k, v in out.items() if v is not None}


def _interpretation(photo: PhotoFacts) -> list[dict]:
    codes = [_CALL_CODE.get(photo.call, "no-call")]
    if FLAG_UNCERTAIN in photo.flags:
        codes.append("uncertain")
    if photo.needs_review:
        codes.append("needs-review")
    return [_concept(c) for c in dict.fromkeys(codes)]


def observation_resource(view: CaseView, photo: PhotoFacts, devices: Mapping[str, str],
                         media_url: str | None = None) -> dict:
    """The Observation of one scored photo (see the module docstring and docs/interop.md)."""
    from core.triage.reasons import reasons_text

    when = max((r.timestamp for r in photo.records.values() if r.timestamp), default=utc_now())
    ids = [{"system": PHOTO_PATH_SYSTEM, "value": view.relative(photo.path)}]
    if photo.file_sha256:
        ids.insert(0, {"system": FILE_SHA256_SYSTEM, "value": photo.file_sha256})
    out: dict[str, Any] = {
        "resourceType": "Observation", "status": "preliminary", "identifier": ids,
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [{"system": OBSERVATION_CODE_SYSTEM, "code": "p-mpox",
                             "display": "Calibrated probability of mpox in a skin photo (triage model)"}],
                 "text": "p(mpox) of one photo"},
        "effectiveDateTime": when, "valueQuantity": _probability(photo.p_mpox),
        "interpretation": _interpretation(photo),
    }
    deciding = view.decider or (view.keys[0] if len(view.keys) == 1 else "")
    if deciding in devices:
        out["device"] = _ref(devices[deciding])
    if len(view.keys) > 1:
        comps = []
        for key in view.keys:
            rec = photo.records.get(key)
            if rec is None or not rec.ok or rec.p_mpox is None:
                continue
            name, version = _model_name(view.cards.get(key), rec, key)
            comps.append({"code": {"coding": [{"system": OBSERVATION_CODE_SYSTEM, "code": "p-mpox-model",
                                               "display": "p(mpox) by one model"}],
                                   "text": f"p(mpox) by {name} {version}".strip()},
                          "valueQuantity": _probability(rec.p_mpox),
                          "interpretation": [_concept(_CALL_CODE.get(rec.prediction or "", "no-call"))]})
        out["component"] = comps or None
    if photo.reasons:
        out["note"] = [{"text": "Needs review: " + reasons_text(photo.reasons)}]
    if media_url:
        out["derivedFrom"] = [_ref(media_url)]
    return {k: v for k, v in out.items() if v is not None}


def conclusion(case: Any) -> str:
    """The DiagnosticReport's conclusion: the case's call, score and counts, why to look, and the disclaimer."""
    from core.triage.reasons import call_text

    n = case.counts()
    call = call_text(case.call) if case.call else "no call (no photo in scope)"
    score = "" if case.score is None else f", highest p(mpox) {case.score:.3f}"
    text = f"Case {case.case_id}: triage call {call}{score} over {n['photos']} photo(s)"
    text += f" ({n['mpox']} called mpox, {n['out_of_scope']} out of scope, {n['errors']} unreadable)."
    if case.needs_review:
        text += f" Needs review: {case.review_reason}."
    return f"{text} Mpox-triage output, {FHIR_DISCLAIMER}."


def report_resource(case: Any, results: Sequence[str], media: Sequence[str] = ()) -> dict:
    """The DiagnosticReport of one case, its results the Observations of its scored photos."""
    codes = [_CALL_CODE.get(case.call, "no-call")] + (["needs-review"] if case.needs_review else [])
    out: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "status": "preliminary",
        "identifier": [{"system": CASE_ID_SYSTEM, "value": case.case_id}],
        "code": {"coding": [{"system": OBSERVATION_CODE_SYSTEM, "code": "mpox-photo-triage",
                             "display": "Mpox photo triage (research)"}],
                 "text": "Mpox photo triage of one case (research and triage support only)"},
        "issued": utc_now(), "result": [_ref(u) for u in results] or None,
        "conclusion": conclusion(case), "conclusionCode": [_concept(c) for c in codes],
        "media": [{"link": _ref(u)} for u in media] or None,
    }
    return {k: v for k, v in out.items() if v is not None}


def provenance_resource(targets: Sequence[str], devices: Mapping[str, str], run: str, app_version: str,
                        started: str | None = None) -> dict:
    """The Provenance: the app and its version assembled the targets in one run, from the models' Devices."""
    out: dict[str, Any] = {
        "resourceType": "Provenance", "target": [_ref(u) for u in targets], "recorded": utc_now(),
        "activity": {"coding": [{"system": ACTIVITY_SYSTEM, "code": "classify",
                                 "display": "Photos scored by mpox-triage"}],
                     "text": f"mpox-triage {app_version} run {run}"},
        "agent": [{"type": {"coding": [{"system": PROVENANCE_AGENT_TYPE, "code": "assembler",
                                        "display": "Assembler"}]},
                   "who": {"display": f"mpox-triage {app_version}"}}],
        "entity": [{"role": "source", "what": _ref(u)} for u in devices.values()] or None,
        "extension": [{"url": RUN_EXTENSION, "valueString": run}],
    }
    if started:
        out["occurredPeriod"] = {"start": started, "end": utc_now()}
    return {k: v for k, v in out.items() if v is not None}


def build_bundle(view: CaseView, *, run: str = "", origins: Mapping[str, str] | None = None,
                 image_file: Callable[[str], Path] | None = None, started: str | None = None) -> Any:
    """The fhir.resources R4B Bundle of a CaseView. `run`: the run's id (default: a new one); `origins`: model key
    -> origin text; `image_file` (photo key -> file): embed each scored photo's bytes as a Media."""
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.device import Device
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport
    from fhir.resources.R4B.media import Media
    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.provenance import Provenance

    from core import __version__

    run = run or str(uuid.uuid4())
    entries: list[tuple[str, Any]] = []
    devices: dict[str, str] = {}
    first_rec = {k: next((p.records[k] for p in view.photos if k in p.records), None) for k in view.keys}
    for key in view.keys:
        url = devices[key] = _new_url()
        entries.append((url, Device.model_validate(
            device_resource(key, view.cards.get(key), first_rec[key], (origins or {}).get(key, "")))))
    targets: list[str] = []
    for case in view.cases:
        obs_urls, media_urls, case_entries = [], [], []
        for photo in case.photos:
            if photo.p_mpox is None:
                continue
            media_url = None
            if image_file is not None:
                media_url = _new_url()
                case_entries.append((media_url, Media.model_validate(_media(view, photo, image_file(photo.path)))))
                media_urls.append(media_url)
            url = _new_url()
            case_entries.append((url, Observation.model_validate(observation_resource(view, photo, devices,
                                                                                      media_url))))
            obs_urls.append(url)
        report_url = _new_url()
        entries.append((report_url, DiagnosticReport.model_validate(report_resource(case, obs_urls, media_urls))))
        entries += case_entries
        targets += [report_url] + obs_urls
    prov_url = _new_url()
    entries.append((prov_url, Provenance.model_validate(provenance_resource(targets, devices, run, __version__,
                                                                            started))))
    for url, res in entries:
        res.id = url.rsplit(":", 1)[-1]
    return Bundle.model_validate({
        "resourceType": "Bundle", "type": "collection", "timestamp": utc_now(),
        "identifier": {"system": EXPORT_SYSTEM, "value": str(uuid.uuid4())},
        "entry": [{"fullUrl": url, "resource": res} for url, res in entries],
    })


def _media(view: CaseView, photo: PhotoFacts, path: Path) -> dict:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FhirExportError(f"cannot read {view.relative(photo.path)} to embed it: {exc.strerror or exc}") from None
    kind = mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    ids = [{"system": PHOTO_PATH_SYSTEM, "value": view.relative(photo.path)}]
    if photo.file_sha256:
        ids.insert(0, {"system": FILE_SHA256_SYSTEM, "value": photo.file_sha256})
    return {"resourceType": "Media", "status": "completed", "identifier": ids,
            "content": {"contentType": kind, "data": base64.b64encode(data).decode("ascii"),
                        "title": view.relative(photo.path)}}


def bundle_json(bundle: Any) -> str:
    """The Bundle as FHIR JSON text."""
    return bundle.model_dump_json(indent=2)


def write_bundle(bundle: Any, out: str | os.PathLike, check: Callable[[Any, str], None] | None = None) -> Path:
    """Write the Bundle's JSON atomically (a hidden temporary file, then core.store.outputs.publish). `check(out, what)`
    is the output policy to apply first (e.g. Workspace.check_output); default core.store.outputs.check_output."""
    from core.store.outputs import check_output, write_text_atomic
    from core.store.workspace import write_error

    out = Path(out)
    if check is not None:
        check(out, "FHIR bundle")
    else:
        check_output(out, "FHIR bundle")
    try:
        write_text_atomic(out, bundle_json(bundle) + "\n")
    except OSError as exc:
        raise write_error("FHIR bundle", out, exc) from None
    return out


def export_workspace(ws: Any, out: str | os.PathLike, view: CaseView, *, run: str = "", images: bool = False,
                     started: str | None = None) -> Path:
    """Workspace -> FHIR Bundle file: the workspace's output policy, an atomic write, one audit entry (kind
    `fhir`)."""
    origins = {k: ws.origin(k) for k in view.keys}
    bundle = build_bundle(view, run=run, origins=origins, image_file=ws.file_of if images else None, started=started)
    write_bundle(bundle, out, ws.check_output)
    ws.log_export("fhir", out, view.keys)
    return Path(out)


def parquet_bundle(out_dir: str | os.PathLike, cards: Sequence[Any] = (), root: str | os.PathLike | None = None,
                   run: str = "", images: bool = False, loaded: tuple | None = None) -> Any:
    """The Bundle of a Parquet shard folder (classify --parquet, e.g. from the Ray engine): its rows' records and
    `case_id` column (each photo its own case without one); `cards`: the models' cards for their Devices (a model
    without one gets a Device from its rows: name, version and weights SHA-256, no card digest). `loaded`: the
    folder's core.store.sources.read_parquet_records, when the caller has read it already."""
    from core.store.cases import records_view
    from core.store.sources import read_parquet_records

    records, case_of = loaded if loaded is not None else read_parquet_records(out_dir)
    if not records:
        raise FhirExportError(f"{out_dir}: no result rows (part-*.parquet) to export")
    view = records_view(records, cards, case_of=case_of, root=root)
    from core.records import unescape_path

    return build_bundle(view, run=run, image_file=(lambda p: Path(unescape_path(p))) if images else None)
