"""LocDiff: image geolocation by latent diffusion on the sphere (LocDiffusion, SHDD encoding).

The stable public API::

    locdiff.encode(latlon, degree)  # [N, 2] (lat, lon) degrees -> [N, (degree+1)**2]
    locdiff.decode(coeffs)          # [N, (L+1)**2] -> [N, 2], continuous mode seeking
"""

from locdiff.decoding import anchor_decode, decode, density_grid, find_modes
from locdiff.shdd import encode, kl, log_density

__all__ = ["encode", "decode", "kl", "log_density", "anchor_decode", "density_grid", "find_modes"]
__version__ = "0.1.0"
