"""Language registry: code -> English name, script, resource level and corpus config names.

The ten languages of the X-Instruction paper are built in. A recipe can add more under
``languages.extra`` (see :func:`register`), so the set stays open.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UnknownLanguageError


@dataclass(frozen=True)
class Language:
    """One target language.

    Args:
        code (`str`): ISO 639-1 code used everywhere in the project (``"sw"``).
        name (`str`): English name, used verbatim in the prompts ("Answer in Swahili.").
        script (`str`): ISO 15924 script name (``"Latn"``, ``"Taml"``).
        resource (`str`): ``"medium"`` or ``"low"`` as in the paper; free text for added languages.
        flores (`str`): FLORES-200 / NLLB code (``"swh_Latn"``); also FineWeb-2's config name.
    """

    code: str
    name: str
    script: str
    resource: str
    flores: str

    def format_fields(self) -> dict[str, str]:
        """Fields usable in config templates such as ``"{flores}"`` or ``"{code}"``."""
        return {"code": self.code, "name": self.name, "script": self.script, "flores": self.flores}


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
    """Return the registered language for ``code`` or raise an error that lists the known codes."""
    try:
        return _REGISTRY[code]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownLanguageError(
            f"Unknown language code {code!r}. Known codes: {known}. "
            "Add a language in the recipe under languages.extra (name, script, resource, flores)."
        ) from None


def register(code: str, name: str, script: str, resource: str = "low", flores: str | None = None) -> Language:
    """Add (or replace) a language, e.g. from a recipe's ``languages.extra`` block."""
    lang = Language(code, name, script, resource, flores or f"{code}_{script}")
    _REGISTRY[code] = lang
    return lang


def known_codes() -> list[str]:
    """All registered codes, sorted."""
    return sorted(_REGISTRY)
