"""Seeded input perturbations for HELM-style robustness and fairness.

Robustness: invariance perturbations that should not change the answer (typos, case,
whitespace, contractions, synonyms). Fairness: counterfactual swaps of demographic markers
(gendered terms, first names, dialect) that should not change it either. Each function takes
the text and a random.Random seeded per (run seed, perturbation, example), so a perturbed
example is the same in every run and for every model.
"""
from __future__ import annotations

import random
import re
import zlib
from typing import Callable

_KEYBOARD = {
    "q": "wa", "w": "qes", "e": "wrd", "r": "etf", "t": "ryg", "y": "tuh", "u": "yij", "i": "uok", "o": "ipl",
    "p": "ol", "a": "qsz", "s": "awdz", "d": "sefx", "f": "drgc", "g": "fthv", "h": "gyjb", "j": "hukn",
    "k": "jilm", "l": "kop", "z": "asx", "x": "zsdc", "c": "xdfv", "v": "cfgb", "b": "vghn", "n": "bhjm",
    "m": "njk",
}
_CONTRACTIONS = {"do not": "don't", "does not": "doesn't", "did not": "didn't", "is not": "isn't",
                 "are not": "aren't", "was not": "wasn't", "were not": "weren't", "have not": "haven't",
                 "has not": "hasn't", "will not": "won't", "would not": "wouldn't", "can not": "can't",
                 "cannot": "can't", "could not": "couldn't", "should not": "shouldn't", "I am": "I'm",
                 "you are": "you're", "we are": "we're", "they are": "they're", "it is": "it's",
                 "that is": "that's", "there is": "there's", "I will": "I'll", "I have": "I've",
                 "you will": "you'll", "let us": "let's"}
_SYNONYMS = {"big": "large", "small": "little", "quick": "fast", "begin": "start", "buy": "purchase",
             "happy": "glad", "sad": "unhappy", "answer": "reply", "help": "assist", "show": "display",
             "choose": "pick", "correct": "right", "smart": "clever", "difficult": "hard", "easy": "simple",
             "end": "finish", "often": "frequently", "maybe": "perhaps", "movie": "film", "car": "automobile",
             "shop": "store", "kid": "child", "kids": "children", "think": "believe", "said": "stated",
             "house": "home", "street": "road", "job": "occupation", "angry": "mad", "rich": "wealthy"}
_GENDER = {"he": "she", "she": "he", "him": "her", "his": "her", "her": "his", "man": "woman", "woman": "man",
           "men": "women", "women": "men", "boy": "girl", "girl": "boy", "boys": "girls", "girls": "boys",
           "father": "mother", "mother": "father", "son": "daughter", "daughter": "son", "brother": "sister",
           "sister": "brother", "husband": "wife", "wife": "husband", "king": "queen", "queen": "king",
           "mr": "ms", "ms": "mr", "mrs": "mr", "himself": "herself", "herself": "himself", "male": "female",
           "female": "male", "uncle": "aunt", "aunt": "uncle", "gentleman": "lady", "lady": "gentleman"}
# First names swapped across groups (after HELM's person-name perturbation).
_NAMES = {"john": "jamal", "james": "darnell", "michael": "malik", "david": "tyrone", "robert": "deshawn",
          "william": "terrell", "mary": "lakisha", "emily": "tamika", "sarah": "keisha", "anna": "latoya",
          "jessica": "ebony", "emma": "aaliyah", "tom": "jose", "bob": "carlos", "jack": "luis", "mike": "juan",
          "kate": "maria", "amy": "rosa", "lisa": "carmen", "jane": "guadalupe"}
_NAMES.update({v: k for k, v in list(_NAMES.items())})
# Standard American English -> African American English markers (after HELM's dialect perturbation).
_DIALECT = {"going to": "gonna", "want to": "wanna", "is not": "ain't", "are not": "ain't", "am not": "ain't",
            "about to": "finna", "them": "dem", "this": "dis", "that": "dat", "the": "da", "with": "wit",
            "brother": "brotha", "sister": "sista", "nothing": "nothin", "something": "somethin",
            "going": "goin", "doing": "doin", "you all": "y'all"}


def _case_like(src: str, dst: str) -> str:
    if src.isupper() and len(src) > 1:
        return dst.upper()
    if src[:1].isupper():
        return dst[:1].upper() + dst[1:]
    return dst


def _swap_words(text: str, table: dict[str, str], rng: random.Random, prob: float = 1.0) -> str:
    lowered = {k.lower(): v for k, v in table.items()}
    keys = sorted(lowered, key=len, reverse=True)  # longest first: "is not" before "is"
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in keys) + r")\b", re.IGNORECASE)

    def sub(m: re.Match) -> str:
        if rng.random() >= prob:
            return m.group(0)
        return _case_like(m.group(0), lowered[m.group(0).lower()])

    return pattern.sub(sub, text)


def typos(text: str, rng: random.Random, prob: float = 0.05) -> str:
    """Butter fingers: each letter is replaced by a keyboard neighbour with probability `prob`."""
    out = []
    for ch in text:
        low = ch.lower()
        if low in _KEYBOARD and rng.random() < prob:
            rep = rng.choice(_KEYBOARD[low])
            ch = rep.upper() if ch.isupper() else rep
        out.append(ch)
    return "".join(out)


def lowercase(text: str, rng: random.Random) -> str:
    return text.lower()


def whitespace(text: str, rng: random.Random) -> str:
    """Every space becomes one to three spaces."""
    return re.sub(r" ", lambda m: " " * rng.randint(1, 3), text)


def contractions(text: str, rng: random.Random) -> str:
    return _swap_words(text, _CONTRACTIONS, rng)


def synonyms(text: str, rng: random.Random, prob: float = 0.5) -> str:
    return _swap_words(text, _SYNONYMS, rng, prob)


def gender(text: str, rng: random.Random) -> str:
    return _swap_words(text, _GENDER, rng)


def names(text: str, rng: random.Random) -> str:
    return _swap_words(text, _NAMES, rng)


def dialect(text: str, rng: random.Random) -> str:
    return _swap_words(text, _DIALECT, rng)


ROBUSTNESS: dict[str, Callable] = {"typos": typos, "lowercase": lowercase, "whitespace": whitespace,
                                   "contractions": contractions, "synonyms": synonyms}
FAIRNESS: dict[str, Callable] = {"gender": gender, "names": names, "dialect": dialect}


def seeded(fn: Callable, name: str, seed: int) -> Callable[[str, int], str]:
    """fn as text, example index -> text, with its own deterministic random stream per example."""
    def apply(text: str, index: int) -> str:
        return fn(text, random.Random(zlib.crc32(f"{seed}:{name}:{index}".encode())))
    return apply
