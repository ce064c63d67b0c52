#!/usr/bin/env python3
"""Fails when a values file sets a key that the chart's values.yaml does not have.

    check_values_keys.py CHART_VALUES_YAML VALUES_FILE

Helm ignores unknown values keys silently (unless the chart ships a
values.schema.json that forbids them), so a misspelt or renamed key
(watchNamespace for watchNamespaces) would test nothing. Free-form maps are not checked below
their own level: any map that is empty in the chart's values.yaml, and keys
named like resources, affinity, nodeSelector, tolerations, *securityContext,
*annotations, *labels, *selector.
Prints one line per unknown key; exits 1 if there is any.
"""
import re
import sys

import yaml

FREE_FORM = re.compile(
    r"^(resources|affinity|nodeSelector|tolerations|topologySpreadConstraints|"
    r"imagePullSecrets|extraEnv|env|.*[sS]ecurityContext|.*[aA]nnotations|.*[lL]abels|.*[sS]elector)$"
)


def unknown(defaults, values, path=""):
    out = []
    if not isinstance(values, dict) or not isinstance(defaults, dict) or not defaults:
        return out
    for key, value in values.items():
        here = f"{path}.{key}" if path else str(key)
        if key not in defaults:
            out.append(here)
        elif not FREE_FORM.match(str(key)):
            out.extend(unknown(defaults[key], value, here))
    return out


def main():
    with open(sys.argv[1]) as f:
        defaults = yaml.safe_load(f) or {}
    with open(sys.argv[2]) as f:
        values = yaml.safe_load(f) or {}
    bad = unknown(defaults, values)
    for key in bad:
        print(f"FAIL {sys.argv[2]}: key {key} is not in the chart's values.yaml")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
