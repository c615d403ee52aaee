"""The grid: case data, physics (power flow), EV stations, formulations and the Gymnasium env."""

from env.cases import case_names, load_case
from env.dispatch import ActionLimits, Dispatch, DispatchSizes
from env.gym_env import TDGridEnv
from env.importers import from_pandapower, grid_from_spec
from env.network import Grid, Network, Tariff
from env.observation import Observation, ObservationEncoder
from env.registration import ENV_IDS, register_envs
from env.simulator import COST_KEYS, GridModel, GridSimulator, SimulatorSettings, StepOutcome

register_envs()

__all__ = [
    "COST_KEYS", "ENV_IDS", "ActionLimits", "Dispatch", "DispatchSizes", "Grid", "GridModel", "GridSimulator",
    "Network", "Observation", "ObservationEncoder", "SimulatorSettings", "StepOutcome", "TDGridEnv", "Tariff",
    "case_names", "from_pandapower", "grid_from_spec", "load_case", "register_envs",
]
