"""The README's model table, computed from the code: ``python -m minkseg.nn.table``.

Parameter counts are for the ScanNet setting (3 colour channels in, 20 classes out, each network's default
stem kernel); a typed table would drift from the code, a generated one cannot.
"""
from __future__ import annotations

import argparse
import sys

from minkseg.nn.registry import aliases_of, build_model, count_parameters, distinct_specs, get_spec

__all__ = ["model_table", "main"]


def _region(spec, D: int) -> str:
    return {"cube": "3^3 cube" if D == 3 else "3^4 cube", "hybrid": "3^3 x cross(t)"}[spec.block_region(D)]


def model_table(in_channels: int = 3, out_channels: int = 20, names: list[str] | None = None) -> str:
    """A Markdown table: one row per distinct network (or per name in ``names``), aliases, structure, size."""
    lines = [
        f"| Model | Aliases | D | Block | Blocks per stage | Widths (PLANES) | Stem kernel | Block kernel | "
        f"Parameters (in={in_channels}, out={out_channels}) |",
        "|---|---|---|---|---|---|---|---|---:|",
    ]
    specs = distinct_specs() if names is None else [get_spec(name) for name in names]
    for spec in specs:
        model = build_model(spec.name, in_channels, out_channels)
        aliases = ", ".join(aliases_of(spec.name)) or "-"
        layers = ",".join(map(str, spec.layers))
        planes = ",".join(map(str, spec.planes))
        lines.append(f"| {spec.name} | {aliases} | {model.D} | {spec.block} | {layers} | {planes} | "
                     f"{model.conv1_kernel_size} | {_region(spec, model.D)} | {count_parameters(model):,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--out-channels", type=int, default=20)
    args = parser.parse_args(argv)
    print(model_table(args.in_channels, args.out_channels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
