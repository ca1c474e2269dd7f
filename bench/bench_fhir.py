"""How long grouping into cases and building the FHIR Bundle take for N photos (synthetic records, one model, no
model run): `PYTHONPATH=. python bench/bench_fhir.py [N ...]` prints seconds and the JSON size per size. The Bundle is
built and validated by fhir.resources (pydantic), which is most of the time."""

from __future__ import annotations

import sys
import time

from core.store.cases import Grouping, records_view
from core.reports.fhir_export import build_bundle, bundle_json
from core.records import ResultRecord


def records(n: int, per_case: int = 4) -> list[ResultRecord]:
    out = []
    for i in range(n):
        p = (i * 7919 % 1000) / 1000
        out.append(ResultRecord(path=f"/photos/P{i // per_case:06d}/img_{i:07d}.jpg", status="ok", p_mpox=p,
                                prediction="mpox" if p >= 0.5 else "not_mpox", flag="uncertain" if 0.45 <= p < 0.55
                                else "", model="m", model_version="1.0", model_sha256="ab" * 32, threshold=0.5,
                                file_sha256=f"{i:064x}"))
    return out


def main(sizes: list[int]) -> None:
    for n in sizes:
        recs = records(n)
        t0 = time.perf_counter()
        view = records_view(recs, root="/photos", grouping=Grouping("subfolder"))
        t1 = time.perf_counter()
        bundle = build_bundle(view)
        t2 = time.perf_counter()
        text = bundle_json(bundle)
        t3 = time.perf_counter()
        print(f"{n:>7} photos, {len(view.cases):>6} cases: cases {t1 - t0:6.2f} s, bundle {t2 - t1:6.2f} s, "
              f"JSON {t3 - t2:6.2f} s, {len(text) / 1e6:6.1f} MB")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000])
