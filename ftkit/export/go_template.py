"""A renderer for the subset of Go's text/template that Ollama Modelfile templates use.

Ollama renders a Modelfile's ``TEMPLATE`` with Go's text/template; :func:`render_go_template`
renders it the same way in Python, so that :mod:`ftkit.export.modelfile` can check a derived
template against the Jinja chat template before anything is written. The subset: text,
``{{ if/else if/else/end }}``, ``{{ range [$i, $x :=] PIPE }}`` (with ``else``), ``{{ $x := PIPE }}``
and ``{{ $x = PIPE }}``, printing, trim markers ``{{- -}}``, comments, and the functions
``eq ne and or not len slice index``. Go's rules: ``and``/``or`` stop at the first deciding
argument; false, 0, "", empty lists and nil are false; trim markers eat only `` \t\r\n``; ``len``,
``index`` and ``slice`` count a string's bytes and an index out of range is an error; ``eq`` of two
kinds is an error. Anything outside it raises ``ValueError`` (where Go would render, a refusal).

Why a second implementation when Go has the real one: this check runs at export time on users'
machines, which have no Go toolchain, and it must refuse a wrong TEMPLATE before it is written.
tests/export/test_go_render.py renders the same templates with Go's text/template, the way Ollama
does, so this renderer is verified against the engine rather than against itself (that test found
the disagreements the rules above now settle).

>>> render_go_template('{{ range .Messages }}{{ .Role }}: {{ .Content }}\\n{{ end }}',
...                    [{"role": "user", "content": "hi"}])
'user: hi\\n'
"""

from __future__ import annotations

import json
import re

__all__ = ["render_go_template"]

# Go trims only these four around {{- and -}}; Python's str.strip would also eat U+00A0, U+3000, ...
_SPACE = " \t\r\n"
_TOKEN = re.compile(r'\s+|"(?:\\.|[^"\\])*"|`[^`]*`|:=|[()|,=]|-?\d+|\$\w*(?:\.\w+)*|(?:\.\w+)+|\.|\w+')


def render_go_template(template: str, messages: list[dict], system: str | None = None) -> str:
    """What Ollama sends the model for ``messages`` (``{role, content}`` dicts) under ``template``.
    As Ollama does, consecutive messages of one role are merged with a blank line between them, and
    ``.System`` is every system message's content joined the same way unless ``system`` is given.

    >>> render_go_template('{{ range .Messages }}{{ .Role }}: {{ .Content }}\\n{{ end }}',
    ...                    [{"role": "user", "content": "hi"}])
    'user: hi\\n'
    """
    collated: list[dict] = []
    for m in messages:  # Ollama's collate (template/template.go); tool messages stay apart
        if collated and collated[-1]["Role"] == m["role"] != "tool":
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    if system is None:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    data = {"Messages": collated, "System": system}
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
        lead = start + 4 if template[j:j + 1] == "-" and _space(template[j + 1:j + 2]) else j
        if template.startswith("/*", lead):  # Go reads a comment only right after {{ or {{-, up to */}}
            end = template.find("*/", lead + 2)
            if end < 0:
                raise ValueError(f"unclosed comment at character {start}")
            j = end + 4 if _space(template[end + 2:end + 3]) and template.startswith("-}}", end + 3) else end + 2
            if not template.startswith("}}", j):
                raise ValueError(f"a comment ends before its closing delimiter at character {start}")
            if lead > start + 2:
                pieces[-1] = ("text", pieces[-1][1].rstrip(_SPACE))
            i = j + 2
            if j > end + 2:
                while i < len(template) and template[i] in _SPACE:
                    i += 1
            continue
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
        if body[:1] == "-" and _space(body[1:2]):  # {{- trims the whitespace before it
            pieces[-1] = ("text", pieces[-1][1].rstrip(_SPACE))
            body = body[2:]
        trim_after = body[-1:] == "-" and _space(body[-2:-1])  # -}} the whitespace after it
        pieces.append(("action", body[:-2] if trim_after else body))
        i = j + 2
        if trim_after:
            while i < len(template) and template[i] in _SPACE:
                i += 1


