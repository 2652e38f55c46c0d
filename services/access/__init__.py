"""Who calls the services' HTTP APIs: bearer tokens carrying a role, one scheme for the
directory and the router (DESIGN.md sections 3b, 3d and 7), checked in one place.

Roles: ``admin`` (everything); ``staff`` (reads the directory); ``provider`` (names its
provider: its own records in the directory, its own offers and the referrals it holds in the
router); ``ow`` (names its OW system: its own referrals in the router). Each service decides
what a role may do with its own data; this package only says who the caller is.

- ``principal``: the ``Principal`` a token stands for (pure).
- ``tokens``: the ``TokenStore`` of issued tokens, kept in the table ``directory.api_token``.
  That table is created and changed by the directory's migrations
  (``services/directory/migrations/``), which ``eo migrate``, the directory and ``eo token``
  apply; the router only reads it.
- ``auth``: ``identify`` an ``Authorization`` header, and the ``BearerAuth`` middleware both
  apps install (routes marked ``PUBLIC`` skip it).
- ``errors``: 401 (with ``WWW-Authenticate``), and the 422 / 404 of issuing and revoking.
"""
