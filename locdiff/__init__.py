"""LocDiff: image geolocation by latent diffusion on the sphere (LocDiffusion, SHDD encoding).

The stable public API::

    locdiff.encode(latlon, degree)  # [N, 2] (lat, lon) degrees -> [N, (degree+1)**2]
    locdiff.decode(coeffs)          # [N, (L+1)**2] -> [N, 2], continuous mode seeking
    model = locdiff.load("runs/run-0001")  # a trained model: model.predict([...]), model.density([...])
"""

import os

# OpenMP threads that spin while waiting made a training step 13x slower on a busy 2-core machine
# (11 s vs 0.84 s measured); passive waiting costs nothing when the machine is idle. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from locdiff.core.decoding import anchor_decode, decode, density_grid, find_modes
from locdiff.core.shdd import encode, kl, log_density


def load(run, **options):
    """A trained model (:class:`locdiff.api.Model`) from a run or checkpoint folder; see :func:`locdiff.api.load`."""
    from locdiff.api import load as load_model

    return load_model(run, **options)


__all__ = ["encode", "decode", "kl", "log_density", "anchor_decode", "density_grid", "find_modes", "load"]
__version__ = "0.1.0"
