"""Which machines run the predictors: the one place the options choose it."""
from __future__ import annotations

from predictor.machines.contract import Machines
from predictor.machines.local import ThisMachine


def choose_machines() -> Machines:
    """The processes of this host."""
    return ThisMachine()
