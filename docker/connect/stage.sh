# shellcheck shell=bash
# Sourced by scripts/docker.sh: connect_stage DIR fills the build context of
# docker/connect/ with what `scripts/debezium.sh fetch` (DEBEZIUM's) leaves
# in .stack/debezium/: the pinned wheel's jars (debezium/jars.txt) and the
# compiled launcher. docker build's cache keys on content, so an unchanged
# jar set keeps its layer.
connect_stage() {
    local dir=$1 dbz="$ROOT/.stack/debezium"
    "$ROOT/scripts/debezium.sh" fetch >&2 || return 1
    [[ -d $dbz/libs && -n "$(ls "$dbz"/classes/*.class 2>/dev/null)" ]] || return 1
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$ROOT/docker/connect/Dockerfile" "$ROOT/docker/connect/connect-rest.py" \
        "$ROOT/debezium/launcher/log4j2.properties" "$dir/"
    cp -r "$dbz/libs" "$dbz/classes" "$dir/"
    rm -f "$dir/libs/.complete" "$dir/classes/.source"
}
