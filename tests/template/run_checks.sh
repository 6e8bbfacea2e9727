#!/usr/bin/env bash
# Template checks for CI and for developers: cfn-lint (template.yaml and member.yaml), `sam
# validate --lint`, and the template tests (both templates against the Rust sources; the
# template expanded and its conditions evaluated with VpnConnectionIds empty). Installs
# its Python tools into a venv outside the clone the first time (about 30 s from PyPI), then
# reuses it.
#
#   bash tests/template/run_checks.sh
#
# Environment: INCIDENT_PIPELINE_VENV (default $HOME/.cache/incident-pipeline/venv).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${INCIDENT_PIPELINE_VENV:-$HOME/.cache/incident-pipeline/venv}"

need_install() {
    [[ -x "$venv/bin/cfn-lint" && -x "$venv/bin/sam" && -x "$venv/bin/pytest" ]] || return 0
    # cfn-lint older than 1.58 misses the scalar ChatbotSns error the article made.
    "$venv/bin/python" - <<'EOF' || return 0
import sys
from importlib.metadata import version
def v(pkg):
    return tuple(int(x) for x in version(pkg).split(".")[:2])
sys.exit(0 if v("cfn-lint") >= (1, 58) and v("aws-sam-cli") >= (1, 170) else 1)
EOF
    return 1
}

if need_install; then
    echo "== installing cfn-lint, aws-sam-cli and pytest into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "cfn-lint>=1.58" "aws-sam-cli>=1.170" "pytest>=8"
fi

export SAM_CLI_TELEMETRY=0
export PYTHONDONTWRITEBYTECODE=1
# sam validate needs a Region but no credentials.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
cd "$repo"

echo "== cfn-lint $("$venv/bin/cfn-lint" --version | awk '{print $2}')"
"$venv/bin/cfn-lint" template.yaml member.yaml

echo "== sam validate --lint ($("$venv/bin/sam" --version))"
"$venv/bin/sam" validate --lint --language-extensions --template-file template.yaml

echo "== wiring test"
"$venv/bin/pytest" -p no:cacheprovider -q -rs tests/template
