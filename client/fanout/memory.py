"""Memory quantities ("256Mi", "1G", 1048576) and the limit an action's process runs under.

A process-per-action runtime caps its own data segment (RLIMIT_DATA) at the action's
`resources.memory`: an allocation past it raises MemoryError in the task, which its
parent sees as flyte.errors.OOMError. Containers get the same bound from their cgroup.
"""

from __future__ import annotations

import re
import resource

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|k|K|M|G|T)?\s*$")
_UNITS = {
    None: 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}
# Below this the interpreter and its gRPC channel cannot even start: refuse it when the task is declared.
MIN_BYTES = 64 << 20


def to_bytes(quantity: str | int) -> int:
    """Bytes in a Kubernetes-style memory quantity; ValueError when it is not one or is too small to run."""
    if isinstance(quantity, bool) or not isinstance(quantity, str | int):
        raise TypeError(f"memory must be a quantity like '512Mi' or a number of bytes, not {type(quantity).__name__}")
    match = _QUANTITY.match(str(quantity))
    if not match:
        raise ValueError(f"memory {quantity!r} is not a quantity like '512Mi', '1Gi' or '500M'")
    count = int(float(match[1]) * _UNITS[match[2]])
    if count < MIN_BYTES:
        raise ValueError(f"memory {quantity!r} is below {MIN_BYTES >> 20}Mi, too little to run a task")
    return count


def limit_this_process(quantity: str) -> None:
    """Cap this process's data segment at `quantity`; an empty quantity leaves it unbounded."""
    if quantity:
        cap = to_bytes(quantity)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
