#!/usr/bin/env python3
"""Differential test: does `flotilla hosts` resolve inventories exactly as Ansible does?

Usage:
  compare.py --flotilla PATH [--ansible-inventory CMD] [--ansible CMD] [-j N] [-v] [CASE_DIR...]
  compare.py --only-ansible [CASE_DIR...]     print what Ansible resolves (debugging aid)
  compare.py --self-check [CASE_DIR...]       prove the comparer catches mistakes (no flotilla needed)

With no CASE_DIR, every sub-directory of this script's folder that holds a case.json is a case.

A case directory holds inventory files and a case.json:
  {"sources": ["hosts.ini", "inventory/", "a,b,"],   # relative to the case dir; a source
                                                      # that is not a path is passed as is
   "patterns": ["web", "web:&prod", "~st2-0[1-5]"],   # compared as host SETS
   "description": "what the case covers"}

For each case:
  1. `ansible-inventory -i S1 -i S2 ... --list` gives the hosts, each host's groups (direct or
     through children, without `all`) and its merged vars (`_meta.hostvars`, missing = {}).
  2. `flotilla hosts -i S1 ... --json --vars --ssh-config none` must give the same host set, the
     same groups per host and the same vars, compared with strict types (True != 1, 1.0 != 1,
     recursively). Secret vars must be "<redacted>" in flotilla's output; their values are not
     compared but the key must exist on both sides.
  3. For each pattern, `ansible -i S... PATTERN --list-hosts` vs
     `flotilla hosts -i S... --limit PATTERN --json --ssh-config none`. When Ansible matches no
     host (it only warns), flotilla must exit 65.

Both tools run from an empty temporary directory with absolute source paths: ansible-inventory
also loads group_vars/ and host_vars/ next to its working directory ("playbook adjacent"), so
running from the case directory would load those files a second time, in a different place in
the precedence order. Ansible's environment is made hermetic: every ANSIBLE_* variable is dropped
and ANSIBLE_CONFIG points at an empty file, so no ansible.cfg from elsewhere is read.

Exit status: 0 when every case passes, 1 when one fails, 2 on bad usage or a broken case.
Python 3.8+, standard library only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REDACTED = "<redacted>"
EXIT_BAD_INPUT = 65  # flotilla's exit status for bad input and for a --limit matching no host
TIMEOUT = 300  # seconds, per command

# flotilla's redaction rule (see the `flotilla hosts` contract).
SECRET_NAMES = frozenset(("ansible_password", "ansible_ssh_pass", "ansible_become_password", "ansible_become_pass"))
SECRET_SUFFIXES = ("password", "passwd", "_pass", "passphrase", "secret", "token")


def is_secret(name: str) -> bool:
    return name in SECRET_NAMES or name.endswith(SECRET_SUFFIXES)


class CaseError(Exception):
    """A case directory that cannot be used (bad case.json, missing source)."""


class Case:
    def __init__(self, directory: str):
        self.dir = os.path.abspath(directory)
        self.name = os.path.basename(self.dir.rstrip(os.sep))
        path = os.path.join(self.dir, "case.json")
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
        except (OSError, ValueError) as e:
            raise CaseError(f"{path}: {e}")
        sources = spec.get("sources")
        patterns = spec.get("patterns", [])
        if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
            raise CaseError(f"{path}: 'sources' must be a non-empty list of strings")
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            raise CaseError(f"{path}: 'patterns' must be a list of non-empty strings")
        self.description = spec.get("description", "")
        self.patterns = patterns
        self.sources = []  # what both tools get after -i
        for s in sources:
            p = os.path.normpath(os.path.join(self.dir, s))
            if os.path.exists(p):
                self.sources.append(p)
            elif "," in s:
                self.sources.append(s)  # a host list such as "a,b:2222,"
            else:
                raise CaseError(f"{path}: source {s!r} does not exist")

    def inventory_args(self) -> list:
        args = []
        for s in self.sources:
            args += ["-i", s]
        return args


class Tools:
    """How to run the two programs: commands, environment, working directory."""

    def __init__(self, flotilla, ansible_inventory, ansible, verbose=False):
        self.flotilla = flotilla
        self.ansible_inventory = ansible_inventory
        self.ansible = ansible
        self.verbose = verbose
        self.tmp = tempfile.mkdtemp(prefix="flotilla-inventory-corpus-")
        self.cwd = os.path.join(self.tmp, "cwd")  # stays empty
        os.mkdir(self.cwd)
        config = os.path.join(self.tmp, "ansible.cfg")  # empty; ANSIBLE_CONFIG=/dev/null is rejected
        open(config, "w").close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            ANSIBLE_CONFIG=config,
            ANSIBLE_HOST_PATTERN_MISMATCH="ignore",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_LOCALHOST_WARNING="0",
            # A file Ansible cannot parse must fail the case, not be skipped with a warning.
            ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="1",
            ANSIBLE_INVENTORY_UNPARSED_FAILED="1",
        )
        env.pop("NO_COLOR", None)
        self.env = env

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, argv):
        """Returns (exit status, stdout, stderr); a command that cannot start is exit status 127."""
        try:
            p = subprocess.run(argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
            return p.returncode, p.stdout, p.stderr
        except FileNotFoundError as e:
            return 127, "", str(e)
        except subprocess.TimeoutExpired:
            return 124, "", f"timed out after {TIMEOUT}s: {' '.join(argv)}"


# ---------------------------------------------------------------------------------------------
# The Ansible side


class AnsibleView:
    """What Ansible resolves for one case."""

    def __init__(self):
        self.hosts = set()
        self.groups = {}  # host -> set of group names (without 'all')
        self.vars = {}  # host -> merged vars
        self.patterns = {}  # pattern -> list of host names, [] when nothing matched
        self.warnings = []
        self.error = None
        self.part_matches = lambda part: None  # set when Ansible can be asked about one pattern part


def warning_lines(stderr: str) -> list:
    return [line.strip() for line in stderr.splitlines() if line.strip()]


def resolve_with_ansible(tools: Tools, case: Case) -> AnsibleView:
    view = AnsibleView()
    rc, out, err = tools.run([tools.ansible_inventory] + case.inventory_args() + ["--list"])
    view.warnings += warning_lines(err)
    if rc != 0:
        view.error = f"ansible-inventory exited {rc}: {err.strip()}"
        return view
    try:
        data = json.loads(out)
    except ValueError as e:
        view.error = f"ansible-inventory printed invalid JSON: {e}"
        return view

    meta = data.pop("_meta", {})
    hostvars = meta.get("hostvars", {})
    # Every group's members, through its children. Empty groups are not printed by Ansible.
    members = {}

    def members_of(group, trail=()):
        if group in members:
            return members[group]
        if group in trail:
            raise ValueError(f"group cycle through {group}")
        node = data.get(group, {})
        found = set(node.get("hosts", []))
        for child in node.get("children", []):
            found |= members_of(child, trail + (group,))
        members[group] = found
        return found

    for group in data:
        members_of(group)
    view.hosts = set(members.get("all", set())) | set(hostvars)
    for group, hosts in members.items():
        for h in hosts:
            view.hosts.add(h)
    for h in view.hosts:
        view.groups[h] = {g for g, hs in members.items() if h in hs and g != "all"}
        view.vars[h] = hostvars.get(h, {})

    for pattern in case.patterns:
        view.patterns[pattern] = ansible_list_hosts(tools, case, pattern, view)
    view.part_matches = lambda part: ansible_list_hosts(tools, case, part, view)
    return view


HOSTS_HEADER = re.compile(r"^\s*hosts \((\d+)\):\s*$")
STRICT_PART = re.compile(r"'([^']+)' matches no host or group in the inventory")


def ansible_list_hosts(tools: Tools, case: Case, pattern: str, view: AnsibleView):
    argv = [tools.ansible] + case.inventory_args() + ["--list-hosts", "--", pattern]
    rc, out, err = tools.run(argv)
    view.warnings += [f"[{pattern}] {w}" for w in warning_lines(err)
                      if "No hosts matched" not in w and "Could not match supplied host pattern" not in w]
    if rc != 0:
        view.error = view.error or f"ansible {pattern!r} --list-hosts exited {rc}: {err.strip()}"
        return []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        m = HOSTS_HEADER.match(line)
        if m:
            n = int(m.group(1))
            names = [l.strip() for l in lines[i + 1:i + 1 + n]]
            if len(names) != n or not all(names):
                view.error = view.error or f"ansible {pattern!r}: expected {n} host lines:\n{out}"
            return names
    view.error = view.error or f"ansible {pattern!r} --list-hosts printed no 'hosts (N):' line:\n{out}"
    return []


# ---------------------------------------------------------------------------------------------
# Strict comparison


def type_name(v) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", type(None): "null",
            list: "list", dict: "dict"}.get(type(v), type(v).__name__)


def show(v) -> str:
    s = json.dumps(v, sort_keys=True, ensure_ascii=False)
    if len(s) > 120:
        s = s[:117] + "..."
    return f"{s} ({type_name(v)})"


def strict_equal(a, b) -> bool:
    return not strict_diff("", a, b)


def strict_diff(path: str, a, f, secret_ok=False) -> list:
    """Differences between Ansible's value `a` and flotilla's value `f`, types compared exactly.

    secret_ok: nested values that flotilla shows as "<redacted>" under a secret-looking key are
    accepted (the contract only requires top-level redaction, but allows more).
    """
    if type(a) is not type(f):
        return [f"{path}: ansible {show(a)} != flotilla {show(f)}"]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(f), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in f:
                out.append(f"{sub}: missing in flotilla (ansible {show(a[k])})")
            elif k not in a:
                out.append(f"{sub}: only in flotilla ({show(f[k])})")
            elif f[k] == REDACTED and a[k] != REDACTED and is_secret(str(k).lower()):
                continue
            else:
                out += strict_diff(sub, a[k], f[k], secret_ok)
        return out
    if isinstance(a, list):
        if len(a) != len(f):
            return [f"{path}: ansible {show(a)} != flotilla {show(f)} (lengths {len(a)} and {len(f)})"]
        out = []
        for i, (x, y) in enumerate(zip(a, f)):
            out += strict_diff(f"{path}[{i}]", x, y, secret_ok)
        return out
    if isinstance(a, float) and math.isnan(a) and math.isnan(f):
        return []
    if a != f:
        return [f"{path}: ansible {show(a)} != flotilla {show(f)}"]
    return []


def compare_vars(host: str, a: dict, f: dict) -> list:
    out = []
    for k in sorted(set(a) | set(f)):
        if k not in f:
            out.append(f"{host}: var {k}: missing in flotilla (ansible {show(a[k])})")
        elif k not in a:
            out.append(f"{host}: var {k}: only in flotilla ({show(f[k])})")
        elif is_secret(k):
            if f[k] != REDACTED:
                out.append(f"{host}: var {k}: secret not redacted by flotilla ({show(f[k])})")
        elif f[k] == REDACTED and a[k] != REDACTED:
            out.append(f"{host}: var {k}: redacted by flotilla but not a secret name (ansible {show(a[k])})")
        else:
            out += [f"{host}: var {d}" for d in strict_diff(k, a[k], f[k], secret_ok=True)]
    return out


def no_duplicate_keys(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def parse_flotilla_json(stdout: str):
    """Returns (list of host objects, problems)."""
    try:
        doc = json.loads(stdout, object_pairs_hook=no_duplicate_keys)
    except ValueError as e:
        return None, [f"flotilla printed invalid JSON: {e}: {stdout[:200]!r}"]
    if not isinstance(doc, dict) or not isinstance(doc.get("hosts"), list):
        return None, ['flotilla JSON is not {"hosts": [...]}']
    problems = []
    hosts = []
    seen = set()
    for i, h in enumerate(doc["hosts"]):
        if not isinstance(h, dict) or not isinstance(h.get("name"), str):
            problems.append(f"hosts[{i}] has no string 'name'")
            continue
        if h["name"] in seen:
            problems.append(f"host {h['name']} is listed twice")
        seen.add(h["name"])
        hosts.append(h)
    return hosts, problems


def check_host_shape(h: dict, with_vars: bool) -> list:
    name = h["name"]
    out = []
    if not isinstance(h.get("address"), str):
        out.append(f"{name}: 'address' is not a string: {h.get('address')!r}")
    if type(h.get("port")) is not int:
        out.append(f"{name}: 'port' is not an integer: {h.get('port')!r}")
    if "user" in h and h["user"] is not None and not isinstance(h["user"], str):
        out.append(f"{name}: 'user' is neither a string nor null: {h['user']!r}")
    groups = h.get("groups")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        out.append(f"{name}: 'groups' is not a list of strings: {groups!r}")
    else:
        if groups != sorted(set(groups)):
            out.append(f"{name}: 'groups' is not sorted and unique: {groups}")
        if "all" in groups:
            out.append(f"{name}: 'groups' contains 'all'")
    if with_vars and not isinstance(h.get("vars"), dict):
        out.append(f"{name}: 'vars' is not an object")
    return out


def check_derived_fields(h: dict, avars: dict) -> list:
    """address/port/user must follow the host's vars (only checked when the var is present)."""
    name = h["name"]
    out = []
    host = avars.get("ansible_host")
    want = host if isinstance(host, str) else (name if "ansible_host" not in avars else None)
    if want is not None and h.get("address") != want:
        out.append(f"{name}: address {h.get('address')!r}, expected {want!r}")
    port = avars.get("ansible_port")
    want = port if type(port) is int else (22 if "ansible_port" not in avars else None)
    if want is not None and h.get("port") != want:
        out.append(f"{name}: port {h.get('port')!r}, expected {want!r}")
    user = avars.get("ansible_user")
    if isinstance(user, str) and h.get("user") != user:
        out.append(f"{name}: user {h.get('user')!r}, expected {user!r}")
    return out


