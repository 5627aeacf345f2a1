"""Finds the external commands the project's own files run, to hold them against scripts/commands.txt.

`scan(root)` returns ``{command: {"relative/path:line", ...}}`` for every command it finds in
plugins/, roles/, playbooks/, orchestrator/, tests/, bench/, scripts/, extensions/, .ci/run and the Makefile:

- Python (by its syntax tree): argv lists handed to ``subprocess.run/Popen/check_output/check_call/call``,
  ``module.run_command``, ``os.exec*`` and to every helper that passes its first argument on to one of those
  (found to a fixpoint over all files, so ``node.run([...])``, ``ns.sh([...])``, ``gw([...])`` count), argv
  prefixes such helpers build (``self._prefix() + argv``), names given to ``shutil.which``/``get_bin_path``,
  the last literal of ``os.path.join(BIN, "name")`` in the first slot, and ``sh -c SCRIPT`` scripts.
- YAML: ``ansible.builtin.command``/``shell``/``raw`` (free form, ``cmd``, ``argv``, ``argv: "{{ item }}"``
  over a literal ``loop``), and the commands the third-party modules the roles call run on their target
  (``MODULE_COMMANDS``).
- Shell (``*.sh``, files with an sh/bash shebang, Makefile recipes, ``sh -c`` strings, ``shell`` tasks): the
  first word of every simple command, through ``$( )``, pipes, lists, ``exec``/``command -v``/``timeout``...
- Anywhere: systemd ``Exec*=`` lines (unit files, templates, strings).

Wrappers (``ip netns exec NS CMD``, ``nsenter ... -- CMD``, ``runuser -u U -- CMD``, ``setsid``, ``timeout``,
``env``, ``unshare``, ``systemd-run``, ``sudo``, ``xargs``) are followed to the command they run. A command
is its basename (``/usr/lib/postgresql/15/bin/pg_restore`` is ``pg_restore``). What it cannot see: an argv whose
command is computed at run time (a variable, a parameter), and commands third-party code runs on its own.
"""

import ast
import os
import re
import shlex

SCAN_DIRS = ("plugins", "roles", "playbooks", "orchestrator", "tests", "bench", "scripts", "extensions")
SCAN_FILES = (".ci/run", "Makefile")
SKIP_DIRS = {"__pycache__", ".venv", ".collections", ".cache", ".git", "node_modules"}

# subprocess and friends: their first argument (or args=) is an argv
SEED_RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "run_command", "create_subprocess_exec",
                "execv", "execve", "execvp", "execvpe", "spawnv", "spawnvp"}
WHICH = {"which", "get_bin_path"}
# modules (third-party or builtin) the playbooks call that run a command on their target
MODULE_COMMANDS = {
    "community.general.ufw": ["ufw"],
    "ansible.posix.sysctl": ["sysctl"],
    "ansible.builtin.systemd_service": ["systemctl"],
    "ansible.builtin.systemd": ["systemctl"],
    "ansible.builtin.service": ["systemctl"],
    "ansible.builtin.apt": ["apt-get", "dpkg"],
    "ansible.builtin.package": ["apt-get", "dpkg"],
}
COMMAND_MODULES = {"ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.raw", "command", "shell",
                   "raw"}
SHELL_BUILTINS = {
    "echo", "printf", "cd", "exit", "return", "set", "shift", "local", "export", "declare", "typeset", "read",
    "trap", "source", ".", "eval", "true", "false", "test", "[", "[[", "]]", "wait", "pwd", "type", "hash",
    "ulimit", "umask", "getopts", "let", "unset", "readonly", "shopt", "break", "continue", "mapfile",
    "readarray", ":", "alias", "jobs", "fg", "bg", "disown", "builtin", "caller", "kill",
}
SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "in", "case",
                  "esac", "function", "select", "time", "!", "{", "}", "coproc"}
EXEC_RE = re.compile(r"^\s*Exec(?:Start|StartPre|StartPost|Stop|StopPost|Reload|Condition)=[-@+!:]*(\S+)", re.M)
WORD_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def command_name(word):
    """The command a word names (basename), or None when it is not a literal command."""
    if not isinstance(word, str) or not word or "{{" in word or "{%" in word:
        return None
    name = word.rsplit("/", 1)[-1] if "/" in word else word
    return name if WORD_RE.match(name) else None


