"""The local sandbox: the control plane's AWS account, emulated on one machine.

- ``Sandbox`` (``sandbox.core``): moto in process or as a loopback server, with template.yaml
  deployed into it: Lambda handlers run in process, Step Functions executions run on moto's ASL
  interpreter with time scaled, EventBridge delivers to Lambda and Step Functions targets, and
  scheduled rules fire on the sandbox's clock.
- ``hpctl sandbox up`` (``sandbox.server``) runs one in the foreground for other processes.

Nothing here is imported by the Lambda functions; it is test and demo infrastructure.
"""

from sandbox.compat import require_supported_moto

# Before any module below imports moto's internals: one clear line instead of an ImportError.
require_supported_moto()

from sandbox.core import Sandbox, SandboxConfig  # noqa: E402

__all__ = ["Sandbox", "SandboxConfig"]
