"""Self-configuration: target spacing, topology, patch and batch size, plans.json."""

from medseg.planning.planner import make_plans
from medseg.planning.plans import ConfigurationPlan, Plans

__all__ = ["ConfigurationPlan", "Plans", "make_plans"]