def listing(names) -> str:
    names = sorted(names)
    if len(names) > 12:
        return ", ".join(names[:12]) + f", ... ({len(names)} in all)"
    return ", ".join(names)


def compare_case(case: Case, view: AnsibleView, run_flotilla) -> list:
    """All differences between Ansible's view and flotilla's answers. run_flotilla(extra_args)
    returns (exit status, stdout, stderr)."""
    diffs = []
    rc, out, err = run_flotilla(["--json", "--vars", "--ssh-config", "none"])
    if rc != 0:
        diffs.append(f"flotilla hosts --json --vars exited {rc}: {err.strip()[:500]}")
    else:
        hosts, problems = parse_flotilla_json(out)
        diffs += problems
        if hosts is not None:
            by_name = {h["name"]: h for h in hosts}
            missing = view.hosts - set(by_name)
            extra = set(by_name) - view.hosts
            if missing:
                diffs.append(f"hosts only in ansible: {listing(missing)}")
            if extra:
                diffs.append(f"hosts only in flotilla: {listing(extra)}")
            for name in sorted(view.hosts & set(by_name)):
                h = by_name[name]
                shape = check_host_shape(h, with_vars=True)
                diffs += shape
                if shape:
                    continue
                ag, fg = view.groups[name], set(h["groups"])
                if ag != fg:
                    parts = []
                    if ag - fg:
                        parts.append(f"missing {sorted(ag - fg)}")
                    if fg - ag:
                        parts.append(f"extra {sorted(fg - ag)}")
                    diffs.append(f"{name}: groups differ: {'; '.join(parts)} (ansible {sorted(ag)})")
                diffs += compare_vars(name, view.vars[name], h["vars"])
                diffs += check_derived_fields(h, view.vars[name])

    for pattern in case.patterns:
        expected = set(view.patterns.get(pattern, []))
        rc, out, err = run_flotilla(["--limit", pattern, "--json", "--ssh-config", "none"])
        label = f"pattern {pattern!r}"
        if not expected:
            if rc != EXIT_BAD_INPUT:
                got = ""
                if rc == 0:
                    hosts, _ = parse_flotilla_json(out)
                    got = f" ({listing(h['name'] for h in hosts)})" if hosts else ""
                diffs.append(f"{label}: ansible matches no host, so flotilla should exit {EXIT_BAD_INPUT}; "
                             f"it exited {rc}{got}")
            elif "flotilla: error:" not in err:
                diffs.append(f"{label}: exit {EXIT_BAD_INPUT} without a 'flotilla: error:' message on stderr")
            continue
        if rc != 0:
            # flotilla is stricter than Ansible on purpose: a part of the pattern that names
            # no host and no group is an error (Ansible ignores it). Accept that refusal
            # only when Ansible, asked for that part alone, indeed matches nothing.
            part = STRICT_PART.search(err)
            # (A trailing comma keeps Ansible from splitting the part on its colons.)
            if rc == EXIT_BAD_INPUT and part and view.part_matches(part.group(1) + ",") == []:
                continue
            diffs.append(f"{label}: flotilla exited {rc} (ansible matches {listing(expected)}): {err.strip()[:300]}")
            continue
        hosts, problems = parse_flotilla_json(out)
        diffs += [f"{label}: {p}" for p in problems]
        if hosts is None:
            continue
        got = {h["name"] for h in hosts}
        if got != expected:
            parts = []
            if expected - got:
                parts.append(f"only ansible: {listing(expected - got)}")
            if got - expected:
                parts.append(f"only flotilla: {listing(got - expected)}")
            diffs.append(f"{label}: {'; '.join(parts)}")
    return diffs


