"""WTForms' own validation messages, listed here only so that extraction puts
them in our catalogs (union.forms hands WTForms' gettext/ngettext to
union.i18n, and WTForms ships no Kannada, Hindi or Telugu). Never imported.

Only messages our kinds of forms can show are listed; add one here if a form
starts using a WTForms field or validator whose default message is missing.
Prefer an explicit `message=_l(...)` in the form itself.
"""

# ruff: noqa


def _(message):
    return message


def ngettext(singular, plural, n):
    return singular


MESSAGES = (
    # DataRequired / InputRequired without a message
    _("This field is required."),
    # Regexp without a message
    _("Invalid input."),
    # Length without a message
    ngettext("Field must be at least %(min)d character long.",
             "Field must be at least %(min)d characters long.", 1),
    ngettext("Field cannot be longer than %(max)d character.",
             "Field cannot be longer than %(max)d characters.", 1),
    ngettext("Field must be exactly %(max)d character long.",
             "Field must be exactly %(max)d characters long.", 1),
    _("Field must be between %(min)d and %(max)d characters long."),
    # NumberRange without a message
    _("Number must be at least %(min)s."),
    _("Number must be at most %(max)s."),
    _("Number must be between %(min)s and %(max)s."),
    # AnyOf without a message
    _("Invalid value, must be one of: %(values)s."),
    # SelectField / RadioField
    _("Not a valid choice."),
    _("Invalid Choice: could not coerce."),
    # Date, time, number fields that cannot read what was typed
    _("Not a valid date value."),
    _("Not a valid time value."),
    _("Not a valid datetime value."),
    _("Not a valid integer value."),
    _("Not a valid decimal value."),
    _("Not a valid float value."),
)
