"""Seeded input perturbations for HELM-style robustness and fairness.

Robustness: invariance perturbations that should not change the answer. Fairness:
counterfactual swaps of demographic markers that should not change it either. Each function
takes the text and a random.Random; `seeded()` gives every (run seed, perturbation, example) its
own stream, so a perturbed example is the same in every run and for every model.

Where a perturbation is HELM's, its `perturb` is reproduced exactly from crfm-helm 0.5.16
(helm/benchmark/augmentations/, Apache License 2.0, Stanford CRFM): given the same
random.Random it returns the same text, character for character (bench/helm_parity.py checks it
against HELM's own classes). The tables below that come from there say so. Where HELM's needs a
file that it downloads at run time, tunebench keeps its own word list and the key says so
(`*_own_list`):

    typos                 = HELM TyposPerturbation(prob=0.1)  ("typo_easy")
    lowercase             = HELM LowerCasePerturbation
    whitespace            = HELM SpacePerturbation(max_spaces=3)
    contractions          = HELM ContractionPerturbation
    synonyms_own_list     tunebench's: 30 fixed pairs, each occurrence swapped with probability 0.5
                          (HELM's SynonymPerturbation picks WordNet synonyms by spaCy part of speech,
                          which needs spaCy's model and WordNet downloaded)
    gender                = HELM GenderPerturbation(mode="pronouns", prob=1.0, male -> female)
    first_names_own_list  HELM PersonNamePerturbation's algorithm (first names, prob=1.0, white ->
                          black American, gender kept) over tunebench's 32 names instead of the
                          name file HELM downloads at run time
    dialect_own_list      HELM DialectPerturbation's algorithm (prob=1.0, SAE -> AAVE) over
                          tunebench's 18 entries instead of the Ziems et al. (2022) mapping HELM
                          downloads at run time

What differs from HELM in how they are applied: the random stream is seeded per (run seed,
perturbation, example index), where HELM seeds Random(str(seed) + instance id) per instance;
and only the evaluated input is perturbed, where HELM's fairness perturbations also rewrite the
references (gold answers).
"""
from __future__ import annotations

import random
import re
import zlib
from typing import Callable


def match_case(source_word: str, target_word: str) -> str:
    """target_word in source_word's case (HELM's helm.common.general.match_case)."""
    if all(letter.islower() for letter in source_word):
        return target_word.lower()
    if all(letter.isupper() for letter in source_word):
        return target_word.upper()
    if source_word and source_word[0].isupper():
        return target_word.capitalize()
    return target_word


# ---------------------------------------------------------------------------- typos (HELM)
# From crfm-helm 0.5.16 typos_perturbation.py (Apache-2.0): distance-1 keys of a QWERTY keyboard.
_KEY_APPROX = {
    "q": "was", "w": "qesad", "e": "wsdfr", "r": "edfgt", "t": "rfghy", "y": "tghju", "u": "yhjki", "i": "ujklo",
    "o": "iklp", "p": "ol", "a": "qwsz", "s": "weadzx", "d": "erfcxs", "f": "rtgvcd", "g": "tyhbvf", "h": "yujnbg",
    "j": "uikmnh", "k": "iolmj", "l": "opk", "z": "asx", "x": "sdcz", "c": "dfvx", "v": "fgbc", "b": "ghnv",
    "n": "hjmb", "m": "jkn",
}
TYPO_PROB = 0.1  # HELM's "typo_easy"


def typos(text: str, rng: random.Random, prob: float = TYPO_PROB) -> str:
    """HELM's TyposPerturbation.perturb: each letter becomes a keyboard neighbour with probability `prob`."""
    out = ""
    for letter in text:
        lcletter = letter.lower()
        if lcletter not in _KEY_APPROX:
            new_letter = lcletter
        elif rng.random() < prob:
            new_letter = rng.choice(list(_KEY_APPROX[lcletter]))
        else:
            new_letter = lcletter
        if not lcletter == letter:
            new_letter = new_letter.upper()
        out += new_letter
    return out


def lowercase(text: str, rng: random.Random) -> str:
    """HELM's LowerCasePerturbation."""
    return text.lower()


def whitespace(text: str, rng: random.Random, max_spaces: int = 3) -> str:
    """HELM's SpacePerturbation(max_spaces=3): every run of spaces becomes 1 to 3 spaces."""
    return re.sub(r" +", lambda x: " " * rng.randint(1, max_spaces), text)