# ---------------------------------------------------------------------------------------------
# Modes


def find_cases(dirs) -> list:
    if not dirs:
        dirs = sorted(os.path.join(HERE, d) for d in os.listdir(HERE)
                      if os.path.isfile(os.path.join(HERE, d, "case.json")))
    return [Case(d) for d in dirs]


def flotilla_runner(tools: Tools, case: Case):
    def run(extra):
        return tools.run([tools.flotilla, "hosts"] + case.inventory_args() + extra)
    return run


def print_result(name: str, diffs: list, max_diffs: int, note: str = ""):
    if not diffs:
        print(f"ok {name}{note}", flush=True)
        return
    print(f"FAIL {name}{note}")
    for d in diffs[:max_diffs]:
        print("    " + d.replace("\n", "\n      "))
    if len(diffs) > max_diffs:
        print(f"    ... and {len(diffs) - max_diffs} more differences")
    sys.stdout.flush()


def mode_compare(tools: Tools, cases, jobs: int, max_diffs: int) -> int:
    def work(case):
        view = resolve_with_ansible(tools, case)
        if view.error:
            return case, [f"ansible side failed: {view.error}"], view
        return case, compare_case(case, view, flotilla_runner(tools, case)), view

    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for case, diffs, view in pool.map(work, cases):
            print_result(case.name, diffs, max_diffs)
            if tools.verbose:
                for w in view.warnings:
                    print(f"    (ansible) {w}")
            failed += bool(diffs)
    print(f"{len(cases)} cases, {failed} failed")
    return 1 if failed else 0


