"""The training loop on a tiny dense model: learning, exact resume, schedules, data order, checkpoints."""

from __future__ import annotations

import csv
import math
import pickle

import numpy as np
import pytest
import torch

from tests.engine_toys import NUM_CLASSES, ToyNet, ToyScenes, collate, dense_input, train_params
from minkseg.engine.trainer import Trainer
from minkseg.errors import CheckpointError, EngineError
from minkseg.engine.rng import rng_state, set_rng_state
from minkseg.engine.sampling import EpochOrder, ResumableBatchSampler, limit_batch_points, sample_seed
from minkseg.engine.schedules import make_schedule
from minkseg.engine.trainer import resolve_device, seed_everything
from minkseg.weights import load_torch, load_weights, save_torch


class Interrupt(Exception):
    pass


class RecordingTracker:
    run_id = "fake-run"

    def __init__(self) -> None:
        self.metrics: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))


def make_trainer(tmp_path, params, *, model_seed=0, train=None, val=True, **kwargs):
    seed_everything(model_seed)
    model = ToyNet()
    return Trainer(
        model, params, train_dataset=train or ToyScenes(10, seed=1), collate_fn=collate, num_classes=NUM_CLASSES,
        seed=7, val_dataset=ToyScenes(4, seed=2, augment=False) if val else None, input_builder=dense_input,
        checkpoint_dir=tmp_path / "ckpt", curves_dir=tmp_path / "plots", class_names=["a", "b", "c"],
        progress=False, **kwargs)


