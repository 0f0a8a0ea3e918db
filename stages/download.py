"""DVC stage `download`: Make the raw data available: synthetic generation, Synthia4D download + safe extraction, or a ScanNet check."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout without pip install

from minkseg.pipeline.cli import run_stage  # noqa: E402
from minkseg.pipeline.download import run_download  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_stage("download", run_download))
