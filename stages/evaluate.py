"""DVC stage `evaluate`: Point-level metrics (mIoU, OA, mAcc, mAP), confusion matrix, coloured PLY and PNG exports."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout without pip install

from minkseg.pipeline.cli import run_stage  # noqa: E402
from minkseg.pipeline.evaluate import run_evaluate  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_stage("evaluate", run_evaluate))
