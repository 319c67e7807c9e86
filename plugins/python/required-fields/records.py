"""The checker of required-fields-py: see app.py."""

import json

from wit_world.exports import records
from wit_world.imports import types
from componentize_py_types import Err

from app import names, filled, numeric


class Checker(records.Checker):
    def __init__(self, required, numeric_fields):
        self.required = required
        self.numeric = numeric_fields

    @classmethod
    def open(cls, options: types.SessionOptions) -> "Checker":
        try:
            config = json.loads(options.config) if options.config else {}
        except ValueError as error:
            raise Err(types.PluginError_InvalidConfig(f"not JSON: {error}"))
        if not isinstance(config, dict):
            raise Err(types.PluginError_InvalidConfig("must be a JSON object"))
        return cls(names(config, "required"), names(config, "numeric"))

    def check(self, batch):
        violations = []
        for index, text in enumerate(batch):
            record = json.loads(text)
            for field in self.required:
                if not filled(record.get(field)):
                    violations.append(types.RecordViolation(index, field, "is required"))
            for field in self.numeric:
                if not numeric(record.get(field)):
                    violations.append(types.RecordViolation(index, field, "is not a number"))
        return violations

    def finish(self):
        return []
