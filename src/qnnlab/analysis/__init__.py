"""Cost accounting: operations by kind and width in every phase, energy, memory, hidden costs."""

from qnnlab.analysis.energy import EnergyTable
from qnnlab.analysis.profile import Profile, profile

__all__ = ["EnergyTable", "Profile", "profile"]
