"""hpctl: the command line of the HyperPod serverless control plane.

The same commands work against AWS and against the sandbox: they use the standard AWS
environment (credentials, region, AWS_ENDPOINT_URL) and find the stack's resources from its
outputs.
"""
