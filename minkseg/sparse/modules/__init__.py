"""``MinkowskiEngine.modules``: the residual and squeeze-excitation blocks ME ships for its example networks."""
