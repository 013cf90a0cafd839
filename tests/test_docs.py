"""The README documents every option of the schema, and the core imports without Axolotl."""

import subprocess
import sys
from pathlib import Path

from p2p_plugin.args import P2PConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_p2p_option_is_in_the_readme_table():
    missing = [name for name in P2PConfig.model_fields if f"| `{name}` |" not in README]
    assert not missing, f"README option table lacks {missing}"


def test_readme_table_states_the_real_default_of_simple_options():
    """A default changed in args.py must change in the README table too (strings, numbers, bools)."""
    wrong = []
    for name, field in P2PConfig.model_fields.items():
        default = field.default
        if isinstance(default, bool):
            shown = str(default).lower()
        elif isinstance(default, (int, float)) or (isinstance(default, str) and " " not in default and default):
            shown = str(default)
        else:
            continue
        if f"| `{name}` | `{shown}` |" not in README:
            wrong.append((name, shown))
    assert not wrong, f"README option table shows another default for {wrong}"


def test_core_imports_without_axolotl_or_torch():
    code = ("import sys, p2p_plugin, p2p_plugin.transform, p2p_plugin.attacks, p2p_plugin.metrics, "
            "p2p_plugin.prompts, p2p_plugin.args, p2p_plugin.config_checks; "
            "bad = [m for m in ('axolotl', 'torch', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_has_exactly_the_two_setup_commands():
    assert "make demo" in README and "make test" in README
