"""The project's packages depend one way (docs/layout.md): each module imports only packages
below its own in LAYERS, never one above, so that there is no import cycle between them.
Migrations and tests may cross (they are not parsed); imports inside functions count."""

import ast
from pathlib import Path

from django.core.management import get_commands

from testing.processes import BASE_DIR

# Lowest first. core: the platform; patients: identity; access: the access log; vitals: the
# monitoring (readings, alarms, NEWS2, the patients' API); exports; ward: the central station;
# icu: settings, urls and the API router (the roof); testing: the tests' helpers, which no app
# imports; bench: the benchmarks.
LAYERS = (
    "core",
    "patients",
    "access",
    "vitals",
    "units",
    "gateway",
    "exports",
    "ward",
    "icu",
    "testing",
    "bench",
)
SKIPPED = frozenset({"migrations", "tests"})


def top_level_packages(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if (p / "__init__.py").is_file())


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a module, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def layer_violations(root: Path) -> list[str]:
    """Each import of a package from one at its level or below it in LAYERS (another top-level
    package than its own), as `path:line: package imports module (package is above/beside)`;
    and each top-level package that LAYERS does not place."""
    packages = top_level_packages(root)
    problems = [f"{p}/: a top-level package not in LAYERS" for p in packages if p not in LAYERS]
    rank = {name: i for i, name in enumerate(LAYERS)}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if SKIPPED & set(relative.parts):
                continue
            for line, module in imported_modules(ast.parse(path.read_text(), str(path))):
                target = module.split(".")[0]
                if target == package or target not in packages:
                    continue
                if rank.get(target, len(LAYERS)) >= rank.get(package, -1):
                    problems.append(
                        f"{relative}:{line}: {package} imports {module} ({target} is not below "
                        f"{package})"
                    )
    return problems


def test_packages_import_only_packages_below_them():
    problems = layer_violations(BASE_DIR)
    assert not problems, "imports against docs/layout.md's order:\n" + "\n".join(problems)


def test_the_layer_check_names_each_import_upwards(tmp_path):
    """The check itself: an import upwards (patients -> vitals), one between packages of
    LAYERS' order in a cycle, and one inside a function, each listed with its place."""
    for package, source in {
        "core": "def f():\n    from ward.views import ward\n",
        "patients": "import os\nfrom vitals.models import Alarm\n",
        "vitals": "from patients.models import Patient\n",
    }.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "mod.py").write_text(source)
    (tmp_path / "ward").mkdir()
    (tmp_path / "ward" / "__init__.py").write_text("")
    (tmp_path / "patients" / "tests").mkdir()
    (tmp_path / "patients" / "tests" / "test_x.py").write_text("import ward\n")
    assert layer_violations(tmp_path) == [
        "core/mod.py:2: core imports ward.views (ward is not below core)",
        "patients/mod.py:2: patients imports vitals.models (vitals is not below patients)",
    ]


def test_manage_py_migrate_is_the_lock_safe_one_of_core():
    """core's `migrate` (core/management/commands/migrate.py) overrides Django's."""
    assert get_commands()["migrate"] == "core"
