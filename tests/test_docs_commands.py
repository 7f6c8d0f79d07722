"""Every `python tools/...` command in README.md and docs/*.md names things that exist.

The commands are collected from fenced code blocks and inline backticks (line continuations
with `\\` joined; `torchrun ... tools/x.py` counts too, and so does an inline span that starts
with `tools/x.py` and names arguments). For each one: the tool file exists; every `--flag` (and
subcommand, and a positional's or an option's value where the parser lists its choices) is one
the tool's own argparse parser accepts; every `--gin_param` binding names a registered gin
configurable and one of its parameters; every `--gin` file exists. Fenced blocks that hold gin
bindings (`Name.param = value`) are checked the same way. Placeholders (`runs/x`, `<run>`,
`HOST`, `N`, `[--optional]`, `a|b` alternatives) are fine as values.

The parsers are captured, not run: one subprocess imports each tool as `__main__` with
`ArgumentParser.parse_args` patched to hand back the parser, so no tool does any work.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# the two commands README keeps for a fresh machine; .ci/run runs the second one
README_COMMANDS = ('pip install -e ".[dev]" && python tools/train.py --gin gin/video_mae_cpu.gin',
                   'pip install -e ".[dev]" && python -m pytest -q')

FENCE = re.compile(r"^(\s*)```[^\n]*\n(.*?)^\s*```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`", re.S)
TOOL = re.compile(r"^tools/[\w./-]+\.py$")
GIN_INLINE = re.compile(r"^(?:[\w.]+/)?[A-Za-z_][\w.]*\.[A-Za-z_]\w*\s?=\s?\S.*$")
GIN_LINE = re.compile(r"^\s*(?:[\w.]+/)?[A-Za-z_][\w.]*\.[A-Za-z_]\w*\s*=(?!=)")


@dataclass
class Command:
    where: str                      # file:line
    tool: str                       # tools/x.py
    args: List[str] = field(default_factory=list)

    def __str__(self):
        return f"{self.where}: {self.tool} {' '.join(self.args)}"


def _tokens(text: str) -> List[str]:
    """Shell words of one (joined) line; `;` and `&&` come out as their own words, comments go."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in prose: nothing to check
        return []


def _commands_in(tokens: List[str], where: str, inline: bool) -> List[Command]:
    found, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        start = None
        if tok in ("python", "python3", "torchrun") or (inline and i == 0 and TOOL.match(tok)):
            j = i if TOOL.match(tok) else i + 1
            while j < len(tokens) and tokens[j] not in (";", "&&", "&", "|", "||"):
                if TOOL.match(tokens[j]):
                    start = j
                    break
                if tok.startswith("python") and j > i + 1:
                    break  # `python -m x`, `python -c ...`: not a tool
                j += 1
        if start is None:
            i += 1
            continue
        end = start + 1
        while end < len(tokens) and tokens[end] not in (";", "&&", "&", "||"):
            end += 1
        args = [a for a in (t.strip("[]") for t in tokens[start + 1:end]) if a and a != "..."]
        if not inline or args or tok != tokens[start]:
            found.append(Command(where, tokens[start], args))
        i = end
    return found


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def collect():
    """(commands, gin bindings as (where, binding text)) from README.md and docs/*.md."""
    commands, bindings = [], []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT).as_posix()
        prose = text
        for block in FENCE.finditer(text):
            first = _line_of(text, block.start(2))
            prose = prose.replace(block.group(0), "\n" * block.group(0).count("\n"), 1)
            lines = block.group(2).split("\n")
            if any(GIN_LINE.match(l) for l in lines) and not any("tools/" in l for l in lines):
                for k, line in enumerate(lines):
                    if GIN_LINE.match(line):
                        bindings.append((f"{name}:{first + k}", line.split("#")[0].strip()))
                continue
            k = 0
            while k < len(lines):
                start, joined = k, lines[k]
                while joined.rstrip().endswith("\\") and k + 1 < len(lines):
                    k += 1
                    joined = joined.rstrip()[:-1] + " " + lines[k]
                commands += _commands_in(_tokens(joined), f"{name}:{first + start}", inline=False)
                k += 1
        for span in INLINE.finditer(prose):
            body = span.group(1).replace("\\\n", " ").replace("\n", " ").strip()
            where = f"{name}:{_line_of(prose, span.start())}"
            commands += _commands_in(_tokens(body), where, inline=True)
            words = _tokens(body)
            if len(words) == 2 and words[0] == "--gin_param":  # `--gin_param "X.y='v'"` in prose
                bindings.append((where, words[1]))
            elif GIN_INLINE.match(body):  # `X.y=value` in prose
                bindings.append((where, body))
    return commands, bindings


