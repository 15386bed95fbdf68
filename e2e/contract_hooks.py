"""Schemathesis hooks for the contract run of e2e/tests/openapi.rs.

A batch body (application/x-ndjson) is a string of lines: send the generated string as it
is, like text/plain.
"""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
