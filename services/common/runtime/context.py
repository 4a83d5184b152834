"""The call context every servicer method receives, typed once for all of them.

Request and response types differ per method; what servicers use of the
context (metadata, peer, cancellation, trailing metadata) does not depend on
them, so one alias serves every method.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

ServicerContext: TypeAlias = grpc.aio.ServicerContext[Any, Any]
