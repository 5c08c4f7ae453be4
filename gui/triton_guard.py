"""Keep triton out of the app's process: its LLVM and Mesa's llvmpipe LLVM cannot share one process.

With software OpenGL (Mesa llvmpipe: VMs, remote desktops, WSL, CI) the globe loads Mesa's LLVM.
The first uncached query then imports the embedder stack (sentence-transformers / open_clip →
transformers → ``torch._dynamo`` → ``triton._C.libtriton``), whose own LLVM collides with it and
the process dies with a segmentation fault. The app never compiles kernels (eager inference only),
so it needs no triton: :func:`block` marks the package as absent (``sys.modules["triton"] = None``),
which torch and transformers treat as "triton not installed". ``LOCDIFF_ALLOW_TRITON=1`` opts out.
"""

from __future__ import annotations

import os
import sys

ENV_ALLOW = "LOCDIFF_ALLOW_TRITON"


def block() -> bool:
    """Make ``import triton`` fail with ImportError in this process; returns whether it is blocked.

    Too late (and a no-op) if triton is already imported: then it was loaded before any GL context,
    which is the safe order.
    """
    if os.environ.get(ENV_ALLOW, "").lower() in {"1", "true", "yes"}:
        return False
    if "triton" in sys.modules:
        return sys.modules["triton"] is None
    sys.modules["triton"] = None  # type: ignore[assignment]  # the import system's "not available" marker
    return True
