"""The core stays sans-IO: it imports no I/O or framework module and reads no clock or RNG."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import lichen

CORE = pathlib.Path(lichen.__file__).parent
# cbor2 imports threading for its locks; threads are not I/O, so only these are refused.
BLOCKED = [
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "aiocoap",
    "zeroconf",
    "paho",
    "sqlalchemy",
    "starlette",
    "uvicorn",
    "amqtt",
]


def test_every_core_module_imports_with_io_modules_blocked() -> None:
    script = textwrap.dedent(
        f"""
        import importlib, importlib.abc, pkgutil, sys
        BLOCKED = {BLOCKED!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"sans-IO core imported {{name}}")
                return None

        for name in list(sys.modules):
            if name.split(".")[0] in BLOCKED:
                del sys.modules[name]
        sys.meta_path.insert(0, Block())
        import lichen
        names = [m.name for m in pkgutil.walk_packages(lichen.__path__, "lichen.")]
        for name in names:
            importlib.import_module(name)
        print(len(names))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    modules = int(result.stdout.strip())
    # Every .py file but the package's own __init__ is one module (or subpackage) imported.
    assert modules == len(list(CORE.rglob("*.py"))) - 1


def _calls_clock_or_rng(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            found += [f"imports {n}" for n in names if n.split(".")[0] in {"time", "secrets"}]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            pair = (node.value.id, node.attr)
            if pair in {("os", "urandom"), ("datetime", "now"), ("datetime", "utcnow")}:
                found.append(f"uses {node.value.id}.{node.attr}")
            if node.value.id == "random" and node.attr != "Random":
                found.append(f"uses the global random.{node.attr}")
    return found


def test_core_reads_no_clock_and_draws_no_randomness() -> None:
    offenders = {}
    for path in sorted(CORE.rglob("*.py")):
        found = _calls_clock_or_rng(ast.parse(path.read_text(), str(path)))
        if found:
            offenders[str(path.relative_to(CORE))] = found
    assert offenders == {}


def test_the_checker_itself_catches_a_clock_read() -> None:
    bad = ast.parse("import time\nimport os\nx = os.urandom(4)\nimport random\nrandom.random()")
    assert len(_calls_clock_or_rng(bad)) == 3