def _space(ch: str) -> bool:
    return ch != "" and ch in _SPACE


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
        if keyword in ("end", "else") and stop:
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
                rest = closing[len("else"):].strip()  # Go reads `else  if`, `else\tif` as else-if too
                if re.match(r"if(\s|\()", rest):
                    cond = _expr(rest[2:])
                elif rest:
                    raise ValueError(f"{{{{ {closing} }}}} is outside what this renderer checks")
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
            if pieces[i][1].strip().startswith("else"):
                if pieces[i][1].strip() != "else":
                    raise ValueError("a range takes a plain {{ else }}")
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


def _sequence(x, what: str):
    """``x`` as Go indexes it: a list, or a string's UTF-8 bytes (Go's len, index and slice count bytes)."""
    if isinstance(x, str):
        return x.encode("utf-8")
    if not isinstance(x, list):
        raise ValueError(f"{what} of {type(x).__name__} is outside what this renderer checks")
    return x


def _len(x) -> int:
    return len(_sequence(x, "len"))


def _slice(x, *bounds):
    """Go's slice: bounds in order and within the length (Go raises, Python would clamp);
    ``slice x i j k`` is ``x[i:j]`` for a list and an error for a string."""
    seq = _sequence(x, "slice")
    if len(bounds) > 3 or (len(bounds) == 3 and isinstance(x, str)):
        raise ValueError(f"cannot slice with {len(bounds)} indexes")
    if any(type(b) is not int for b in bounds) or [*bounds] != sorted(bounds) or any(
            not 0 <= b <= len(seq) for b in bounds):
        raise ValueError(f"slice index out of range: {bounds}")
    part = seq[bounds[0]:bounds[1]] if len(bounds) >= 2 else seq[bounds[0]:] if bounds else seq
    if isinstance(x, str):
        try:  # a cut through a character is bytes Go would pass on as they are
            return part.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("slice cuts a character of a string in two") from None
    return part


def _index(x, *keys):
    """Go's index on lists and strings (a string's byte); negative or past the end is an error, not
    Python's count from the end. Maps and structs (Python dicts here) are refused: Go indexes its
    root map but not a message struct, and this renderer cannot tell them apart."""
    for k in keys:
        seq = _sequence(x, "index")
        if type(k) is not int or not 0 <= k < len(seq):
            raise ValueError(f"index {k!r} out of range")
        x = seq[k]
    return x


def _kind(v) -> str:
    if type(v) in (bool, int, str):
        return type(v).__name__
    raise ValueError(f"comparing a {type(v).__name__} is outside what this renderer checks")


def _eq(a, *bs) -> bool:
    """Go's eq: true at the first equal argument; arguments of another kind are an error."""
    if not bs:
        raise ValueError("eq needs two arguments or more")
    for b in bs:
        if _kind(a) != _kind(b):
            raise ValueError(f"incompatible types for comparison: {a!r} and {b!r}")
        if a == b:
            return True
    return False


_FUNCS = {"eq": _eq, "ne": lambda a, b: not _eq(a, b), "not": lambda a: not _truth(a),
          "len": _len, "slice": _slice, "index": _index}


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
            if not args:
                raise ValueError(f"{name} needs an argument")
            value = None
            for arg in args:
                value = _eval(arg, dot, root, scopes)
                if _truth(value) != (name == "and"):
                    return value
            return value
        return _FUNCS[name](*[_eval(a, dot, root, scopes) for a in args])
    raise ValueError(f"cannot evaluate {expr!r}")


def _text(value) -> str:
    if isinstance(value, (list, dict)):  # Go prints a list of pointers as addresses
        raise ValueError(f"printing a {type(value).__name__} is outside what this renderer checks")
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
            if not isinstance(items, (list, type(None))):  # Go: no strings; maps in key order, structs never
                raise ValueError(f"range over a {type(items).__name__} is outside what this renderer checks")
            pairs = list(enumerate(items or []))
            for key, item in pairs:
                scope = dict(zip(names, [key, item])) if len(names) == 2 else dict(zip(names, [item]))
                _run(body, item, root, [*scopes, scope], out)
            if not pairs:
                _run(otherwise, dot, root, [*scopes, {}], out)
