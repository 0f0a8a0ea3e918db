"""TS-CRF: the paper's trilateral stationary CRF (x, y, z, r, g, b, t), and its 6-D bilateral variant for 3-D.

Each point is a variable whose unary is the network's logits. Points are placed on a 7-D (6-D) lattice,
``(floor(xyz / spatial_sigma), floor(rgb / chromatic_sigma), t)``, and mean field runs there: softmax, a
sparse conv with one kernel shared by all iterations (the stationary pairwise term, HYPER_CROSS region), plus
the unary. Points that share a lattice cell are summed into it and read back from it (splat / slice), so
every point keeps its own unary.

Why the Potts initialisation: the update ``Q <- softmax(u + K Q)`` is exactly the concave-convex step of the
mean-field free energy ``F(Q) = -u.Q - 1/2 Q.KQ + sum Q log Q`` when ``K`` is symmetric positive
semidefinite, so F never increases (Kraehenbuehl & Koltun, ICML 2013). A Potts kernel (w I for every
neighbour, (V-1) w I at the centre) is such a K, so a fresh TS-CRF is a convergent smoother; training may
then move the kernel anywhere.
"""
from __future__ import annotations

import torch
from torch import nn

import minkseg.sparse as ME

from minkseg.errors import ModelError

__all__ = ["MeanFieldCRF", "CRFWrapper", "wrap_with_crf"]


