"""DVC stage `train`: Train the network; resumable checkpoints in data/checkpoints, best weights in models/model.pt."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout without pip install

from minkseg.pipeline.cli import run_stage  # noqa: E402
from minkseg.pipeline.train import run_train  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_stage("train", run_train))
