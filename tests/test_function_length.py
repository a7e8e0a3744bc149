"""No function in the package is longer than 60 lines (``def`` to its last line, docstring included), except
the ones docs/architecture.md#function-length names with the reason."""

import ast
from pathlib import Path

import jaxseg

LIMIT = 60
PACKAGE = Path(jaxseg.__file__).parent
# qualified name -> why it is longer (each is also named in docs/architecture.md#function-length)
EXCEPTIONS = {
    "jaxseg.config.default_config": "the list of every config field, one line per field with its comment",
}


def module_name(path: Path) -> str:
    return ("jaxseg." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def functions(source: str, module: str):
    """(qualified name, line count) of every function and method, nested ones included, in ``source``."""

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                yield name, child.end_lineno - child.lineno + 1
                yield from visit(child, name)
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}.{child.name}")

    yield from visit(ast.parse(source), module)


def all_functions():
    return dict(item for path in sorted(PACKAGE.rglob("*.py"))
                for item in functions(path.read_text(encoding="utf-8"), module_name(path)))


def test_no_function_is_longer_than_the_limit():
    found = all_functions()
    assert len(found) > 500  # the walk reached the package
    long = {name: lines for name, lines in found.items() if lines > LIMIT and name not in EXCEPTIONS}
    assert not long, f"functions over {LIMIT} lines (split them, or name them with the reason in " \
                     f"docs/architecture.md#function-length and EXCEPTIONS here): {long}"


def test_every_exception_is_needed_and_documented():
    found = all_functions()
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name in EXCEPTIONS:
        assert found.get(name, 0) > LIMIT, f"{name} is no longer over {LIMIT} lines: drop it from EXCEPTIONS"
        assert f"`{name}`" in page, f"docs/architecture.md#function-length does not name {name}"


def test_the_counter_sees_nested_functions_and_methods():
    source = "class A:\n    def m(self):\n        def inner():\n            pass\n        return 1\n"
    assert dict(functions(source, "probe")) == {"probe.A.m": 4, "probe.A.m.inner": 2}


def test_the_command_line_module_stays_thin():
    lines = (PACKAGE / "cli.py").read_text(encoding="utf-8").count("\n")
    assert lines < 300, f"jaxseg/cli.py has {lines} lines; move logic into the library (docs/architecture.md)"
