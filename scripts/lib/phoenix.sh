# Sourced by scripts/run --trace: Arize Phoenix, the trace viewer the local stack sends
# its OpenTelemetry spans to, in a virtualenv of its own (.venv-phoenix): it pins many
# packages of its own, and nothing of meetingtasks imports it. Installed from PyPI when
# missing or when the pinned version changes.
PHOENIX_REQUIREMENT="arize-phoenix>=12,<21"
ensure_phoenix() {
    local python="${PYTHON:-python3}"
    local stamp=".venv-phoenix/.installed"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$PHOENIX_REQUIREMENT" ]; then
        echo "installing Arize Phoenix into .venv-phoenix (a few minutes, once)" >&2
        [ -x .venv-phoenix/bin/python ] || "$python" -m venv .venv-phoenix
        .venv-phoenix/bin/python -m pip install --quiet --disable-pip-version-check \
            "$PHOENIX_REQUIREMENT" 2> >(grep -v "^WARNING: Location" >&2)
        echo "$PHOENIX_REQUIREMENT" > "$stamp"
    fi
}
