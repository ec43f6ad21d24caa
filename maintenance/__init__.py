"""Maintenance windows across the fleet (S11-S14).

Plain Python, tested on its own: the calendar (:mod:`~maintenance.calendar`), change files and
their rules (:mod:`~maintenance.change`, :mod:`~maintenance.rules`), the step registry
(:mod:`~maintenance.steps`), the inventory, the planner, the runner with its run records and
reports, and the notices. Thin front ends: ``erpcloud maintenance`` (:mod:`~maintenance.cli`)
and ``fab maintenance.*`` (:mod:`~maintenance.tasks`).
"""