COMMANDS, GIN_BLOCK_BINDINGS = collect()

# One subprocess: capture every tool's parser, resolve every gin name. Prints JSON.
PROBE = textwrap.dedent(r'''
    import argparse, inspect, json, os, runpy, sys
    request = json.loads(sys.stdin.read())

    class Got(BaseException):
        def __init__(self, parser):
            self.parser = parser

    def grab(self, *args, **kwargs):
        raise Got(self)

    argparse.ArgumentParser.parse_args = grab
    argparse.ArgumentParser.parse_known_args = grab

    def describe(parser):
        options, positionals, subcommands = {}, [], {}
        for action in parser._actions:
            choices = [str(c) for c in action.choices] if action.choices is not None else None
            if isinstance(action, argparse._SubParsersAction):
                subcommands = {name: describe(sub) for name, sub in action.choices.items()}
            elif action.option_strings:
                for opt in action.option_strings:
                    options[opt] = {"nargs": action.nargs, "choices": choices}
            else:
                positionals.append({"dest": action.dest, "nargs": action.nargs, "choices": choices})
        return {"options": options, "positionals": positionals, "subcommands": subcommands}

    parsers = {}
    for tool in request["tools"]:
        path = os.path.join(request["root"], tool)
        argv, sys.argv = sys.argv, [path, "--help"]
        saved_path = list(sys.path)
        sys.path.insert(0, os.path.dirname(path))  # as `python tools/x.py` does: the script's folder first
        try:
            runpy.run_path(path, run_name="__main__")
            parsers[tool] = {"error": "ran without parsing arguments"}
        except Got as got:
            parsers[tool] = describe(got.parser)
        except BaseException as e:
            parsers[tool] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            sys.argv, sys.path[:] = argv, saved_path

    import gin
    import unimask.configurables
    unimask.configurables.register_all(extra_modules=("modalities",))
    gin_names = {}
    for name in request["gin"]:
        configurable, _, param = name.rpartition(".")
        try:
            found = gin.config._REGISTRY.get_match(configurable)
        except Exception as e:  # an ambiguous partial name
            gin_names[name] = f"{type(e).__name__}: {e}"
            continue
        if found is None:
            gin_names[name] = f"no gin configurable named {configurable!r}"
            continue
        fn = found.wrapped
        target = fn.__init__ if inspect.isclass(fn) else fn
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            gin_names[name] = None
            continue
        if param in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            gin_names[name] = None
        elif found.allowlist and param not in found.allowlist:
            gin_names[name] = f"{param!r} is not configurable in {found.name}"
        else:
            gin_names[name] = f"{found.name} has no parameter {param!r} (it has {', '.join(params)})"
    print(json.dumps({"parsers": parsers, "gin": gin_names}))
''')


def _is_placeholder(value: str) -> bool:
    return (not value or "<" in value or ">" in value or value in ("...", "x")
            or re.fullmatch(r"[A-Z][A-Z0-9_]*", value) is not None)


def _gin_name(binding: str) -> Optional[str]:
    """'X.y' of 'X.y=...', 'scope/X.y = ...'; '' for a macro ('BANDS=...'); None when it is not a binding."""
    m = re.match(r"^\s*(?:[\w.]+/)?([A-Za-z_][\w.]*\.[A-Za-z_]\w*)\s*=", binding)
    if m:
        return m.group(1)
    return "" if re.match(r"^\s*[A-Za-z_]\w*\s*=", binding) else None


def _gin_params(cmd: Command) -> List[str]:
    out = []
    for k, arg in enumerate(cmd.args):
        if arg == "--gin_param" and k + 1 < len(cmd.args):
            out.append(cmd.args[k + 1])
        elif arg.startswith("--gin_param="):
            out.append(arg.split("=", 1)[1])
    return out


@pytest.fixture(scope="module")
def probe():
    tools = sorted({c.tool for c in COMMANDS if (ROOT / c.tool).is_file()})
    names = sorted({n for c in COMMANDS for b in _gin_params(c) if (n := _gin_name(b))}
                   | {n for _, b in GIN_BLOCK_BINDINGS if (n := _gin_name(b))})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", PROBE], input=json.dumps({"root": str(ROOT), "tools": tools,
                                                                         "gin": names}),
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_commands_are_found():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in README_COMMANDS:
        assert command in readme, f"README must keep the command line: {command}"
    tools = {c.tool for c in COMMANDS}
    assert len(COMMANDS) >= 20 and "tools/train.py" in tools, [str(c) for c in COMMANDS]
    train = [c for c in COMMANDS if c.where.startswith("README.md") and c.tool == "tools/train.py"]
    assert any(c.args == ["--gin", "gin/video_mae_cpu.gin"] for c in train)


