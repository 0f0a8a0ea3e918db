"""The one exception type of the data layer.

Why a dedicated class: stages catch exactly this type and turn it into one readable line and a non-zero exit,
while genuine bugs (anything else) still surface with a traceback. Messages are one line: what is wrong, which
file, and how to fix it.
"""

from __future__ import annotations

from minkseg.errors import MinkSegError


class DataError(MinkSegError):
    """Bad or missing input data: message = what is wrong, where, and how to fix it (one line)."""
