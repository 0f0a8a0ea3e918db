"""The download stage: make the raw data available -- generate a synthetic dataset, download + extract Synthia4D,
or check the user's own ScanNet / Synthia / PLY folder. For an external folder data/raw records what was found, so
later stages see a change. What to do is the dataset's to say (:meth:`SegmentationDataset.fetch`)."""
from __future__ import annotations

from typing import Any, Mapping

from minkseg.atomic import atomic_write_json, check_writable
from minkseg.config import Params
from minkseg.pipeline.lineage import RAW_RECORD, make_record
from minkseg.pipeline.paths import EXTERNAL_SOURCE, PipelinePaths
from minkseg.pipeline.spec import dataset_spec, external_root

__all__ = ["run_download"]


def run_download(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping[str, Any]:
    """Fetch or check the raw data of ``base.dataset``; returns a summary (also data/raw's record for a user's
    folder)."""
    external = external_root(params)
    check_writable(paths.raw.parent)  # a read-only dataset folder of the user's is fine: it is only read
    # Only the splits that will be preprocessed must be present in a user's copy (ScanNet's test scans are optional).
    made_by = make_record("download", params, {})
    report = dataset_spec(params).fetch(external or paths.raw, params.download, seed=params.base.seed,
                                        splits=tuple(params.preprocess.splits),
                                        workers=params.preprocess.num_workers, progress=progress,
                                        made_by=None if external is not None else made_by)
    summary = {"dataset": params.base.dataset, "location": str(external or paths.raw), **_report_fields(report)}
    if external is not None:
        paths.raw.mkdir(parents=True, exist_ok=True)
        atomic_write_json(paths.raw / EXTERNAL_SOURCE, summary)
        atomic_write_json(paths.raw / RAW_RECORD, made_by)
    return summary


def _report_fields(report: Any) -> dict[str, Any]:
    fields = getattr(report, "__dict__", {})
    return {k: v for k, v in fields.items() if k not in ("dataset", "root") and _jsonable(v)}


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, dict))
