"""Every network name params.yaml may ask for, and what each name means (a ``UNetSpec``); no torch here.

Why apart from the builder (``minkseg.nn.registry``): params are checked before any stage does work, and the check
of ``train.model`` must not import torch into the check_params and download processes. Names and numbers are those
of the original code (models/res16unet.py of SpatioTemporalSegmentation and its ScanNet fork) and of
MinkowskiEngine's examples/minkunet.py; the model zoo spells the same networks ``Mink16UNet*``, so those are
aliases rather than copies.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from minkseg.errors import ModelError

__all__ = ["UNetSpec", "list_models", "get_spec", "canonical_name", "aliases_of", "distinct_specs"]


@dataclass(frozen=True)
class UNetSpec:
    """Everything that distinguishes one named network from another.

    lineage: 'sts' = chrischoy/SpatioTemporalSegmentation (Res16UNet*, Mink16UNet*, STRes*; 3-D block convs were
    built as HYBRID regions there), 'me' = MinkowskiEngine's examples/minkunet.py (MinkUNet*; plain cubes,
    stem kernel 5, Kaiming init). It picks defaults (init, BN momentum, stem kernel, checkpoint offset order).
    tesseract: 4-D block convs use the full 3^4 cube instead of the space-cube x time-cross hybrid.
    """

    name: str
    block: str
    layers: tuple[int, int, int, int, int, int, int, int]
    planes: tuple[int, int, int, int, int, int, int, int]
    dimension: int = 3
    conv1_kernel_size: int = 3
    lineage: str = "sts"
    tesseract: bool = False
    init_dim: int = 32

    def block_region(self, D: int) -> str:
        """Region of the 3-wide block convs: a cube in 3-D (27 offsets), hybrid (29) or tesseract (81) in 4-D."""
        return "hybrid" if D == 4 and not self.tesseract else "cube"


_LAYERS = {
    "14": (1, 1, 1, 1, 1, 1, 1, 1),
    "18": (2, 2, 2, 2, 2, 2, 2, 2),
    "34": (2, 3, 4, 6, 2, 2, 2, 2),
    "50": (2, 3, 4, 6, 2, 2, 2, 2),
    "101": (2, 3, 4, 23, 2, 2, 2, 2),
}
_BLOCK = {"14": "basic", "18": "basic", "34": "basic", "50": "bottleneck", "101": "bottleneck"}
_ENCODER = (32, 64, 128, 256)
_DECODER = {
    "": (256, 256, 256, 256),
    "A": (128, 128, 96, 96),
    "B": (128, 128, 128, 128),
    "C": (192, 192, 128, 128),
    "D": (384, 384, 384, 384),
}
# Variants whose decoder widths depend on the depth (the letters were reused with other meanings).
_DECODER_BY_NAME = {
    "34A": (256, 128, 64, 64),
    "34B": (256, 128, 64, 32),
    "34C": (256, 128, 96, 96),
    "18E": (256, 128, 64, 64),
    "18F": (256, 128, 64, 32),
}
# Variants that re-balance the blocks between encoder and decoder.
_LAYERS_BY_NAME = {
    "14A2": (1, 1, 1, 1, 2, 2, 2, 2),
    "14B2": (1, 1, 1, 1, 2, 2, 2, 2),
    "14B3": (2, 2, 2, 2, 1, 1, 1, 1),
}
_STS_VARIANTS = ("14", "18", "34", "50", "101", "14A", "14A2", "14B", "14B2", "14B3", "14C", "14D", "18A", "18B",
                 "18D", "18E", "18F", "34A", "34B", "34C")
_ME_VARIANTS = ("14", "18", "34", "50", "101", "14A", "14B", "14C", "14D", "18A", "18B", "18D", "34A", "34B", "34C")
_ST_VARIANTS = ("14", "14A", "18", "18A", "34", "50", "101")
_TESSERACT_VARIANTS = ("14", "14A", "18A")


def _variant(suffix: str, name: str, **options) -> UNetSpec:
    """'34C' -> depth '34' (blocks, block type), letter 'C' (decoder widths), trailing digit (block balance)."""
    depth = next(d for d in ("101", "14", "18", "34", "50") if suffix.startswith(d))
    letter = suffix[len(depth):len(depth) + 1] if suffix[len(depth):len(depth) + 1].isalpha() else ""
    decoder = _DECODER_BY_NAME[depth + letter] if depth + letter in _DECODER_BY_NAME else _DECODER[letter]
    layers = _LAYERS_BY_NAME.get(suffix, _LAYERS[depth])
    return UNetSpec(name=name, block=_BLOCK[depth], layers=layers, planes=_ENCODER + decoder, **options)


def _build_registry() -> tuple[dict[str, UNetSpec], dict[str, str]]:
    specs: dict[str, UNetSpec] = {}
    aliases: dict[str, str] = {}
    for suffix in _STS_VARIANTS:
        specs[f"Res16UNet{suffix}"] = _variant(suffix, f"Res16UNet{suffix}")
        aliases[f"Mink16UNet{suffix}"] = f"Res16UNet{suffix}"
    for suffix in _ME_VARIANTS:
        spec = _variant(suffix, f"MinkUNet{suffix}", conv1_kernel_size=5, lineage="me")
        if suffix.isdigit():  # examples/minkunet.py gives the letterless networks the 34C decoder
            spec = replace(spec, planes=_ENCODER + _DECODER_BY_NAME["34C"])
        specs[f"MinkUNet{suffix}"] = spec
    for suffix in _ST_VARIANTS:
        specs[f"STRes16UNet{suffix}"] = _variant(suffix, f"STRes16UNet{suffix}", dimension=4)
    for suffix in _TESSERACT_VARIANTS:
        specs[f"STResTesseract16UNet{suffix}"] = _variant(suffix, f"STResTesseract16UNet{suffix}", dimension=4,
                                                          tesseract=True)
    return specs, aliases


_SPECS, _ALIASES = _build_registry()


def list_models() -> list[str]:
    """Every accepted name (canonical names and aliases), sorted."""
    return sorted([*_SPECS, *_ALIASES])


def canonical_name(name: str) -> str:
    """Resolve an alias; raise ModelError listing every valid name for an unknown one."""
    if name in _SPECS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    close = [n for n in list_models() if n.lower() == str(name).lower()]
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ModelError(f"unknown model {name!r}{hint}; valid names: {', '.join(list_models())}")


def get_spec(name: str) -> UNetSpec:
    return _SPECS[canonical_name(name)]


def aliases_of(name: str) -> list[str]:
    canonical = canonical_name(name)
    return sorted(alias for alias, target in _ALIASES.items() if target == canonical)


def distinct_specs() -> list[UNetSpec]:
    """One spec per distinct network (aliases folded in), in registry order."""
    return list(_SPECS.values())
