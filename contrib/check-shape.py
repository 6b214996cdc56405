#!/usr/bin/env python3
"""Checks the shape of the tree (`make lint` runs it):

1. No import cycles between the source files of a crate.
2. No source file over MAX_LINES lines, not counting its test module
   (files named tests.rs and the tests/ and benches/ folders are tests).

Import cycles:

A file's edges are the modules it names in `use` items and in paths
(`crate::a::b`, `super::x`, `self::y`), resolved to the files that define
them. A module naming its own descendants is not an edge (a parent owns its
children); a child naming its ancestors is. Test modules are ignored.
Exit status 1 if either check fails.
"""
import os
import re
import sys

MAX_LINES = 800
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates")


def module_files(src):
    """Map module path tuples to files for one crate's src/."""
    files = {}
    for dirpath, _, names in os.walk(src):
        for n in names:
            if not n.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, n), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            files[tuple(parts)] = os.path.join(dirpath, n)
    return files


def strip_tests(text):
    """The file without its test module and comments (doc links are not
    imports)."""
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    text = text[: m.start()] if m else text
    return re.sub(r"//[^\n]*", "", text)


PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::\w+)*)::\{([^;]*)\};", re.S)


def paths_in(text):
    for m in PATH.finditer(text):
        yield m.group(1), [p for p in m.group(2).split("::") if p]
    for m in USE_GROUP.finditer(text):
        base = [p for p in m.group(2).split("::") if p]
        for item in re.split(r",", m.group(3)):
            item = item.strip().split(" as ")[0].strip()
            head = item.split("::")[0].strip("{} \n")
            if head and head != "self":
                yield m.group(1), base + [head]


def resolve(mod, root, parts, files):
    if root == "crate":
        cur = []
    elif root == "self":
        cur = list(mod)
    else:
        cur = list(mod[:-1])
    # `super::super::x`
    while parts and parts[0] == "super":
        cur = cur[:-1]
        parts = parts[1:]
    target = None
    for i in range(len(parts) + 1):
        cand = tuple(cur + parts[:i])
        if cand in files:
            target = cand
    return target


def cycles_of(crate):
    src = os.path.join(ROOT, crate, "src")
    files = module_files(src)
    edges = {m: set() for m in files}
    for mod, path in files.items():
        with open(path) as f:
            text = strip_tests(f.read())
        for root, parts in paths_in(text):
            t = resolve(mod, root, parts, files)
            if t is None or t == mod or t[: len(mod)] == mod:
                continue  # unresolved, itself, or its own descendant
            edges[mod].add(t)
    found = []
    state = {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for t in sorted(edges[n]):
            if state.get(t) == 1:
                found.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n, [])
    return found


def oversized():
    """(file, lines) of every source file over MAX_LINES without tests."""
    out = []
    for crate in sorted(os.listdir(ROOT)):
        src = os.path.join(ROOT, crate, "src")
        for path in sorted(module_files(src).values()) if os.path.isdir(src) else []:
            if os.path.basename(path) == "tests.rs":
                continue
            with open(path) as f:
                text = f.read()
            m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
            n = text[: m.start() if m else len(text)].count("\n")
            if n > MAX_LINES:
                out.append((os.path.relpath(path, os.path.join(ROOT, "..")), n))
    return out


def main():
    bad = 0
    for path, n in oversized():
        bad += 1
        print(f"{path}: {n} lines without its tests (at most {MAX_LINES}): split it")
    for crate in sorted(os.listdir(ROOT)):
        if not os.path.isdir(os.path.join(ROOT, crate, "src")):
            continue
        for c in cycles_of(crate):
            bad += 1
            print(f"{crate}: " + " -> ".join("::".join(m) or "(root)" for m in c))
    if bad:
        print(f"{bad} problem(s) with the shape of the tree", file=sys.stderr)
        return 1
    print(f"no import cycles between files; no file over {MAX_LINES} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
