"""DDP on CPU: two gloo processes through the engine's own helpers, and the torchrun self-relaunch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from minkseg.engine import distributed
from minkseg.weights import load_torch
from minkseg.engine.sampling import EpochOrder
from minkseg.engine.trainer import Trainer, seed_everything
from minkseg.metrics import confusion_matrix
from tests.engine_toys import NUM_CLASSES, ToyNet, ToyScenes, collate, dense_input, train_params

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
TRAIN_SCENES = 10


class RecordingScenes(ToyScenes):
    """Remembers which scenes this process loaded, in order (num_workers=0: loading happens in-process)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loaded: list[int] = []

    def __getitem__(self, index):
        self.loaded.append(index)
        return super().__getitem__(index)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = distributed.init_from_env("cpu")
    try:
        seed_everything(rank)  # different initial weights per rank: DDP must broadcast rank 0's
        params = train_params(iterations=6, batch_size=2, val_every=3, checkpoint_every=3, log_every=3)
        train = RecordingScenes(TRAIN_SCENES, seed=1)
        trainer = Trainer(ToyNet(batch_norm=False), params, train_dataset=train, collate_fn=collate,
                          num_classes=NUM_CLASSES, seed=11, val_dataset=ToyScenes(5, seed=2, augment=False),
                          input_builder=dense_input, checkpoint_dir=Path(out_dir) / "ckpt",
                          curves_dir=Path(out_dir) / "plots", progress=False)
        result = trainer.fit()
        metrics = trainer.validate()
        torch.save({"info": (info.rank, info.world_size), "state": result.last_state, "loaded": train.loaded,
                    "val_matrix": metrics["confusion_matrix"]["matrix"], "curves": result.curves},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


def test_ddp_two_gloo_processes_train_in_sync_with_sharded_data_and_reduced_metrics(tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [r["info"] for r in ranks] == [(0, 2), (1, 2)]

    # Gradients were averaged: both ranks end with the same weights.
    for key in ranks[0]["state"]:
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key

    # Each rank read its own shard of epoch 0; together they cover the training set.
    shards = [EpochOrder(TRAIN_SCENES, seed=11, world_size=WORLD, rank=r).indices(0) for r in range(WORLD)]
    for rank in range(WORLD):
        assert ranks[rank]["loaded"][:len(shards[rank])] == shards[rank]
    assert set(shards[0]) | set(shards[1]) == set(range(TRAIN_SCENES))

    # The validation confusion matrix is the sum over both ranks' scenes: recompute it in one process.
    model = ToyNet(batch_norm=False)
    model.load_state_dict(ranks[0]["state"])
    model.eval()
    val = ToyScenes(5, seed=2, augment=False)
    expected = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    with torch.no_grad():
        for rank in range(WORLD):
            mine = list(range(rank, len(val), WORLD))
            for start in range(0, len(mine), 2):  # the same val_batch_size=2 batches the rank formed
                batch = collate([val[i] for i in mine[start:start + 2]])
                logits = model(batch["features"])
                expected += confusion_matrix(batch["labels"], logits.argmax(1), NUM_CLASSES)
    assert ranks[0]["val_matrix"] == ranks[1]["val_matrix"] == expected.tolist()
    assert expected.sum() > 0

    # Only rank 0 wrote the checkpoint, holding both ranks' RNG states; curves agree on every rank.
    checkpoint = load_torch(tmp_path / "ckpt" / "last.pt")
    assert checkpoint["iteration"] == 6 and len(checkpoint["rng"]) == WORLD
    assert ranks[0]["curves"] == ranks[1]["curves"]
    assert [row["step"] for row in ranks[0]["curves"]["val"]] == [3, 6]


def test_torchrun_command_layouts():
    single = distributed.torchrun_command(["stages/train.py"], 4, python="py")
    assert single == ["py", "-m", "torch.distributed.run", "--nproc-per-node=4", "--standalone", "stages/train.py"]
    multi = distributed.torchrun_command(["stages/train.py", "--x"], 8, nnodes=2, node_rank=1,
                                         rdzv_endpoint="10.0.0.5:29400", python="py")
    assert multi[3:] == ["--nproc-per-node=8", "--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.5",
                         "--master-port=29400", "stages/train.py", "--x"]
    with pytest.raises(ValueError):
        distributed.torchrun_command(["x.py"], 2, nnodes=2, node_rank=2)


def test_stage_relaunches_itself_under_torchrun(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import torch
        from minkseg.engine import distributed
        distributed.relaunch_under_torchrun(2)
        info = distributed.init_from_env("cpu")
        total = distributed.all_reduce_sum(torch.tensor([info.rank + 1.0]))
        print(f"rank {{info.rank}}/{{info.world_size}} sum {{float(total[0])}} args {{sys.argv[1:]}}", flush=True)
        distributed.shutdown()
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, str(script), "--flag"], capture_output=True, text=True, timeout=180,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rank 0/2 sum 3.0 args ['--flag']" in done.stdout
    assert "rank 1/2 sum 3.0 args ['--flag']" in done.stdout


def test_single_process_layout_does_not_relaunch():
    from minkseg.config import load_params

    base = load_params(REPO / "params.yaml").base
    assert base.num_gpus == 1
    assert distributed.relaunch_from_params(base, argv=["x.py"]) is None
