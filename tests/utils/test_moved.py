"""Old module paths of the flat layout keep working for one release: the same module, one warning naming the new
path."""

from __future__ import annotations

import subprocess
import sys

import pytest

from optimum_layerwise.utils.moved import MOVED_MODULES, MOVED_NAMES


_IMPORT_OLD_PATH = """
import importlib, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    old = importlib.import_module("optimum_layerwise.{old}")
new = importlib.import_module("optimum_layerwise.{new}")
assert old is new, (old, new)
messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
expected = "`optimum_layerwise.{old}` moved to `optimum_layerwise.{new}`; the old path is removed in 0.2."
assert messages[-1] == expected, messages
"""


def test_every_old_module_path_is_the_new_module_with_a_warning():
    # one subprocess for the whole table: an alias is created once per process
    code = "\n".join(_IMPORT_OLD_PATH.format(old=old, new=new) for old, new in MOVED_MODULES.items())
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(("module", "name"), sorted(MOVED_NAMES))
def test_a_moved_name_warns_once_per_import(module, name):
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    from optimum_layerwise.{module} import {name}\n"
        f"from optimum_layerwise.{MOVED_NAMES[module, name]} import {name} as new\n"
        f"assert {name} is new and len(caught) == 1, [str(w.message) for w in caught]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
