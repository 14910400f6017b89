"""ka.disk: the desc language, the partition planner, and applying a plan to a block device.

Parsing (`parse_desc`) and planning (`plan_layout`) are pure; `apply_plan`, `probe` and the
device helpers run external tools through `ka.run`.
"""

from ka.disk.apply import AppliedLayout, AppliedPartition, Step, apply_plan, plan_steps
from ka.disk.desc import parse_desc
from ka.disk.devices import (
    LoopDevice,
    check_disk_free,
    disk_size,
    ensure_partition_nodes,
    partition_device,
    sector_size,
    unmount_tree,
)
from ka.disk.errors import DescError, DescProblem, DiskBusy, DoesNotFit
from ka.disk.layout import Layout, PartitionSpec, Size, parse_size
from ka.disk.plan import Plan, PlannedPartition, minimum_disk_size, plan_layout
from ka.disk.probe import DiskReport, probe, probe_disks

__all__ = [
    "AppliedLayout",
    "AppliedPartition",
    "DescError",
    "DescProblem",
    "DiskBusy",
    "DiskReport",
    "DoesNotFit",
    "Layout",
    "LoopDevice",
    "PartitionSpec",
    "Plan",
    "PlannedPartition",
    "Size",
    "Step",
    "apply_plan",
    "check_disk_free",
    "disk_size",
    "ensure_partition_nodes",
    "minimum_disk_size",
    "parse_desc",
    "parse_size",
    "partition_device",
    "plan_layout",
    "plan_steps",
    "probe",
    "probe_disks",
    "sector_size",
    "unmount_tree",
]
