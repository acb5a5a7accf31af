"""The algorithms package is pure tensor code: importing it must not import megatron."""

import subprocess
import sys


def test_algorithms_do_not_import_megatron():
    code = (
        "import sys, pkgutil, importlib, nemo_red.algorithms as a\n"
        "for m in pkgutil.iter_modules(a.__path__):\n"
        "    importlib.import_module('nemo_red.algorithms.' + m.name)\n"
        "bad = sorted(k for k in sys.modules if k.startswith(('megatron', 'transformer_engine')))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
