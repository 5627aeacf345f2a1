"""A small AWX / Automation Controller double: the REST API subset awx.awx's modules and `berqenas --controller` use.

Faithful to AWX's API v2 (every field relied on is listed here; a real controller gives the same):
- auth: ``Authorization: Bearer <token>`` on every request, else 401 ``{"detail": "Authentication credentials were
  not provided."}``; responses carry ``X-API-Product-Name: AWX`` and ``X-API-Product-Version``.
- resources ``organizations, projects, inventories, credential_types, credentials, job_templates, schedules,
  execution_environments, labels, instance_groups`` at ``/api/v2/<kind>/``: list (``count``, ``next``,
  ``previous``, ``results``; query parameters filter on field equality, ``or__<field>`` ORs), create (POST, 201,
  400 ``{"__all__": [...]}`` on a duplicate name in the same organization), read, PATCH, DELETE (204). Every
  object has ``id``, ``type``, ``url``, ``name``, ``related``, ``summary_fields``, ``created``, ``modified``.
  ``unified_job_templates`` lists job templates and projects (read only). Schedules have ``next_run``
  (computed for DTSTART + FREQ=MINUTELY|HOURLY|DAILY|WEEKLY;INTERVAL=N rules, else null: see ``_next_run``).
- ``/job_templates/N/survey_spec/`` (GET ``{}`` when none, POST stores, DELETE), ``/job_templates/N/credentials/``
  (POST ``{"id": X}`` associates, ``{"id": X, "disassociate": true}`` disassociates; 204).
- ``POST /job_templates/N/launch/`` with ``extra_vars`` (a dict), ``job_type``, ``diff_mode``, ``limit``: as AWX,
  a field the template does not prompt for is dropped and named in ``ignored_fields``; with a survey, only
  survey variables are accepted from extra_vars (others ignored), required questions without a default and
  answers outside ``min``/``max`` or ``choices`` give 400 ``{"variables_needed_to_start": [...]}``; defaults fill
  unanswered questions. 201 with ``job`` (the id), ``id``, ``status``, ``ignored_fields``.
- the job runs the template's playbook for real with ansible-runner, in the template's project directory, against
  the template's inventory, with the survey answers and the injected credentials as extra vars (marked unsafe, as
  AWX does), credential types' ``env`` injectors as environment and ``file`` injectors as 0600 files
  (``{{ tower.filename }}``); job ``status`` goes ``pending`` -> ``running`` -> ``successful`` | ``failed`` |
  ``canceled``; ``failed`` (bool), ``artifacts`` (what the playbook published with set_stats), ``elapsed``,
  ``job_explanation`` (``Job terminated due to timeout`` on the template's ``timeout``).
- ``GET /jobs/N/job_events/?counter__gt=K&order_by=counter``: ``counter``, ``event``, ``event_data`` (host, task,
  play, res), ``failed``, ``changed``, ``stdout``; ``POST /jobs/N/cancel/`` (202), ``GET`` gives ``can_cancel``.

Where AWX syncs inventories and projects from SCM, the double is told where they are on disk: a project's
``local_path`` is a directory under ``projects_root``; an inventory's name maps to a path (``inventory_paths``).
"""

from __future__ import annotations

import copy
import datetime
import itertools
import json
import os
import re
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

API = "/api/v2/"
VERSION = "24.6.1"
KINDS = ("organizations", "projects", "inventories", "credential_types", "credentials", "job_templates",
         "schedules", "execution_environments", "labels", "instance_groups")
TYPE_OF = {"organizations": "organization", "projects": "project", "inventories": "inventory",
           "credential_types": "credential_type", "credentials": "credential", "job_templates": "job_template",
           "schedules": "schedule", "execution_environments": "execution_environment", "labels": "label",
           "instance_groups": "instance_group"}
ENCRYPTED = "$encrypted$"
DONE = ("successful", "failed", "error", "canceled")
_TEMPLATE_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")


def _now():
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