# -- wrappers ---------------------------------------------------------------------------------------------
def _after_options(tokens, i, with_arg=()):
    """Index of the first non-option token from i (options in with_arg take the next token)."""
    while i < len(tokens):
        t = tokens[i]
        if t is None:
            return None
        if t == "--":
            return i + 1
        if not t.startswith("-"):
            return i
        i += 2 if t in with_arg else 1
    return None


def _inner(tokens):
    """Index of the command a wrapper argv runs, or None."""
    head = command_name(tokens[0])
    if head == "ip":
        return 4 if tokens[1:3] == ["netns", "exec"] else None
    if head == "nsenter":
        return tokens.index("--") + 1 if "--" in tokens else _after_options(tokens, 1, {"-t", "--target"})
    if head == "runuser" or head == "sudo":
        return tokens.index("--") + 1 if "--" in tokens else _after_options(tokens, 1, {"-u", "-g", "--user"})
    if head in ("setsid", "nohup", "stdbuf", "nice", "ionice", "xargs"):
        return _after_options(tokens, 1, {"-n", "-c"})
    if head == "timeout":
        i = _after_options(tokens, 1, {"-s", "-k", "--signal", "--kill-after"})
        return None if i is None else i + 1
    if head == "unshare":
        return _after_options(tokens, 1, {"--propagation", "--setgroups"})
    if head == "systemd-run":
        return _after_options(tokens, 1, {"-p", "--property", "-u", "--unit", "-E", "--setenv", "-M"})
    if head == "env":
        i = _after_options(tokens, 1, {"-u", "-C"})
        while i is not None and i < len(tokens) and tokens[i] is not None and "=" in tokens[i]:
            i += 1
        return i
    return None


def argv_commands(tokens):
    """Commands of one argv (None stands for a token only known at run time); shell scripts after -c too."""
    out, scripts = [], []
    while tokens and tokens[0] is not None:
        name = command_name(tokens[0])
        if name is None:
            break
        out.append(name)
        if name in ("sh", "bash", "dash") and len(tokens) > 2 and tokens[1] == "-c" and tokens[2] is not None:
            scripts.append(tokens[2])
            break
        i = _inner(tokens)
        if i is None or i >= len(tokens):
            break
        tokens = tokens[i:]
    for s in scripts:
        out.extend(shell_commands(s))
    return out


# -- shell ------------------------------------------------------------------------------------------------
_HEREDOC_RE = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")


def _drop_heredocs(text):
    lines, out, end = text.split("\n"), [], None
    for line in lines:
        if end is not None:
            if line.strip() == end:
                end = None
            continue
        m = _HEREDOC_RE.search(line)
        if m and "<<<" not in line:
            end = m.group(2)
        out.append(line)
    return "\n".join(out)


