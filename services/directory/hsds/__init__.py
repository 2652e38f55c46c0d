"""Open Referral HSDS 3.0: the directory as an HSDS publisher (API, export) and consumer (import).

``mapping`` turns providers, sites and the taxonomy into HSDS objects and back (pure);
``tables`` flattens HSDS JSON into the tabular form and reads / writes CSV datapackages;
``importer`` maps tables onto the model with a row-level report; ``db`` holds the SQL of
import and export; ``api`` serves the HSDS API profile under ``/hsds`` and ``store`` holds its
SQL; ``cli`` is ``eo hsds import|export``.
The official schemas, datapackage descriptor and examples are in ``data/`` (CC BY-SA 4.0).
"""

from pathlib import Path

DATA = Path(__file__).parent / "data"
SCHEMA_DIR = DATA / "schema"
DATAPACKAGE = DATA / "datapackage.json"
EXAMPLES = DATA / "examples"
