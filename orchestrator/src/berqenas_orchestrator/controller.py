"""Runs a playbook as the matching job template on an AWX / Automation Controller instead of locally.

The same contract as ``runner.run_playbook`` (a ``RunResult``; progress lines from the job's events; the
playbook's ``set_stats`` answer from the job's ``artifacts``), selected by ``berqenas --controller URL
--controller-token-file FILE``. The job template is the one whose ``playbook`` is that playbook in
extensions/awx/job_templates.yml (the objects configure_controller.yml creates). Only survey variables are
sent (AWX drops the rest and says so in ``ignored_fields``). The token is read from a 0600 file and sent as
``Authorization: Bearer``; it never reaches argv, the environment or a log.

AWX API v2 fields relied on: ``GET /api/v2/job_templates/?name=`` (``count``, ``results[].id``,
``results[].related``); ``POST /api/v2/job_templates/N/launch/`` with ``extra_vars``, ``job_type``
(``check``), ``diff_mode``, ``limit`` -> 201 ``job``, ``ignored_fields``, or 400 ``variables_needed_to_start``;
``GET /api/v2/jobs/N/`` ``status`` (pending, waiting, running, successful, failed, error, canceled), ``failed``,
``artifacts``, ``job_explanation``; ``GET /api/v2/jobs/N/job_events/?counter__gt=K&order_by=counter``
``results[].counter``, ``event``, ``event_data`` (host, task, play, res); ``POST /api/v2/jobs/N/cancel/``;
``GET /api/v2/schedules/?name=`` ``results[].enabled``, ``next_run`` (``sync status``).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from . import paths, runner

TEMPLATES_FILE = "extensions/awx/job_templates.yml"
DONE = ("successful", "failed", "error", "canceled")


class ControllerError(Exception):
    """The controller could not be used (unreachable, refused, no template): exit code 1."""


def read_token(path: str | Path) -> str:
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ControllerError(f"controller token file {p}: {exc.strerror}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ControllerError(f"controller token file {p}: mode {stat.S_IMODE(st.st_mode):04o}, must be 0600")
    token = p.read_text(encoding="utf-8").strip()
    if not token or any(c.isspace() for c in token):
        raise ControllerError(f"controller token file {p}: must hold one token on one line")
    return token


def job_templates() -> list[dict]:
    with open(paths.collection_root() / TEMPLATES_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)["berqenas_awx_job_templates"]


def template_for(playbook: str) -> dict:
    want = f"playbooks/{Path(playbook).name}"
    for jt in job_templates():
        if jt["playbook"] == want:
            return jt
    raise ControllerError(f"no AWX job template runs {want} (extensions/awx/job_templates.yml): run it locally")


class Controller:
    def __init__(self, url: str, token: str, timeout: float = 30.0, poll: float = 0.5):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ControllerError(f"controller URL {url!r}: expected http(s)://host[:port]")
        self.base = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.poll = poll

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self._token}",
                                              "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - http(s) checked above
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw) if raw else {}
            except ValueError:
                return exc.code, {"detail": raw.decode("utf-8", "replace")[:200]}
        except (urllib.error.URLError, OSError) as exc:
            raise ControllerError(f"controller {self.base}: {getattr(exc, 'reason', exc)}") from None

    def _ok(self, status: int, body: dict, what: str) -> dict:
        if status == 401:
            raise ControllerError(f"controller {self.base}: {what}: unauthorized (check the token)")
        if status >= 400:
            detail = body.get("variables_needed_to_start") or body.get("detail") or body
            raise ControllerError(f"controller {self.base}: {what}: HTTP {status}: {detail}")
        return body

    def find_template(self, name: str) -> dict:
        body = self._ok(*self.request("GET", "/api/v2/job_templates/?" + urllib.parse.urlencode({"name": name})),
                        f"job template {name!r}")
        if body.get("count") != 1:
            raise ControllerError(f"controller {self.base}: no job template named {name!r} "
                                  "(run extensions/awx/configure_controller.yml)")
        return body["results"][0]


def run_job_template(controller: Controller, playbook: str, *, extravars: dict | None = None, check: bool = False,
                     diff: bool = False, limit: str | None = None, timeout: int | None = None,
                     progress: Callable[[str], None] | None = None) -> runner.RunResult:
    """Launch the job template of ``playbook``, follow its events, return its outcome as a RunResult."""
    jt = template_for(playbook)
    survey = {q["variable"]: q for q in (jt.get("survey_spec") or {}).get("spec", [])}
    # an empty list is "none given": left to the survey's default (an empty answer would reach the playbook as
    # null, which its argument spec refuses for a list)
    extra = {k: _answer(survey[k], v) for k, v in (extravars or {}).items()
             if k in survey and not (isinstance(v, list | tuple) and not v)}
    remote = controller.find_template(jt["name"])
    launch: dict = {"extra_vars": extra}
    if check:
        if not jt.get("ask_job_type_on_launch"):
            raise ControllerError(f"job template {jt['name']!r} does not run in check mode")
        launch["job_type"] = "check"
    if diff:
        launch["diff_mode"] = True
    if limit:
        launch["limit"] = limit
    launched = controller._ok(*controller.request("POST", f"/api/v2/job_templates/{remote['id']}/launch/",
                                                  launch), f"launch {jt['name']!r}")
    job_id = launched["job"]
    if progress:
        progress(f"AWX job {job_id} ({jt['name']}) launched on {controller.base}")
    result = runner.RunResult(status="unknown", rc=-1)
    cancelled = {"flag": False}
    previous = signal.signal(signal.SIGINT, lambda s, f: cancelled.update(flag=True))
    deadline = time.monotonic() + timeout if timeout else None
    counter = 0
    try:
        while True:
            page = controller._ok(*controller.request(
                "GET", f"/api/v2/jobs/{job_id}/job_events/?counter__gt={counter}&order_by=counter"), "job events")
            for ev in page.get("results", []):
                counter = max(counter, ev["counter"])
                runner.record_event(result, ev, diff)
                line = runner.progress_line(ev)
                if progress and line:
                    progress(line)
            job = controller._ok(*controller.request("GET", f"/api/v2/jobs/{job_id}/"), "job status")
            if job["status"] in DONE:
                if not page.get("results"):  # events of the last moments before it ended
                    break
                continue
            if cancelled["flag"] or (deadline and time.monotonic() > deadline):
                controller.request("POST", f"/api/v2/jobs/{job_id}/cancel/", {})
                result.status = "canceled" if cancelled["flag"] else "timeout"
                result.rc = 1
                return result
            time.sleep(controller.poll)
    finally:
        signal.signal(signal.SIGINT, previous)
    result.data = dict(job.get("artifacts") or result.data)
    result.status = {"successful": "successful", "canceled": "canceled"}.get(job["status"], "failed")
    result.rc = 0 if job["status"] == "successful" else 1
    if job["status"] != "successful" and not result.failures:
        result.failures.append(f"AWX job {job_id} {job['status']}: {job.get('job_explanation') or 'see the job'}")
    return result


def _answer(question: dict, value):
    """A value as the survey question takes it: AWX compares multiple-choice answers with the choice strings."""
    if question.get("type") == "multiplechoice" and isinstance(value, bool):
        return "true" if value else "false"
    if question.get("type") in ("text", "textarea") and isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value


def schedule_next_run(controller: Controller, name: str) -> str | None:
    """``next_run`` of the enabled schedule NAME (configure_controller.yml names the sync schedules
    ``berqenas sync REMOTEDB``), None when there is none. Fields: ``GET /api/v2/schedules/?name=`` ``results[]``
    ``enabled``, ``next_run`` (ISO 8601, null when the rule has no future occurrence)."""
    body = controller._ok(*controller.request("GET", "/api/v2/schedules/?" + urllib.parse.urlencode({"name": name})),
                          f"schedule {name!r}")
    runs = [s.get("next_run") for s in body.get("results", []) if s.get("enabled", True) and s.get("next_run")]
    return min(runs) if runs else None


def from_options(url: str | None, token_file: str | None) -> Controller | None:
    if not url and not token_file:
        return None
    if not (url and token_file):
        raise ControllerError("--controller and --controller-token-file go together")
    return Controller(url, read_token(os.path.expanduser(token_file)))