class MeanFieldCRF(nn.Module):
    """Mean-field CRF on the (x, y, z, r, g, b[, t]) lattice; ``temporal=True`` is the TS-CRF (7-D)."""

    def __init__(self, num_classes: int, iterations: int = 10, spatial_sigma: float = 1.0,
                 chromatic_sigma: float = 12.0, temporal: bool = True, kernel_size: int = 3) -> None:
        super().__init__()
        if num_classes < 1 or iterations < 1:
            raise ModelError(f"MeanFieldCRF needs num_classes >= 1 and iterations >= 1, "
                             f"got {num_classes} and {iterations}")
        if spatial_sigma <= 0 or chromatic_sigma <= 0:
            raise ModelError(f"CRF sigmas must be > 0, got spatial {spatial_sigma}, chromatic {chromatic_sigma}")
        self.num_classes, self.iterations = num_classes, iterations
        self.spatial_sigma, self.chromatic_sigma = float(spatial_sigma), float(chromatic_sigma)
        self.temporal = temporal
        self.lattice_dimension = 7 if temporal else 6
        generator = ME.KernelGenerator(kernel_size, 1, 1, region_type=ME.RegionType.HYPER_CROSS,
                                       dimension=self.lattice_dimension)
        self.conv = ME.MinkowskiConvolution(num_classes, num_classes, kernel_size=kernel_size, bias=False,
                                            kernel_generator=generator, dimension=self.lattice_dimension)
        self.reset_parameters()

    def reset_parameters(self, weight: float | None = None, centre_weight: float | None = None) -> None:
        """Potts compatibility: ``weight`` * I per neighbour (default 1 / #neighbours), ``centre_weight`` * I at the
        centre (default #neighbours * weight, the smallest value that makes K positive semidefinite for any
        lattice; smaller centres smooth harder but lose the monotone-energy guarantee)."""
        offsets = self.conv.kernel_offsets
        neighbours = int((offsets != 0).any(dim=1).sum())
        weight = 1.0 / max(neighbours, 1) if weight is None else float(weight)
        centre_weight = weight * neighbours if centre_weight is None else float(centre_weight)
        identity = torch.eye(self.num_classes)
        with torch.no_grad():
            kernel = self.conv.kernel.view(-1, self.num_classes, self.num_classes)
            for row, offset in enumerate(offsets):
                kernel[row] = identity * (weight if offset.any() else centre_weight)

    def lattice_coordinates(self, coordinates: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
        """[N, 1+7] (or 1+6) int32 lattice coordinates from voxel coordinates [N, 1+D] and colours [N, 3] (0-255)."""
        spatial_axes = 4 if self.temporal else 3
        if coordinates.dim() != 2 or coordinates.shape[1] != 1 + spatial_axes:
            raise ModelError(f"{'TS-CRF' if self.temporal else 'bilateral CRF'} needs coordinates "
                             f"[N, {1 + spatial_axes}] (batch, x, y, z{', t' if self.temporal else ''}), "
                             f"got {tuple(coordinates.shape)}")
        if colors.dim() != 2 or colors.shape != (coordinates.shape[0], 3):
            raise ModelError(f"CRF colours must be [N, 3] = [{coordinates.shape[0]}, 3] (RGB 0-255), "
                             f"got {tuple(colors.shape)}")
        xyz = torch.floor(coordinates[:, 1:4].float() / self.spatial_sigma)
        rgb = torch.floor(colors.float() / self.chromatic_sigma).to(xyz.device)
        parts = [coordinates[:, :1].float(), xyz, rgb] + ([coordinates[:, 4:5].float()] if self.temporal else [])
        return torch.cat(parts, dim=1).to(torch.int32)

    def _pairwise(self, lattice: torch.Tensor):
        """A function Q [N, C] -> message [N, C] on this lattice (kernel maps built once per forward)."""
        cells, inverse = torch.unique(lattice, dim=0, return_inverse=True)
        holder = ME.SparseTensor(torch.zeros(cells.shape[0], self.num_classes, device=lattice.device), cells)

        def message(q: torch.Tensor) -> torch.Tensor:
            splat = torch.zeros(cells.shape[0], q.shape[1], dtype=q.dtype, device=q.device).index_add(0, inverse, q)
            blurred = self.conv(holder.replace_features(splat))
            return blurred.F[inverse]

        return message

    def forward(self, logits: torch.Tensor, coordinates: torch.Tensor, colors: torch.Tensor,
                return_marginals: bool = False):
        """Refined logits [N, C]; with ``return_marginals`` also the list of Q after each iteration (Q_0 first)."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes or logits.shape[0] != coordinates.shape[0]:
            raise ModelError(f"CRF logits must be [N, {self.num_classes}] for {coordinates.shape[0]} points, "
                             f"got {tuple(logits.shape)}")
        message = self._pairwise(self.lattice_coordinates(coordinates, colors))
        refined = logits
        marginals = [torch.softmax(logits, dim=1)]
        for _ in range(self.iterations):
            refined = logits + message(marginals[-1])
            marginals.append(torch.softmax(refined, dim=1))
        return (refined, marginals) if return_marginals else refined

    def free_energy(self, logits: torch.Tensor, marginals: torch.Tensor, coordinates: torch.Tensor,
                    colors: torch.Tensor) -> torch.Tensor:
        """F(Q) = -u.Q - 1/2 Q.KQ + sum Q log Q: what the mean-field iterations minimise (lower is better)."""
        message = self._pairwise(self.lattice_coordinates(coordinates, colors))
        q = marginals
        entropy_term = (q * torch.log(q.clamp_min(1e-30))).sum()
        return -(logits * q).sum() - 0.5 * (q * message(q)).sum() + entropy_term


class CRFWrapper(nn.Module):
    """A segmentation network followed by a mean-field CRF on its output.

    As in the original wrapper, training applies the CRF to a random half of the batches so the network also
    learns to stand on its own; evaluation always applies it.
    """

    def __init__(self, model: nn.Module, crf: MeanFieldCRF, train_probability: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= train_probability <= 1.0:
            raise ModelError(f"train_probability must be in [0, 1], got {train_probability}")
        self.model, self.crf, self.train_probability = model, crf, float(train_probability)

    def forward(self, x: ME.SparseTensor, colors: torch.Tensor) -> ME.SparseTensor:
        out = self.model(x)
        if out.coordinate_map_key != x.coordinate_map_key:
            raise ModelError("the CRF needs the network's output on its input coordinates "
                             f"(stride 1), got stride {out.tensor_stride}")
        if self.training and float(torch.rand(())) >= self.train_probability:
            return out
        return out.replace_features(self.crf(out.F, out.C, colors.to(out.F.device)))


def wrap_with_crf(model: nn.Module, iterations: int = 10, spatial_sigma: float = 1.0,
                  chromatic_sigma: float = 12.0, kernel_size: int = 3, train_probability: float = 0.5
                  ) -> CRFWrapper:
    """TS-CRF around a 4-D network, bilateral CRF around a 3-D one (defaults: the paper's 10 / 1 / 12)."""
    dimension = getattr(model, "D", None)
    if dimension not in (3, 4):
        raise ModelError(f"wrap_with_crf needs a 3-D or 4-D network with .D and .out_channels, got D={dimension}")
    crf = MeanFieldCRF(model.out_channels, iterations, spatial_sigma, chromatic_sigma, temporal=dimension == 4,
                       kernel_size=kernel_size)
    return CRFWrapper(model, crf, train_probability)
