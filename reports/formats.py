"""The report's output formats: one definition, light to import (every ``mugs-orch`` command
builds the report's parser)."""

FORMATS = ("md", "tex", "csv", "html")
