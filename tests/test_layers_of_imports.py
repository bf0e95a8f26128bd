"""Imports run one way, down the layers (docs/reference.md, "The layers"):

    commands   numpy_nn/train.py, pytorch_nn/train.py, compare.py, check.py, demo.py, predict.py, sweep.py
    tools      report/, demo/, checker/, exercises/, perf/
    the twins  numpy_nn/, pytorch_nn/        (pytorch_nn may read numpy_nn: --init numpy)
    harness    harness/
    data       data_loader.py, data_fetch.py, mnist_style.py

numpy_nn/train.py and pytorch_nn/train.py are both: their train_step, evaluate and train are the
lesson's loop, in the twins' layer, so that the benchmark, the checker and the page run the very
step the trainers run; their main() is the command, and only it may reach up (the exercise hook).

Every import in every file is read from its source (ast: at the top of a file or inside a
function, both count), so no import goes up a layer, no two tools import each other round in a
circle, nothing outside tests/ imports from tests/, and no test file imports another.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {"compare.py", "check.py", "demo.py", "predict.py", "sweep.py"}
LOOPS = {"numpy_nn/train.py", "pytorch_nn/train.py"}    # the twins' loop, and a command in main()
LAYERS = {"data": 0, "harness": 1, "twins": 2, "tools": 3, "commands": 4}
PACKAGES = {"data_loader": "data", "data_fetch": "data", "mnist_style": "data", "harness": "harness",
            "numpy_nn": "twins", "pytorch_nn": "twins", "report": "tools", "demo": "tools",
            "checker": "tools", "exercises": "tools", "perf": "tools"}
OURS = set(PACKAGES) | {name[:-3] for name in COMMANDS if "/" not in name} | {"tests", "conftest", "demo_helpers"}


def sources():
    """Every Python file of the project, tests included, as paths relative to the repo."""
    skip = {".venv", ".git", "data", "results"}
    return sorted(p.relative_to(REPO).as_posix() for p in REPO.rglob("*.py")
                  if not (set(p.relative_to(REPO).parts) & skip or p.relative_to(REPO).parts[0].startswith(".venv")))


def layer_of_file(path):
    if path in COMMANDS:
        return "commands"
    return PACKAGES.get(path.split("/")[0].removesuffix(".py"))


def imports(path, commands_too=True):
    """(line, top-level module name, full name) of every import of one of the project's modules
    (commands_too=False: not those inside a main() function, the command's own)."""
    tree = ast.parse((REPO / path).read_text(), filename=path)
    mains = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
    in_main = {id(inner) for main in mains for inner in ast.walk(main)} if not commands_too else set()
    for node in ast.walk(tree):
        if id(node) in in_main:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in OURS:
                yield node.lineno, top, name


def imported_layer(full_name):
    """The layer of an imported module: compare, check, ... are commands."""
    return PACKAGES.get(full_name.split(".")[0], "commands")


PROJECT = [path for path in sources() if not path.startswith("tests/")]


@pytest.mark.parametrize("path", PROJECT)
def test_no_import_goes_up_a_layer(path):
    mine = layer_of_file(path)
    assert mine is not None, f"{path} belongs to no layer: add it to this test's table and to docs/reference.md"
    up = [f"{path}:{line} imports {name} ({imported_layer(name)})"
          for line, top, name in imports(path, commands_too=path not in LOOPS)
          if top == "tests" or top in ("conftest", "demo_helpers")
          or LAYERS[imported_layer(name)] > LAYERS[mine]]
    assert not up, f"{mine} file imports from above: " + "; ".join(up)


def test_pytorch_nn_may_read_numpy_nn_but_not_the_other_way():
    back = [f"{path}:{line} imports {name}" for path in PROJECT if path.startswith("numpy_nn/")
            for line, top, name in imports(path) if top == "pytorch_nn"]
    assert not back, back


def test_no_two_tools_import_each_other_round_in_a_circle():
    """Tools may use each other (checker grades exercises, perf writes report's tables), but one
    way only: the graph of which tool package imports which has no cycle."""
    tools = [name for name, layer in PACKAGES.items() if layer == "tools"]
    uses = {tool: set() for tool in tools}
    for path in PROJECT:
        top = path.split("/")[0]
        if top in uses:
            uses[top] |= {t for _, t, _ in imports(path) if t in uses and t != top}
    done, on_path = set(), []

    def visit(tool):
        assert tool not in on_path, "import cycle: " + " -> ".join(on_path[on_path.index(tool):] + [tool])
        if tool in done:
            return
        on_path.append(tool)
        for used in sorted(uses[tool]):
            visit(used)
        on_path.pop()
        done.add(tool)
    for tool in tools:
        visit(tool)


def test_test_files_share_helpers_through_conftest_not_each_other():
    crossed = [f"{path}:{line} imports {name}" for path in sources() if path.startswith("tests/")
               for line, top, name in imports(path) if top.startswith("test_") or name.startswith("tests.test_")]
    crossed += [f"{path}:{line} imports {name}" for path in sources() if path.startswith("tests/")
                for node in ast.walk(ast.parse((REPO / path).read_text()))
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("test_")
                for line, name in [(node.lineno, node.module)]]
    assert not crossed, crossed


def test_the_demo_server_and_predict_draw_nothing_so_load_no_matplotlib():
    """The page's server and predict.py read runs as compare.py does (report/runs.py) but draw
    nothing: importing them loads no matplotlib (it took a second and a font cache)."""
    import subprocess
    import sys
    script = ("import sys; import demo.server, demo.models, demo.training, predict; "
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'compare'}))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
