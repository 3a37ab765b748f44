"""The shared ``quorum`` package sits below the services: importing any of its modules
loads no ``services`` package, so the CLI, the dashboard and every service start without
the code of services they do not run. A module that needs a service's code imports it
inside the function that does."""

from __future__ import annotations

import subprocess
import sys

# In a fresh interpreter: the test process has imported the services already.
_IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import quorum
for module in pkgutil.walk_packages(quorum.__path__, "quorum."):
    importlib.import_module(module.name)
print(" ".join(sorted(name for name in sys.modules if name.split(".")[0] == "services")))
"""


def test_importing_the_quorum_package_loads_no_service() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERY_MODULE], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.split() == []
