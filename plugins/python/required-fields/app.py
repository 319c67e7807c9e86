"""required-fields, in Python, in record mode: every record must fill the fields the binding's
configuration names in "required", and those in "numeric" must hold numbers.

Configuration: {"required": ["id", "name"], "numeric": ["amount"]}. The host splits the upload
into records and hands them over in batches; each record is one JSON object (text)."""

import json

from wit_world import exports
from wit_world.imports import types
from componentize_py_types import Err

NAME = "required-fields-py"
VERSION = "1.0.0"


def names(config, key):
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise Err(types.PluginError_InvalidConfig(f'"{key}" must be a list of field names'))
    return value


def filled(value):
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip() != ""
    return True


def numeric(value):
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    if isinstance(value, str):
        if value == "":
            return True
        try:
            float(value)
            return True
        except ValueError:
            return False
    return False


class Records(exports.Records):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(
            name=NAME,
            version=VERSION,
            resources=[types.ResourceInfo(name="*", schema=None)],
            capabilities=types.Capabilities(validate=True, transform=False, convert=False),
        )


