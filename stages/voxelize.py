"""DVC stage `voxelize`: Scene files -> voxelised evaluation samples with inverse maps back to every point."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout without pip install

from minkseg.pipeline.cli import run_stage  # noqa: E402
from minkseg.pipeline.voxelize import run_voxelize  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_stage("voxelize", run_voxelize))
