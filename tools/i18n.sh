#!/bin/sh
# Refresh the Babel catalogs in one command.
#
#   tools/i18n.sh extract   # source tree -> union/translations/messages.pot
#   tools/i18n.sh update    # extract, then merge the .pot into every language's
#                           # messages.po (existing translations are kept; changed
#                           # strings become "fuzzy" and must be reviewed)
#   tools/i18n.sh check     # exit 1 if a catalog is out of date with the source
#   tools/i18n.sh stats     # translated / total per language
#
# After `update`, translate the new empty msgstr "" entries (and review and
# un-fuzzy any "#, fuzzy" ones) in union/translations/<lang>/LC_MESSAGES/messages.po.
# Kannada must stay complete: tests/union/test_i18n.py fails on any missing
# Kannada translation. No .mo files: union.i18n compiles the .po files at start-up.
#
# The mapping is babel.cfg; `_l` is `lazy_gettext` (union/forms.py).
set -eu

cd "$(dirname "$0")/.."

PYBABEL=${PYBABEL:-.venv/bin/pybabel}
PYTHON=${PYTHON:-.venv/bin/python}
LANGS="kn hi ta te"
DIR=union/translations
POT=$DIR/messages.pot

extract() {
    "$PYBABEL" -q extract -F babel.cfg -o "$POT" \
        -k _l -k lazy_gettext \
        --add-location=file --sort-by-file \
        --project=union-platform --copyright-holder="the union" \
        .
}

update() {
    extract
    for lang in $LANGS; do
        "$PYBABEL" -q update -i "$POT" -d "$DIR" -l "$lang" --init-missing --previous \
            --ignore-pot-creation-date
    done
}

check() {
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    POT=$tmp extract >/dev/null 2>&1
    status=0
    for lang in $LANGS; do
        "$PYBABEL" update -i "$tmp" -d "$DIR" -l "$lang" --check --ignore-pot-creation-date \
            >/dev/null 2>&1 || { echo "$lang: out of date, run tools/i18n.sh update and translate"; status=1; }
    done
    return $status
}

stats() {
    "$PYTHON" - "$DIR" $LANGS <<'PY'
import sys
from pathlib import Path
from babel.messages.pofile import read_po

base = Path(sys.argv[1])
for lang in sys.argv[2:]:
    with (base / lang / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        cat = read_po(fh, locale=lang)
    msgs = [m for m in cat if m.id]
    done = [m for m in msgs if not m.fuzzy and all(m.string if isinstance(m.string, tuple) else (m.string,))]
    fuzzy = [m for m in msgs if m.fuzzy]
    print(f"{lang}: {len(done)}/{len(msgs)} translated, {len(fuzzy)} fuzzy")
PY
}

case "${1:-}" in
    extract) extract ;;
    update) update ;;
    check) check ;;
    stats) stats ;;
    *) echo "usage: $0 extract|update|check|stats" >&2; exit 2 ;;
esac