def _split_shell(text):
    """Simple commands of a shell text as lists of words (quotes removed); nested $( ) / <( ) / ` ` bodies
    are returned as further commands. Case patterns and function definitions are dropped."""
    cmds, word, words = [], [], []
    inner_texts, functions = [], set()
    depth = 0  # open ( subshells: a ")" without one closes a case pattern
    i, n = 0, len(text)
    quoted = False

    def end_word():
        nonlocal word, quoted
        if word or quoted:
            words.append("".join(word))
        word, quoted = [], False

    def end_cmd():
        end_word()
        if words:
            cmds.append(list(words))
        words.clear()

    def matching(j, open_c, close_c):
        # index of the close_c matching the open_c before j (quotes respected)
        level, k = 1, j
        while k < n:
            c = text[k]
            if c == "\\":
                k += 2
                continue
            if c == "'":
                k = text.find("'", k + 1)
                if k < 0:
                    return n
            elif c == '"':
                k += 1
                while k < n and text[k] != '"':
                    k += 2 if text[k] == "\\" else 1
            elif c == open_c:
                level += 1
            elif c == close_c:
                level -= 1
                if level == 0:
                    return k
            k += 1
        return n

    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            if text[i + 1] != "\n":
                word.append(text[i + 1])
            i += 2
            continue
        if c == "#" and not word and not quoted:
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "'":
            j = text.find("'", i + 1)
            j = n if j < 0 else j
            word.append(text[i + 1:j])
            quoted = True
            i = j + 1
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                if text[j] == "\\":
                    j += 2
                    continue
                if text.startswith("$((", j):
                    k = matching(j + 3, "(", ")")
                    j = k + 2
                    word.append("$N")
                    continue
                if text.startswith("$(", j):
                    k = matching(j + 2, "(", ")")
                    inner_texts.append(text[j + 2:k])
                    word.append("$N")
                    j = k + 1
                    continue
                if text[j] == "`":
                    k = text.find("`", j + 1)
                    k = n if k < 0 else k
                    inner_texts.append(text[j + 1:k])
                    j = k + 1
                    continue
                word.append(text[j])
                j += 1
            quoted = True
            i = j + 1
            continue
        if text.startswith("$((", i):
            k = matching(i + 3, "(", ")")
            word.append("$N")
            i = k + 2
            continue
        if text.startswith("$(", i) or text.startswith("<(", i) or text.startswith(">(", i):
            k = matching(i + 2, "(", ")")
            inner_texts.append(text[i + 2:k])
            word.append("$N")
            i = k + 1
            continue
        if text.startswith("${", i):
            k = matching(i + 2, "{", "}")
            word.append(text[i:k + 1])
            i = k + 1
            continue
        if c == "`":
            k = text.find("`", i + 1)
            k = n if k < 0 else k
            inner_texts.append(text[i + 1:k])
            word.append("$N")
            i = k + 1
            continue
        if text.startswith("((", i) and not word:  # arithmetic command
            k = matching(i + 2, "(", ")")
            i = k + 2
            continue
        if c in " \t":
            end_word()
            i += 1
            continue
        if c == "=" and text.startswith("=(", i) and word:  # array assignment: a=( ... )
            k = matching(i + 2, "(", ")")
            word.append(text[i:k + 1])
            i = k + 1
            continue
        if c in "\n;&|":
            end_cmd()
            i += 1
            continue
        if c == "(":
            if text.startswith("()", i) and (word or words):  # name() { ... }
                end_word()
                functions.add(words[-1])
                words.clear()
                i += 2
                continue
            end_cmd()
            depth += 1
            i += 1
            continue
        if c == ")":
            if depth == 0:  # closes a case pattern: "snapshot)"
                end_word()
                words.clear()
            else:
                end_cmd()
                depth -= 1
            i += 1
            continue
        if c in "<>":
            # a redirection: the target word is not a command word
            end_word()
            j = i
            while j < n and text[j] in "<>&0123456789":
                j += 1
            while j < n and text[j] in " \t":
                j += 1
            k = j
            while k < n and text[k] not in " \t\n;|&()":
                if text[k] == '"':
                    k = text.find('"', k + 1)
                    k = n if k < 0 else k
                k += 1
            i = k
            continue
        word.append(c)
        i += 1
    end_cmd()
    return cmds, inner_texts, functions


def _strip_fd_redirect(words):
    # "2>/dev/null" style tokens are already gone; a bare fd digit left before a redirection ("9>x") goes too
    return [w for w in words if not (w.isdigit() and len(w) == 1)] if words else words


