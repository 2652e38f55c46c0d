"""The router's pages: the provider inbox and the OW referral tracker (issue 15, items 3-5).

Filled in by the pages' work; ``PAGES`` are the route handlers ``create_app`` mounts.
"""

from typing import Any

PAGES: list[Any] = []
