"""What `pulumi up` runs in images/ (images/Pulumi.yaml: the product image pipelines)."""

from images.program import main

main()
