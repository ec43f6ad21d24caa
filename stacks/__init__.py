"""The Pulumi program of a customer's stack (issue 4): see :mod:`stacks.program`.

``customer_instance`` (production) and ``test_env`` (the derived test environment) are
components made of :mod:`stacks.blocks`; :mod:`stacks.plan` runs the program offline under the
recording engine (:mod:`stacks.recording`) and :mod:`stacks.checks` checks what it would send.
Importing any of these creates nothing.
"""