def mode_only_ansible(tools: Tools, cases, jobs: int) -> int:
    broken = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for case, view in pool.map(lambda c: (c, resolve_with_ansible(tools, c)), cases):
            print(f"== {case.name}: {case.description}")
            print(f"   sources: {' '.join(case.inventory_args())}")
            for w in view.warnings:
                print(f"   WARNING (ansible): {w}")
            if view.error:
                print(f"   ERROR: {view.error}")
                broken += 1
                continue
            for h in sorted(view.hosts):
                print(f"   {h}  groups={sorted(view.groups[h])}")
                if view.vars[h]:
                    print("      vars=" + json.dumps(view.vars[h], sort_keys=True, ensure_ascii=False))
            for p in case.patterns:
                r = view.patterns[p]
                print(f"   pattern {p!r}: " + (", ".join(r) if r else "(no hosts: flotilla must exit 65)"))
            sys.stdout.flush()
    print(f"{len(cases)} cases, {broken} failed on the Ansible side")
    return 1 if broken else 0


# --- self-check: a fake flotilla built from Ansible's own answers ------------------------------


def fake_host(name: str, view: AnsibleView, with_vars: bool) -> dict:
    v = view.vars[name]
    h = {
        "name": name,
        "address": v["ansible_host"] if isinstance(v.get("ansible_host"), str) else name,
        "port": v["ansible_port"] if type(v.get("ansible_port")) is int else 22,
        "user": v["ansible_user"] if isinstance(v.get("ansible_user"), str) else None,
        "groups": sorted(view.groups[name]),
    }
    if with_vars:
        h["vars"] = {k: (REDACTED if is_secret(k) else copy.deepcopy(val)) for k, val in v.items()}
    return h


