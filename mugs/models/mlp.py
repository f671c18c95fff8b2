"""The two-layer MLP heads of the BYOL family (projector and predictor), shared by SMoG and UniVIP.

Linear -> BatchNorm -> ReLU -> Linear, as BYOL (Grill et al., NeurIPS 2020, arXiv 2006.07733,
section 3.3) defines its projector and predictor; SMoG adds a BatchNorm after the projector's
output (``bn_out``).
"""

from __future__ import annotations

from torch import nn


def byol_mlp(d_in: int, d_hidden: int, d_out: int, bn_out: bool = False, bn: bool = True) -> nn.Sequential:
    """Linear -> BN -> ReLU -> Linear (-> BN without affine parameters where ``bn_out``);
    ``bn=False`` drops every BatchNorm (a bias then takes the hidden one's place)."""
    layers: list[nn.Module] = [nn.Linear(d_in, d_hidden, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm1d(d_hidden))
    layers += [nn.ReLU(inplace=True), nn.Linear(d_hidden, d_out, bias=not (bn and bn_out))]
    if bn and bn_out:
        layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)
