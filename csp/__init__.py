"""CSP: Contrastive Spatial Pre-training for geo-aware vision.

Locations are ``(lon, lat)`` in degrees, shape ``(..., 2)``, everywhere in this package.
"""

__version__ = "0.1.0"