_RRULE_RE = re.compile(r"^DTSTART(?:;TZID=UTC)?:(\d{8}T\d{6})Z?\s+RRULE:(.+)$")
_FREQ_S = {"MINUTELY": 60, "HOURLY": 3600, "DAILY": 86400, "WEEKLY": 604800}


def _next_run(rrule, now=None):
    """A schedule's ``next_run`` as AWX computes it from ``rrule``, for the rules the tests use: DTSTART in UTC
    and RRULE FREQ=MINUTELY|HOURLY|DAILY|WEEKLY with INTERVAL (and no COUNT/UNTIL/BY*): the first occurrence
    at or after now. Other rules give None (the double does not evaluate them)."""
    m = _RRULE_RE.match((rrule or "").strip())
    if not m:
        return None
    parts = dict(p.split("=", 1) for p in m.group(2).split(";") if "=" in p)
    if set(parts) - {"FREQ", "INTERVAL"} or parts.get("FREQ") not in _FREQ_S:
        return None
    start = datetime.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=datetime.UTC)
    step = _FREQ_S[parts["FREQ"]] * int(parts.get("INTERVAL", "1"))
    now = now or datetime.datetime.now(datetime.UTC)
    if now > start:
        start += datetime.timedelta(seconds=-(-(now - start).total_seconds() // step) * step)
    return start.isoformat().replace("+00:00", "Z")


class _Http(Exception):
    def __init__(self, status, body=None):
        super().__init__(status)
        self.status = status
        self.body = body


def render(template, values):
    """AWX renders injector templates with Jinja; the subset credential types here use: ``{{ field }}``."""
    def one(m):
        cur = values
        for part in m.group(1).split("."):
            cur = cur[part]
        return str(cur)
    return _TEMPLATE_RE.sub(one, template)


class AwxDouble:
    def __init__(self, token, projects_root, inventory_paths, runner_env=None):
        self.token = token
        self.projects_root = projects_root
        self.inventory_paths = dict(inventory_paths)
        self.runner_env = dict(runner_env or {})
        self.objects = {k: {} for k in KINDS}
        self.surveys = {}
        self.jt_credentials = {}
        self.jobs = {}
        self.events = {}
        self.requests = []  # (method, path) of every request, for tests
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = None

    # -- server ----------------------------------------------------------------------
    def start(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _do(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = double.handle(method, self.path, self.headers.get("Authorization", ""), raw)
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-API-Product-Name", "AWX")
                self.send_header("X-API-Product-Version", VERSION)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._do("GET")

            def do_POST(self):
                self._do("POST")

            def do_PATCH(self):
                self._do("PATCH")

            def do_DELETE(self):
                self._do("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        for job in self.jobs.values():
            job["_cancel"] = True
        for job in list(self.jobs.values()):
            t = job.get("_thread")
            if t:
                t.join(timeout=120)

    # -- dispatch --------------------------------------------------------------------
    def handle(self, method, path, auth, raw):
        parts = urlsplit(path)
        self.requests.append((method, parts.path))
        try:
            if auth != "Bearer " + self.token:
                raise _Http(401, {"detail": "Authentication credentials were not provided."})
            if not parts.path.startswith(API):
                raise _Http(404, {"detail": "Not found."})
            segs = [s for s in parts.path[len(API):].split("/") if s]
            query = dict(parse_qsl(parts.query))
            data = json.loads(raw) if raw else {}
            with self._lock:
                return self._route(method, segs, query, data)
        except _Http as exc:
            return exc.status, exc.body
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"detail": "bad request: %s" % exc}

    def _route(self, method, segs, query, data):
        if not segs or segs == ["ping"] or segs == ["config"]:
            return 200, {"version": VERSION, "active_node": "double"}
        if segs == ["me"]:
            return 200, {"count": 1, "next": None, "previous": None, "results": [{"id": 1, "username": "admin"}]}
        kind = segs[0]
        if kind == "unified_job_templates" and method == "GET":
            items = list(self.objects["job_templates"].values()) + list(self.objects["projects"].values())
            return 200, self._page(items, query)
        if kind == "jobs":
            return self._jobs(method, segs[1:], query)
        if kind not in KINDS:
            raise _Http(404, {"detail": "Not found."})
        store = self.objects[kind]
        if len(segs) == 1:
            if method == "GET":
                return 200, self._page(list(store.values()), query)
            if method == "POST":
                return 201, self._create(kind, data)
            raise _Http(405, {"detail": 'Method "%s" not allowed.' % method})
        oid = int(segs[1])
        if oid not in store:
            raise _Http(404, {"detail": "Not found."})
        obj = store[oid]
        if len(segs) == 2:
            if method == "GET":
                return 200, self._public(obj)
            if method == "PATCH":
                if kind == "credentials" and "inputs" in data:
                    data["inputs"] = {k: obj.get("inputs", {}).get(k) if v == ENCRYPTED else v
                                      for k, v in data["inputs"].items()}
                obj.update({k: v for k, v in data.items() if k not in ("id", "url", "type")})
                obj["modified"] = _now()
                return 200, self._public(obj)
            if method == "DELETE":
                del store[oid]
                return 204, None
        if kind == "job_templates" and len(segs) == 3:
            return self._job_template_sub(method, obj, segs[2], data)
        raise _Http(404, {"detail": "Not found."})

    def _public(self, obj):
        out = {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}
        if obj.get("type") == "schedule":  # computed from the rule on every read, as AWX keeps it current
            out["next_run"] = _next_run(obj.get("rrule"))
        if obj.get("type") == "credential":  # AWX never gives a secret input back
            ctype = self.objects["credential_types"].get(obj.get("credential_type")) or {}
            secret = {f["id"] for f in (ctype.get("inputs") or {}).get("fields", []) if f.get("secret")}
            out["inputs"] = {k: ENCRYPTED if k in secret else v for k, v in (obj.get("inputs") or {}).items()}
        return out

    def _page(self, items, query):
        ors = {k[4:]: v for k, v in query.items() if k.startswith("or__")}
        ands = {k: v for k, v in query.items() if not k.startswith("or__") and k not in ("page_size", "page",
                                                                                         "order_by")}
        out = []
        for it in items:
            if any(str(it.get(k)) != v for k, v in ands.items()):
                continue
            if ors and not any(str(it.get(k)) == v for k, v in ors.items()):
                continue
            out.append(self._public(it))
        out.sort(key=lambda o: o["id"])
        return {"count": len(out), "next": None, "previous": None, "results": out}

    def _create(self, kind, data):
        if not data.get("name"):
            raise _Http(400, {"name": ["This field is required."]})
        for other in self.objects[kind].values():
            if other["name"] == data["name"] and other.get("organization") == data.get("organization"):
                raise _Http(400, {"__all__": ["%s with this Name and Organization already exists."
                                              % TYPE_OF[kind].replace("_", " ").title()]})
        oid = next(self._ids)
        url = "%s%s/%d/" % (API, kind, oid)
        obj = dict(data, id=oid, type=TYPE_OF[kind], url=url, created=_now(), modified=_now(),
                   summary_fields={}, related={})
        if kind == "job_templates":
            obj["related"] = {"survey_spec": url + "survey_spec/", "launch": url + "launch/",
                              "credentials": url + "credentials/"}
            obj.setdefault("survey_enabled", False)
            obj.setdefault("job_type", "run")
        self.objects[kind][oid] = obj
        return self._public(obj)

    def _job_template_sub(self, method, jt, sub, data):
        if sub == "survey_spec":
            if method == "GET":
                return 200, copy.deepcopy(self.surveys.get(jt["id"], {}))
            if method == "POST":
                if not isinstance(data.get("spec"), list):
                    raise _Http(400, {"error": "'spec' must be a list of items."})
                self.surveys[jt["id"]] = copy.deepcopy(data)
                return 200, {}
            if method == "DELETE":
                self.surveys.pop(jt["id"], None)
                return 204, None
        if sub == "credentials":
            ids = self.jt_credentials.setdefault(jt["id"], [])
            if method == "GET":
                return 200, self._page([self.objects["credentials"][i] for i in ids], {})
            if method == "POST":
                cid = int(data["id"])
                if data.get("disassociate"):
                    if cid in ids:
                        ids.remove(cid)
                elif cid not in ids:
                    if cid not in self.objects["credentials"]:
                        raise _Http(400, {"msg": "credential %d does not exist" % cid})
                    ids.append(cid)
                return 204, None
        if sub == "launch":
            if method == "GET":
                return 200, {"survey_enabled": jt.get("survey_enabled", False),
                             "ask_variables_on_launch": jt.get("ask_variables_on_launch", False),
                             "ask_job_type_on_launch": jt.get("ask_job_type_on_launch", False),
                             "ask_diff_mode_on_launch": jt.get("ask_diff_mode_on_launch", False),
                             "ask_limit_on_launch": jt.get("ask_limit_on_launch", False)}
            if method == "POST":
                return 201, self._launch(jt, data)
        raise _Http(404, {"detail": "Not found."})

    # -- launching -------------------------------------------------------------------
    def _survey_answers(self, jt, given):
        spec = self.surveys.get(jt["id"]) if jt.get("survey_enabled") else None
        if not spec:
            return {}, sorted(given)
        answers, needed = {}, []
        names = {q["variable"] for q in spec["spec"]}
        for q in spec["spec"]:
            var = q["variable"]
            if var in given and given[var] is None and not q.get("required"):
                answers[var] = None  # an optional question answered null (an empty list) is passed on as null
                continue
            if var in given:
                value = given[var]
            elif q.get("default") not in (None, ""):
                value = q["default"]
            else:
                if q.get("required"):
                    needed.append(var)
                continue
            kind = q.get("type", "text")
            if kind in ("text", "textarea", "password"):
                value = str(value)
                if "min" in q and len(value) < int(q["min"]) or "max" in q and len(value) > int(q["max"]):
                    raise _Http(400, {"variables_needed_to_start": [
                        "'%s' value %s is not between %s and %s characters" % (var, value, q.get("min"),
                                                                               q.get("max"))]})
            elif kind == "integer":
                value = int(value)
            elif kind == "float":
                value = float(value)
            elif kind == "multiplechoice":
                choices = q["choices"] if isinstance(q["choices"], list) else q["choices"].split("\n")
                if str(value) not in choices:
                    raise _Http(400, {"variables_needed_to_start": [
                        "Value %s for '%s' expected to be one of %s." % (value, var, choices)]})
                value = str(value)
            answers[var] = value
        if needed:
            raise _Http(400, {"variables_needed_to_start": ["'%s' value missing" % v for v in needed]})
        return answers, sorted(k for k in given if k not in names)

    def _launch(self, jt, data):
        ignored = {}
        given = data.get("extra_vars") or {}
        if isinstance(given, str):
            given = json.loads(given or "{}")
        answers, extra_ignored = self._survey_answers(jt, given)
        if jt.get("ask_variables_on_launch"):
            answers = dict(given, **answers)
        elif extra_ignored:
            ignored["extra_vars"] = {k: given[k] for k in extra_ignored}
        fields = {"job_type": jt.get("job_type", "run"), "diff_mode": jt.get("diff_mode", False),
                  "limit": jt.get("limit", "")}
        for key, ask in (("job_type", "ask_job_type_on_launch"), ("diff_mode", "ask_diff_mode_on_launch"),
                         ("limit", "ask_limit_on_launch")):
            if key in data:
                if jt.get(ask):
                    fields[key] = data[key]
                else:
                    ignored[key] = data[key]
        jid = next(self._ids)
        job = {"id": jid, "type": "job", "url": "%sjobs/%d/" % (API, jid), "name": jt["name"],
               "job_template": jt["id"], "status": "pending", "failed": False, "artifacts": {}, "elapsed": 0.0,
               "started": None, "finished": None, "job_explanation": "", "extra_vars": json.dumps(answers),
               "_cancel": False, **fields}
        self.jobs[jid] = job
        self.events[jid] = []
        creds = [self.objects["credentials"][c] for c in self.jt_credentials.get(jt["id"], [])]
        t = threading.Thread(target=self._run_job, args=(job, jt, answers, creds), daemon=True)
        job["_thread"] = t
        t.start()
        return dict(self._public(job), job=jid, ignored_fields=ignored)

    def _inject(self, creds, tmpdir):
        """What AWX's credential injectors give the job: extra vars, environment, files."""
        extra, env = {}, {}
        for cred in creds:
            ctype = self.objects["credential_types"][cred["credential_type"]]
            inj = ctype.get("injectors") or {}
            values = dict(cred.get("inputs") or {})
            files = {}  # `template` -> {{ tower.filename }}; `template.NAME` -> {{ tower.filename.NAME }}
            for name, template in (inj.get("file") or {}).items():
                fd, path = tempfile.mkstemp(dir=tmpdir, prefix="cred-")
                with os.fdopen(fd, "w") as f:
                    f.write(render(template, values))
                os.chmod(path, 0o600)
                files[name.split(".", 1)[1] if "." in name else ""] = path
            values["tower"] = {"filename": files.get("", files)}
            for k, v in (inj.get("extra_vars") or {}).items():
                extra[k] = render(v, values)
            for k, v in (inj.get("env") or {}).items():
                env[k] = render(v, values)
        return extra, env

    def _run_job(self, job, jt, answers, creds):
        import ansible_runner
        from berqenas_orchestrator.runner import dump_unsafe_yaml  # AWX writes survey answers !unsafe too

        project = self.objects["projects"][jt["project"]]
        inventory = self.objects["inventories"][jt["inventory"]]
        project_dir = os.path.join(self.projects_root, project["local_path"])
        pdd = tempfile.mkdtemp(prefix="awx-double-job-")
        counter = itertools.count(1)
        started = time.monotonic()
        job.update(status="running", started=_now())
        try:
            extra, env = self._inject(creds, pdd)
            varfile = os.path.join(pdd, "extravars.yml")
            with open(os.open(varfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(dump_unsafe_yaml(dict(answers, **extra)))

            def on_event(ev):
                data = ev.get("event_data") or {}
                res = data.get("res") or {}
                self.events[job["id"]].append({
                    "id": len(self.events[job["id"]]) + 1, "counter": next(counter), "event": ev.get("event"),
                    "event_data": {k: data.get(k) for k in ("host", "task", "play", "res") if k in data},
                    "failed": ev.get("event") in ("runner_on_failed", "runner_on_unreachable")
                    and not data.get("ignore_errors"),
                    "changed": bool(res.get("changed")), "stdout": ev.get("stdout", ""), "created": _now()})
                if ev.get("event") == "playbook_on_stats":
                    job["artifacts"] = dict(data.get("artifact_data") or {})
                return False

            cmdline = ["-e", "@" + varfile]
            if job["job_type"] == "check":
                cmdline.append("--check")
            if job["diff_mode"]:
                cmdline.append("--diff")
            if job["limit"]:
                cmdline += ["--limit", job["limit"]]
            r = ansible_runner.run(
                private_data_dir=pdd, project_dir=project_dir, playbook=os.path.join(project_dir, jt["playbook"]),
                inventory=self.inventory_paths[inventory["name"]], cmdline=" ".join(cmdline), quiet=True,
                envvars=dict(self.runner_env, **env), event_handler=on_event,
                cancel_callback=lambda: job["_cancel"], timeout=jt.get("timeout") or None,
                settings={"suppress_ansible_output": True})
            if job["_cancel"]:
                job.update(status="canceled", failed=True)
            elif r.status == "timeout":
                job.update(status="failed", failed=True, job_explanation="Job terminated due to timeout")
            else:
                ok = r.status == "successful" and r.rc == 0
                job.update(status="successful" if ok else "failed", failed=not ok)
        except Exception as exc:  # noqa: BLE001 - AWX reports a job that could not run as "error"
            job.update(status="error", failed=True, job_explanation="%s: %s" % (type(exc).__name__, exc))
        finally:
            job.update(finished=_now(), elapsed=round(time.monotonic() - started, 3))
            shutil.rmtree(pdd, ignore_errors=True)

    def _jobs(self, method, segs, query):
        if not segs:
            raise _Http(405, {"detail": "Method not allowed."})
        jid = int(segs[0])
        job = self.jobs.get(jid)
        if job is None:
            raise _Http(404, {"detail": "Not found."})
        if len(segs) == 1 and method == "GET":
            return 200, self._public(job)
        if segs[1:] == ["job_events"] and method == "GET":
            after = int(query.get("counter__gt", 0))
            evs = [e for e in self.events[jid] if e["counter"] > after]
            return 200, {"count": len(evs), "next": None, "previous": None, "results": copy.deepcopy(evs)}
        if segs[1:] == ["cancel"]:
            if method == "GET":
                return 200, {"can_cancel": job["status"] not in DONE}
            if method == "POST":
                if job["status"] in DONE:
                    raise _Http(405, {"error": "Job cannot be canceled."})
                job["_cancel"] = True
                return 202, None
        raise _Http(404, {"detail": "Not found."})


RUNNER_ENV = ("PATH", "HOME", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP", "ANSIBLE_NOCOLOR",
              "ANSIBLE_PYTHON_INTERPRETER")


class TemplateJobs:
    """The credential-free job templates NAMES of extensions/awx/job_templates.yml (with their surveys) in a
    started double whose project is this checkout and whose inventory is INVENTORY (a directory), as
    configure_controller.yml would create them; ``launch`` runs one job through ansible-runner to its end."""

    def __init__(self, workdir, inventory, names, ansible_env, timeout=300):
        import yaml

        from tests.support.env import REPO

        self.timeout = timeout
        os.symlink(REPO, os.path.join(workdir, "berqenas"))
        self.token = "jobs-" + os.urandom(12).hex()
        env = {k: ansible_env[k] for k in RUNNER_ENV if k in ansible_env}
        self.double = AwxDouble(self.token, str(workdir), {"berqenas": str(inventory)}, runner_env=env).start()
        with open(os.path.join(REPO, "extensions", "awx", "job_templates.yml")) as f:
            templates = {j["name"]: j for j in yaml.safe_load(f)["berqenas_awx_job_templates"]}
        made = {}
        for kind, body in (("organizations", {"name": "Default"}),
                           ("projects", {"name": "berqenas", "scm_type": "", "local_path": "berqenas"}),
                           ("inventories", {"name": "berqenas"})):
            made[kind] = self._ok(201, "POST", f"/api/v2/{kind}/",
                                  dict(body, organization=made.get("organizations", {}).get("id")))
        self.ids = {}
        for name in names:
            tpl = templates[name]
            assert not tpl.get("credentials"), f"{name} needs credentials: test it as test_awx.py does"
            want = {k: v for k, v in tpl.items() if k not in ("credentials", "survey_spec")}
            jt = self._ok(201, "POST", "/api/v2/job_templates/",
                          dict(want, project=made["projects"]["id"], inventory=made["inventories"]["id"]))
            if tpl.get("survey_spec"):
                self._ok(200, "POST", f"/api/v2/job_templates/{jt['id']}/survey_spec/", tpl["survey_spec"])
            self.ids[name] = jt["id"]

    def api(self, method, path, body=None):
        return self.double.handle(method, path, "Bearer " + self.token, json.dumps(body).encode() if body else b"")

    def _ok(self, want, method, path, body=None):
        status, out = self.api(method, path, body)
        assert status == want, (method, path, status, out)
        return out

    def launch(self, name, answers):
        """Launch template NAME with survey ANSWERS; returns (the finished job, the messages of failed events)."""
        launched = self._ok(201, "POST", f"/api/v2/job_templates/{self.ids[name]}/launch/", {"extra_vars": answers})
        assert not launched["ignored_fields"], launched
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            job = self._ok(200, "GET", f"/api/v2/jobs/{launched['job']}/")
            if job["status"] in DONE:
                fails = [(e["event_data"].get("res") or {}).get("msg") for e in self.double.events[job["id"]]
                         if e["failed"]]
                return job, fails
            time.sleep(0.3)
        raise AssertionError(f"{name} did not finish in {self.timeout} s")

    def close(self):
        self.double.stop()
