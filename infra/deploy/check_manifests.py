#!/usr/bin/env python3
"""The invariants of Shoal's rendered Kubernetes manifests that matter in production.

    python3 infra/deploy/check_manifests.py OVERLAY=RENDERED.yaml [...]
    python3 infra/deploy/check_manifests.py --self-test RENDERED-KIND.yaml

(`scripts/deploy-check.sh` renders every overlay with `kubectl kustomize` and runs this.) Each
failure names the overlay, the object and the rule; the exit status is 1 if any rule fails.

Rules:
  - every Deployment has a readiness probe on each container, and a liveness probe where the
    role listens on a port; a worker's liveness (if any) never depends on the database;
  - the worker's terminationGracePeriodSeconds exceeds its drain (SHOAL_GRACE_PERIOD_SECONDS)
    by at least DRAIN_MARGIN_SECONDS, so the kubelet never SIGKILLs a draining worker;
  - no container runs as root or can gain privileges; root filesystems are read-only; every
    container has CPU and memory requests and limits;
  - the KEDA trigger watches the queue the workers read (SHOAL_QUEUE), in their region, and
    targets one message per task slot; the HPA alternative likewise;
  - the worker Deployment leaves its replica count to the autoscaler;
  - every ConfigMap, Secret and ServiceAccount a pod refers to is rendered too (except the
    database Secret on AWS, which is created with kubectl), and on AWS each role that calls
    AWS has its IRSA role and the others none;
  - Services and PodDisruptionBudgets select pods that exist; probes use declared ports;
  - at the autoscaler's maximum, the database connections of every pod fit the server's
    max_connections (each pod: its pool plus 2 notifier connections, plus 1 for the
    orchestrator's leader lock).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

DRAIN_MARGIN_SECONDS = 10
ROLES = {"api": "serve", "orchestrator": "orchestrator", "projector": "projector", "worker": "worker"}
AWS_ROLES = {"shoal-api", "shoal-orchestrator", "shoal-worker"}
# Connections a process may hold outside its pool (docs/deploy.md).
EXTRA_CONNECTIONS = {"api": 2, "orchestrator": 3, "projector": 2, "worker": 2}
HERE = Path(__file__).resolve().parent


class Checker:
    def __init__(self, overlay: str, docs: list[dict]):
        self.overlay = overlay
        self.docs = [d for d in docs if d]
        self.failures: list[str] = []

    def fail(self, obj: str, rule: str) -> None:
        self.failures.append(f"{self.overlay}: {obj}: {rule}")

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") == kind]

    def named(self, kind: str, name: str) -> dict | None:
        for d in self.of_kind(kind):
            if d["metadata"]["name"] == name:
                return d
        return None

    def config(self) -> dict:
        maps = [m for m in self.of_kind("ConfigMap") if m["metadata"]["name"].startswith("shoal-config")]
        if len(maps) != 1:
            self.fail("ConfigMap shoal-config", f"expected one, found {len(maps)}")
            return {}
        return maps[0].get("data", {})

    def deployment(self, role: str) -> dict | None:
        d = self.named("Deployment", f"shoal-{role}")
        if d is None:
            self.fail(f"Deployment shoal-{role}", "missing")
        return d

    @staticmethod
    def env_of(container: dict, config: dict) -> dict:
        env = dict(config)
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
        return env

    def run(self) -> list[str]:
        config = self.config()
        workloads = self.of_kind("Deployment") + self.of_kind("StatefulSet") + self.of_kind("Job")
        for w in workloads:
            self.check_security(w)
        for role in ROLES:
            d = self.deployment(role)
            if d is not None:
                self.check_role(role, d)
        self.check_worker(config)
        self.check_autoscaling(config)
        self.check_references()
        self.check_selectors()
        self.check_connections(config)
        return self.failures

    def check_security(self, w: dict) -> None:
        name = f"{w['kind']} {w['metadata']['name']}"
        pod = w["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        if pod.get("automountServiceAccountToken") is not False:
            self.fail(name, "mounts a ServiceAccount token it does not need")
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            cname = f"{name} container {c['name']}"
            sc = c.get("securityContext", {})
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            if non_root is not True:
                self.fail(cname, "runAsNonRoot is not true")
            if uid is None or uid == 0:
                self.fail(cname, f"runs as uid {uid!r}, not a fixed non-root uid")
            if sc.get("allowPrivilegeEscalation") is not False:
                self.fail(cname, "allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                self.fail(cname, "is privileged")
            if sc.get("readOnlyRootFilesystem") is not True:
                self.fail(cname, "root filesystem is writable")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                self.fail(cname, "does not drop all capabilities")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        self.fail(cname, f"no {r} {kind[:-1]}")

    def check_role(self, role: str, d: dict) -> None:
        name = f"Deployment shoal-{role}"
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            args = c.get("args", [])
            if not args or args[0] != ROLES[role]:
                self.fail(name, f"runs {args!r}, expected `shoal {ROLES[role]} ...`")
            ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
            if "readinessProbe" not in c:
                self.fail(name, "no readiness probe")
            if c.get("ports") and "livenessProbe" not in c:
                self.fail(name, "listens on a port but has no liveness probe")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if not p:
                    continue
                action = p.get("httpGet") or p.get("tcpSocket")
                if action and action["port"] not in ports:
                    self.fail(name, f"{probe} uses port {action['port']!r}, which the container does not declare")
                if p.get("exec") and Path(p["exec"]["command"][0]).name != "shoal":
                    self.fail(name, f"{probe} runs {p['exec']['command'][0]}, which the image does not have")
            if role == "worker":
                live = c.get("livenessProbe")
                if live and "exec" in live:
                    self.fail(name, "a worker's liveness probe runs a command (it would restart busy workers when the database is slow)")

    def check_worker(self, config: dict) -> None:
        d = self.named("Deployment", "shoal-worker")
        if d is None:
            return
        pod = d["spec"]["template"]["spec"]
        env = self.env_of(pod["containers"][0], config)
        drain = int(env.get("SHOAL_GRACE_PERIOD_SECONDS", 30))
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace < drain + DRAIN_MARGIN_SECONDS:
            self.fail("Deployment shoal-worker",
                      f"terminationGracePeriodSeconds {grace} is not above the drain "
                      f"(SHOAL_GRACE_PERIOD_SECONDS {drain}) + {DRAIN_MARGIN_SECONDS}s")
        if "replicas" in d["spec"]:
            self.fail("Deployment shoal-worker", "sets replicas, which the autoscaler owns")

    def check_autoscaling(self, config: dict) -> None:
        scaled = self.of_kind("ScaledObject")
        hpas = self.of_kind("HorizontalPodAutoscaler")
        if len(scaled) + len(hpas) != 1:
            self.fail("autoscaling", f"expected one ScaledObject or HPA for the workers, found {len(scaled)} + {len(hpas)}")
        worker = self.named("Deployment", "shoal-worker")
        if worker is None:
            return
        concurrency = self.env_of(worker["spec"]["template"]["spec"]["containers"][0], config).get("SHOAL_CONCURRENCY", "16")
        for so in scaled:
            name = f"ScaledObject {so['metadata']['name']}"
            spec = so["spec"]
            if spec["scaleTargetRef"]["name"] != "shoal-worker":
                self.fail(name, "does not scale shoal-worker")
            if not 1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 0):
                self.fail(name, "needs 1 <= minReplicaCount <= maxReplicaCount (0 would stop in-flight tasks' workers)")
            sqs = [t for t in spec["triggers"] if t["type"] == "aws-sqs-queue"]
            if len(sqs) != 1:
                self.fail(name, "expected one aws-sqs-queue trigger")
                continue
            meta = sqs[0]["metadata"]
            if meta.get("queueURL") != config.get("SHOAL_QUEUE"):
                self.fail(name, f"watches {meta.get('queueURL')!r} but the workers read {config.get('SHOAL_QUEUE')!r}")
            if meta.get("awsRegion") != config.get("AWS_REGION"):
                self.fail(name, f"region {meta.get('awsRegion')!r} is not the workers' {config.get('AWS_REGION')!r}")
            if meta.get("queueLength") != concurrency:
                self.fail(name, f"targets {meta.get('queueLength')} messages per pod, the workers have {concurrency} slots")
            if meta.get("scaleOnInFlight") != "true":
                self.fail(name, "does not count in-flight messages (busy pods would be scaled away)")
            auth = sqs[0].get("authenticationRef", {}).get("name")
            if auth and self.named("TriggerAuthentication", auth) is None:
                self.fail(name, f"uses TriggerAuthentication {auth}, which is not rendered")
        for hpa in hpas:
            name = f"HorizontalPodAutoscaler {hpa['metadata']['name']}"
            spec = hpa["spec"]
            if spec["scaleTargetRef"]["name"] != "shoal-worker":
                self.fail(name, "does not scale shoal-worker")
            metrics = [m for m in spec["metrics"] if m["type"] == "External"]
            if not metrics or metrics[0]["external"]["metric"]["name"] != "shoal_queue_messages":
                self.fail(name, "does not scale on the external metric shoal_queue_messages")
            elif str(metrics[0]["external"]["target"].get("averageValue")) != concurrency:
                self.fail(name, f"targets {metrics[0]['external']['target']} per pod, the workers have {concurrency} slots")

    def check_references(self) -> None:
        aws = self.overlay.startswith("aws")
        names = {(d["kind"], d["metadata"]["name"]) for d in self.docs}
        for w in self.of_kind("Deployment") + self.of_kind("StatefulSet") + self.of_kind("Job"):
            name = f"{w['kind']} {w['metadata']['name']}"
            pod = w["spec"]["template"]["spec"]
            sa = pod.get("serviceAccountName")
            if sa and ("ServiceAccount", sa) not in names:
                self.fail(name, f"uses ServiceAccount {sa}, which is not rendered")
            for c in pod["containers"]:
                refs = [("ConfigMap", e["configMapRef"]["name"]) for e in c.get("envFrom", []) if "configMapRef" in e]
                refs += [("Secret", e["secretRef"]["name"]) for e in c.get("envFrom", []) if "secretRef" in e]
                for ref in refs:
                    if ref in names:
                        continue
                    if aws and ref == ("Secret", "shoal-secrets"):
                        continue  # created with kubectl from Secrets Manager (docs/deploy.md)
                    self.fail(name, f"refers to {ref[0]} {ref[1]}, which is not rendered")
        if aws:
            for sa in self.of_kind("ServiceAccount"):
                n = sa["metadata"]["name"]
                arn = sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
                if n in AWS_ROLES and not (arn or "").startswith("arn:aws"):
                    self.fail(f"ServiceAccount {n}", "has no IRSA role")
                if n not in AWS_ROLES and arn:
                    self.fail(f"ServiceAccount {n}", "has an IAM role but never calls AWS")

    def check_selectors(self) -> None:
        pods = [w["spec"]["template"] for w in self.of_kind("Deployment") + self.of_kind("StatefulSet")]

        def matches(selector: dict) -> list[dict]:
            return [p for p in pods if all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]

        for svc in self.of_kind("Service"):
            name = f"Service {svc['metadata']['name']}"
            selected = matches(svc["spec"].get("selector", {}))
            if not selected:
                self.fail(name, "selects no pods (a Service with no backend)")
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                for p in selected:
                    declared = {x.get("name") for c in p["spec"]["containers"] for x in c.get("ports", [])}
                    declared |= {x["containerPort"] for c in p["spec"]["containers"] for x in c.get("ports", [])}
                    if target not in declared:
                        self.fail(name, f"targets port {target!r}, which its pods do not declare")
        for pdb in self.of_kind("PodDisruptionBudget"):
            if not matches(pdb["spec"]["selector"]["matchLabels"]):
                self.fail(f"PodDisruptionBudget {pdb['metadata']['name']}", "selects no pods")

    def check_connections(self, config: dict) -> None:
        limit = self.max_connections()
        if limit is None:
            return
        total, parts = 0, []
        scaled = {so["spec"]["scaleTargetRef"]["name"]: so["spec"]["maxReplicaCount"] for so in self.of_kind("ScaledObject")}
        scaled |= {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"] for h in self.of_kind("HorizontalPodAutoscaler")}
        for role in ROLES:
            d = self.named("Deployment", f"shoal-{role}")
            if d is None:
                continue
            replicas = scaled.get(d["metadata"]["name"], d["spec"].get("replicas", 1))
            env = self.env_of(d["spec"]["template"]["spec"]["containers"][0], config)
            pool = int(env.get("SHOAL_DATABASE_MAX_CONNECTIONS", 10))
            # A readiness probe's own `shoal` process holds one more while it runs.
            probe = 1 if "exec" in d["spec"]["template"]["spec"]["containers"][0].get("readinessProbe", {}) else 0
            n = replicas * (pool + EXTRA_CONNECTIONS[role] + probe)
            parts.append(f"{role} {replicas} x ({pool} + {EXTRA_CONNECTIONS[role] + probe})")
            total += n
        total += 1  # the migration Job
        if total > limit:
            self.fail("database connections",
                      f"{total} at most ({', '.join(parts)}, migrate 1) exceed max_connections {limit}")

    def max_connections(self) -> int | None:
        if self.overlay.startswith("aws"):
            rds = (HERE / "terraform" / "rds.tf").read_text()
            m = re.search(r'name\s*=\s*"max_connections"\s*\n\s*value\s*=\s*"(\d+)"', rds)
            return int(m.group(1)) if m else None
        pg = self.named("StatefulSet", "postgres")
        if pg is None:
            return None
        args = " ".join(pg["spec"]["template"]["spec"]["containers"][0].get("args", []))
        m = re.search(r"max_connections=(\d+)", args)
        return int(m.group(1)) if m else 100


def self_test(path: str) -> list[str]:
    """Breaks a rendered overlay in the ways the rules are for; each must be caught."""
    import copy

    base = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]

    def find(docs: list[dict], kind: str, name: str) -> dict:
        return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)

    def pod(docs: list[dict], name: str) -> dict:
        return find(docs, "Deployment", name)["spec"]["template"]["spec"]

    breakages = {
        "grace period": lambda d: pod(d, "shoal-worker").update(terminationGracePeriodSeconds=30),
        "queueURL": lambda d: find(d, "ScaledObject", "shoal-worker")["spec"]["triggers"][0]["metadata"].update(queueURL="https://elsewhere"),
        "readiness probe": lambda d: pod(d, "shoal-api")["containers"][0].pop("readinessProbe"),
        "runAsNonRoot": lambda d: pod(d, "shoal-projector")["containers"][0]["securityContext"].update(runAsNonRoot=False),
        "uid 0": lambda d: (pod(d, "shoal-api")["securityContext"].update(runAsUser=0),
                            pod(d, "shoal-api")["containers"][0]["securityContext"].pop("runAsUser")),
        "max_connections": lambda d: find(d, "ScaledObject", "shoal-worker")["spec"].update(maxReplicaCount=200),
        "no backend": lambda d: find(d, "Service", "shoal-api")["spec"]["selector"].update(typo="x"),
        "messages per pod": lambda d: find(d, "ScaledObject", "shoal-worker")["spec"]["triggers"][0]["metadata"].update(queueLength="100"),
    }
    missed = []
    for rule, breaking in breakages.items():
        docs = copy.deepcopy(base)
        breaking(docs)
        if not Checker("self-test", docs).run():
            missed.append(rule)
    return missed


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "--self-test":
        missed = self_test(argv[1])
        for rule in missed:
            print(f"FAIL self-test: breaking the {rule} went unnoticed", file=sys.stderr)
        print(f"self-test: {'every breakage caught' if not missed else f'{len(missed)} missed'}")
        return 1 if missed else 0
    failures: list[str] = []
    for arg in argv:
        overlay, _, path = arg.partition("=")
        docs = list(yaml.safe_load_all(Path(path).read_text()))
        found = Checker(overlay, docs).run()
        print(f"{overlay}: {len(docs)} objects, {'ok' if not found else f'{len(found)} failure(s)'}")
        failures += found
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