def test_training_learns_and_writes_curves_and_checkpoints(tmp_path):
    params = train_params(iterations=60, val_every=20, checkpoint_every=20, log_every=10, lr=0.2, momentum=0.9)
    tracker = RecordingTracker()
    result = make_trainer(tmp_path, params, tracker=tracker).fit()
    assert result.iterations == 60 and result.resumed_from is None
    assert result.best_miou is not None and result.best_miou > 0.6, result.curves["val"]
    assert result.best_iteration in (20, 40, 60)
    with open(tmp_path / "plots" / "train.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True) and math.isclose(lrs[0], 0.2 * (1 - 9 / 60) ** 0.9)
    with open(tmp_path / "plots" / "val.csv") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [20, 40, 60]
    assert (tmp_path / "ckpt" / "last.pt").is_file() and (tmp_path / "ckpt" / "best.pt").is_file()
    steps = [step for step, metrics in tracker.metrics if "val/miou" in metrics]
    assert steps == [20, 40, 60]
    best = load_torch(tmp_path / "ckpt" / "best.pt")
    assert best["meta"]["iteration"] == result.best_iteration
    assert all(torch.equal(best["model"][k], result.best_state[k]) for k in result.best_state)


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_subset_validation_draws_a_curve_without_changing_training_or_the_best_weights(tmp_path):
    plain = make_trainer(tmp_path / "plain", train_params(iterations=12, val_every=6, log_every=2)).fit()
    tracker = RecordingTracker()
    params = train_params(iterations=12, val_every=6, log_every=2, val_subset_every=2, val_subset_scenes=2)
    curved = make_trainer(tmp_path / "curved", params, tracker=tracker).fit()
    # validating a subset every other step is eval-mode and RNG-neutral: same weights, same selection
    assert _states_equal(plain.last_state, curved.last_state) and _states_equal(plain.best_state, curved.best_state)
    assert (plain.best_iteration, plain.best_miou) == (curved.best_iteration, curved.best_miou)
    assert curved.curves["val"] == plain.curves["val"] and plain.curves["val_subset"] == []
    with open(tmp_path / "curved" / "plots" / "val_subset.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10, 12]
    assert all(0.0 <= float(r["miou"]) <= 1.0 for r in rows)
    assert [step for step, metrics in tracker.metrics if "val_subset/miou" in metrics] == [2, 4, 6, 8, 10, 12]
    # the subset is the first two scenes of the validation set: its score at the end is theirs alone
    trainer = make_trainer(tmp_path / "check", params)
    trainer.model.load_state_dict(curved.last_state)
    first_two = Trainer(trainer.model, params, train_dataset=ToyScenes(10, seed=1), collate_fn=collate,
                        num_classes=NUM_CLASSES, seed=7, val_dataset=torch.utils.data.Subset(
                            ToyScenes(4, seed=2, augment=False), [0, 1]),
                        input_builder=dense_input, progress=False).validate()
    assert float(rows[-1]["miou"]) == pytest.approx(first_two["miou"])


def test_killed_run_resumes_to_bit_identical_weights(tmp_path):
    params = train_params(iterations=12, grad_accum=2, val_every=4, checkpoint_every=4, log_every=2)
    reference = make_trainer(tmp_path / "ref", params).fit()

    def kill_at_7(iteration):
        if iteration == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        make_trainer(tmp_path / "run", params, on_iteration_end=kill_at_7).fit()
    assert load_torch(tmp_path / "run" / "ckpt" / "last.pt")["iteration"] == 4
    # The resumed process starts from different initial weights and loads data with 2 worker processes:
    # neither may matter.
    resumed_params = train_params(iterations=12, grad_accum=2, val_every=4, checkpoint_every=4, log_every=2,
                                  num_workers=2)
    resumed = make_trainer(tmp_path / "run", resumed_params, model_seed=99).fit()
    assert resumed.resumed_from == 4
    assert _states_equal(resumed.last_state, reference.last_state)
    assert _states_equal(resumed.best_state, reference.best_state)
    assert resumed.curves == reference.curves
    for name in ("train.csv", "val.csv"):
        assert (tmp_path / "run" / "plots" / name).read_bytes() == (tmp_path / "ref" / "plots" / name).read_bytes()


def test_resumed_run_keeps_logging_into_its_tracking_run(tmp_path):
    asked = []

    def factory(run_id):
        asked.append(run_id)
        tracker = RecordingTracker()
        tracker.run_id = run_id or f"run-{len(asked)}"
        return tracker

    def kill_at_5(iteration):
        if iteration == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        make_trainer(tmp_path, train_params(), tracker=factory, on_iteration_end=kill_at_5).fit()
    result = make_trainer(tmp_path, train_params(), tracker=factory).fit()
    assert asked == [None, "run-1"] and result.tracking_run_id == "run-1"


def test_changed_params_start_fresh_and_finished_run_is_not_retrained(tmp_path):
    make_trainer(tmp_path, train_params(iterations=4)).fit()
    again = make_trainer(tmp_path, train_params(iterations=4)).fit()
    assert again.resumed_from == 4 and again.iterations == 4
    changed = make_trainer(tmp_path, train_params(iterations=4, lr=0.05)).fit()
    assert changed.resumed_from is None


def test_adamw_step_schedule_class_weights_lovasz_and_label_checks(tmp_path):
    params = train_params(optimizer="adamw", lr=0.01, scheduler="step", step_size=2, step_gamma=0.5,
                          class_weights=[1.0, 2.0, 0.5], lovasz_weight=0.5, iterations=4, log_every=1, val_every=0)
    trainer = make_trainer(tmp_path, params, val=False)
    assert trainer.criterion.lovasz_weight == 0.5
    result = trainer.fit()
    lrs = [row["lr"] for row in result.curves["train"]]
    assert lrs == pytest.approx([0.01, 0.01, 0.005, 0.005])
    assert all(math.isfinite(row["loss"]) for row in result.curves["train"])
    with pytest.raises(EngineError, match="train.class_weights: has 2 values but the dataset has 3 classes"):
        make_trainer(tmp_path / "b", train_params(class_weights=[1.0, 2.0]))
    resolved = make_trainer(tmp_path / "d", train_params(class_weights="balanced"), class_weights=[0.5, 1.0, 1.5])
    assert resolved.criterion.cross_entropy.weight.tolist() == [0.5, 1.0, 1.5]  # 'balanced' resolved by the caller from the data
    with pytest.raises(EngineError, match="'balanced' needs the training data's label counts"):
        make_trainer(tmp_path / "e", train_params(class_weights="balanced"))

    class BadLabels(ToyScenes):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            item["labels"][0] = 7
            return item

    with pytest.raises(EngineError, match="label 7 but the model predicts 3 classes"):
        make_trainer(tmp_path / "c", train_params(), train=BadLabels(4)).fit()


def test_schedules():
    poly = make_schedule("poly", 100, poly_power=0.9)
    assert poly(0) == 1.0 and poly(50) == pytest.approx(0.5**0.9) and 0 < poly(99) < 0.02
    step = make_schedule("step", 100, step_size=30, step_gamma=0.1)
    assert [step(i) for i in (0, 29, 30, 60, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.001])
    one = make_schedule("onecycle", 100, pct_start=0.3, div_factor=25, final_div_factor=1e4)
    values = [one(i) for i in range(100)]
    assert values[0] == pytest.approx(1 / 25) and values[30] == pytest.approx(1.0)
    assert max(values) == pytest.approx(1.0) and values[99] == pytest.approx(1 / 25 / 1e4)
    assert all(a <= b for a, b in zip(values[:30], values[1:31]))
    assert all(a >= b for a, b in zip(values[30:], values[31:]))
    with pytest.raises(ValueError):
        make_schedule("cosine", 10)


def test_data_order_is_a_pure_function_of_seed_and_epoch():
    order = EpochOrder(10, seed=3)
    assert order.indices(0) == EpochOrder(10, seed=3).indices(0)
    assert order.indices(0) != order.indices(1) and sorted(order.indices(1)) == list(range(10))
    shards = [EpochOrder(10, seed=3, world_size=3, rank=r).indices(5) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded to ceil(10 / 3)
    assert set().union(*shards) == set(range(10))
    sampler = ResumableBatchSampler(order, batch_size=3)
    assert sampler.batches_per_epoch == 4
    sampler.set_position(2, 0)
    full = list(sampler)
    sampler.set_position(2, 3)
    assert list(sampler) == full[3:]
    assert full[0][0] == (order.indices(2)[0], sample_seed(3, 2, order.indices(2)[0]))
    with pytest.raises(ValueError, match="empty"):
        EpochOrder(0, seed=1)


def test_limit_batch_points_keeps_at_least_one_scene():
    samples = [{"coordinates": np.zeros((n, 3))} for n in (5, 4, 3)]
    limited = limit_batch_points(lambda batch: [len(s["coordinates"]) for s in batch], 9)
    assert limited(samples) == [5, 4]
    assert limit_batch_points(lambda b: len(b), 2)(samples) == 1
    assert limit_batch_points(lambda b: len(b), 0)(samples) == 3


def test_rng_state_roundtrips_through_weights_only_load(tmp_path):
    seed_everything(5)
    save_torch({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (np.random.rand(), torch.rand(2), __import__("random").random())
    seed_everything(6)
    set_rng_state(load_torch(tmp_path / "rng.pt")["rng"])
    again = (np.random.rand(), torch.rand(2), __import__("random").random())
    assert expected[0] == again[0] and torch.equal(expected[1], again[1]) and expected[2] == again[2]


class _Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_unsafe_mismatched_and_broken_weight_files_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"model": _Payload()}, handle)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_torch(evil)
    torch.save({"model": {"w": torch.zeros(2)}, "extra": _Payload()}, tmp_path / "evil2.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_torch(tmp_path / "evil2.pt")

    model = ToyNet()
    other = ToyNet(hidden=8)
    save_torch(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"weights do not fit ToyNet \(saved for another model: .*"
                                              r"net.0.weight is \[8, 4\] in the file"):
        load_weights(model, tmp_path / "other.pt", "ToyNet")
    save_torch([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not contain a model state_dict"):
        load_weights(model, tmp_path / "list.pt")
    (tmp_path / "cut.pt").write_bytes(open(tmp_path / "other.pt", "rb").read()[:100])
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_torch(tmp_path / "cut.pt")
    save_torch({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    load_weights(ToyNet(), tmp_path / "ddp.pt")  # DDP-prefixed keys are accepted


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_gpu_is_a_clear_error():
    with pytest.raises(EngineError, match="base.device is cuda but no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_determinism_flag_is_set_without_importing_the_compiler():
    """configure_determinism sets torch's deterministic-kernels flag (warn-only) and, in a fresh process, does not
    pull in torch._inductor (seconds of every train stage's start-up on a small CPU)."""
    import subprocess
    import sys
    code = ("import sys, torch\n"
            "from minkseg.engine.trainer import configure_determinism\n"
            "configure_determinism(True)\n"
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
            " 'torch._inductor' in sys.modules)\n"
            "configure_determinism(False)\n"
            "print(torch.are_deterministic_algorithms_enabled())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split() == ["True", "True", "False", "False"]
