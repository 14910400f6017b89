"""`ka doctor`: a preflight of this machine for one role, before anything is started.

`roles` says what each role needs, `checks` looks for each thing (tools, filesystems,
ports, key file, disks, interface), `ports` reads who holds a port from /proc.
"""
