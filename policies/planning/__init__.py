"""Day-ahead TSO-DSO planning of seed 000: EVCS regulation for both operators, Wasserstein DRO for
renewables, ARO (budget set) for the TSO's requirement, C&CG for the DSOs' nested problems, ADMM
coordination and the centralized yardstick.

    from policies.planning import PlanningSettings, build_planning_data, solve_admm, solve_centralized

    data = build_planning_data(grid, scenario.day_ahead, PlanningSettings())
    plan = solve_admm(data).plan              # FirstStagePlan; plan.to_dispatch(step, dt_minutes, base)
"""

from policies.planning.admm import ADMMIteration, ADMMResult, solve_admm
from policies.planning.ccg import DSOModel, DSOSolver, FeederRecourse, build_feeder_recourse
from policies.planning.centralized import CentralizedResult, solve_centralized
from policies.planning.first_stage import (
    FirstStagePlan,
    PlanningData,
    PlanningError,
    PlanningSettings,
    TSOModel,
    TSOSolver,
    build_planning_data,
    restrict_periods,
)

__all__ = [
    "ADMMIteration", "ADMMResult", "CentralizedResult", "DSOModel", "DSOSolver", "FeederRecourse", "FirstStagePlan",
    "PlanningData", "PlanningError", "PlanningSettings", "TSOModel", "TSOSolver", "build_feeder_recourse", "build_planning_data",
    "restrict_periods", "solve_admm", "solve_centralized",
]
