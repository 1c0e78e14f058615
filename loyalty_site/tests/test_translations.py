import re
from pathlib import Path

import polib
import pytest
from django.conf import settings

LOCALES = ["zh_Hans", "zh_Hant", "ko"]


@pytest.mark.parametrize("locale", LOCALES)
def test_every_string_is_translated_and_compiled(locale):
    folder = Path(settings.LOCALE_PATHS[0]) / locale / "LC_MESSAGES"
    po = polib.pofile(str(folder / "django.po"))
    assert [e.msgid for e in po.untranslated_entries()] == []
    assert [e.msgid for e in po.fuzzy_entries()] == []
    mo = {(e.msgctxt, e.msgid): (e.msgstr, e.msgstr_plural) for e in polib.mofile(str(folder / "django.mo"))}
    stale = [e.msgid for e in po.translated_entries() if mo.get((e.msgctxt, e.msgid)) != (e.msgstr, e.msgstr_plural)]
    assert stale == [], "run `make messages` to compile the catalogue"


@pytest.mark.parametrize("locale", LOCALES)
def test_translations_keep_their_placeholders(locale):
    po = polib.pofile(str(Path(settings.LOCALE_PATHS[0]) / locale / "LC_MESSAGES" / "django.po"))
    placeholder = re.compile(r"%\(\w+\)s|%s")
    for entry in po.translated_entries():
        wanted = set(placeholder.findall(entry.msgid_plural or entry.msgid))
        for text in [entry.msgstr, *entry.msgstr_plural.values()]:
            if text:
                assert set(placeholder.findall(text)) == wanted, entry.msgid
