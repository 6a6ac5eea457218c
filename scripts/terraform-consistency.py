#!/usr/bin/env python3
"""Checks that Terraform modules and their callers fit together, without providers.

`terraform validate` needs the providers' schemas, which cannot be installed on machines without
the Terraform registry; tflint checks each file but not the seams between modules. This script
checks those seams, for every directory of .tf files under the given root:

- every `var.X`, `local.X` and `module.M[.O]` reference names something declared (and `O` is an
  output of the module `M` calls);
- `var.X.attr` on an object-typed variable names an attribute of its type;
- every call of a local module passes only variables the module declares, passes every variable
  that has no default, and, for object-typed variables given as an object literal, only
  attributes of the type (Terraform would drop an unknown one silently).

Usage: terraform-consistency.py DIR   (exit 1 and one line per problem when something is off)
"""

import os
import re
import sys

import hcl2

META_ARGS = {"source", "version", "providers", "depends_on", "count", "for_each", "__is_block__"}


def unquote(s):
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


def type_attrs(type_expr):
    """Attribute names of an object type expression (nested ones included: lenient)."""
    if not isinstance(type_expr, str) or "object(" not in type_expr:
        return None
    return set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*=", type_expr))


class Module:
    def __init__(self, path):
        self.path = path
        self.variables = {}  # name -> (has_default, attrs or None)
        self.outputs = set()
        self.locals = set()
        self.calls = {}  # name -> args dict
        self.text = []  # (file, line number, line) without comments
        for name in sorted(os.listdir(path)):
            if not name.endswith(".tf"):
                continue
            file = os.path.join(path, name)
            with open(file, encoding="utf-8") as f:
                raw = f.read()
            doc = hcl2.loads(raw)
            for block in doc.get("variable", []):
                for vname, body in block.items():
                    self.variables[unquote(vname)] = ("default" in body, type_attrs(body.get("type")))
            for block in doc.get("output", []):
                self.outputs.update(unquote(k) for k in block)
            for block in doc.get("locals", []):
                self.locals.update(k for k in block if not k.startswith("__"))
            for block in doc.get("module", []):
                for mname, body in block.items():
                    self.calls[unquote(mname)] = body
            for i, line in enumerate(raw.splitlines(), 1):
                code = line.split("#", 1)[0] if not line.lstrip().startswith("description") else ""
                self.text.append((file, i, code))


def check(root):
    problems = []
    dirs = sorted({dp for dp, _, fs in os.walk(root) if any(f.endswith(".tf") for f in fs)
                   and "/.terraform" not in dp})
    modules = {os.path.normpath(d): Module(d) for d in dirs}
    for path, m in modules.items():
        for file, line, code in m.text:
            where = f"{file}:{line}"
            for v, attr in re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?", code):
                if v not in m.variables:
                    problems.append(f"{where}: var.{v} is not declared")
                    continue
                attrs = m.variables[v][1]
                if attr and attrs is not None and attr not in attrs:
                    problems.append(f"{where}: var.{v}.{attr}: no attribute {attr!r} in the variable's type")
            for loc in re.findall(r"\blocal\.([A-Za-z_][A-Za-z0-9_]*)", code):
                if loc not in m.locals:
                    problems.append(f"{where}: local.{loc} is not declared")
            for call, out in re.findall(r"\bmodule\.([A-Za-z_][A-Za-z0-9_]*)(?:\[[^\]]*\])?(?:\.([A-Za-z_][A-Za-z0-9_]*))?", code):
                if call not in m.calls:
                    problems.append(f"{where}: module.{call} is not declared")
                    continue
                target = os.path.normpath(os.path.join(path, unquote(m.calls[call].get("source", ""))))
                if out and target in modules and out not in modules[target].outputs:
                    problems.append(f"{where}: module.{call}.{out}: {target} has no output {out!r}")
        for call, args in m.calls.items():
            source = unquote(args.get("source", ""))
            if not source.startswith("."):
                continue
            target = os.path.normpath(os.path.join(path, source))
            callee = modules.get(target)
            if callee is None:
                problems.append(f"{path}: module {call!r}: no Terraform module at {target}")
                continue
            given = {k for k in args if k not in META_ARGS}
            for k in sorted(given - callee.variables.keys()):
                problems.append(f"{path}: module {call!r} passes {k!r}, which {target} does not declare")
            for k, (has_default, _) in sorted(callee.variables.items()):
                if not has_default and k not in given:
                    problems.append(f"{path}: module {call!r} does not pass required variable {k!r}")
            for k in sorted(given & callee.variables.keys()):
                attrs = callee.variables[k][1]
                if attrs is not None and isinstance(args[k], dict):
                    for a in sorted(set(args[k]) - attrs - {"__is_block__"}):
                        problems.append(f"{path}: module {call!r}: {k}.{a} is not an attribute of {target}'s {k}")
    return len(modules), problems


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    count, problems = check(sys.argv[1])
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"{count} Terraform directories: references, module calls and their arguments fit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
