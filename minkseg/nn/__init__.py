"""minkseg.nn: the paper's networks (Res16UNet / MinkUNet family in 3-D and 4-D), the TS-CRF, the registry
that builds them by name, and the import of the original model zoo's weights.

Built on ``minkseg.sparse`` only (``import minkseg.sparse as ME``), like ME model code.
"""
from minkseg.nn.checkpoint import BLOCK_KERNEL_ORDERS, load_original_checkpoint, read_state_dict, to_original_order
from minkseg.nn.crf import CRFWrapper, MeanFieldCRF, wrap_with_crf
from minkseg.errors import CheckpointError, ModelError
from minkseg.nn.registry import aliases_of, build_model, canonical_name, count_parameters, get_spec, list_models
from minkseg.nn.res16unet import Res16UNet, UNetSpec

__all__ = [
    "build_model", "list_models", "canonical_name", "aliases_of", "get_spec", "Res16UNet", "UNetSpec",
    "load_original_checkpoint", "read_state_dict", "to_original_order", "BLOCK_KERNEL_ORDERS",
    "MeanFieldCRF", "CRFWrapper", "wrap_with_crf", "ModelError", "CheckpointError", "count_parameters",
]
