#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: local_postgres
short_description: A throwaway PostgreSQL cluster for the embedded default platform
version_added: 0.1.0
description:
  - Creates, starts, stops or removes the PostgreSQL cluster of one local platform instance (C(berqenas local)).
  - The server runs as the C(postgres) system user when the module runs as root (PostgreSQL refuses root), else as
    the calling user. It listens on 127.0.0.1 (scram-sha-256) on a free port and on a unix socket in a 0700
    directory owned by the server user, where the superuser connects without a password.
  - When run as root the cluster lives under O(base_dir) (default C(/var/lib/berqenas/local/<hash of home>)), so it
    works even when O(home) is under a 0700 directory the server user cannot reach. Where it put things is
    recorded in C(<home>/local.json) (0600), which O(state=absent) reads to remove everything.
options:
  home:
    description:
      - The instance directory (C($BERQENAS_HOME)).
    type: path
    required: true
  state:
    description:
      - V(started) initialises (once) and starts; V(stopped) stops; V(absent) stops and removes the cluster's files.
    type: str
    choices: [started, stopped, absent]
    default: started
  base_dir:
    description:
      - Where the cluster's data, socket and log go. Default depends on the user, see the description.
    type: path
  port:
    description:
      - TCP port on 127.0.0.1; a free one is picked when omitted (and kept across restarts when still free).
    type: int
  netns:
    description:
      - Start the server inside this network namespace (the local network host, M(berqenas.platform.local_network)),
        listening on every address there; the socket directory stays on the host's filesystem.
    type: str
  report:
    description:
      - Report the cluster (RV(initialized), RV(running), where it is) instead of bringing it to O(state).
        Nothing changes, in check mode or not, and C(changed) is V(false) (what C(berqenas local status) asks).
    type: bool
    default: false
extends_documentation_fragment:
  - berqenas.platform.postgres.attributes
notes:
  - Check mode reports what would change without touching anything; diff shows the running state.
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: Bring up the local platform's PostgreSQL
  berqenas.platform.local_postgres:
    home: /srv/berqenas
  register: local_pg

- name: Remove it with everything it created
  berqenas.platform.local_postgres:
    home: /srv/berqenas
    state: absent
"""

RETURN = r"""
socket_dir:
  description: Unix socket directory (connect with host set to it).
  returned: when the cluster exists
  type: str
port:
  description: TCP and socket port.
  returned: when the cluster exists
  type: int
superuser:
  description: The superuser, reachable over the socket without a password.
  returned: when the cluster exists
  type: str
data_dir:
  description: The data directory.
  returned: when the cluster exists
  type: str
bindir:
  description: The PostgreSQL server binaries' directory.
  returned: when the cluster exists
  type: str
run_user:
  description: The user the server runs as.
  returned: when the cluster exists
  type: str
base_dir:
  description: Directory holding everything of the cluster.
  returned: when the cluster exists
  type: str
running:
  description: Whether the server runs after the task (with O(report), whether it runs).
  returned: always
  type: bool
initialized:
  description: Whether the cluster's data directory is initialised.
  returned: with O(report=true)
  type: bool
"""

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.berqenas.platform.plugins.module_utils.pgcluster import (
    Cluster, ClusterError, free_port, port_free)


def default_base(home):
    if os.geteuid() == 0:
        digest = hashlib.sha256(home.encode()).hexdigest()[:12]
        return os.path.join("/var/lib/berqenas/local", digest)
    return os.path.join(home, "pg")


def _where(cluster):
    return dict(socket_dir=cluster.socket_dir, port=int(cluster.port) if cluster.port else None,
                superuser=cluster.superuser, data_dir=cluster.data_dir, base_dir=cluster.base_dir,
                bindir=cluster.bindir, run_user=cluster.user.pw_name)


def main():
    module = AnsibleModule(argument_spec=dict(
        home=dict(type="path", required=True),
        state=dict(type="str", default="started", choices=["started", "stopped", "absent"]),
        base_dir=dict(type="path"),
        port=dict(type="int"),
        report=dict(type="bool", default=False),
        netns=dict(type="str"),
    ), supports_check_mode=True)
    p = module.params
    home = os.path.abspath(p["home"])
    state_file = os.path.join(home, "local.json")
    if p["port"] is not None and not 1024 <= p["port"] <= 65535:
        module.fail_json(msg="start local PostgreSQL: port %s out of range 1024-65535" % p["port"])
    try:
        if os.path.exists(state_file):
            cluster = Cluster.load(state_file)
        else:
            cluster = Cluster(p["base_dir"] or default_base(home), port=p["port"])
        before = {"initialized": cluster.initialized, "running": cluster.running()}
        if p["report"]:
            module.exit_json(changed=False, initialized=before["initialized"], running=before["running"],
                             **_where(cluster))
        changed = False
        if p["state"] == "started":
            changed = not (before["initialized"] and before["running"])
            if changed and not module.check_mode:
                if not os.path.isdir(home):
                    os.makedirs(home, mode=0o700)
                if os.geteuid() == 0:
                    for d in ("/var/lib/berqenas", "/var/lib/berqenas/local"):
                        os.makedirs(d, mode=0o755, exist_ok=True)  # another instance may make them meanwhile
                if cluster.port and p["port"] is None and not port_free(cluster.port):
                    cluster.port = free_port()  # its last port went to another process (another instance's, say)
                cluster.init()
                cluster.start(netns=p["netns"])
                cluster.wait_ready()
                cluster.save(state_file)
        elif p["state"] == "stopped":
            changed = before["running"]
            if changed and not module.check_mode:
                cluster.stop()
        else:
            changed = before["initialized"] or os.path.exists(cluster.base_dir) or os.path.exists(state_file)
            if changed and not module.check_mode:
                cluster.purge()
                if os.path.exists(state_file):
                    os.unlink(state_file)
                parent = os.path.dirname(cluster.base_dir)
                if parent == "/var/lib/berqenas/local":  # the directories this module made, when now empty
                    for d in (parent, os.path.dirname(parent)):
                        try:
                            os.rmdir(d)
                        except OSError:
                            break  # not empty (another instance's cluster), or gone

        running = cluster.running() if not module.check_mode else (p["state"] == "started")
    except ClusterError as exc:
        module.fail_json(msg=str(exc))
    result = dict(changed=changed, running=running)
    if p["state"] != "absent":
        result.update(_where(cluster))
    if module._diff:
        result["diff"] = dict(before="running: %s\n" % before["running"], after="running: %s\n" % running)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
