"""Languages: Babel catalogs (union/translations/<lang>/LC_MESSAGES/messages.po),
the current request's language, and gettext for code and templates.

Catalogs are compiled in memory at start-up from the .po files, so there is no
build step and no stale .mo file. The language comes from the user's saved
preference, then the `lang` cookie set by the visible switcher, then
`Accept-Language`, then the default.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import LazyProxy, NullTranslations, Translations

TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"

# Interface languages, in the order the switcher shows them, with their own names.
LANGUAGES: dict[str, str] = {
    "kn": "ಕನ್ನಡ",
    "en": "English",
    "hi": "हिन्दी",
    "ta": "தமிழ்",
    "te": "తెలుగు",
}
# Languages members and callers may speak (ISO 639-1); a wider set than the interface.
SPOKEN_LANGUAGES = ("kn", "te", "ta", "hi", "ur", "mr", "en")
SPOKEN_LANGUAGE_NAMES = {
    "kn": "ಕನ್ನಡ (Kannada)", "te": "తెలుగు (Telugu)", "ta": "தமிழ் (Tamil)", "hi": "हिन्दी (Hindi)",
    "ur": "اردو (Urdu)", "mr": "मराठी (Marathi)", "en": "English",
}

_catalogs: dict[str, NullTranslations] = {}
_current: contextvars.ContextVar[str] = contextvars.ContextVar("language", default="en")


def load_catalogs() -> dict[str, NullTranslations]:
    if _catalogs:
        return _catalogs
    for code in LANGUAGES:
        po = TRANSLATIONS_DIR / code / "LC_MESSAGES" / "messages.po"
        if code == "en" or not po.exists():
            _catalogs[code] = NullTranslations()
            continue
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=code)
        buf = io.BytesIO()
        write_mo(buf, catalog)
        buf.seek(0)
        _catalogs[code] = Translations(buf)
    return _catalogs


def set_language(code: str) -> contextvars.Token:
    return _current.set(code if code in LANGUAGES else "en")


@contextlib.contextmanager
def using(code: str):
    """Messages in this language inside the block (a member's SMS from a request or job in another one)."""
    token = set_language(code)
    try:
        yield
    finally:
        _current.reset(token)


def current_language() -> str:
    return _current.get()


def translations(code: str | None = None) -> NullTranslations:
    return load_catalogs().get(code or _current.get()) or NullTranslations()


def gettext(message: str, **params) -> str:
    text = translations().gettext(message)
    return text % params if params else text


def ngettext(singular: str, plural: str, n: int, **params) -> str:
    text = translations().ngettext(singular, plural, n)
    params.setdefault("num", n)
    return text % params


_ = gettext


def lazy_gettext(message: str, **params) -> LazyProxy:
    return LazyProxy(gettext, message, enable_cache=False, **params)


def negotiate(accept_language: str | None, default: str = "en") -> str:
    if not accept_language:
        return default
    wanted = []
    for part in accept_language.split(","):
        tag = part.split(";")[0].strip().replace("-", "_")
        if tag:
            wanted.append(tag)
    found = Locale.negotiate(wanted, list(LANGUAGES), sep="_")
    return str(found) if found else default


def choose_language(*, user_language: str | None, cookie: str | None, accept_language: str | None,
                    default: str = "en") -> str:
    for candidate in (user_language, cookie):
        if candidate in LANGUAGES:
            return candidate
    return negotiate(accept_language, default)


class WTFormsTranslations:
    """Hands WTForms' own messages to our catalogs."""

    def gettext(self, string):
        return gettext(string)

    def ngettext(self, singular, plural, n):
        # WTForms fills in %(min)d/%(max)d itself: hand back the translated text unformatted.
        return translations().ngettext(singular, plural, n)
