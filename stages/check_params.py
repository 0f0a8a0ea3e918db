"""DVC stage `check_params`: Validate every params group before any other stage runs (they all depend on it)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout without pip install

from minkseg.pipeline.cli import run_stage  # noqa: E402
from minkseg.pipeline.check_params import run_check_params  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_stage("check_params", run_check_params))