def test_tool_files_exist():
    missing = [str(c) for c in COMMANDS if not (ROOT / c.tool).is_file()]
    assert not missing, "commands naming a tool that does not exist:\n" + "\n".join(missing)


def _check_value(opt: str, value: str, choices: Optional[List[str]]) -> Optional[str]:
    if choices is None:
        return None
    bad = [v for v in value.split("|") if not _is_placeholder(v) and v not in choices]
    return f"{opt} {value!r}: not one of {choices}" if bad else None


def _problems(cmd: Command, parser: dict) -> List[str]:
    if "error" in parser:
        return [f"its parser could not be read ({parser['error']})"]
    options = dict(parser["options"])
    positionals = list(parser["positionals"])
    subcommands = parser["subcommands"]
    problems, args, k, sub_seen = [], cmd.args, 0, not subcommands
    while k < len(args):
        arg = args[k]
        k += 1
        if re.match(r"^--?[A-Za-z]", arg):
            opt, _, inline_value = arg.partition("=")
            if opt not in options:
                problems.append(f"unknown option {opt}")
                continue
            spec = options[opt]
            nargs, values = spec["nargs"], []
            if inline_value:
                values = [inline_value]
            elif nargs == 0:
                pass
            elif nargs in (None, 1) or isinstance(nargs, int):
                count = 1 if nargs is None else nargs
                values, k = args[k:k + count], k + count
            else:  # '?', '*', '+', REMAINDER: up to the next option
                while k < len(args) and not re.match(r"^--?[A-Za-z]", args[k]):
                    values.append(args[k])
                    k += 1
                    if nargs == "?":
                        break
            for value in values:
                problem = _check_value(opt, value, spec["choices"])
                if problem:
                    problems.append(problem)
        elif not sub_seen:
            sub_seen = True
            if arg not in subcommands:
                if not _is_placeholder(arg):
                    problems.append(f"unknown subcommand {arg!r} (one of {sorted(subcommands)})")
                continue
            options.update(subcommands[arg]["options"])
            positionals = list(subcommands[arg]["positionals"])
        elif positionals:
            spec = positionals[0]
            if spec["nargs"] not in ("*", "+", "..."):
                positionals.pop(0)
            problem = _check_value(spec["dest"], arg, spec["choices"])
            if problem:
                problems.append(problem)
    return problems


def test_flags_exist(probe):
    bad = []
    for cmd in COMMANDS:
        parser = probe["parsers"].get(cmd.tool)
        if parser is not None:
            bad += [f"{cmd}\n    -> {p}" for p in _problems(cmd, parser)]
    assert not bad, "commands the tool's parser would refuse:\n" + "\n".join(bad)


def test_gin_bindings_exist(probe):
    bad = []
    for cmd in COMMANDS:
        for binding in _gin_params(cmd):
            name = _gin_name(binding)
            if name == "":
                continue  # a macro
            if name is None:
                bad.append(f"{cmd}\n    -> --gin_param {binding!r} is not a binding")
            elif probe["gin"].get(name):
                bad.append(f"{cmd}\n    -> {probe['gin'][name]}")
    for where, binding in GIN_BLOCK_BINDINGS:
        name = _gin_name(binding)
        if probe["gin"].get(name):
            bad.append(f"{where}: {binding}\n    -> {probe['gin'][name]}")
    assert not bad, "gin bindings that name nothing registered:\n" + "\n".join(bad)


def test_gin_files_exist():
    bad = []
    for cmd in COMMANDS:
        for k, arg in enumerate(cmd.args):
            path = cmd.args[k + 1] if arg == "--gin" and k + 1 < len(cmd.args) else (
                arg.split("=", 1)[1] if arg.startswith("--gin=") else None)
            if path and not _is_placeholder(path) and not (ROOT / path).is_file():
                bad.append(f"{cmd}\n    -> no gin file {path}")
    assert not bad, "commands naming a gin file that does not exist:\n" + "\n".join(bad)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set:
    """GitHub's heading anchors of a markdown file."""
    out = set()
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("#") and not line.startswith("#!"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return out


def test_relative_links_resolve():
    """Every relative link in README.md and docs/*.md names a file there, and its #anchor a heading."""
    bad = []
    for path in DOCS:
        text = FENCE.sub("", path.read_text(encoding="utf-8"))
        for m in LINK.finditer(text):
            target = m.group(1)
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                bad.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "broken links:\n" + "\n".join(bad)