class FakeFlotilla:
    """Answers like a correct flotilla would, from the Ansible view; a mutation can corrupt it."""

    def __init__(self, view: AnsibleView):
        self.view = view
        self.full = {"hosts": [fake_host(h, view, True) for h in sorted(view.hosts)]}
        self.limits = {}
        for p, names in view.patterns.items():
            self.limits[p] = (0, {"hosts": [fake_host(h, view, False) for h in names]}) if names else (EXIT_BAD_INPUT, None)

    def __call__(self, extra):
        if "--limit" in extra:
            rc, doc = self.limits[extra[extra.index("--limit") + 1]]
            if rc == EXIT_BAD_INPUT:
                return rc, "", "flotilla: error: no host matches the pattern\n"
            return rc, json.dumps(doc), ""
        return 0, json.dumps(self.full), ""


def leaves(value, path=()):
    """(path, leaf) pairs of a var value, depth first."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, path + (i,))
    else:
        yield path, value


def set_at(container, path, value):
    for p in path[:-1]:
        container = container[p]
    container[path[-1]] = value


def find_var(fake, want):
    """First (host, var path, value) in the fake's full listing for which want(path, value)."""
    for h in fake.full["hosts"]:
        for k, v in h["vars"].items():
            if is_secret(k):
                continue
            for path, leaf in leaves(v, (k,)):
                if want(path, leaf):
                    return h, path, leaf
    return None


