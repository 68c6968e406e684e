# Sourced by scripts/*: make sure .venv exists and holds the project as pyproject.toml says.
# Reinstalls only when pyproject.toml changed since the last install (or the venv is new).
ensure_venv() {
    local extra="${1:-}"
    local python="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv with $($python --version)" >&2
        "$python" -m venv .venv
    fi
    local stamp=".venv/.installed${extra:+-$extra}"
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "installing meetingtasks${extra:+[$extra]} into .venv" >&2
        # llama-cpp-python (the model extra) compiles llama.cpp. A native build for a CPU
        # that reports AVX-512 and AMX crashed at the first token; AVX2/FMA/F16C ran.
        CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF}" \
        .venv/bin/python -m pip install --quiet --disable-pip-version-check \
            -e ".${extra:+[$extra]}" 2> >(grep -v "^WARNING: Location" >&2)
        echo "$want" > "$stamp"
    fi
}
