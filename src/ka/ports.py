"""The ports ka uses, declared once (`ka doctor` checks them; README, ka doctor)."""

from __future__ import annotations

# The first session: `ka send`'s, `ka clone`'s plan; a clone's later sessions count up from it.
SESSION_PORT = 30765
# Stage2 for booting nodes: a session of its own, below the plan session's.
STAGE2_PORT = 30764
# `ka install`'s status service for `ka console`, below the sessions.
STATUS_PORT = 30760
DHCP_PORT = 67
TFTP_PORT = 69
