"""The grid: case data, physics (power flow), EV stations, formulations and the Gymnasium env."""

from env.cases import case_names, load_case
from env.network import Grid, Network, Tariff

__all__ = ["Grid", "Network", "Tariff", "case_names", "load_case"]