def mutations(view: AnsibleView):
    """(name, function(fake) -> True if it applied) pairs; each must make the comparer fail."""

    def drop_host(fake):
        fake.full["hosts"].pop(0)
        return True

    def extra_host(fake):
        fake.full["hosts"].append(dict(fake.full["hosts"][0], name="zz-not-in-inventory"))
        return True

    def change_group(fake):
        h = fake.full["hosts"][0]
        h["groups"] = sorted(h["groups"][1:] + ["zz_bogus"])
        return True

    def drop_group(fake):
        for h in fake.full["hosts"]:
            if h["groups"]:
                h["groups"] = h["groups"][1:]
                return True
        return False

    def bool_to_int(fake):
        found = find_var(fake, lambda p, v: type(v) is bool)
        if not found:
            return False
        h, path, v = found
        set_at(h["vars"], path, int(v))
        return True

    def int_to_bool(fake):
        found = find_var(fake, lambda p, v: type(v) is int and v in (0, 1))
        if not found:
            return False
        h, path, v = found
        set_at(h["vars"], path, bool(v))
        return True

    def float_to_int(fake):
        found = find_var(fake, lambda p, v: type(v) is float and v.is_integer())
        if not found:
            return False
        h, path, v = found
        set_at(h["vars"], path, int(v))
        return True

    def int_to_string(fake):
        found = find_var(fake, lambda p, v: type(v) is int)
        if not found:
            return False
        h, path, v = found
        set_at(h["vars"], path, str(v))
        return True

    def change_nested(fake):
        found = find_var(fake, lambda p, v: len(p) > 1)
        if not found:
            return False
        h, path, v = found
        set_at(h["vars"], path, v + "x" if isinstance(v, str) else [v])
        return True

    def drop_var(fake):
        for h in fake.full["hosts"]:
            if h["vars"]:
                del h["vars"][sorted(h["vars"])[0]]
                return True
        return False

    def extra_var(fake):
        fake.full["hosts"][0]["vars"]["inventory_file"] = "/somewhere/hosts"
        return True

    def unredact(fake):
        for h in fake.full["hosts"]:
            for k in h["vars"]:
                if is_secret(k):
                    h["vars"][k] = "hunter2"
                    return True
        return False

    def over_redact(fake):
        found = find_var(fake, lambda p, v: len(p) == 1 and v != REDACTED)
        if not found:
            return False
        h, path, v = found
        h["vars"][path[0]] = REDACTED
        return True

    def wrong_port(fake):
        fake.full["hosts"][0]["port"] += 1
        return True

    def pattern_drops_host(fake):
        for p, (rc, doc) in fake.limits.items():
            if rc == 0:
                doc["hosts"].pop()
                return True
        return False

    def pattern_adds_host(fake):
        for p, (rc, doc) in fake.limits.items():
            if rc == 0:
                others = fake.view.hosts - {h["name"] for h in doc["hosts"]}
                if others:
                    doc["hosts"].append(fake_host(sorted(others)[0], fake.view, False))
                    return True
        return False

    def pattern_should_fail(fake):
        for p, (rc, doc) in fake.limits.items():
            if rc == EXIT_BAD_INPUT:
                fake.limits[p] = (0, {"hosts": []})
                return True
        return False

    def pattern_fails_wrongly(fake):
        for p, (rc, doc) in fake.limits.items():
            if rc == 0:
                fake.limits[p] = (EXIT_BAD_INPUT, None)
                return True
        return False

    return [(f.__name__, f) for f in (
        drop_host, extra_host, change_group, drop_group, bool_to_int, int_to_bool, float_to_int,
        int_to_string, change_nested, drop_var, extra_var, unredact, over_redact, wrong_port,
        pattern_drops_host, pattern_adds_host, pattern_should_fail, pattern_fails_wrongly)]


