"""A renderer for the subset of Go's text/template that Ollama Modelfile templates use.

Ollama renders a Modelfile's ``TEMPLATE`` with Go's text/template; :func:`render_go_template`
renders it the same way in Python, so that :mod:`ftkit.export.modelfile` can check a derived
template against the Jinja chat template before anything is written. The subset: text,
``{{ if/else if/else/end }}``, ``{{ range [$i, $x :=] PIPE }}`` (with ``else``), ``{{ $x := PIPE }}``
and ``{{ $x = PIPE }}``, printing, trim markers ``{{- -}}``, comments, and the functions
``eq ne and or not len slice index``. Go's rules: ``and``/``or`` stop at the first deciding
argument; false, 0, "", empty lists and nil are false. Anything outside it raises ``ValueError``.

>>> render_go_template('{{ range .Messages }}{{ .Role }}: {{ .Content }}\\n{{ end }}',
...                    [{"role": "user", "content": "hi"}])
'user: hi\\n'
"""

from __future__ import annotations

import json
import re

__all__ = ["render_go_template"]

_TOKEN = re.compile(r'\s+|"(?:\\.|[^"\\])*"|`[^`]*`|:=|[()|,=]|-?\d+|\$\w*(?:\.\w+)*|(?:\.\w+)+|\.|\w+')


def render_go_template(template: str, messages: list[dict], system: str = "") -> str:
    """What Ollama sends the model for ``messages`` (``{role, content}`` dicts) under ``template``.

    >>> render_go_template('{{ range .Messages }}{{ .Role }}: {{ .Content }}\\n{{ end }}',
    ...                    [{"role": "user", "content": "hi"}])
    'user: hi\\n'
    """
    data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages], "System": system}
    nodes, _ = _parse(_lex(template), 0, ())
    out: list[str] = []
    _run(nodes, data, data, [{}], out)
    return "".join(out)


def _lex(template: str) -> list[tuple[str, str]]:
    """``("text", ...)`` and ``("action", ...)`` pieces, with the trim markers applied."""
    pieces, i = [], 0
    while True:
        start = template.find("{{", i)
        if start < 0:
            pieces.append(("text", template[i:]))
            return pieces
        pieces.append(("text", template[i:start]))
        j, quote = start + 2, None
        while j < len(template):  # the closing braces outside a string
            ch = template[j]
            if quote:
                if ch == "\\" and quote == '"':
                    j += 1
                elif ch == quote:
                    quote = None
            elif ch in "\"`":
                quote = ch
            elif template.startswith("}}", j):
                break
            j += 1
        else:
            raise ValueError(f"unclosed action at character {start}")
        body = template[start + 2:j]
        if body[:1] == "-" and body[1:2].isspace():  # {{- trims the whitespace before it
            pieces[-1] = ("text", pieces[-1][1].rstrip())
            body = body[2:]
        trim_after = body[-1:] == "-" and body[-2:-1].isspace()  # -}} the whitespace after it
        pieces.append(("action", body[:-2] if trim_after else body))
        i = j + 2
        if trim_after:
            while i < len(template) and template[i].isspace():
                i += 1


def _parse(pieces, i: int, stop: tuple[str, ...]):
    """Nodes up to one of the ``stop`` keywords; returns ``(nodes, index of that keyword)``."""
    nodes = []
    while i < len(pieces):
        kind, body = pieces[i]
        if kind == "text":
            nodes.append(("text", body))
            i += 1
            continue
        words = body.strip()
        keyword = words.split(None, 1)[0] if words else ""
        if words.startswith("/*"):
            i += 1
        elif keyword in ("end", "else") and stop:
            return nodes, i
        elif keyword == "if":
            branches = []
            cond = _expr(words[2:])
            while True:
                body_nodes, i = _parse(pieces, i + 1, ("end", "else"))
                branches.append((cond, body_nodes))
                closing = pieces[i][1].strip()
                if closing == "end":
                    break
                if closing.startswith("else if"):
                    cond = _expr(closing[len("else if"):])
                else:
                    cond = None
            nodes.append(("if", branches))
            i += 1
        elif keyword == "range":
            spec = words[5:].strip()
            names = []
            m = re.match(r"(\$\w+)\s*(?:,\s*(\$\w+)\s*)?:=", spec)
            if m:
                names = [n for n in m.groups() if n]
                spec = spec[m.end():]
            body_nodes, i = _parse(pieces, i + 1, ("end", "else"))
            otherwise = []
            if pieces[i][1].strip() == "else":
                otherwise, i = _parse(pieces, i + 1, ("end",))
            nodes.append(("range", names, _expr(spec), body_nodes, otherwise))
            i += 1
        elif re.match(r"\$\w+\s*:?=", words):
            name, op, value = re.match(r"(\$\w+)\s*(:?=)(.*)", words, flags=re.DOTALL).groups()
            nodes.append(("set", name, _expr(value), op == ":="))
            i += 1
        elif keyword in ("with", "define", "template", "block", "break", "continue"):
            raise ValueError(f"{{{{ {keyword} }}}} is outside what this renderer checks")
        else:
            nodes.append(("print", _expr(words)))
            i += 1
    if stop:
        raise ValueError(f"a {{{{ {stop[0]} }}}} is missing")
    return nodes, i


