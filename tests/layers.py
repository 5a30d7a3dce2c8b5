"""Architecture checks for the velox package tree: layers, import cycles and size limits.

Used by tests/test_layers.py. Everything is read from the source with `ast`; velox is never imported, so the checks
run without its dependencies and see imports that only happen inside functions or behind `if TYPE_CHECKING:`.

Layers, in the direction data flows; a module may import its own layer and the layers before it:

    base (velox/__init__.py, core.py, events.py, state.py, stage.py) < market < detect < trade < feeds < infra < runtime < face

A module's layer comes from its path (velox/<layer>/...), so a new module is checked the day it is written.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

TOP = 'velox'
BASE = ('core', 'events', 'state', 'stage')
LAYERS = ('base', 'market', 'detect', 'trade', 'feeds', 'infra', 'runtime', 'face')
PACKAGES = LAYERS[1:]
SKIPPED = '_modidx.py'  # generated nbdev metadata: names every module as a string but imports none of them
MAX_LINES = 400
MAX_PARAMS = 8

# a string constant naming a velox module ('velox.face.cli', or 'velox.face.cli:main' with the part after ':' dropped)
DOTTED = re.compile(rf'{TOP}(\.[A-Za-z_]\w*)+')
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass
class Module:
    name: str  # dotted: 'velox.market.book', 'velox.market' for velox/market/__init__.py
    path: Path  # relative to the repo root, for messages
    layer: str | None  # None: outside the declared packages
    is_package: bool
    text: str
    tree: ast.Module | None  # None: does not parse


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    line: int
    target: str  # imported module
    names: tuple[str, ...]  # imported names; empty for `import velox.x`
    via: str | None = None  # set when `target` is where re-exported names come from: the module the statement names


def layer_of(rel: Path) -> str | None:
    "Layer of the module at `rel` (relative to the velox folder), None when it is outside the declared packages."
    if len(rel.parts) == 1 and rel.stem in ('__init__', *BASE): return 'base'
    if len(rel.parts) > 1 and rel.parts[0] in PACKAGES: return rel.parts[0]
    return None


def rule(layer: str, target_layer: str) -> str:
    "The rule a `layer` module breaks by importing a `target_layer` module, in words."
    if layer == 'base': return 'core, events, state and stage (and velox/__init__.py) may import only each other'
    lower = [name for lay in LAYERS[:LAYERS.index(layer)] for name in (BASE if lay == 'base' else (lay,))]
    text = f'{layer} may import only {", ".join(lower)}'
    return text + (' (nothing outside face may import face)' if target_layer == 'face' else '')


def _top_level(body: list[ast.stmt]):
    "Statements that run at import time: the module body, into if/try/with/for blocks but not into functions or classes."
    for node in body:
        yield node
        if isinstance(node, DEFS): continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt): yield from _top_level([child])
            elif isinstance(child, ast.excepthandler): yield from _top_level(child.body)


def _is_velox(name: str) -> bool: return name == TOP or name.startswith(TOP + '.')


def _is_import_call(node: ast.Call) -> bool:
    "importlib.import_module(...), import_module(...) or __import__(...)."
    func = node.func
    return (isinstance(func, ast.Name) and func.id in ('import_module', '__import__')) or \
        (isinstance(func, ast.Attribute) and func.attr == 'import_module')


class Tree:
    "The modules of one velox folder and their imports."

    def __init__(self, package: Path):
        root = package.parent
        self.modules: dict[str, Module] = {}
        self.errors: list[str] = []
        for path in sorted(package.rglob('*.py')):
            rel = path.relative_to(package)
            if rel == Path(SKIPPED) or any(p.startswith('.') or p == '__pycache__' for p in rel.parts): continue
            parts = [TOP, *rel.with_suffix('').parts]
            is_package = parts[-1] == '__init__'
            if is_package: parts.pop()
            text = path.read_text(encoding='utf-8')
            try: tree = ast.parse(text, filename=str(path))
            except SyntaxError as e:
                tree = None
                self.errors.append(f'{path.relative_to(root)}:{e.lineno} does not parse: {e.msg}')
            name = '.'.join(parts)
            self.modules[name] = Module(name, path.relative_to(root), layer_of(rel), is_package, text, tree)
        self._bindings_cache: dict[str, tuple[set[str], dict[str, tuple[str, str | None]], list[str]]] = {}
        self.imports = {name: self._imports(mod) for name, mod in self.modules.items()}

    def resolve(self, dotted: str, min_parts: int = 1) -> str | None:
        "Longest prefix of `dotted` that is a module of the tree ('velox.trade.models.Logistic' -> 'velox.trade.models')."
        parts = dotted.split('.')
        for n in range(len(parts), min_parts - 1, -1):
            if '.'.join(parts[:n]) in self.modules: return '.'.join(parts[:n])
        return None

    def _from_base(self, mod: Module, node: ast.ImportFrom) -> str | None:
        "Absolute name of the module in `from X import ...` (relative X resolved against mod's package); None if not velox."
        if node.level == 0: return node.module if node.module and _is_velox(node.module) else None
        package = mod.name.split('.') if mod.is_package else mod.name.split('.')[:-1]
        if node.level > len(package): return None  # above the top package: fails at import time
        parts = package[:len(package) - node.level + 1]
        return '.'.join(parts + ([node.module] if node.module else []))

    def _imports(self, mod: Module) -> list[Import]:
        "Every velox module `mod` imports, at any depth of its AST, by statement or by string."
        if mod.tree is None: return []
        found: list[Import] = []

        def add(line, target, names, via=None):
            if target is not None and target != mod.name: found.append(Import(mod.name, line, target, tuple(names), via))

        called, strings = set(), []
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if _is_velox(alias.name): add(node.lineno, self.resolve(alias.name), ())
            elif isinstance(node, ast.ImportFrom):
                self._import_from(mod, node, add)
            elif isinstance(node, ast.Call) and _is_import_call(node) and node.args and \
                    isinstance(arg := node.args[0], ast.Constant) and isinstance(arg.value, str):
                called.add(id(arg))
                if DOTTED.fullmatch(arg.value):
                    add(node.lineno, self.resolve(arg.value, 2), (f"{ast.unparse(node.func)}('{arg.value}')",))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.append(node)
        # plugin tables, entry points, `python -m` argv: a string naming a module imports it when the code runs
        for node in strings:
            dotted = node.value.split(':', 1)[0]
            if id(node) not in called and DOTTED.fullmatch(dotted):
                add(node.lineno, self.resolve(dotted, 2), (f"string '{node.value}'",))
        return sorted(found, key=lambda i: i.line)  # ast.walk goes breadth first; messages read better in file order

    def _import_from(self, mod: Module, node: ast.ImportFrom, add) -> None:
        "Records for `from X import a, b`: each name's module (a submodule, or X) and, for re-exports, where it comes from."
        base = self._from_base(mod, node)
        if base is None: return
        direct: dict[str, list[str]] = {}
        origins: dict[tuple[str, str], list[str]] = {}
        for alias in node.names:
            if f'{base}.{alias.name}' in self.modules:  # `from velox.infra import bus`: the submodule
                direct.setdefault(f'{base}.{alias.name}', []).append(alias.name)
                continue
            target = self.resolve(base)
            if target is None: continue
            direct.setdefault(target, []).append(alias.name)
            origin = self.find(target, alias.name) if alias.name != '*' else None
            if origin not in (None, target): origins.setdefault((origin, target), []).append(alias.name)
        for target, names in direct.items(): add(node.lineno, target, names)
        for (origin, via), names in origins.items(): add(node.lineno, origin, names, via)

    def _bindings(self, name: str) -> tuple[set[str], dict[str, tuple[str, str | None]], list[str]]:
        """Top-level names of a module: those it defines (or takes from outside velox), those it imports from velox
        (name -> (module, name there, or None when the name is that module)), and the modules it star-imports."""
        if name in self._bindings_cache: return self._bindings_cache[name]
        mod = self.modules[name]
        defined, imported, stars = set(), {}, []
        for node in _top_level(mod.tree.body if mod.tree else []):
            if isinstance(node, DEFS): defined.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                defined.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, ast.ImportFrom):
                base = self._from_base(mod, node)
                for alias in node.names:
                    if base is None: defined.add(alias.asname or alias.name)
                    elif alias.name == '*': stars.append(base)
                    else: imported[alias.asname or alias.name] = (base, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and _is_velox(alias.name): imported[alias.asname] = (alias.name, None)
                    elif alias.asname: defined.add(alias.asname)
        self._bindings_cache[name] = defined, imported, stars
        return defined, imported, stars

    def find(self, module: str, name: str, seen: set | None = None) -> str | None:
        "Module where `name`, as seen in `module`, is defined: follows `from X import name` chains; None if not bound."
        seen = set() if seen is None else seen
        if module not in self.modules or (module, name) in seen: return None
        seen.add((module, name))
        if self.modules[module].is_package and f'{module}.{name}' in self.modules: return f'{module}.{name}'
        defined, imported, stars = self._bindings(module)
        if name in defined: return module
        if name in imported:
            base, there = imported[name]
            if there is None: return self.resolve(base) or module
            if f'{base}.{there}' in self.modules: return f'{base}.{there}'
            return self.find(base, there, seen) or module
        for star in stars:
            if (found := self.find(star, name, seen)) is not None: return found
        return None

    def describe(self, imp: Import) -> str:
        "'velox/market/book.py:12 imports velox.feeds.recorded (load_binance)'"
        names = ', '.join(imp.names) + (f', re-exported by {imp.via}' if imp.via else '')
        return f'{self.modules[imp.source].path}:{imp.line} imports {imp.target}' + (f' ({names})' if names else '')


def check_layers(package: Path) -> list[str]:
    "Violations of the layer rules and import cycles in the velox folder `package`, one message each."
    tree = Tree(Path(package))
    found = list(tree.errors)
    for mod in sorted(tree.modules.values(), key=lambda m: m.path):
        if mod.layer is None:
            found.append(f'{mod.path}: module {mod.name} is outside the declared packages '
                         f'({", ".join(BASE)} or velox/{{{",".join(PACKAGES)}}}/)')
            continue
        for imp in tree.imports[mod.name]:
            target = tree.modules[imp.target].layer
            # a target outside the packages is reported once as a module, not at each import of it
            if target is not None and LAYERS.index(target) > LAYERS.index(mod.layer):
                found.append(f'{tree.describe(imp)}: {rule(mod.layer, target)}')
    return found + _cycles(tree)


def _cycles(tree: Tree) -> list[str]:
    """Import cycles, each reported once. Within each strongly connected component, every import edge is shown in at
    least one reported cycle (the shortest one through it), so the list shows every import that has to go."""
    graph = {name: sorted({i.target for i in imps if i.via is None}) for name, imps in tree.imports.items()}
    found, reported = [], set()
    for component in _components(graph):
        members = set(component)
        for u in sorted(component):
            for v in graph[u]:
                if v not in members: continue
                cycle = [u, *_shortest_path(graph, v, u, members)]  # u -> v -> ... -> u
                ring = cycle[:-1]
                start = ring.index(min(ring))
                key = tuple(ring[start:] + ring[:start])
                if key in reported: continue
                reported.add(key)
                chain = ' -> '.join(str(tree.modules[m].path) for m in (*key, key[0]))
                edges = '; '.join(_edge(tree, a, b) for a, b in zip(key, (*key[1:], key[0])))
                found.append(f'import cycle {chain}: {edges}')
    return found


def _edge(tree: Tree, source: str, target: str) -> str:
    "All imports from `source` of `target`, as one 'velox/a.py:3,9 imports velox.b (x, y)'."
    imps = [i for i in tree.imports[source] if i.target == target and i.via is None]
    lines = ','.join(str(n) for n in sorted({i.line for i in imps}))
    names = ', '.join(dict.fromkeys(n for i in imps for n in i.names))
    return f'{tree.modules[source].path}:{lines} imports {target}' + (f' ({names})' if names else '')


def _components(graph: dict[str, list[str]]) -> list[list[str]]:
    "Strongly connected components with more than one module (Tarjan)."
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v: break
            if len(component) > 1: out.append(component)

    for v in sorted(graph):
        if v not in index: visit(v)
    return out


def _shortest_path(graph: dict[str, list[str]], start: str, goal: str, members: set[str]) -> list[str]:
    "Modules on a shortest path start -> ... -> goal inside `members` (breadth first), both ends included."
    previous = {start: None}
    queue = [start]
    for v in queue:
        if v == goal: break
        for w in graph[v]:
            if w in members and w not in previous:
                previous[w] = v
                queue.append(w)
    path = [goal]
    while path[-1] != start: path.append(previous[path[-1]])
    return path[::-1]


def _params(init: ast.FunctionDef) -> int:
    "Parameters of a constructor besides self: positional-only, positional, keyword-only, 1 for *args, 1 for **kwargs."
    a = init.args
    positional = len(a.posonlyargs) + len(a.args)
    return max(positional - 1, 0) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)


def check_sizes(package: Path) -> list[str]:
    "Modules over MAX_LINES lines and constructors over MAX_PARAMS parameters in the velox folder `package`."
    tree = Tree(Path(package))
    found = list(tree.errors)
    for mod in sorted(tree.modules.values(), key=lambda m: m.path):
        if (n := len(mod.text.splitlines())) > MAX_LINES:
            found.append(f'{mod.path}: {n} lines (limit {MAX_LINES}): split the module')
        if mod.tree is None: continue
        # only explicit __init__ methods count: a @dataclass without one is a record or a settings group, and
        # grouping parameters into such a dataclass is the intended fix, so its fields are not parameters here
        for cls in (n for n in ast.walk(mod.tree) if isinstance(n, ast.ClassDef)):
            for init in cls.body:
                if isinstance(init, ast.FunctionDef) and init.name == '__init__' and (n := _params(init)) > MAX_PARAMS:
                    found.append(f'{mod.path}:{init.lineno} class {cls.name}: constructor takes {n} parameters '
                                 f'(limit {MAX_PARAMS}): group them in a settings dataclass')
    return found