def strictness_self_test() -> list:
    """The comparison primitives, on hand-made values."""
    problems = []
    unequal = [(True, 1), (1, True), (False, 0), (1.0, 1), (1, 1.0), ("1", 1), (None, "None"),
               ([1, 2], [2, 1]), ([True], [1]), ({"a": {"b": 1}}, {"a": {"b": 1.0}}),
               ({"a": [1, {"b": False}]}, {"a": [1, {"b": 0}]}), ({"a": 1}, {"a": 1, "b": 2}), ([], {}),
               ("007", 7), ("yes", True)]
    for a, b in unequal:
        if strict_equal(a, b):
            problems.append(f"strict_equal({a!r}, {b!r}) is True")
    equal = [(True, True), (1, 1), (1.5, 1.5), ({"a": [1, "x", None]}, {"a": [1, "x", None]}), ("", "")]
    for a, b in equal:
        if not strict_equal(a, b):
            problems.append(f"strict_equal({a!r}, {b!r}) is False")
    if not compare_vars("h", {"ansible_password": "x"}, {}):
        problems.append("a secret missing in flotilla was accepted")
    if compare_vars("h", {"ansible_password": "x", "db_token": 3}, {"ansible_password": REDACTED, "db_token": REDACTED}):
        problems.append("redacted secrets were reported")
    if not compare_vars("h", {"api_token": "x"}, {"api_token": "x"}):
        problems.append("an unredacted secret was accepted")
    if not compare_vars("h", {"port": 1}, {"port": REDACTED}):
        problems.append("a redacted non-secret was accepted")
    return problems


