"""Short-term voltage stability (STVS) of a T-D operating point: time-domain simulation with
ANDES (optional ``stvs`` extra), the TVCI / VDSI indices and a light numpy surrogate (docs/stvs.md)."""

from env.stvs.indices import tvci, vdsi
from env.stvs.operating_point import StvsOperatingPoint, operating_point_from_outcome

__all__ = ["StvsOperatingPoint", "operating_point_from_outcome", "tvci", "vdsi"]
