"""`pulumi preview|up --policy-pack policypack`: the promise checks of stacks/checks.py gate
every customer stack (issue 13 item 9). Run from the repository root, with the project's
environment (`uv sync`), so that `stacks` and `erpcloud` import; the customer files are read
from `customers/` (pack config `customersDir` to change it)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import PolicyPack

from stacks.policypack import policies

PolicyPack(name="erpcloud-promises", policies=list(policies()))