def mode_self_check(tools: Tools, cases, jobs: int, max_diffs: int) -> int:
    problems = strictness_self_test()
    print_result("(comparison primitives)", problems, max_diffs)
    failed = bool(problems)
    applied_anywhere = {name: 0 for name, _ in mutations(AnsibleView())}

    def work(case):
        view = resolve_with_ansible(tools, case)
        if view.error:
            return case, [f"ansible side failed: {view.error}"], []
        out = [f"baseline (a correct fake flotilla) reported: {d}"
               for d in compare_case(case, view, FakeFlotilla(view))]
        applied = []
        for name, mutate in mutations(view):
            fake = FakeFlotilla(view)
            if not mutate(fake):
                continue
            applied.append(name)
            if not compare_case(case, view, fake):
                out.append(f"mutation {name} was not detected")
        if view.warnings:
            out += [f"ansible warned: {w}" for w in view.warnings]
        return case, out, applied

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for case, diffs, applied in pool.map(work, cases):
            for name in applied:
                applied_anywhere[name] += 1
            print_result(case.name, diffs, max_diffs, f" ({len(applied)} mutations caught)" if not diffs else "")
            failed += bool(diffs)
    never = [n for n, c in applied_anywhere.items() if c == 0]
    print("mutations applied across the corpus: " + ", ".join(f"{n}={c}" for n, c in applied_anywhere.items()))
    if never:
        print(f"FAIL (corpus) these mutations never applied to any case: {', '.join(never)}")
        failed += 1
    print(f"{len(cases)} cases, {failed - bool(never) - bool(problems)} failed self-check")
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", metavar="CASE_DIR")
    ap.add_argument("--flotilla", help="path to the flotilla binary")
    ap.add_argument("--ansible-inventory", default="ansible-inventory")
    ap.add_argument("--ansible", default="ansible")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--only-ansible", action="store_true", help="print what Ansible resolves and stop")
    mode.add_argument("--self-check", action="store_true",
                      help="check the comparer against a fake flotilla built from Ansible's answers")
    ap.add_argument("-j", "--jobs", type=int, default=max(2, os.cpu_count() or 1), help="cases run in parallel")
    ap.add_argument("--max-diffs", type=int, default=40, help="differences printed per case")
    ap.add_argument("-v", "--verbose", action="store_true", help="also print Ansible's warnings")
    args = ap.parse_args(argv)

    flotilla = None
    if not (args.only_ansible or args.self_check):
        if not args.flotilla:
            ap.error("--flotilla is required (or use --only-ansible / --self-check)")
        flotilla = args.flotilla if os.sep not in args.flotilla else os.path.abspath(args.flotilla)
        flotilla = shutil.which(flotilla) or flotilla
        if not os.access(flotilla, os.X_OK):
            ap.error(f"not an executable: {args.flotilla}")
    try:
        cases = find_cases(args.cases)
    except CaseError as e:
        print(f"compare.py: {e}", file=sys.stderr)
        return 2
    if not cases:
        print("compare.py: no cases found", file=sys.stderr)
        return 2

    tools = Tools(flotilla, args.ansible_inventory, args.ansible, args.verbose)
    try:
        if args.only_ansible:
            return mode_only_ansible(tools, cases, args.jobs)
        if args.self_check:
            return mode_self_check(tools, cases, args.jobs, args.max_diffs)
        return mode_compare(tools, cases, args.jobs, args.max_diffs)
    finally:
        tools.close()


if __name__ == "__main__":
    sys.exit(main())
