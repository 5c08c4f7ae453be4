"""The maths: geo, harmonics, SHDD, decoding, anchors, diffusion, network, metrics, reduction, calibration, baselines,
splits, and the values they produce. Pure torch + attrs: no files, no devices chosen, no adapters (see pyproject contracts)."""
