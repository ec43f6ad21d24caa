"""A customer's life on the platform (S18-S20, P3, P4): move in, export, suspend and resume,
cancel, retain and purge, and the fleet's instance inventory.

Plain functions here; ``lifecycle.tasks`` (Fabric) and ``lifecycle.cli`` (``erpcloud``) are thin
front ends. Everything that touches a host goes over SSH with pinned keys
(:func:`erpcloud.ssh.connect`); nothing here creates infrastructure (that is the stack's).
"""