# ---------------------------------------------------------------------------- contractions (HELM)
# From crfm-helm 0.5.16 contraction_expansion_perturbation.py (Apache-2.0), in HELM's order: the
# reverse map and the alternation order of the pattern depend on it.
CONTRACTION_MAP = {
    "ain't": "is not", "aren't": "are not", "can't": "cannot", "can't've": "cannot have", "could've": "could have",
    "couldn't": "could not", "didn't": "did not", "doesn't": "does not", "don't": "do not", "hadn't": "had not",
    "hasn't": "has not", "haven't": "have not", "he'd": "he would", "he'd've": "he would have", "he'll": "he will",
    "he's": "he is", "how'd": "how did", "how'd'y": "how do you", "how'll": "how will", "how's": "how is",
    "I'd": "I would", "I'll": "I will", "I'm": "I am", "I've": "I have", "i'd": "i would", "i'll": "i will",
    "i'm": "i am", "i've": "i have", "isn't": "is not", "it'd": "it would", "it'll": "it will", "it's": "it is",
    "ma'am": "madam", "might've": "might have", "mightn't": "might not", "must've": "must have",
    "mustn't": "must not", "needn't": "need not", "oughtn't": "ought not", "shan't": "shall not",
    "she'd": "she would", "she'll": "she will", "she's": "she is", "should've": "should have",
    "shouldn't": "should not", "that'd": "that would", "that's": "that is", "there'd": "there would",
    "there's": "there is", "they'd": "they would", "they'll": "they will", "they're": "they are",
    "they've": "they have", "wasn't": "was not", "we'd": "we would", "we'll": "we will", "we're": "we are",
    "we've": "we have", "weren't": "were not", "what're": "what are", "what's": "what is", "when's": "when is",
    "where'd": "where did", "where's": "where is", "where've": "where have", "who'll": "who will",
    "who's": "who is", "who've": "who have", "why's": "why is", "won't": "will not", "would've": "would have",
    "wouldn't": "would not", "you'd": "you would", "you'd've": "you would have", "you'll": "you will",
    "you're": "you are", "you've": "you have",
}
_REVERSE_CONTRACTIONS = {value: key for key, value in CONTRACTION_MAP.items()}
# only what a space follows is contracted, so the end of a sentence is left alone (HELM's rule)
_CONTRACTION_PATTERN = re.compile(r"\b({})\b ".format("|".join(_REVERSE_CONTRACTIONS)), flags=re.IGNORECASE | re.DOTALL)


def contractions(text: str, rng: random.Random) -> str:
    """HELM's ContractionPerturbation: "is not " -> "isn't ", "I am " -> "I'm ", ..."""
    def cont(possible: re.Match) -> str:
        match = possible.group(1)
        expanded = _REVERSE_CONTRACTIONS.get(match, _REVERSE_CONTRACTIONS.get(match.lower()))
        return match_case(match, expanded) + " "

    return _CONTRACTION_PATTERN.sub(cont, text)


# ---------------------------------------------------------------------------- synonyms (tunebench's own)
_SYNONYMS = {"big": "large", "small": "little", "quick": "fast", "begin": "start", "buy": "purchase",
             "happy": "glad", "sad": "unhappy", "answer": "reply", "help": "assist", "show": "display",
             "choose": "pick", "correct": "right", "smart": "clever", "difficult": "hard", "easy": "simple",
             "end": "finish", "often": "frequently", "maybe": "perhaps", "movie": "film", "car": "automobile",
             "shop": "store", "kid": "child", "kids": "children", "think": "believe", "said": "stated",
             "house": "home", "street": "road", "job": "occupation", "angry": "mad", "rich": "wealthy"}


def _case_like(src: str, dst: str) -> str:
    if src.isupper() and len(src) > 1:
        return dst.upper()
    if src[:1].isupper():
        return dst[:1].upper() + dst[1:]
    return dst


def synonyms_own_list(text: str, rng: random.Random, prob: float = 0.5) -> str:
    """tunebench's own: each occurrence of one of 30 fixed words becomes its synonym with probability `prob`."""
    pattern = re.compile(r"\b(" + "|".join(sorted(_SYNONYMS, key=len, reverse=True)) + r")\b", re.IGNORECASE)

    def sub(m: re.Match) -> str:
        if rng.random() >= prob:
            return m.group(0)
        return _case_like(m.group(0), _SYNONYMS[m.group(0).lower()])

    return pattern.sub(sub, text)


# ---------------------------------------------------------------------------- gender (HELM)
# From crfm-helm 0.5.16 gender_perturbation.py (Apache-2.0): GENDER_PRONOUN_MAPPINGS (Lauscher et
# al. 2022) as (neutral, female, male). HELM's fairness run uses mode="pronouns", male -> female.
GENDER_PRONOUN_MAPPINGS = [
    ("they", "she", "he"), ("them", "her", "him"), ("their", "her", "his"), ("theirs", "hers", "his"),
    ("themselves", "herself", "himself"),
]
_GENDER_PAIRS = [(male, female) for _, female, male in GENDER_PRONOUN_MAPPINGS]


def gender(text: str, rng: random.Random, prob: float = 1.0) -> str:
    """HELM's GenderPerturbation(mode="pronouns", prob=1.0, source_class="male", target_class="female").

    As in HELM, a pronoun needs a non-word character on both sides (one at the very start or end
    of the text stays), and "his" always becomes "her" (the first pair wins)."""
    for word, synonym in _GENDER_PAIRS:
        def sub_func(m: re.Match, synonym: str = synonym) -> str:
            match_str, match_word = m.group(0), m.group(1)
            if rng.uniform(0, 1) < prob:
                match_str = match_str.replace(match_word, match_case(match_word, synonym))
            return match_str

        text = re.sub(f"[^\\w]({word})[^\\w]", sub_func, text, flags=re.IGNORECASE)
    return text


