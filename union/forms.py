"""HTML forms (WTForms). Labels and messages are lazy so they render in the
request's language; CSRF is checked by the policy guard for every form."""

from __future__ import annotations

from wtforms import DateField, Form, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, Regexp

from union.i18n import SPOKEN_LANGUAGE_NAMES as LANGUAGE_NAMES
from union.i18n import SPOKEN_LANGUAGES, WTFormsTranslations, lazy_gettext as _l


class BaseForm(Form):
    class Meta:
        def get_translations(self, form):
            return WTFormsTranslations()


class LoginForm(BaseForm):
    username = StringField(_l("Username"), [DataRequired(_l("Please fill in this field.")), Length(max=64)])
    password = PasswordField(_l("Password"), [DataRequired(_l("Please fill in this field.")), Length(max=200)])


class MemberLoginForm(BaseForm):
    member_no = StringField(_l("Member number"), [DataRequired(_l("Please fill in this field.")), Length(max=24)])
    pin = PasswordField(_l("PIN"), [DataRequired(_l("Please fill in this field.")), Length(max=8)])


class _MemberFields(BaseForm):
    working_name = StringField(_l("Working name"), [DataRequired(_l("Please fill in this field.")),
                                                    Length(max=80, message=_l("Too long."))])
    branch = SelectField(_l("Branch"), [DataRequired(_l("Please choose a branch."))], choices=[])
    language = SelectField(_l("Preferred language"), choices=[SelectChoice(c, LANGUAGE_NAMES[c]) for c in SPOKEN_LANGUAGES])
    phone = StringField(_l("Phone (optional)"), [Optional(), Length(max=20, message=_l("Too long."))])
    pin = PasswordField(_l("PIN for logging in, 4 to 8 digits (optional)"),
                        [Optional(), Regexp(r"^\d{4,8}$", message=_l("A PIN is 4 to 8 digits."))])


class JoinForm(_MemberFields):
    pass


class EnrolForm(_MemberFields):
    legal_name = StringField(_l("Legal name (optional, kept encrypted)"), [Optional(), Length(max=120)])
    date_of_birth = DateField(_l("Date of birth (optional)"), [Optional()], format="%Y-%m-%d")
    nominee = StringField(_l("Nominee (optional, kept encrypted)"), [Optional(), Length(max=120)])


class SearchForm(BaseForm):
    q = StringField(_l("Member number, phone or name"), [Length(max=80)])
