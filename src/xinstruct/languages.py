"""Language registry: code -> English name, script, resource level and corpus config names.

The ten languages of the X-Instruction paper are built in. Every other FLORES-200 language is known from the
bundled table ``data/languages.tsv`` (its FLORES code, ISO 639-1 code, English name and the config names
FineWeb-2 and CulturaX give it), so a recipe adds one by listing its code (``languages: [sw, am]``); a
language outside the table is added under ``extra_languages`` (see :func:`register`).
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

from .errors import UnknownLanguageError

TABLE = Path(__file__).parent / "data" / "languages.tsv"


@dataclass(frozen=True)
class Language:
    """One target language.

    Args:
        code (`str`): ISO 639-1 code used everywhere in the project (``"sw"``).
        name (`str`): English name, used verbatim in the prompts ("Answer in Swahili.").
        script (`str`): ISO 15924 script name (``"Latn"``, ``"Taml"``).
        resource (`str`): ``"medium"`` or ``"low"`` as in the paper; free text for added languages.
        flores (`str`): FLORES-200 / NLLB code (``"swh_Latn"``).
        fineweb2 (`str`, *optional*): FineWeb-2's config name (``"swh_Latn"``; ``"cmn_Hani"`` for Chinese);
            defaults to the table's entry for ``flores``, else ``flores``.
        culturax (`str`, *optional*): CulturaX's config name (``"sw"``); defaults to the table's entry for
            ``flores``, else ``code``.
    """

    code: str
    name: str
    script: str
    resource: str
    flores: str
    fineweb2: str = ""
    culturax: str = ""

    def __post_init__(self):
        row = table_row(self.flores)
        if not self.fineweb2:
            object.__setattr__(self, "fineweb2", row["fineweb2"] if row else self.flores)
        if not self.culturax:
            object.__setattr__(self, "culturax", row["culturax"] if row else self.code)

    def format_fields(self) -> dict[str, str]:
        """Fields usable in config templates such as ``"{fineweb2}"``, ``"{culturax}"``, ``"{flores}"`` or
        ``"{code}"``."""
        return {"code": self.code, "name": self.name, "script": self.script, "flores": self.flores,
                "fineweb2": self.fineweb2, "culturax": self.culturax}


@functools.cache
def _table() -> tuple[dict[str, str], ...]:
    lines = [line for line in TABLE.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    return tuple(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))


def table_row(key: str) -> dict[str, str] | None:
    """The bundled table's row for a project code (``"am"``) or a FLORES code (``"amh_Ethi"``), or None."""
    return next((row for row in _table() if key in (row["code"], row["flores"])), None)


def flores_codes() -> list[str]:
    """Every FLORES-200 code of the bundled table."""
    return [row["flores"] for row in _table()]


PAPER_LANGUAGES: tuple[Language, ...] = (
    Language("fi", "Finnish", "Latn", "medium", "fin_Latn"),
    Language("id", "Indonesian", "Latn", "medium", "ind_Latn"),
    Language("th", "Thai", "Thai", "medium", "tha_Thai"),
    Language("tr", "Turkish", "Latn", "medium", "tur_Latn"),
    Language("vi", "Vietnamese", "Latn", "medium", "vie_Latn"),
    Language("bn", "Bengali", "Beng", "low", "ben_Beng"),
    Language("hi", "Hindi", "Deva", "low", "hin_Deva"),
    Language("sw", "Swahili", "Latn", "low", "swh_Latn"),
    Language("ta", "Tamil", "Taml", "low", "tam_Taml"),
    Language("ur", "Urdu", "Arab", "low", "urd_Arab"),
)

_REGISTRY: dict[str, Language] = {lang.code: lang for lang in PAPER_LANGUAGES}


def get(code: str) -> Language:
    """Return the language for ``code``: a registered one, else the bundled FLORES-200 table's; otherwise raise
    an error that lists the known codes."""
    if code in _REGISTRY:
        return _REGISTRY[code]
    row = table_row(code)
    if row is not None and row["code"] == code:
        return _table_language(code)
    known = ", ".join(sorted(_REGISTRY))
    hint = f" (the FLORES code {code}; its project code is {row['code']})" if row else ""
    raise UnknownLanguageError(
        f"Unknown language code {code!r}{hint}. Known codes: {known}, and every FLORES-200 language by its ISO "
        "639-1 code (am, zh, ...) or else its ISO 639-3 code (ace, ...). Add another language in the recipe under "
        "extra_languages (name, script; optional: resource, flores)."
    )


def register(code: str, name: str | None = None, script: str | None = None, resource: str = "low",
             flores: str | None = None) -> Language:
    """Add (or replace) a language, e.g. from a recipe's ``extra_languages`` block. What is not given comes from
    the bundled table's row for ``flores`` or ``code``: the name, the script, the FLORES code and the FineWeb-2
    and CulturaX names."""
    lang = _language(code, name, script, resource, flores)
    _REGISTRY[code] = lang
    return lang


@functools.cache
def _table_language(code: str) -> Language:
    return _language(code, None, None, "low", None)


def _language(code: str, name: str | None, script: str | None, resource: str, flores: str | None) -> Language:
    row = table_row(flores) if flores else table_row(code)
    if row is None and (name is None or script is None):
        raise UnknownLanguageError(f"Language {code!r} is not in the FLORES-200 table: give its name and script.")
    if row is not None:
        row_script = row["flores"].split("_")[1]
        name, script = name or row["name"], script or row_script
        if flores is None:  # the table's code, in the asked script (a language written in another script)
            flores = row["flores"] if script == row_script else f"{row['flores'].split('_')[0]}_{script}"
    return Language(code, name, script, resource, flores or f"{code}_{script}")


def find(text: str) -> Language | None:
    """The language named by ``text``: a code or an English name (any case), registered or in the bundled table;
    ``None`` when nothing matches."""
    wanted = (text or "").strip().lower()
    for lang in _REGISTRY.values():
        if wanted in (lang.code, lang.name.lower()):
            return lang
    row = next((row for row in _table() if wanted in (row["code"], row["name"].lower())), None)
    return get(row["code"]) if row else None


def known_codes() -> list[str]:
    """All registered codes, sorted."""
    return sorted(_REGISTRY)
