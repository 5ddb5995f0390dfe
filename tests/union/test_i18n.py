"""Interface languages (issue item 9).

* Every message in the source tree (Python and templates, extracted at test time
  with the same mapping as tools/i18n.sh, babel.cfg) has a Kannada translation.
* Translations keep the msgid's placeholders, in every language's catalog.
* The language comes from the user's saved preference, then the switcher's
  cookie, then Accept-Language; the switcher rejects unknown languages.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from sqlalchemy import select

from union import i18n
from union.models import User
from union.web import LANG_COOKIE

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "union" / "translations"
# The same keywords as tools/i18n.sh: Babel's defaults plus the lazy form used by WTForms labels.
KEYWORDS = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}
CATALOG_LANGUAGES = [code for code in i18n.LANGUAGES if code != "en"]
FIX = "run tools/i18n.sh update and translate them in"

# A printf-style conversion: %(name)s, %s, %d, %.2f, %% ...
PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]|%")

# Kannada the pages below must show (checked against the catalog too, so a
# reworded translation only needs changing here).
KN_JOIN = "ಸಂಘಕ್ಕೆ ಸೇರಿ"               # "Join the union"
KN_STAFF_LOGIN = "ಸಿಬ್ಬಂದಿ ಲಾಗಿನ್"     # "Staff login"
KN_FIND_MEMBER = "ಸದಸ್ಯೆಯನ್ನು ಹುಡುಕಿ"   # "Find a member"


# --- Catalogs -----------------------------------------------------------------

def source_messages() -> dict[tuple[str, str | None], list[str]]:
    """(msgid, context) -> where it is used, for every message marked in the source tree."""
    with (ROOT / "babel.cfg").open() as fh:
        method_map, options_map = parse_mapping_cfg(fh, "babel.cfg")
    found: dict[tuple[str, str | None], list[str]] = {}
    for filename, lineno, message, _comments, context in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=KEYWORDS):
        msgid = message[0] if isinstance(message, (tuple, list)) else message
        if msgid:
            found.setdefault((msgid, context), []).append(f"{filename}:{lineno}")
    return found


def load_catalog(lang: str):
    with (TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        return read_po(fh, locale=lang)


def strings(message) -> tuple[str, ...]:
    return message.string if isinstance(message.string, (tuple, list)) else (message.string,)


def is_translated(message) -> bool:
    return message is not None and not message.fuzzy and all(strings(message))


def placeholders(text: str) -> Counter:
    return Counter(PLACEHOLDER.findall(text))


def test_extraction_finds_the_pages_and_the_code():
    messages = source_messages()
    where = {loc.split(":")[0] for locs in messages.values() for loc in locs}
    assert any(w.startswith("templates/") for w in where), "no template messages extracted: check babel.cfg"
    assert "union/forms.py" in where, "the lazy _l() labels of union/forms.py were not extracted"
    assert ("Join the union", None) in messages


def test_every_message_has_a_kannada_translation():
    catalog = load_catalog("kn")
    missing = []
    for (msgid, context), locations in sorted(source_messages().items()):
        entry = catalog.get(msgid, context=context)
        if not is_translated(entry):
            state = "missing" if entry is None else ("fuzzy" if entry.fuzzy else "empty")
            missing.append(f"  [{state}] {msgid!r}  ({', '.join(sorted(set(locations))[:3])})")
    if missing:
        pytest.fail(f"{len(missing)} message(s) have no Kannada translation; {FIX} "
                    f"union/translations/kn/LC_MESSAGES/messages.po (remove the 'fuzzy' flag once checked):\n"
                    + "\n".join(missing), pytrace=False)


@pytest.mark.parametrize("lang", CATALOG_LANGUAGES)
def test_translations_keep_the_placeholders(lang):
    """%(name)s in the msgid must be in the translation, and nothing else: a lost or
    misspelt placeholder raises at render time or drops the value silently."""
    catalog = load_catalog(lang)
    bad = []
    for message in catalog:
        if not message.id or not is_translated(message):
            continue  # untranslated and fuzzy entries fall back to English
        if isinstance(message.id, (tuple, list)):
            allowed = [placeholders(message.id[0]), placeholders(message.id[1])]
            for form in strings(message):
                # A singular form may drop the count ("one character"), never add a name.
                if placeholders(form) not in allowed and not set(placeholders(form)) <= set(allowed[1]):
                    bad.append(f"  {message.id[1]!r} -> {form!r}")
        else:
            if placeholders(message.string) != placeholders(message.id):
                bad.append(f"  {message.id!r} -> {message.string!r}")
    if bad:
        pytest.fail(f"placeholders differ between msgid and translation in "
                    f"union/translations/{lang}/LC_MESSAGES/messages.po; keep every %(name)s exactly:\n"
                    + "\n".join(bad), pytrace=False)


@pytest.mark.parametrize("lang", CATALOG_LANGUAGES)
def test_catalog_is_valid(lang):
    catalog = load_catalog(lang)
    # Fuzzy entries are not used at run time (they fall back to English), so only real ones count.
    problems = [f"  {message.id!r}: {'; '.join(map(str, errors))}" for message, errors in catalog.check()
                if not message.fuzzy]
    assert not problems, f"union/translations/{lang}/LC_MESSAGES/messages.po:\n" + "\n".join(problems)
    # And union.i18n can compile it as it does at start-up.
    assert i18n.load_catalogs()[lang] is not None


def test_the_catalog_strings_the_page_tests_expect():
    kn = load_catalog("kn")
    assert kn.get("Join the union").string == KN_JOIN
    assert kn.get("Staff login").string == KN_STAFF_LOGIN
    assert kn.get("Find a member").string == KN_FIND_MEMBER


def test_negotiation_of_accept_language():
    assert i18n.negotiate("kn-IN,kn;q=0.9,en;q=0.5") == "kn"
    assert i18n.negotiate("ta") == "ta"
    assert i18n.negotiate("fr-FR,fr;q=0.9") == "en"
    assert i18n.negotiate(None) == "en"
    assert i18n.choose_language(user_language="te", cookie="kn", accept_language="hi") == "te"
    assert i18n.choose_language(user_language=None, cookie="kn", accept_language="hi") == "kn"
    assert i18n.choose_language(user_language="xx", cookie="yy", accept_language="hi") == "hi"


# --- Choosing the language through the app ------------------------------------

def html_lang(text: str) -> str | None:
    found = re.search(r'<html lang="([^"]+)"', text)
    return found.group(1) if found else None


async def test_accept_language_kannada_gives_a_kannada_page(web):
    r = await web.get("/", headers={"Accept-Language": "kn-IN,kn;q=0.9,en;q=0.5"})
    assert r.status_code == 200
    assert html_lang(r.text) == "kn"
    assert KN_JOIN in r.text
    assert "Join the union" not in r.text
    # The switcher is visible, offering every language in its own name.
    assert 'action="/language"' in r.text
    for code, name in i18n.LANGUAGES.items():
        assert f'value="{code}"' in r.text and name in r.text


async def test_without_a_preference_the_page_is_in_english(web):
    r = await web.get("/", headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    assert html_lang(r.text) == "en"
    assert "Join the union" in r.text


async def test_switcher_sets_a_cookie_and_the_next_page_is_kannada(web):
    r = await web.get("/login", headers={"Accept-Language": "en"})
    assert html_lang(r.text) == "en"
    r = await web.post("/language", {"lang": "kn", "next": "/login"}, headers={"Accept-Language": "en"})
    assert r.status_code == 303
    assert r.headers["location"] == "/login"
    assert f"{LANG_COOKIE}=kn" in r.headers.get("set-cookie", "")
    # The cookie beats the browser's Accept-Language from now on.
    r = await web.get("/login", headers={"Accept-Language": "en"})
    assert html_lang(r.text) == "kn"
    assert KN_STAFF_LOGIN in r.text
    assert "Staff login" not in r.text


async def test_switcher_rejects_an_unknown_language(web):
    await web.get("/", headers={"Accept-Language": "en"})
    r = await web.post("/language", {"lang": "xx", "next": "/login"}, headers={"Accept-Language": "en"})
    assert r.status_code == 422
    assert "Unknown language." in r.text
    assert LANG_COOKIE not in r.headers.get("set-cookie", "")
    assert LANG_COOKIE not in web.client.cookies
    r = await web.get("/login", headers={"Accept-Language": "en"})
    assert html_lang(r.text) == "en"


async def test_switcher_needs_the_csrf_token(web):
    await web.get("/")
    r = await web.post("/language", {"lang": "kn", "csrf_token": "forged"})
    assert r.status_code == 403
    assert LANG_COOKIE not in web.client.cookies


async def test_saved_preference_beats_accept_language_and_cookie(web, make_user, services):
    user = await make_user("col1", ["collector"], "BLR")
    async with services.sessions() as db:
        saved = await db.get(User, user.id)
        saved.language = "kn"
        await db.commit()
    web.client.cookies.set(LANG_COOKIE, "ta")
    r = await web.login("col1", "correct horse battery")
    assert r.status_code == 303
    r = await web.get("/home/collector", headers={"Accept-Language": "hi,en;q=0.5"})
    assert r.status_code == 200
    assert html_lang(r.text) == "kn"
    assert KN_FIND_MEMBER in r.text
    assert "Find a member" not in r.text


async def test_switching_while_logged_in_saves_the_preference(web, make_web, make_user, services):
    user = await make_user("col2", ["collector"], "BLR")
    await web.login("col2", "correct horse battery")
    await web.get("/home/collector")
    r = await web.post("/language", {"lang": "kn", "next": "/home/collector"})
    assert r.status_code == 303
    async with services.sessions() as db:
        assert (await db.execute(select(User.language).where(User.id == user.id))).scalar_one() == "kn"
    # Another browser, no cookie, asking for English: the saved preference wins after login.
    other = await make_web()
    await other.login("col2", "correct horse battery")
    r = await other.get("/home/collector", headers={"Accept-Language": "en"})
    assert html_lang(r.text) == "kn"
    assert KN_FIND_MEMBER in r.text


async def test_unknown_language_leaves_the_saved_preference_alone(web, make_user, services):
    user = await make_user("col3", ["collector"], "BLR")
    async with services.sessions() as db:
        saved = await db.get(User, user.id)
        saved.language = "te"
        await db.commit()
    await web.login("col3", "correct horse battery")
    await web.get("/home/collector")
    r = await web.post("/language", {"lang": "xx"})
    assert r.status_code == 422
    async with services.sessions() as db:
        assert (await db.execute(select(User.language).where(User.id == user.id))).scalar_one() == "te"
