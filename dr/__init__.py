"""Disaster-recovery restore drills (S8): restore a customer from the copy region alone onto a
drill host, prove the restored database equals production at the target, and measure RTO and
RPO against the promise. Plain functions here; ``dr/tasks.py`` (Fabric) and ``dr/cli.py``
(``erpcloud dr``) are thin wrappers.
"""
