"""Optimization formulations of the grid, written in cvxpy (data / formulation / problem).

Problems (the reactive SOCP, Rollout's models, DRO-ARO) build on these pieces
so that the physics is written once.
"""

from env.formulations.distflow import (
    FORMULATIONS,
    DistFlowSOC,
    FeederFormulation,
    FeederVars,
    LinDistFlow,
    RadialTopology,
    RelaxationGap,
    get_formulation,
    radial_topology,
    relaxation_gap,
)

__all__ = [
    "FORMULATIONS",
    "DistFlowSOC",
    "FeederFormulation",
    "FeederVars",
    "LinDistFlow",
    "RadialTopology",
    "RelaxationGap",
    "get_formulation",
    "radial_topology",
    "relaxation_gap",
]
