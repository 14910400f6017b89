"""ka.disk: the desc language, the partition planner, and applying a plan to a block device.

Parsing (`parse_desc`) and planning (`plan_layout`) are pure; `apply_plan`, `probe` and the
device helpers run external tools through `ka.run`.
"""

from ka.disk.desc import parse_desc
from ka.disk.errors import DescError, DescProblem, DiskBusy, DoesNotFit
from ka.disk.layout import Layout, PartitionSpec, Size, parse_size
from ka.disk.plan import Plan, PlannedPartition, plan_layout

__all__ = [
    "DescError",
    "DescProblem",
    "DiskBusy",
    "DoesNotFit",
    "Layout",
    "PartitionSpec",
    "Plan",
    "PlannedPartition",
    "Size",
    "parse_desc",
    "parse_size",
    "plan_layout",
]