def _expr(text: str):
    tokens = [t for t in _TOKEN.findall(text) if t.strip()]
    if "".join(tokens).replace(" ", "") != re.sub(r"\s+", "", text):
        raise ValueError(f"cannot read the action {text.strip()!r}")
    expr, at = _pipeline(tokens, 0)
    if at != len(tokens):
        raise ValueError(f"cannot read the action {text.strip()!r}")
    return expr


def _pipeline(tokens, i):
    command, i = _command(tokens, i)
    while i < len(tokens) and tokens[i] == "|":
        nxt, i = _command(tokens, i + 1)
        command = ("call", nxt[1], [*nxt[2], command]) if nxt[0] == "call" else ("call", nxt, [command])
    return command, i


def _command(tokens, i):
    args = []
    while i < len(tokens) and tokens[i] not in (")", "|"):
        arg, i = _operand(tokens, i)
        args.append(arg)
    if not args:
        raise ValueError("an empty command")
    if args[0][0] == "func":
        return ("call", args[0][1], args[1:]), i
    if len(args) > 1:
        raise ValueError("a value cannot take arguments")
    return args[0], i


def _operand(tokens, i):
    t = tokens[i]
    if t == "(":
        inner, i = _pipeline(tokens, i + 1)
        if i >= len(tokens) or tokens[i] != ")":
            raise ValueError("a ( is not closed")
        i += 1
        if i < len(tokens) and tokens[i].startswith(".") and tokens[i] != ".":
            return ("fields", inner, tokens[i][1:].split(".")), i + 1
        return inner, i
    if t[0] in "\"`":
        return ("const", json.loads(t) if t[0] == '"' else t[1:-1]), i + 1
    if re.fullmatch(r"-?\d+", t):
        return ("const", int(t)), i + 1
    if t in ("true", "false"):
        return ("const", t == "true"), i + 1
    if t == ".":
        return ("dot",), i + 1
    if t.startswith("."):
        return ("fields", ("dot",), t[1:].split(".")), i + 1
    if t.startswith("$"):
        name, *fields = t.split(".")
        return (("fields", ("var", name), fields) if fields else ("var", name)), i + 1
    if t in _FUNCS or t in ("and", "or"):
        return ("func", t), i + 1
    raise ValueError(f"{t!r} is outside what this renderer checks")


def _truth(v) -> bool:
    return not (v is None or v is False or v == 0 and not isinstance(v, str) or (hasattr(v, "__len__") and not len(v)))


def _slice(x, *bounds):
    return x[bounds[0]:bounds[1]] if len(bounds) == 2 else x[bounds[0]:] if bounds else x


def _index(x, *keys):
    for k in keys:
        x = x[k]
    return x


_FUNCS = {"eq": lambda a, *bs: any(a == b for b in bs), "ne": lambda a, b: a != b, "not": lambda a: not _truth(a),
          "len": len, "slice": _slice, "index": _index}


def _eval(expr, dot, root, scopes):
    kind = expr[0]
    if kind == "const":
        return expr[1]
    if kind == "dot":
        return dot
    if kind == "var":
        if expr[1] == "$":
            return root
        for scope in reversed(scopes):
            if expr[1] in scope:
                return scope[expr[1]]
        raise ValueError(f"undefined variable {expr[1]}")
    if kind == "fields":
        value = _eval(expr[1], dot, root, scopes)
        for name in expr[2]:
            if not isinstance(value, dict) or name not in value:
                raise ValueError(f"no field {name} here")
            value = value[name]
        return value
    if kind == "call":
        name, args = expr[1], expr[2]
        if name in ("and", "or"):  # Go stops at the first argument that decides
            value = None
            for arg in args:
                value = _eval(arg, dot, root, scopes)
                if _truth(value) != (name == "and"):
                    return value
            return value
        return _FUNCS[name](*[_eval(a, dot, root, scopes) for a in args])
    raise ValueError(f"cannot evaluate {expr!r}")


def _text(value) -> str:
    return "true" if value is True else "false" if value is False else "<no value>" if value is None else str(value)


def _run(nodes, dot, root, scopes, out) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "print":
            out.append(_text(_eval(node[1], dot, root, scopes)))
        elif kind == "set":  # `:=` declares in this block; `=` assigns where the variable lives
            value = _eval(node[2], dot, root, scopes)
            home = scopes[-1] if node[3] else next((sc for sc in reversed(scopes) if node[1] in sc), None)
            if home is None:
                raise ValueError(f"undefined variable {node[1]}")
            home[node[1]] = value
        elif kind == "if":
            for cond, body in node[1]:
                if cond is None or _truth(_eval(cond, dot, root, scopes)):
                    _run(body, dot, root, [*scopes, {}], out)
                    break
        elif kind == "range":
            _, names, expr, body, otherwise = node
            items = _eval(expr, dot, root, scopes)
            pairs = list(items.items()) if isinstance(items, dict) else list(enumerate(items or []))
            for key, item in pairs:
                scope = dict(zip(names, [key, item])) if len(names) == 2 else dict(zip(names, [item]))
                _run(body, item, root, [*scopes, scope], out)
            if not pairs:
                _run(otherwise, dot, root, [*scopes, {}], out)