def shell_commands(text):
    """Commands a shell script runs (best effort, see the module docstring)."""
    text = _drop_heredocs(text)
    found, todo, functions = [], [text], set()
    all_cmds, values = [], {}
    while todo:
        cmds, inner, funcs = _split_shell(todo.pop())
        all_cmds.extend(cmds)
        functions |= funcs
        todo.extend(inner)
    for words in all_cmds:
        for w in words:  # f="iptables -w" ... $f -L: the command is the first word of the value
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(\S.*)$", w)
            if m:
                values[m.group(1)] = m.group(2).split()[0]
    for words in all_cmds:
        words = _strip_fd_redirect(words)
        while words and (words[0] in SHELL_KEYWORDS or re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=", words[0])):
            if words[0] in ("for", "case", "select"):
                words = []
                break
            words = words[1:]
        if not words:
            continue
        head = words[0]
        if head == "exec":
            words = words[1:]
            if not words:
                continue
            head = words[0]
        if head == "command":
            if len(words) > 2 and words[1] in ("-v", "-V"):
                found.extend(c for c in (command_name(w) for w in words[2:]) if c)
                continue
            words = words[1:]
            if not words:
                continue
            head = words[0]
        if head in SHELL_BUILTINS or head in functions:
            continue
        m = re.match(r"^\$\{?(\w+)\}?$", head)
        if m and m.group(1) in values:
            words = [values[m.group(1)], *words[1:]]
            head = words[0]
        if head.startswith("$"):
            # "$venv_bin/ansible-test": the command is the literal tail of the path
            m = re.match(r"^\$\{?\w+\}?/(?:[^$]*/)?([^/$]+)$", head)
            if not m:
                continue
            words = [m.group(1), *words[1:]]
        found.extend(argv_commands(words))
    return found


# -- Python -----------------------------------------------------------------------------------------------
def _call_name(func):
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


class _PyFile:
    def __init__(self, path, text):
        self.path = path
        self.tree = ast.parse(text)
        self.consts = {}  # module-level NAME = "x" / NAME = os.path.join(BIN, "x")
        for node in self.tree.body:
            if isinstance(node, ast.Assign):
                tok = self.token(node.value)
                for t in node.targets:
                    if isinstance(t, ast.Name) and tok is not None:
                        self.consts[t.id] = tok
        self.parents = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node

    def scope_of(self, node):
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node
        return self.tree

    def token(self, node):
        """A literal argv token (str) or None."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name) and node.id in self.consts:
            return self.consts[node.id]
        if isinstance(node, ast.Call) and _call_name(node.func) == "join" and node.args:
            last = node.args[-1]  # os.path.join(BIN, "name")
            if isinstance(last, ast.Constant) and isinstance(last.value, str) and len(node.args) > 1:
                return last.value
        return None

    def lists_of(self, expr, scope, seen=None):
        """Literal lists an argv expression is built from (names resolved to their assignments in scope)."""
        seen = seen or set()
        if isinstance(expr, (ast.List, ast.Tuple)):
            return [expr]
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return self.lists_of(expr.left, scope, seen)
        if isinstance(expr, ast.Call) and _call_name(expr.func) == "list" and expr.args:
            return self.lists_of(expr.args[0], scope, seen)
        if isinstance(expr, ast.Name) and expr.id not in seen:
            seen.add(expr.id)
            out = []
            for node in ast.walk(scope):
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == expr.id
                                                        for t in node.targets):
                    out.extend(self.lists_of(node.value, scope, seen))
                elif isinstance(node, ast.For) and isinstance(node.target, ast.Name) and node.target.id == expr.id:
                    if isinstance(node.iter, (ast.List, ast.Tuple)):
                        for elt in node.iter.elts:
                            out.extend(self.lists_of(elt, scope, seen))
            return out
        return []

    def argv_tokens(self, lst):
        out = []
        for elt in lst.elts:
            if isinstance(elt, ast.Starred):
                out.append(None)
                break
            out.append(self.token(elt))
        return out


def _argv_expr(call):
    for kw in call.keywords:
        if kw.arg in ("args", "argv", "cmd"):
            return kw.value
    return call.args[0] if call.args else None


def _mentions(expr, name):
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(expr))


def _python_runners(files):
    """Names of functions that run their first argument as an argv (to a fixpoint over all files)."""
    runners = set(SEED_RUNNERS)
    changed = True
    while changed:
        changed = False
        for f in files:
            for fn in ast.walk(f.tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name in runners:
                    continue
                params = [a.arg for a in fn.args.args if a.arg not in ("self", "cls")]
                if not params:
                    continue
                for call in ast.walk(fn):
                    if isinstance(call, ast.Call) and _call_name(call.func) in runners:
                        expr = _argv_expr(call)
                        if expr is not None and _mentions(expr, params[0]):
                            runners.add(fn.name)
                            changed = True
                            break
    return runners


def _python_commands(files, add):
    runners = _python_runners(files)
    builders = set()  # helpers whose result is an argv prefix: self._prefix() + argv, self.argv(argv)
    for f in files:
        for call in ast.walk(f.tree):
            if not isinstance(call, ast.Call):
                continue
            name = _call_name(call.func)
            if name in WHICH and call.args:
                tok = f.token(call.args[0])
                if command_name(tok):
                    add(command_name(tok), f.path, call.lineno)
                continue
            if name not in runners:
                continue
            expr = _argv_expr(call)
            if expr is None:
                continue
            for sub in ast.walk(expr):
                if isinstance(sub, ast.Call) and _call_name(sub.func) not in (None, "list", "join"):
                    builders.add(_call_name(sub.func))
            for lst in f.lists_of(expr, f.scope_of(call)):
                for cmd in argv_commands(f.argv_tokens(lst)):
                    add(cmd, f.path, lst.lineno)
    for f in files:
        for fn in ast.walk(f.tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name in builders:
                for ret in ast.walk(fn):
                    if isinstance(ret, ast.Return) and ret.value is not None:
                        for lst in f.lists_of(ret.value, fn):
                            for cmd in argv_commands(f.argv_tokens(lst)):
                                add(cmd, f.path, lst.lineno)
        for node in ast.walk(f.tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for m in EXEC_RE.finditer(node.value):
                    if command_name(m.group(1)):
                        add(command_name(m.group(1)), f.path, node.lineno)


# -- YAML -------------------------------------------------------------------------------------------------
def _yaml_load(text):
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node)

    Loader.add_multi_constructor("!", any_tag)
    return list(yaml.load_all(text, Loader=Loader))


def _yaml_commands(doc, path, add):
    def walk(node):
        if isinstance(node, dict):
            for key, val in node.items():
                if key in MODULE_COMMANDS:
                    for cmd in MODULE_COMMANDS[key]:
                        add(cmd, path, 0)
                if key in COMMAND_MODULES:
                    task_command(key, val, node)
                walk(val)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            for m in EXEC_RE.finditer(node):
                if command_name(m.group(1)):
                    add(command_name(m.group(1)), path, 0)

    def task_command(module, val, task):
        shell = module.endswith("shell")
        text = val.get("cmd") if isinstance(val, dict) else val
        if isinstance(val, dict) and "argv" in val:
            argv = val["argv"]
            if isinstance(argv, str) and "item" in argv:
                argvs = [a for a in task.get("loop", task.get("with_items", [])) or [] if isinstance(a, list)]
            else:
                argvs = [argv] if isinstance(argv, list) else []
            for a in argvs:
                for cmd in argv_commands([str(t) for t in a]):
                    add(cmd, path, 0)
            return
        if isinstance(text, str):
            if shell:
                cmds = shell_commands(text)
            else:
                try:
                    cmds = argv_commands(shlex.split(text))
                except ValueError:
                    cmds = []
            for cmd in cmds:
                add(cmd, path, 0)

    walk(doc)


# -- files ------------------------------------------------------------------------------------------------
def _is_shell(path, text):
    if path.endswith((".sh", ".bash")):
        return True
    first = text.split("\n", 1)[0]
    return first.startswith("#!") and re.search(r"\b(ba|da)?sh\b", first) is not None


def _makefile_recipes(text):
    recipes = "\n".join(line[1:] for line in text.split("\n") if line.startswith("\t"))
    return re.sub(r"\$\((\w+)\)", r"${\1}", recipes)  # make's $(VAR) is a variable, not a command


def iter_files(root):
    for d in SCAN_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, d)):
            dirnames[:] = sorted(x for x in dirnames if x not in SKIP_DIRS)
            for name in sorted(filenames):
                yield os.path.relpath(os.path.join(dirpath, name), root)
    for rel in SCAN_FILES:
        if os.path.isfile(os.path.join(root, rel)):
            yield rel


def scan_texts(texts):
    """``{command: {"path:line"}}`` for ``{relative_path: text}`` (the unit under test of scan())."""
    found = {}

    def add(cmd, path, line):
        found.setdefault(cmd, set()).add("%s:%s" % (path, line) if line else path)

    py = []
    for path, text in sorted(texts.items()):
        if path.endswith(".py"):
            try:
                py.append(_PyFile(path, text))
            except SyntaxError:
                continue
        elif path.endswith((".yml", ".yaml")):
            try:
                docs = _yaml_load(text)
            except Exception:  # noqa: BLE001 - a template that is not YAML yet: only its Exec lines
                docs = [text]
            for doc in docs:
                _yaml_commands(doc, path, add)
        elif path == "Makefile" or path.endswith("/Makefile"):
            for cmd in shell_commands(_makefile_recipes(text)):
                add(cmd, path, 0)
        elif _is_shell(path, text):
            for cmd in shell_commands(text):
                add(cmd, path, 0)
        else:
            for m in EXEC_RE.finditer(text):
                if command_name(m.group(1)):
                    add(command_name(m.group(1)), path, 0)
    _python_commands(py, add)
    return found


def scan(root):
    texts = {}
    for rel in iter_files(root):
        try:
            with open(os.path.join(root, rel), encoding="utf-8") as f:
                texts[rel] = f.read()
        except (UnicodeDecodeError, OSError):
            continue
    return scan_texts(texts)


def load_list(path):
    """scripts/commands.txt as ``{command: (package, {where, ...})}``."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 3:
                raise ValueError("%s:%d: want 'COMMAND PACKAGE WHERE', got %r" % (path, n, line))
            cmd, pkg, where = parts
            if cmd in out:
                raise ValueError("%s:%d: %s listed twice" % (path, n, cmd))
            out[cmd] = (pkg, set(where.split(",")))
    return out
