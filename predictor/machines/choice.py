"""Which machines run the predictors: the one place the options choose it."""
from __future__ import annotations

from predictor.machines.contract import ClusterUnavailable, Machines
from predictor.machines.local import ThisMachine


def choose_machines(ray_address: str | None) -> Machines:
    """`--ray [ADDRESS]` -> a Ray cluster (started or joined on entry);
    without it, the processes of this host."""
    if ray_address is None:
        return ThisMachine()
    try:
        from predictor.machines.ray_cluster import RayCluster
    except ImportError as err:
        raise ClusterUnavailable(f"--ray needs the ray package ({err}): bash scripts/setup.sh installs it") from None
    return RayCluster(ray_address)
