# Sourced by scripts/test: the Node packages the tests use (tests/js/package.json:
# celery-node, a Celery client of another language, and axe-core, the pages' accessibility
# checker), installed from the npm registry
# when missing or when the lock file changed since the last install.
ensure_node_packages() {
    local dir=tests/js
    local stamp="$dir/node_modules/.installed"
    local want
    want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "installing the tests' Node packages (npm ci in $dir)" >&2
        npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >&2
        echo "$want" > "$stamp"
    fi
}
