"""A workaround for PySide6 6.12 on Python 3.11: keep ``None``, ``True`` and ``False`` alive.

PySide6 6.12's limited-API build treats ``None``, ``True`` and ``False`` as immortal objects, as they are
from Python 3.12 on (PEP 683): it hands them back from void calls and some virtual-call paths without
taking a new reference. On Python 3.11 each such call lowers the object's reference count by one, so
after a few thousand calls (``label.setText``, ``model.beginInsertRows``, a ``data()`` override answering
``None``...) the interpreter aborts with ``Fatal Python error: none_dealloc``. A GUI makes thousands of
such calls a second, so without this it dies within seconds of starting.

:func:`apply` does what Python 3.12 does: it raises the three reference counts by 2**40, which no
process lives long enough to count down (a million leaked references a second for 12 days). It is a
no-op on Python >= 3.12, where the objects are immortal already, and on interpreters other than CPython.
It touches nothing but those three counters and runs once, from ``gui/__init__.py``, before any Qt call.

The real fix is outside the GUI: run on Python >= 3.12 or pin a PySide6 whose 3.11 build counts
references correctly. Deliberately not done: patching PySide6 itself.
"""

from __future__ import annotations

import ctypes
import sys

# Python 3.12's immortal reference count is about 2**32; 2**40 leaves room for 10**12 leaked references.
_BOOST = 1 << 40
_applied = False


def needed() -> bool:
    """Whether this interpreter needs the workaround (CPython before 3.12)."""
    return sys.implementation.name == "cpython" and sys.version_info < (3, 12)


def apply() -> None:
    """Make ``None``, ``True`` and ``False`` effectively immortal (once; idempotent)."""
    global _applied
    if _applied or not needed():
        return
    for obj in (None, True, False):
        # ob_refcnt is the first field of every CPython object, at the object's address (id()).
        ctypes.c_ssize_t.from_address(id(obj)).value += _BOOST
    _applied = True
