"""What the train and evaluate stages share around MLflow: the store check before work, the device tag, and the
run's status when a stage fails (the tracker itself: :mod:`minkseg.engine.tracking`)."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

from minkseg.config import Params

if TYPE_CHECKING:
    import torch

    from minkseg.engine.trainer import Trainer

__all__ = ["check_tracking_store", "device_tag", "finished_on_error"]


def check_tracking_store(params: Params) -> None:
    """A broken MLflow store stops the stage before it works, not after (evaluate logs only at its end)."""
    if params.mlflow.enabled:
        from minkseg.engine.tracking import check_store, default_tracking_uri

        check_store(params.mlflow.tracking_uri or default_tracking_uri())


def device_tag(device: "torch.device") -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H200)``: the device a run used, as a tag."""
    if device.type == "cuda":
        import torch

        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@contextlib.contextmanager
def finished_on_error(trainer: "Trainer") -> Iterator[None]:
    """Ends the trainer's MLflow run (and its pipeline run) as FAILED / KILLED when training raises."""
    try:
        yield
    except BaseException as exc:
        if trainer.tracker is not None:
            trainer.tracker.__exit__(type(exc), exc, exc.__traceback__)
        raise
