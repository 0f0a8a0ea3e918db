"""DVC stage `submit`: the ScanNet benchmark's 3D semantic label submission (zip of <scene>.txt) of the test split."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout without pip install

from minkseg.pipeline.cli import run_stage  # noqa: E402
from minkseg.pipeline.submit import run_submit  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_stage("submit", run_submit))
