"""The product machine image (S1): the Image Builder component document
(:mod:`images.component`), the pipeline (:mod:`images.pipeline`, its own Pulumi project in
``images/Pulumi.yaml``) and the lookup customer stacks use (:mod:`images.lookup`).
"""