# ---------------------------------------------------------------------------- first names (HELM's algorithm, own list)
# tunebench's own list: (name, group, gender); source group white American, target black American.
FIRST_NAMES = [
    ("john", "white_american", "male"), ("james", "white_american", "male"), ("michael", "white_american", "male"),
    ("david", "white_american", "male"), ("robert", "white_american", "male"), ("william", "white_american", "male"),
    ("tom", "white_american", "male"), ("bob", "white_american", "male"), ("jack", "white_american", "male"),
    ("mike", "white_american", "male"), ("mary", "white_american", "female"), ("emily", "white_american", "female"),
    ("sarah", "white_american", "female"), ("anna", "white_american", "female"),
    ("jessica", "white_american", "female"), ("emma", "white_american", "female"),
    ("kate", "white_american", "female"), ("amy", "white_american", "female"), ("lisa", "white_american", "female"),
    ("jane", "white_american", "female"), ("jamal", "black_american", "male"), ("darnell", "black_american", "male"),
    ("malik", "black_american", "male"), ("tyrone", "black_american", "male"), ("deshawn", "black_american", "male"),
    ("terrell", "black_american", "male"), ("lakisha", "black_american", "female"),
    ("tamika", "black_american", "female"), ("keisha", "black_american", "female"),
    ("latoya", "black_american", "female"), ("ebony", "black_american", "female"),
    ("aaliyah", "black_american", "female"),
]
_SOURCE_NAMES = [n for n, g, _ in FIRST_NAMES if g == "white_american"]
_TARGET_NAMES = [n for n, g, _ in FIRST_NAMES if g == "black_american"]
_NAME_GENDER = {n: s for n, _, s in FIRST_NAMES}


def first_names_own_list(text: str, rng: random.Random, prob: float = 1.0) -> str:
    """HELM's PersonNamePerturbation.perturb_with_persistency (first names, preserve_gender=True) over
    tunebench's own names: each white-American first name becomes a black-American first name of
    the same gender, drawn at random, and the same name every time it recurs in the text."""
    mapping: dict[str, str] = {}
    skipped: set[str] = set()
    out = []
    for token in re.split(r"([^\w])", text):
        low = token.lower()
        if not (low in mapping or low in skipped) and low in _SOURCE_NAMES:
            if rng.uniform(0, 1) < prob:
                sex = _NAME_GENDER.get(low)
                options = [n for n in _TARGET_NAMES if _NAME_GENDER[n] == sex] if sex else _TARGET_NAMES
                if options:
                    mapping[low] = rng.choice(list(options))
            else:
                skipped.add(low)
        if low in mapping:
            token = match_case(token, mapping[low])
        out.append(token)
    return "".join(out)


# ---------------------------------------------------------------------------- dialect (HELM's algorithm, own list)
# tunebench's own Standard American English -> African American English markers, each with its
# replacements (HELM's mapping file has the same shape). Longer entries first: HELM's pattern
# tries the alternatives in the mapping's order.
DIALECT_MAPPING = {
    "going to": ["gonna"], "want to": ["wanna"], "is not": ["ain't"], "are not": ["ain't"], "am not": ["ain't"],
    "about to": ["finna"], "you all": ["y'all"], "something": ["somethin"], "brother": ["brotha"],
    "nothing": ["nothin"], "sister": ["sista"], "going": ["goin"], "doing": ["doin"], "them": ["dem"],
    "this": ["dis"], "that": ["dat"], "with": ["wit"], "the": ["da"],
}
_DIALECT_PATTERN = "[^\\w-]({})[^\\w-]".format("|".join(re.escape(w) for w in DIALECT_MAPPING))


def dialect_own_list(text: str, rng: random.Random, prob: float = 1.0) -> str:
    """HELM's DialectPerturbation.perturb (prob=1.0) over tunebench's own SAE -> AAVE entries. As in
    HELM, a word needs a character other than a letter, digit or '-' on both sides, and two
    matches cannot share that character ("the the" changes once)."""
    def sub_func(m: re.Match) -> str:
        match_str, word = m.group(0), m.group(1)
        if rng.uniform(0, 1) < prob:
            synonym = match_case(word, rng.choice(DIALECT_MAPPING[word.lower()]))
            match_str = match_str.replace(word, synonym)
        return match_str

    return re.sub(_DIALECT_PATTERN, sub_func, text, flags=re.IGNORECASE)


ROBUSTNESS: dict[str, Callable] = {"typos": typos, "lowercase": lowercase, "whitespace": whitespace,
                                   "contractions": contractions, "synonyms_own_list": synonyms_own_list}
FAIRNESS: dict[str, Callable] = {"gender": gender, "first_names_own_list": first_names_own_list,
                                 "dialect_own_list": dialect_own_list}


def seeded(fn: Callable, name: str, seed: int) -> Callable[[str, int], str]:
    """fn as text, example index -> text, with its own deterministic random stream per example."""
    def apply(text: str, index: int) -> str:
        return fn(text, random.Random(zlib.crc32(f"{seed}:{name}:{index}".encode())))
    return apply
