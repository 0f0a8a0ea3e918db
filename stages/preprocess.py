"""DVC stage `preprocess`: Raw scans -> one compact file per scene (coordinates, colours, benchmark labels)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout without pip install

from minkseg.pipeline.cli import run_stage  # noqa: E402
from minkseg.pipeline.preprocess import run_preprocess  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_stage("preprocess", run_preprocess))
