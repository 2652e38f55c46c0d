"""Whether free text looks like it carries personal information (DESIGN.md section 3c: a
progress note must not). Pure. Patterns, not understanding: it catches the careless cases (an
e-mail address, a phone number, a SIN or health-card number), which is what a note field
invites, and says which, so the provider can write the note again.
"""

import re

_LOOKS_LIKE: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an e-mail address", re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")),
    # A 10-digit Ontario health card number before a phone number: both are ten digits.
    (
        "a health card number",
        re.compile(r"(?<!\d)\d{4}[ -]?\d{3}[ -]?\d{3}(?![\d-])(?=\s*[A-Z]{2}\b)"),
    ),
    ("a phone number", re.compile(r"(?<!\d)(\+?1[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}(?!\d)")),
    ("a SIN or another identifying number", re.compile(r"(?<!\d)\d{3}[ -]?\d{3}[ -]?\d{3}(?!\d)")),
)


def personal_information(text: str) -> str | None:
    """What ``text`` seems to carry (``"a phone number"``), or None."""
    for what, pattern in _LOOKS_LIKE:
        if pattern.search(text):
            return what
    return None
