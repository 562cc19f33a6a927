"""Rule-based verification of a response against an instruction record's constraints.

Example::

    verify(record, "Velmora was founded in 1203.")   # -> [True, False, ...], one verdict per constraint
"""

from __future__ import annotations

from typing import Any

from alignpipe.world.constraints import get_type


def verify(record: dict[str, Any], response: str) -> list[bool]:
    """One verdict per constraint of ``record``, in order; pure functions of ``response``.

    Raises:
        ValueError: a constraint's ``type`` is not in the registry (the message names it and the record).
    """
    verdicts = []
    for c in record.get("constraints", []):
        try:
            ctype = get_type(c["type"])
        except ValueError as err:
            raise ValueError(f"record {record.get('id', '?')}: {err}") from None
        verdicts.append(bool(ctype.verify(c["params"], response)))
    return verdicts
