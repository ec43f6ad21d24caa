"""What `pulumi up` / `pulumi preview` run (Pulumi.yaml: ``main: stacks/``)."""

from stacks.program import main

main()
